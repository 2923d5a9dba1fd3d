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
import type { TimelineHistory } from './timeline-history.js';
import { WalSegmentName, timelineHistoryName } from './wal-segment-name.js';

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
  if (buf.length < WAL_LONG_HEADER_SIZE) throw new PgfleetError('Internal', 'short WAL header');
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
 *
 * The first segment of a new timeline starts with a copy of the parent timeline's WAL up to the
 * switch point (xlog.c, XLogInitNewTimeline), so its first page carries the parent's timeline id
 * (or an older ancestor's, when several switches fall in one segment). That is accepted when
 * `history` (the history of the timeline the name says) places the segment's start on exactly
 * that timeline, as PostgreSQL's own page check does against the expected history.
 */
export function validateWalSegment(
  name: string,
  header: Buffer,
  fileSize: number,
  systemIdentifier?: string,
  history?: TimelineHistory,
): WalSegmentHeader {
  if (fileSize === 0) throw new PgfleetError('WalFileEmpty', `WAL file ${name} is empty (0 bytes)`);
  if (header.length < WAL_LONG_HEADER_SIZE)
    throw new PgfleetError('WalFileEmpty', `WAL file ${name} is truncated (${fileSize} bytes)`);
  const h = parseWalLongHeader(header);
  const info = header.readUInt16LE(2);
  if (h.pgMajor === undefined || (info & XLP_LONG_HEADER) === 0) {
    throw new PgfleetError(
      'WalFileInvalid',
      `WAL file ${name} does not start with a WAL page header (magic 0x${h.magic.toString(16)})`,
    );
  }
  if (h.segmentSize < 1 << 20 || h.segmentSize > 1 << 30 || (h.segmentSize & (h.segmentSize - 1)) !== 0) {
    throw new PgfleetError('WalFileInvalid', `WAL file ${name} has an impossible segment size ${h.segmentSize}`);
  }
  if (fileSize !== h.segmentSize) {
    throw new PgfleetError(
      'WalFileEmpty',
      `WAL file ${name} is truncated: ${fileSize} bytes, a segment has ${h.segmentSize}`,
    );
  }
  const expected = WalSegmentName.parse(name, h.segmentSize);
  if (h.timeline !== expected.timeline) {
    const own = history?.timeline === expected.timeline ? history : undefined;
    // PostgreSQL never writes a segment of a timeline that ends before the timeline begins.
    const beforeStart = own !== undefined && expected.startLsn.value + BigInt(h.segmentSize) <= own.startLsn;
    const owner = own && !beforeStart ? own.timelineAt(expected.startLsn.value) : undefined;
    if (owner !== h.timeline) {
      const why =
        own === undefined
          ? `and timeline ${expected.timeline}'s history (${timelineHistoryName(expected.timeline)}) is not available to show it starts there`
          : beforeStart
            ? `but timeline ${expected.timeline} only begins after this segment`
            : `but timeline ${expected.timeline}'s history places this position on timeline ${owner}`;
      throw new PgfleetError(
        'WalFileInvalid',
        `WAL file ${name} holds timeline ${h.timeline}, its name says ${expected.timeline}, ${why}`,
      );
    }
  }
  if (h.pageAddress !== expected.startLsn.value) {
    throw new PgfleetError(
      'WalFileInvalid',
      `WAL file ${name} holds WAL of another position (page address ${h.pageAddress.toString(16)})`,
    );
  }
  if (systemIdentifier !== undefined && h.systemIdentifier !== systemIdentifier) {
    throw new PgfleetError(
      'WalFileInvalid',
      `WAL file ${name} belongs to database system ${h.systemIdentifier}, this cluster is ${systemIdentifier}`,
    );
  }
  return h;
}
