/**
 * The progress journal of a backup in progress (docs/repository-format.md "Resumable backups"):
 * what a resumed run may take over from an interrupted one. A backup's files are written under
 * its label long before its manifest; when the agent dies (kill -9, a reboot, a repository that
 * stopped answering) they would be worth nothing without a record of which of them are complete
 * and what they hold. The journal is that record: batches of the manifest entries of the files
 * stored so far, written as the copy goes, each batch one object
 * `<cluster>/backup/<label>/backup.progress/<seq>` (object stores have no append; a put is
 * atomic, so there is no torn tail to recover: a batch is whole or absent, and a batch that does
 * not parse or authenticate is skipped, its files copied again).
 *
 * A batch is authenticated like a manifest (manifest-auth.ts), under the cluster's manifest key
 * with `<label>/progress/<seq>` bound in place of the label: a resumed backup copies its entries
 * into a manifest, so whoever could forge a batch could forge that manifest. The bound name holds a
 * '/', which no label does, so a batch can never pass for a manifest or another batch.
 */
import { PgfleetError } from '@pgfleet/core/errors';
import type { BackupKind, BackupSource, ManifestFile } from './manifest.js';

export const BACKUP_JOURNAL_FORMAT = 1;

export interface JournalBatch {
  format: 1;
  cluster: string;
  label: string;
  /** What the run that wrote it was taking: only a backup of the same type on the same prior continues it. */
  type: BackupKind;
  priorLabel?: string;
  systemIdentifier: string;
  /** Where its files were read: mtimes say something about the same data directory only. */
  source: BackupSource;
  /**
   * When that run listed PGDATA (ms since the epoch, the agent's clock): a file whose mtime is
   * this close to it (prior.ts MTIME_GUARD_MS) may have changed after it was read within one
   * mtime tick, so its entry is not reused.
   */
  listedAtMs: number;
  /** When the batch was written (ISO): the leftover's last sign of life. */
  writtenAt: string;
  /** How long after its last batch the leftover may be resumed; an expire removes it afterwards. */
  resumeWindowMs: number;
  /** Manifest entries of the files this run stored under the label (never references to other backups). */
  files: ManifestFile[];
}

/** The MAC name of batch `seq` of `label` (see the module comment). */
export function journalBatchName(label: string, seq: number): string {
  return `${label}/progress/${journalSeq(seq)}`;
}

export function journalSeq(seq: number): string {
  return String(seq).padStart(6, '0');
}

/** A batch read back: refused (thrown) unless it is a journal batch of this backup. */
export function parseJournalBatch(json: string, cluster: string, label: string, where: string): JournalBatch {
  let doc: Partial<JournalBatch>;
  try {
    doc = JSON.parse(json) as Partial<JournalBatch>;
  } catch (err) {
    throw new PgfleetError('RepoManifestInvalid', `backup progress journal ${where} is not JSON`, { cause: err });
  }
  const ok =
    doc.format === BACKUP_JOURNAL_FORMAT &&
    doc.cluster === cluster &&
    doc.label === label &&
    (doc.type === 'full' || doc.type === 'diff' || doc.type === 'incr') &&
    typeof doc.systemIdentifier === 'string' &&
    typeof doc.source === 'object' &&
    doc.source !== null &&
    Number.isFinite(doc.listedAtMs) &&
    typeof doc.writtenAt === 'string' &&
    Number.isFinite(Date.parse(doc.writtenAt)) &&
    Number.isSafeInteger(doc.resumeWindowMs) &&
    Array.isArray(doc.files) &&
    doc.files.every((f) => f && typeof f.path === 'string' && f.backup === label);
  if (!ok) throw new PgfleetError('RepoManifestInvalid', `${where} is not a progress journal batch of backup ${label}`);
  return doc as JournalBatch;
}

/** An unfinished backup found in the repository: a label without a manifest (Repository.listUnfinishedBackups). */
export interface UnfinishedBackup {
  label: string;
  /** Whether it holds a lease object (live or not: the caller judges it). */
  leased: boolean;
  /** Its progress journal's batches (0: none written, nothing to take over). */
  journalBatches: number;
}
