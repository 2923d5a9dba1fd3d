/**
 * Validation of a WAL segment before it is archived. The first page of every segment starts with
 * XLogLongPageHeaderData (access/xlog_internal.h):
 *   uint16 xlp_magic; uint16 xlp_info; uint32 xlp_tli; uint64 xlp_pageaddr; uint32 xlp_rem_len;
 *   (4 bytes padding) uint64 xlp_sysid; uint32 xlp_seg_size; uint32 xlp_xlog_blcksz
 * All little-endian on the platforms we support. Checking it catches the failures that make a
 * WAL archive silently unrestorable: empty or truncated files, files of another cluster, a file
 * renamed to the wrong position or timeline.
 */
import { PgfleetError } from '@pgfleet/core';
import { WalSegmentName } from './wal-segment-name.js';

/** XLOG_PAGE_MAGIC per PostgreSQL major version (changes whenever the WAL format does). */
export const WAL_PAGE_MAGIC: Readonly<Record<number, number>> = {
  12: 0xd101,
  13: 0xd106,
  14: 0xd10d,
  15: 0xd110,
  16: 0xd113,
  17: 0xd116,
  18: 0xd118,
};

const XLP_LONG_HEADER = 0x0002;
export const WAL_LONG_HEADER_SIZE = 40;

export interface WalSegmentHeader {
  magic: number;
  pgMajor: number | undefined;
  timeline: number;
  pageAddress: bigint;
  systemIdentifier: string;
  segmentSize: number;
  blockSize: number;
}

export function parseWalLongHeader(buf: Buffer): WalSegmentHeader {
  if (buf.length < WAL_LONG_HEADER_SIZE) throw new Error('short WAL header');
  const magic = buf.readUInt16LE(0);
  const pgMajor = Object.entries(WAL_PAGE_MAGIC).find(([, m]) => m === magic)?.[0];
  return {
    magic,
    pgMajor: pgMajor === undefined ? undefined : Number(pgMajor),
    timeline: buf.readUInt32LE(4),
    pageAddress: buf.readBigUInt64LE(8),
    systemIdentifier: buf.readBigUInt64LE(24).toString(),
    segmentSize: buf.readUInt32LE(32),
    blockSize: buf.readUInt32LE(36),
  };
}

/**
 * Checks that `header` (the first 40 bytes) and `fileSize` describe the complete segment `name`
 * of the cluster `systemIdentifier` (when known). Throws WalFileEmpty for empty/truncated files
 * and WalFileInvalid for anything foreign, so archive_command fails and PostgreSQL retries.
 */
export function validateWalSegment(name: string, header: Buffer, fileSize: number, systemIdentifier?: string): WalSegmentHeader {
  if (fileSize === 0) throw new PgfleetError('WalFileEmpty', `WAL file ${name} is empty (0 bytes)`);
  if (header.length < WAL_LONG_HEADER_SIZE) throw new PgfleetError('WalFileEmpty', `WAL file ${name} is truncated (${fileSize} bytes)`);
  const h = parseWalLongHeader(header);
  const info = header.readUInt16LE(2);
  if (h.pgMajor === undefined || (info & XLP_LONG_HEADER) === 0) {
    throw new PgfleetError('WalFileInvalid', `WAL file ${name} does not start with a WAL page header (magic 0x${h.magic.toString(16)})`);
  }
  if (h.segmentSize < 1 << 20 || h.segmentSize > 1 << 30 || (h.segmentSize & (h.segmentSize - 1)) !== 0) {
    throw new PgfleetError('WalFileInvalid', `WAL file ${name} has an impossible segment size ${h.segmentSize}`);
  }
  if (fileSize !== h.segmentSize) {
    throw new PgfleetError('WalFileEmpty', `WAL file ${name} is truncated: ${fileSize} bytes, a segment has ${h.segmentSize}`);
  }
  const expected = WalSegmentName.parse(name, h.segmentSize);
  if (h.timeline !== expected.timeline) {
    throw new PgfleetError('WalFileInvalid', `WAL file ${name} holds timeline ${h.timeline}, its name says ${expected.timeline}`);
  }
  if (h.pageAddress !== expected.startLsn.value) {
    throw new PgfleetError('WalFileInvalid', `WAL file ${name} holds WAL of another position (page address ${h.pageAddress.toString(16)})`);
  }
  if (systemIdentifier !== undefined && h.systemIdentifier !== systemIdentifier) {
    throw new PgfleetError('WalFileInvalid', `WAL file ${name} belongs to database system ${h.systemIdentifier}, this cluster is ${systemIdentifier}`);
  }
  return h;
}
