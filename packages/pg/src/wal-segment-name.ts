/**
 * Names of files in pg_wal and the archive. A segment is named TTTTTTTTXXXXXXXXYYYYYYYY: timeline,
 * then the segment number split into "log" and "seg" parts, where one log holds
 * 0x100000000 / wal_segment_size segments. Other archived files: NNNNNNNN.history (timeline
 * history), <segment>.XXXXXXXX.backup (backup history) and <segment>.partial (end of a timeline
 * at promotion).
 */
import { PgfleetError } from '@pgfleet/core/errors';
import { Lsn } from './lsn.js';

export const DEFAULT_WAL_SEGMENT_SIZE = 16 * 1024 * 1024;

const SEGMENT_RE = /^[0-9A-F]{24}$/;
const HISTORY_RE = /^[0-9A-F]{8}\.history$/;
const BACKUP_HISTORY_RE = /^[0-9A-F]{24}\.[0-9A-F]{8}\.backup$/;
const PARTIAL_RE = /^[0-9A-F]{24}\.partial$/;

export type WalFileKind = 'segment' | 'history' | 'backup' | 'partial';

/** Classifies an archive file name; undefined for names PostgreSQL never archives. */
export function walFileKind(name: string): WalFileKind | undefined {
  if (SEGMENT_RE.test(name)) return 'segment';
  if (HISTORY_RE.test(name)) return 'history';
  if (BACKUP_HISTORY_RE.test(name)) return 'backup';
  if (PARTIAL_RE.test(name)) return 'partial';
  return undefined;
}

export class WalSegmentName {
  constructor(
    readonly timeline: number,
    readonly segmentNumber: bigint,
    readonly segmentSize: number = DEFAULT_WAL_SEGMENT_SIZE,
  ) {}

  private static segmentsPerLog(segmentSize: number): bigint {
    return 0x100000000n / BigInt(segmentSize);
  }

  static parse(name: string, segmentSize: number = DEFAULT_WAL_SEGMENT_SIZE): WalSegmentName {
    const base = name.slice(0, 24);
    if (!SEGMENT_RE.test(base)) throw new PgfleetError('InvalidArgument', `'${name}' is not a WAL segment name`);
    const tli = Number.parseInt(base.slice(0, 8), 16);
    const log = BigInt(`0x${base.slice(8, 16)}`);
    const seg = BigInt(`0x${base.slice(16, 24)}`);
    return new WalSegmentName(tli, log * WalSegmentName.segmentsPerLog(segmentSize) + seg, segmentSize);
  }

  static fromLsn(timeline: number, lsn: Lsn, segmentSize: number = DEFAULT_WAL_SEGMENT_SIZE): WalSegmentName {
    return new WalSegmentName(timeline, lsn.segmentNumber(segmentSize), segmentSize);
  }

  /** Every segment from the one holding `start` to the one holding `stop`, inclusive. */
  static range(
    timeline: number,
    start: Lsn,
    stop: Lsn,
    segmentSize: number = DEFAULT_WAL_SEGMENT_SIZE,
  ): WalSegmentName[] {
    const out: WalSegmentName[] = [];
    for (let n = start.segmentNumber(segmentSize); n <= stop.segmentNumber(segmentSize); n++) {
      out.push(new WalSegmentName(timeline, n, segmentSize));
    }
    return out;
  }

  /** LSN of the first byte of this segment (what its first page header's xlp_pageaddr holds). */
  get startLsn(): Lsn {
    return Lsn.fromBigInt(this.segmentNumber * BigInt(this.segmentSize));
  }

  next(): WalSegmentName {
    return new WalSegmentName(this.timeline, this.segmentNumber + 1n, this.segmentSize);
  }

  toString(): string {
    const per = WalSegmentName.segmentsPerLog(this.segmentSize);
    const hex = (v: bigint | number) => v.toString(16).toUpperCase().padStart(8, '0');
    return `${hex(this.timeline)}${hex(this.segmentNumber / per)}${hex(this.segmentNumber % per)}`;
  }
}

export function timelineHistoryName(timeline: number): string {
  return `${timeline.toString(16).toUpperCase().padStart(8, '0')}.history`;
}
