/**
 * When a timeline began, read from its own WAL. The first record of a new timeline sits exactly
 * at the switch point its history names, and it is one of the two records PostgreSQL writes when
 * recovery ends (xlog.c):
 *   - XLOG_END_OF_RECOVERY after a promotion (pg_ctl promote, pg_promote()): xl_end_of_recovery
 *     { TimestampTz end_time; TimeLineID ThisTimeLineID; TimeLineID PrevTimeLineID; ... };
 *   - XLOG_CHECKPOINT_SHUTDOWN, the end-of-recovery checkpoint after a PITR that promotes at its
 *     target: CheckPoint { redo; ThisTimeLineID; PrevTimeLineID; ...; pg_time_t time (offset 64) }.
 * Both name the new and the previous timeline, which is checked, and carry the time. pg_waldump
 * prints neither time for checkpoints, hence this small reader of one record.
 *
 * A record may cross page boundaries (each 8 KiB page starts with a 24-byte header, the first
 * page of a segment with a 40-byte one), its own header included, so the bytes are gathered
 * page by page.
 */
import { WAL_LONG_HEADER_SIZE } from './wal-header.js';

const SHORT_PAGE_HEADER = 24;
const RECORD_HEADER = 24;
const RM_XLOG_ID = 0;
const XLOG_CHECKPOINT_SHUTDOWN = 0x00;
const XLOG_END_OF_RECOVERY = 0x90;
const XLOG_OVERWRITE_CONTRECORD = 0xd0;
/** Microseconds from the Unix epoch to PostgreSQL's (2000-01-01). */
const PG_EPOCH_US = 946_684_800_000_000n;

/** The bytes of the record starting at `offset` of `segment` (undefined when it does not fit in the segment). */
export function readWalRecordAt(segment: Buffer, offset: number): Buffer | undefined {
  return readWalRecord(segment, offset)?.record;
}

/** The record at `offset` and the offset just after its last byte (file offsets are LSN offsets: page headers count). */
function readWalRecord(segment: Buffer, offset: number): { record: Buffer; end: number } | undefined {
  if (segment.length < WAL_LONG_HEADER_SIZE) return undefined;
  const pageSize = segment.readUInt32LE(36);
  if (pageSize < 1024 || (pageSize & (pageSize - 1)) !== 0) return undefined;
  const out: Buffer[] = [];
  let have = 0;
  let need = RECORD_HEADER;
  let pos = offset;
  while (have < need) {
    const pageStart = pos - (pos % pageSize);
    const headerSize = pageStart === 0 ? WAL_LONG_HEADER_SIZE : SHORT_PAGE_HEADER;
    if (pos === pageStart) pos += headerSize; // a continuation: skip the next page's header
    if (pos >= segment.length) return undefined;
    const take = Math.min(need - have, pageStart + pageSize - pos);
    out.push(segment.subarray(pos, pos + take));
    have += take;
    pos += take;
    if (need === RECORD_HEADER && have >= RECORD_HEADER) {
      need = Buffer.concat(out).readUInt32LE(0);
      if (need < RECORD_HEADER || need > 1 << 20) return undefined;
    }
  }
  return { record: Buffer.concat(out).subarray(0, need), end: pos };
}

/** The main data of a record without block references (the end-of-recovery and restore point records have none). */
export function walRecordMainData(record: Buffer): Buffer | undefined {
  let p = RECORD_HEADER;
  while (p < record.length) {
    const id = record[p]!;
    if (id === 255) return record.subarray(p + 2, p + 2 + record[p + 1]!);
    if (id === 254) return record.subarray(p + 5, p + 5 + record.readUInt32LE(p + 1));
    if (id === 253)
      p += 3; // replication origin
    else if (id === 252)
      p += 5; // top-level xid
    else return undefined; // a block reference: not a record this module reads
  }
  return undefined;
}

export interface TimelineStart {
  /** When the timeline began (promotion or the end-of-recovery checkpoint). */
  time: Date;
  /** The record that says so. */
  record: 'end-of-recovery' | 'checkpoint-shutdown';
}

/**
 * Reads the record at `switchLsn` in `segment` (the new timeline's segment holding that LSN) and
 * returns when timeline `timeline` (branched off `parent`) began, or undefined when the record
 * there is not an end-of-recovery record of that switch.
 */
export function timelineStartFromSegment(
  segment: Buffer,
  switchLsn: bigint,
  segmentSize: number,
  timeline: number,
  parent: number,
): TimelineStart | undefined {
  let read = readWalRecord(segment, Number(switchLsn % BigInt(segmentSize)));
  // Recovery that ended in a torn record (a primary that died mid-record, common at failover)
  // first writes XLOG_OVERWRITE_CONTRECORD there; the end-of-recovery record follows it.
  if (read && read.record[17] === RM_XLOG_ID && (read.record[16]! & 0xf0) === XLOG_OVERWRITE_CONTRECORD)
    read = readWalRecord(segment, (read.end + 7) & ~7);
  const record = read?.record;
  if (!record || record[17] !== RM_XLOG_ID) return undefined;
  const info = record[16]! & 0xf0;
  const data = walRecordMainData(record);
  if (!data || data.length < 16) return undefined;
  if (info === XLOG_END_OF_RECOVERY) {
    if (data.readUInt32LE(8) !== timeline || data.readUInt32LE(12) !== parent) return undefined;
    return { time: new Date(Number((data.readBigInt64LE(0) + PG_EPOCH_US) / 1000n)), record: 'end-of-recovery' };
  }
  if (info === XLOG_CHECKPOINT_SHUTDOWN && data.length >= 72) {
    if (data.readUInt32LE(8) !== timeline || data.readUInt32LE(12) !== parent) return undefined;
    return { time: new Date(Number(data.readBigInt64LE(64)) * 1000), record: 'checkpoint-shutdown' };
  }
  return undefined;
}
