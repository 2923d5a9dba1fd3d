/**
 * A named restore point's own record (pg_create_restore_point writes XLOG_RESTORE_POINT,
 * xlog.c): xl_restore_point { TimestampTz rp_time; char rp_name[MAXFNAMELEN] }. pg_waldump
 * prints the name but not the time, so the time is read from the record itself.
 */
import { readWalRecordAt, walRecordMainData } from './timeline-start.js';

const RM_XLOG_ID = 0;
const XLOG_RESTORE_POINT = 0x70;
/** Microseconds from the Unix epoch to PostgreSQL's (2000-01-01). */
const PG_EPOCH_US = 946_684_800_000_000n;

export interface RestorePointRecord {
  name: string;
  time: Date;
}

/**
 * The restore point whose record starts at `offset` of `segment` (the segment's bytes), or
 * undefined when the record there is not one (or does not end in this segment).
 */
export function restorePointAt(segment: Buffer, offset: number): RestorePointRecord | undefined {
  const record = readWalRecordAt(segment, offset);
  if (!record || record[17] !== RM_XLOG_ID || (record[16]! & 0xf0) !== XLOG_RESTORE_POINT) return undefined;
  const data = walRecordMainData(record);
  if (!data || data.length < 9) return undefined;
  const end = data.indexOf(0, 8);
  const name = data.subarray(8, end < 0 ? data.length : end).toString('utf8');
  return { name, time: new Date(Number((data.readBigInt64LE(0) + PG_EPOCH_US) / 1000n)) };
}
