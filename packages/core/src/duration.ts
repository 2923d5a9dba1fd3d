/**
 * Durations as operators type them in flags ('90s', '30m', '1h', '7d'), shared by every binary
 * that takes one (token lifetimes on the controller host and through the admin CLI).
 */
import { PgfleetError } from './errors.js';

/** '90s', '30m', '1h', '7d' -> milliseconds; InvalidArgument naming the option otherwise. */
export function parseDuration(text: string, option: string): number {
  const m = /^(\d+)\s*(s|m|h|d)$/.exec(text.trim());
  const n = m ? Number(m[1]) : 0;
  if (!m || n <= 0)
    throw new PgfleetError('InvalidArgument', `--${option} '${text}' is not a duration; use e.g. 30m, 1h or 7d`);
  return n * { s: 1000, m: 60_000, h: 3_600_000, d: 86_400_000 }[m[2] as 's' | 'm' | 'h' | 'd'];
}
