/**
 * What a differential or incremental backup builds on, and which files it may reference instead
 * of copying. pgBackRest's vocabulary: a diff is relative to the last full, an incr to the last
 * backup of any type; both only to backups of the same database system and timeline (a backup
 * on another timeline describes another history).
 *
 * An unchanged file is one with the same size and mtime as in the prior manifest. mtime alone is
 * not enough: a file written twice within one tick of the filesystem's clock keeps its mtime, so
 * a file whose recorded mtime is close to (or after) the moment the prior backup started copying
 * may have changed again after it was copied with the same mtime. Such files are copied again,
 * as are files with an mtime in the future (a clock that moved). The checksum mode compares
 * content instead (sha256), for filesystems or tools that do not keep mtimes honest.
 */
import type { BackupKind, BackupFacts, ManifestFile } from '@pgfleet/storage';

/** How close to the prior backup's start an mtime may be before the file is copied again (covers 1 s and 2 s mtime resolutions). */
export const MTIME_GUARD_MS = 2000;

export interface BackupSystem {
  systemIdentifier: string;
  pgVersionNum: number;
  timeline: number;
}

/** The backup a diff (last full) or incr (last backup) builds on; undefined when there is none, so the backup becomes a full. */
export function choosePriorBackup<B extends BackupFacts>(
  backups: readonly B[],
  type: BackupKind,
  system: BackupSystem,
): B | undefined {
  if (type === 'full') return undefined;
  const candidates = backups
    .filter(
      (b) =>
        b.systemIdentifier === system.systemIdentifier &&
        b.pgVersionNum === system.pgVersionNum &&
        b.timeline === system.timeline,
    )
    .filter((b) => type === 'incr' || b.type === 'full')
    .sort((a, b) => Date.parse(a.stopTime) - Date.parse(b.stopTime));
  return candidates.at(-1);
}

export type FileDecision =
  /** new or changed: read, validate, compress and store */
  | 'copy'
  /** unchanged: reuse the prior manifest entry (and the bytes in the backup it names) */
  | 'reference'
  /** checksum mode: same size, so hash the content and reference it when the sha256 matches */
  | 'compare-checksum';

export interface DecisionContext {
  /** Start of the prior backup (its copy began after this), in ms since the epoch. */
  priorStartMs: number;
  /** Now, by the same clock as the file mtimes. */
  nowMs: number;
  checksumDelta: boolean;
}

export function decideFile(
  file: { size: number; mtimeMs: number },
  /** The prior entry, or what an index holds of it (prior-entries.ts): only its size and mtime are compared. */
  prior: Pick<ManifestFile, 'size' | 'mtimeMs'> | undefined,
  ctx: DecisionContext,
): FileDecision {
  if (!prior || file.size !== prior.size) return 'copy';
  if (ctx.checksumDelta) return 'compare-checksum';
  if (file.mtimeMs !== prior.mtimeMs) return 'copy';
  if (file.mtimeMs >= ctx.priorStartMs - MTIME_GUARD_MS) return 'copy';
  if (file.mtimeMs > ctx.nowMs) return 'copy';
  return 'reference';
}
