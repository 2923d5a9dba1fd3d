/** Identifiers: job ids are random UUIDs; backup labels sort by time like pgBackRest's. */
import { randomUUID } from 'node:crypto';

export function newJobId(): string {
  return randomUUID();
}

/** A label like 20261124-153012F: UTC start time plus the type letter. Sorting labels is never used for ordering backups (times are), but it keeps listings readable. */
export function backupLabel(start: Date, type: 'full' | 'diff' | 'incr'): string {
  const p = (n: number, w = 2) => String(n).padStart(w, '0');
  const d = `${start.getUTCFullYear()}${p(start.getUTCMonth() + 1)}${p(start.getUTCDate())}`;
  const t = `${p(start.getUTCHours())}${p(start.getUTCMinutes())}${p(start.getUTCSeconds())}`;
  const letter = type === 'full' ? 'F' : type === 'diff' ? 'D' : 'I';
  return `${d}-${t}${letter}`;
}

/** A dump's label: UTC start time to the millisecond (two dumps may start in one second) plus L. */
export function dumpLabel(start: Date): string {
  return `${backupLabel(start, 'full').slice(0, -1)}-${String(start.getUTCMilliseconds()).padStart(3, '0')}L`;
}

/** Whether `value` is a dump label (dumpLabel's form): safe as a repository key part. */
export function isDumpLabel(value: string): boolean {
  return /^\d{8}-\d{6}-\d{3}L$/.test(value);
}
