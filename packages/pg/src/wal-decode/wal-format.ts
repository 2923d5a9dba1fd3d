/**
 * PostgreSQL 15's WAL layout, the constants the decoder relies on (access/xlog_internal.h,
 * access/xlogrecord.h, access/rmgrlist.h). They change with the major version, which is why the
 * decoder checks XLOG_PAGE_MAGIC first and refuses any other major.
 */

/** XLOG_PAGE_MAGIC of PostgreSQL 15. */
export const PG15_WAL_PAGE_MAGIC = 0xd110;

/** XLogPageHeaderData: magic u16, info u16, tli u32, pageaddr u64, rem_len u32 (+4 padding). */
export const SHORT_PAGE_HEADER_SIZE = 24;
/** XLogLongPageHeaderData adds sysid u64, seg_size u32, xlog_blcksz u32 (first page of a segment). */
export const LONG_PAGE_HEADER_SIZE = 40;

export const XLP_FIRST_IS_CONTRECORD = 0x0001;
export const XLP_LONG_HEADER = 0x0002;
export const XLP_BKP_REMOVABLE = 0x0004;
export const XLP_FIRST_IS_OVERWRITE_CONTRECORD = 0x0008;
export const XLP_ALL_FLAGS = 0x000f;

/** XLogRecord: tot_len u32, xid u32, prev u64, info u8, rmid u8, (2 padding), crc u32. */
export const RECORD_HEADER_SIZE = 24;
/** The CRC covers the header up to xl_crc, after the rest of the record. */
export const RECORD_CRC_OFFSET = 20;
/** XLogRecordMaxSize (xlogrecord.h): no valid record is longer. */
export const RECORD_MAX_SIZE = 1020 * 1024 * 1024;

/** Block reference ids of the record body (xlogrecord.h). */
export const XLR_MAX_BLOCK_ID = 32;
export const XLR_BLOCK_ID_DATA_SHORT = 255;
export const XLR_BLOCK_ID_DATA_LONG = 254;
export const XLR_BLOCK_ID_ORIGIN = 253;
export const XLR_BLOCK_ID_TOPLEVEL_XID = 252;

export const BKPBLOCK_FORK_MASK = 0x0f;
export const BKPBLOCK_HAS_IMAGE = 0x10;
export const BKPBLOCK_HAS_DATA = 0x20;
export const BKPBLOCK_WILL_INIT = 0x40;
export const BKPBLOCK_SAME_REL = 0x80;

export const BKPIMAGE_HAS_HOLE = 0x01;
export const BKPIMAGE_APPLY = 0x02;
export const BKPIMAGE_COMPRESS_PGLZ = 0x04;
export const BKPIMAGE_COMPRESS_LZ4 = 0x08;
export const BKPIMAGE_COMPRESS_ZSTD = 0x10;
export const BKPIMAGE_COMPRESSED = BKPIMAGE_COMPRESS_PGLZ | BKPIMAGE_COMPRESS_LZ4 | BKPIMAGE_COMPRESS_ZSTD;

/** Resource manager ids (rmgrlist.h, PostgreSQL 15), indexed by id; custom rmgrs use 128..255. */
export const RMGR_NAMES = [
  'XLOG',
  'Transaction',
  'Storage',
  'CLOG',
  'Database',
  'Tablespace',
  'MultiXact',
  'RelMap',
  'Standby',
  'Heap2',
  'Heap',
  'Btree',
  'Hash',
  'Gin',
  'Gist',
  'Sequence',
  'SPGist',
  'BRIN',
  'CommitTs',
  'ReplicationOrigin',
  'Generic',
  'LogicalMessage',
] as const;
export const RM_MAX_BUILTIN_ID = RMGR_NAMES.length - 1;
export const RM_MIN_CUSTOM_ID = 128;

export const RM_XLOG_ID = 0;
export const RM_XACT_ID = 1;
export const RM_SMGR_ID = 2;
export const RM_RELMAP_ID = 7;
export const RM_STANDBY_ID = 8;
export const RM_HEAP2_ID = 9;
export const RM_HEAP_ID = 10;

/** XLOG rmgr info codes (catalog/pg_control.h). */
export const XLOG_SWITCH = 0x40;
export const XLOG_RESTORE_POINT = 0x70;
export const XLOG_OVERWRITE_CONTRECORD = 0xd0;

/** Forks (common/relpath.h). */
export const FORK_NAMES = ['main', 'fsm', 'vm', 'init'] as const;

/** Microseconds from the Unix epoch to PostgreSQL's (2000-01-01), for TimestampTz. */
export const PG_EPOCH_UNIX_MS = 946_684_800_000;

/** LSN text as PostgreSQL's pg_lsn prints it (no zero padding). LSNs are carried as JS numbers (exact up to 2^53 bytes, 8 PiB of WAL) to keep the hot path free of bigint. */
export function lsnText(lsn: number): string {
  const hi = Math.floor(lsn / 0x1_0000_0000);
  const lo = lsn - hi * 0x1_0000_0000;
  return `${hi.toString(16).toUpperCase()}/${lo.toString(16).toUpperCase()}`;
}

/** An LSN in the text form (hi/lo hex) as a number. */
export function lsnNumber(text: string): number {
  const m = /^([0-9A-Fa-f]{1,8})\/([0-9A-Fa-f]{1,8})$/.exec(text.trim());
  if (!m) return Number.NaN;
  return parseInt(m[1]!, 16) * 0x1_0000_0000 + parseInt(m[2]!, 16);
}

/**
 * TimestampTz (µs since 2000-01-01, int64 at `offset`) as µs since the Unix epoch. Read as two
 * 32-bit halves: exact for any real time (|µs| < 2^53 spans ±285 years) and, unlike a BigInt read,
 * free of allocation on the per-commit path.
 */
export function readTimestampTzMicros(buf: Buffer, offset: number): number {
  return buf.readInt32LE(offset + 4) * 0x1_0000_0000 + buf.readUInt32LE(offset) + PG_EPOCH_UNIX_MS * 1000;
}

/** TimestampTz as a Date (millisecond precision). */
export function readTimestampTz(buf: Buffer, offset: number): Date {
  return new Date(Math.floor(readTimestampTzMicros(buf, offset) / 1000));
}
