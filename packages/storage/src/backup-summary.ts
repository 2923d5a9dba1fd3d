/**
 * The backup summary: a small object beside a backup's manifest holding what listings choose
 * backups by (label, type, prior, timeline, LSNs, times, WAL range, sizes, which other backups it
 * reads). Listing a cluster's backups then reads one small object per backup instead of every
 * manifest with its file list. Written just before the manifest, which stays the proof of
 * completeness: a summary without a manifest is an incomplete backup and is ignored.
 *
 * Authenticated like a manifest (manifest-auth.ts) under the name `<label>/summary`, so a summary
 * copied from another backup fails. Still, it is trusted only for choosing: whoever then uses the
 * chosen backup reads its manifest, verified, and Repository.manifestFor refuses one that
 * disagrees with the summary it was chosen by (BackupSummaryMismatch).
 */
import { PgfleetError } from '@pgfleet/core/errors';
import { type BackupManifest, checkManifestSummary, entryBackups, type ManifestHead } from './manifest.js';

export const SUMMARY_FORMAT = 1;

/** A backup's facts without its entry lists and label file: what both a manifest and a summary hold. */
export type BackupFacts = Omit<BackupManifest, 'files' | 'directories' | 'links' | 'backupLabel' | 'tablespaceMap'>;

/** What a summary holds: a backup's facts, plus what its entry lists imply. */
export interface BackupSummary extends BackupFacts {
  summaryFormat: number;
  /** Files the manifest lists. */
  fileCount: number;
  /** Other backups whose objects a restore of this one reads (its files' and block maps' sources), in key order. */
  readsFrom: string[];
}

/** The name a summary's MAC binds (a label holds no '/', so it never equals a backup's own). */
export function summaryMacName(label: string): string {
  return `${label}/summary`;
}

export function summarizeManifest(m: BackupManifest): BackupSummary {
  const reads = new Set<string>();
  for (const f of m.files) for (const b of entryBackups(f)) if (b !== m.label) reads.add(b);
  return summarizeHead(m, m.files.length, reads);
}

/** summarizeManifest for a manifest read as a stream: its head, the number of its files and the backups they read. */
export function summarizeHead(m: ManifestHead, fileCount: number, reads: Iterable<string>): BackupSummary {
  const { files: _f, directories: _d, links: _l, backupLabel: _b, tablespaceMap: _t, ...rest } = m as BackupManifest;
  return { ...rest, summaryFormat: SUMMARY_FORMAT, fileCount, readsFrom: [...new Set(reads)].sort() };
}

/** The fields a summary must agree on with its manifest: every one a choice depends on. */
const AGREED = [
  'label',
  'cluster',
  'type',
  'priorLabel',
  'systemIdentifier',
  'timeline',
  'startLsn',
  'stopLsn',
  'startTime',
  'stopTime',
  'walStart',
  'walStop',
] as const;

/** Throws BackupSummaryMismatch when `manifest` is not the backup `summary` describes. */
export function checkSummaryAgrees(
  summary: BackupSummary,
  manifest: BackupManifest | BackupSummary,
  where: string,
): void {
  const own = 'summaryFormat' in manifest ? manifest : summarizeManifest(manifest);
  const differs = AGREED.filter((k) => summary[k] !== own[k]);
  if (own.readsFrom.join(',') !== summary.readsFrom.join(',')) differs.push('readsFrom' as never);
  if (differs.length > 0)
    throw new PgfleetError(
      'BackupSummaryMismatch',
      `the summary of backup ${summary.label} of cluster ${summary.cluster} disagrees with its manifest ${where} on ${differs.join(', ')}`,
    );
}

/** Parses a summary's authenticated JSON; RepoManifestInvalid when it is not one of this backup. */
export function parseSummary(json: string, cluster: string, label: string, where: string): BackupSummary {
  let doc: BackupSummary;
  try {
    doc = JSON.parse(json) as BackupSummary;
  } catch (err) {
    throw new PgfleetError('RepoManifestInvalid', `summary ${where} is not valid JSON: ${(err as Error).message}`, {
      cause: err,
    });
  }
  const bad = (what: string): never => {
    throw new PgfleetError('RepoManifestInvalid', `summary ${where}: ${what}`);
  };
  if (doc === null || typeof doc !== 'object' || doc.summaryFormat !== SUMMARY_FORMAT)
    bad(`unknown summary format ${String((doc as { summaryFormat?: unknown } | null)?.summaryFormat)}`);
  for (const key of ['startLsn', 'stopLsn', 'walStart', 'walStop'] as const)
    if (typeof doc[key] !== 'string' || doc[key] === '') bad(`lacks '${key}'`);
  if (!Array.isArray(doc.readsFrom) || doc.readsFrom.some((b) => typeof b !== 'string')) bad('lacks readsFrom');
  if (!Number.isSafeInteger(doc.fileCount)) bad('lacks fileCount');
  checkManifestSummary(doc, where);
  if (doc.cluster !== cluster || doc.label !== label) bad(`describes backup ${doc.label} of cluster ${doc.cluster}`);
  return doc;
}
