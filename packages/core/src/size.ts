/**
 * Byte sizes as operators type them in flags and config files ('20MB', '1GiB', '512kB'). Units are
 * powers of 1024 whether spelt MB or MiB: that is what PostgreSQL's own settings (shared_buffers =
 * 1GB) and pgBackRest (buffer-size=1MiB, 1MB) mean, so a figure copied from either means the same
 * here. A bare number is bytes.
 */
import { PgfleetError } from './errors.js';

const UNITS: Record<string, number> = {
  '': 1,
  b: 1,
  k: 1024,
  kb: 1024,
  kib: 1024,
  m: 1024 ** 2,
  mb: 1024 ** 2,
  mib: 1024 ** 2,
  g: 1024 ** 3,
  gb: 1024 ** 3,
  gib: 1024 ** 3,
  t: 1024 ** 4,
  tb: 1024 ** 4,
  tib: 1024 ** 4,
};

/** '20MB', '1GiB', '1.5GB', '65536' -> bytes (a whole, positive number); SizeInvalid naming the option otherwise. */
export function parseSize(text: string, option: string): number {
  const m = /^(\d+(?:\.\d+)?)\s*([A-Za-z]*)$/.exec(text.trim());
  const unit = m ? UNITS[m[2]!.toLowerCase()] : undefined;
  const bytes = m && unit !== undefined ? Math.round(Number(m[1]) * unit) : 0;
  if (!m || unit === undefined || !(bytes > 0) || !Number.isSafeInteger(bytes))
    throw new PgfleetError('SizeInvalid', `--${option} '${text}' is not a size; use e.g. 20MB, 512kB or 1GiB`);
  return bytes;
}
