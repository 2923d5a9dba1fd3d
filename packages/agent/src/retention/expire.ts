/**
 * The expire job: deletes from the repository what the controller's retention plan no longer
 * needs. The controller decides (it has the policy and the catalog); the agent deletes, and
 * re-checks against the repository itself before it does, because the repository, not the
 * catalog, is the source of truth and a deleted backup cannot come back:
 *
 * - A backup's manifest goes first, then its files: from the first delete on the backup is no
 *   longer listed as complete, so a crash half-way leaves an incomplete directory (which the next
 *   expire removes), never a listed backup with missing files. Deleting a backup that is already
 *   gone is a no-op, so a retried job converges.
 * - A backup that a kept backup still reads files from (a diff/incr's manifest entries name the
 *   backup holding the bytes) is not deleted but reported as skipped.
 * - So is a backup that a backup in progress references: its lease (storage backup-lease.ts)
 *   names it. The catalog cannot tell (a backup whose agent lost the controller past the
 *   reclaim grace is a failed job there while it still runs), so the repository is asked twice:
 *   before the manifests are withdrawn, and after; a backup leased in between gets its manifest
 *   back and keeps its files (the backup's side of this is agent backup/lease.ts). Stale leases
 *   (their backup died) are ignored and reported.
 * - WAL: every file whose segment position (the 16 hex digits after the timeline) is at or after
 *   `walKeepFrom` stays, on every timeline; older segments (and their .partial/.backup companions)
 *   go unless a keep range holds them. The ranges are the controller's (long-term backups) plus
 *   [walStart, walStop] of every complete backup the repository keeps, whatever the catalog said.
 *   Timeline history files and names we do not recognise always stay. An empty walKeepFrom
 *   deletes no WAL. A backup in progress that recorded its first segment in its lease keeps
 *   WAL from there too. An encrypted WAL directory whose last segment goes loses its data key
 *   object too, unless anything else is or arrives there (storage Repository.deleteWal).
 */
import { PgfleetError, type Logger } from '@pgfleet/core';
import { walFileKind } from '@pgfleet/pg';
import {
  type ArchivedWal,
  type BackupSummary,
  type FoundLease,
  leasedLabels,
  type ObjectInfo,
  type Repository,
} from '@pgfleet/storage';
import { abandonedBackups, leaseHeld } from '../backup/resume.js';
import type { ProgressSink } from '../progress.js';

export interface WalRange {
  label?: string;
  timeline: number;
  walStart: string;
  walStop: string;
}

export interface ExpireOptions {
  cluster: string;
  repo: Repository;
  /** Backups to delete. */
  labels: readonly string[];
  /** First segment the PITR window needs; '' = delete no WAL. */
  walKeepFrom: string;
  keepRanges: readonly WalRange[];
  /** Report only. */
  dryRun?: boolean;
  /**
   * `pgfleet backup delete`: delete exactly `labels` (newest first) or nothing. A backup that a
   * backup outside them reads from fails the job (BackupHasDependents), and so does one a backup
   * in progress references (BackupHeld), before any manifest is withdrawn.
   */
  exact?: boolean;
  log: Logger;
  progress?: ProgressSink;
  signal?: AbortSignal;
  /** The clock leases are judged by (tests). */
  now?: () => number;
}

export interface ExpireOutcome {
  deletedLabels: string[];
  /** Unfinished backups removed because nothing will continue them (resume.ts abandonedBackups). */
  abandonedLabels: string[];
  skippedLabels: string[];
  backupFilesDeleted: number;
  backupBytesDeleted: number;
  walFilesDeleted: number;
  walBytesDeleted: number;
  walFirstDeleted: string;
  walLastDeleted: string;
}

const SEGMENT_RE = /^[0-9A-F]{24}$/;
const LABEL_RE = /^[A-Za-z0-9][A-Za-z0-9_.-]*$/;
const DELETE_BATCH = 1000;

/** Position of a segment in the LSN space, comparable as text (fixed-width upper-case hex). */
function position(segment: string): string {
  return segment.slice(8, 24).toUpperCase();
}

function inRange(segment: string, r: WalRange): boolean {
  const tli = segment.slice(0, 8).toUpperCase();
  if (tli !== r.walStart.slice(0, 8).toUpperCase() && tli !== r.walStop.slice(0, 8).toUpperCase()) return false;
  const pos = position(segment);
  return pos >= position(r.walStart) && pos <= position(r.walStop);
}

/** Whether an archived WAL file must stay (see the module comment). */
export function walFileStays(name: string, walKeepFrom: string, ranges: readonly WalRange[]): boolean {
  const kind = walFileKind(name);
  if (kind === undefined || kind === 'history') return true;
  if (walKeepFrom === '') return true;
  const segment = name.slice(0, 24);
  if (position(segment) >= position(walKeepFrom)) return true;
  return ranges.some((r) => inRange(segment, r));
}

function checkOptions(o: ExpireOptions): void {
  for (const label of o.labels) {
    // A label becomes part of a key prefix: nothing that could reach outside the backup's directory.
    if (!LABEL_RE.test(label))
      throw new PgfleetError('InvalidArgument', `expire job names '${label}', which is not a backup label`);
  }
  if (o.walKeepFrom !== '' && !SEGMENT_RE.test(o.walKeepFrom)) {
    throw new PgfleetError('InvalidArgument', `expire job's walKeepFrom '${o.walKeepFrom}' is not a WAL segment name`);
  }
  for (const r of o.keepRanges) {
    if (!SEGMENT_RE.test(r.walStart) || !SEGMENT_RE.test(r.walStop)) {
      throw new PgfleetError(
        'InvalidArgument',
        `expire job's keep range ${r.walStart}..${r.walStop} is not a pair of WAL segment names`,
      );
    }
  }
}

export async function runExpire(o: ExpireOptions): Promise<ExpireOutcome> {
  checkOptions(o);
  const { repo, cluster, log } = o;
  const out: ExpireOutcome = {
    deletedLabels: [],
    abandonedLabels: [],
    skippedLabels: [],
    backupFilesDeleted: 0,
    backupBytesDeleted: 0,
    walFilesDeleted: 0,
    walBytesDeleted: 0,
    walFirstDeleted: '',
    walLastDeleted: '',
  };
  const report = (phase: string, message?: string) =>
    o.progress?.({
      phase,
      bytesDone: out.backupBytesDeleted + out.walBytesDeleted,
      bytesTotal: 0,
      filesDone: out.backupFilesDeleted + out.walFilesDeleted,
      filesTotal: 0,
      ...(message ? { message } : {}),
    });

  const doomed = new Set(o.labels);
  // Summaries only (storage backup-summary.ts): no manifest's file list is read to plan an expire.
  const complete: BackupSummary[] = await repo.listBackups(cluster);
  // Complete backups that stay: what they read is protected.
  const kept = complete.filter((m) => !doomed.has(m.label));
  const readFrom = new Map<string, string>();
  // A backup to delete that a kept one reads from stays (skipped below), so what it reads stays
  // too: an incr kept as the prior of a kept one may read a full that the kept one no longer
  // names (a file re-based since, docs/block-incremental.md "Re-base"). A worklist of the labels
  // newly protected walks each dependency edge once (a chain of n links is O(n), not O(n^2)).
  const doomedByLabel = new Map(complete.filter((m) => doomed.has(m.label)).map((m) => [m.label, m]));
  const newlyRead: string[] = [];
  const protect = (m: BackupSummary): void => {
    // Block-incremental files also read the objects their block maps name (summary readsFrom has both).
    const reads = m.priorLabel ? [...m.readsFrom, m.priorLabel] : m.readsFrom;
    for (const b of reads) {
      if (readFrom.has(b)) continue;
      readFrom.set(b, m.label);
      newlyRead.push(b);
    }
  };
  for (const m of kept) protect(m);
  for (let label = newlyRead.pop(); label !== undefined; label = newlyRead.pop()) {
    const staying = doomedByLabel.get(label);
    if (staying) protect(staying);
  }

  report('backups');
  const now = o.now ?? Date.now;
  // E1: leases of backups in progress before anything is withdrawn.
  const leases = await repo.listBackupLeases(cluster, now());
  reportLeases(leases, log);
  const leased = leasedLabels(leases);
  if (o.exact) refuseUnlessAllDeletable(o, readFrom, leased);
  const withdrawn: { label: string; objects: ObjectInfo[]; manifest: Buffer | undefined }[] = [];
  for (const label of o.labels) {
    o.signal?.throwIfAborted();
    const user = readFrom.get(label);
    if (user !== undefined) {
      log.warn({ label, keptBackup: user }, 'backup not expired: a kept backup reads files from it');
      out.skippedLabels.push(label);
      continue;
    }
    const holder = leased.get(label);
    if (holder !== undefined) {
      skipLeased(label, holder, out, log);
      continue;
    }
    const objects = await repo.backupObjects(cluster, label);
    // E2, manifest first: from here on the backup is incomplete, never half-listed.
    withdrawn.push({ label, objects, manifest: o.dryRun ? undefined : await repo.withdrawManifest(cluster, label) });
  }
  // E3: a backup that started meanwhile and leased one of them keeps it, manifest and all.
  const late =
    withdrawn.length > 0 && !o.dryRun ? leasedLabels(await repo.listBackupLeases(cluster, now())) : new Map();
  for (const { label, objects, manifest } of withdrawn) {
    o.signal?.throwIfAborted();
    const holder = late.get(label);
    if (holder !== undefined) {
      if (manifest) await repo.reinstateManifest(cluster, label, manifest);
      skipLeased(label, holder, out, log);
      continue;
    }
    // Nothing else writes under an expired label: its directories go too (posix).
    if (!o.dryRun) await repo.deleteBackupFiles(cluster, label, objects, o.signal);
    out.deletedLabels.push(label);
    out.backupFilesDeleted += objects.length;
    out.backupBytesDeleted += objects.reduce((n, x) => n + x.size, 0);
    log.info({ label, files: objects.length, dryRun: o.dryRun === true }, 'backup expired');
    report('backups', label);
  }

  await removeAbandoned(o, out, now);

  if (o.walKeepFrom !== '') {
    report('wal');
    // Every complete backup still in the repository (skipped ones included) keeps its own WAL.
    const deleted = new Set(out.deletedLabels);
    const ranges: WalRange[] = [
      ...o.keepRanges,
      ...complete
        .filter((m) => !deleted.has(m.label))
        .map((m) => ({ label: m.label, timeline: m.timeline, walStart: m.walStart, walStop: m.walStop })),
    ];
    const keepFrom = leasedWalStart(o.walKeepFrom, leases);
    const doomedWal: ArchivedWal[] = [];
    // Everything from the keep point on stays (walFileStays): only the WAL directories before it are listed.
    for await (const w of repo.listWal(cluster, { beforePosition: position(keepFrom) })) {
      if (!walFileStays(w.name, keepFrom, ranges)) doomedWal.push(w);
    }
    doomedWal.sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0));
    let keyObjects = 0;
    for (let i = 0; i < doomedWal.length; i += DELETE_BATCH) {
      o.signal?.throwIfAborted();
      const batch = doomedWal.slice(i, i + DELETE_BATCH);
      if (!o.dryRun) keyObjects += await repo.deleteWal(batch);
      out.walFilesDeleted += batch.length;
      out.walBytesDeleted += batch.reduce((n, w) => n + w.storedSize, 0);
      report('wal');
    }
    if (doomedWal.length) {
      out.walFirstDeleted = doomedWal[0]!.name;
      out.walLastDeleted = doomedWal[doomedWal.length - 1]!.name;
    }
    log.info(
      {
        walFiles: out.walFilesDeleted,
        first: out.walFirstDeleted,
        last: out.walLastDeleted,
        keepFrom,
        keyObjects,
        dryRun: o.dryRun === true,
      },
      'WAL expired',
    );
  }
  return out;
}

/** backup delete: every label goes, or the job fails naming what keeps them (nothing is touched). */
function refuseUnlessAllDeletable(
  o: ExpireOptions,
  readFrom: ReadonlyMap<string, string>,
  leased: ReadonlyMap<string, FoundLease>,
): void {
  const needed = o.labels.filter((l) => readFrom.has(l));
  if (needed.length > 0) {
    throw new PgfleetError(
      'BackupHasDependents',
      `backup ${needed.map((l) => `${l} (read by ${readFrom.get(l)})`).join(', ')} of cluster ${o.cluster}: other backups in the repository read files from it; nothing was deleted`,
    );
  }
  const held = o.labels.filter((l) => leased.has(l));
  if (held.length > 0) {
    throw new PgfleetError(
      'BackupHeld',
      `backup ${held.map((l) => `${l} (by ${leased.get(l)!.label})`).join(', ')} of cluster ${o.cluster} is referenced by a backup in progress; nothing was deleted`,
    );
  }
}

/**
 * Removes unfinished backups past their resume window (docs/repository-format.md "Resumable
 * backups"). A backup that takes one over meanwhile leases it first: the lease is read again right
 * before the delete, and the backup checks its taken-over files before its manifest.
 */
async function removeAbandoned(o: ExpireOptions, out: ExpireOutcome, now: () => number): Promise<void> {
  const { repo, cluster, log } = o;
  for (const { label, idleMs } of await abandonedBackups(repo, cluster, now())) {
    o.signal?.throwIfAborted();
    const lease = await repo.readBackupLease(cluster, label, now());
    if (lease && leaseHeld(lease.lease, lease.state)) continue;
    const objects = await repo.backupObjects(cluster, label);
    if (!o.dryRun) await repo.deleteBackupFiles(cluster, label, objects, o.signal);
    out.abandonedLabels.push(label);
    out.backupFilesDeleted += objects.length;
    out.backupBytesDeleted += objects.reduce((n, x) => n + x.size, 0);
    log.info(
      { label, files: objects.length, idleHours: Math.round(idleMs / 360_000) / 10, dryRun: o.dryRun === true },
      'removed an interrupted backup past its resume window',
    );
  }
}

function skipLeased(label: string, holder: FoundLease, out: ExpireOutcome, log: Logger): void {
  log.warn(
    { label, inProgress: holder.label, host: holder.lease?.host },
    `backup not expired: backup ${holder.label}, in progress, references it (its lease is live)`,
  );
  out.skippedLabels.push(label);
}

/** Stale and unreadable leases protect nothing; the operator hears of them (their backup died and left its files). */
function reportLeases(leases: readonly FoundLease[], log: Logger): void {
  for (const l of leases) {
    if (l.state === 'live') continue;
    log.warn(
      { label: l.label, key: l.key, state: l.state, ...(l.ageMs !== undefined ? { ageMs: l.ageMs } : {}) },
      l.state === 'stale'
        ? `ignored the stale lease of backup ${l.label} (not refreshed for ${Math.round(l.ageMs! / 1000)} s: its backup died); its incomplete files stay until removed`
        : `ignored the unreadable lease ${l.key}`,
    );
  }
}

/** WAL stays from the earliest first segment a live lease recorded (position only, like walKeepFrom). */
export function leasedWalStart(walKeepFrom: string, leases: readonly FoundLease[]): string {
  let from = walKeepFrom;
  for (const l of leases) {
    const start = l.state === 'live' ? l.lease?.walStart : undefined;
    if (from !== '' && start && SEGMENT_RE.test(start) && position(start) < position(from)) from = start;
  }
  return from;
}
