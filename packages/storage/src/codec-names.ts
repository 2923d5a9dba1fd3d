/**
 * The codec names alone, without the compression streams: the agent's option table lists them,
 * and archive_command loads that table on its start-up-critical path (`@pgfleet/storage/codec-names`).
 */
import { PgfleetError } from '@pgfleet/core/errors';

export const CODECS = ['zstd', 'lz4', 'gzip', 'none'] as const;
export type Codec = (typeof CODECS)[number];

/**
 * The compression levels each codec takes (--compress-level), and the one it uses without. zstd
 * stops at 19: the "ultra" levels 20-22 need 10-100x the memory per worker for no measurable gain
 * on 1 MiB blocks (codec-blocks.ts). lz4 runs in its one fast mode and none has nothing to tune,
 * so a level for them is refused rather than silently ignored.
 */
export const CODEC_LEVELS: Record<Codec, { min: number; max: number; default: number } | undefined> = {
  zstd: { min: 1, max: 19, default: 2 },
  gzip: { min: 1, max: 9, default: 6 },
  lz4: undefined,
  none: undefined,
};

/** The level to compress with: `level` when it fits the codec, the codec's default when absent; CompressLevelInvalid otherwise. */
export function compressLevel(codec: Codec, level: number | undefined): number | undefined {
  const range = CODEC_LEVELS[codec];
  if (level === undefined) return range?.default;
  if (!range)
    throw new PgfleetError(
      'CompressLevelInvalid',
      `--compress-level ${level}: codec ${codec} has no compression levels (zstd takes 1-19, gzip 1-9)`,
    );
  if (!Number.isInteger(level) || level < range.min || level > range.max)
    throw new PgfleetError(
      'CompressLevelInvalid',
      `--compress-level ${level} is out of range for ${codec}: ${range.min} to ${range.max} (default ${range.default})`,
    );
  return level;
}
