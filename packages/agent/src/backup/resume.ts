/**
 * Resumable backups (docs/repository-format.md "Resumable backups"), after pgBackRest's resume:
 * an interrupted backup (agent killed, host rebooted, repository unreachable) leaves its stored
 * files under its label, and the next backup of the same kind takes over the ones that are
 * complete, intact and still what PostgreSQL holds, instead of copying everything again.
 *
 * - What is complete: the backup's progress journal (storage backup-journal.ts), batches of the
 *   manifest entries of the files stored so far, written as the copy goes (each batch after
 *   the directories of its objects were fsynced). A file being copied when the agent died has
 *   no entry: it is copied again (at most the files in flight: a few per worker).
 * - What is intact: every object of every entry is read back and its stored size and sha256
 *   compared with the entry (all of them, not a sample: a file taken over is never read from
 *   PGDATA again, so this is the only check its bytes get, and reading stored bytes costs far less
 *   than compressing and writing them). An entry whose objects fail is dropped, its file copied.
 * - What is still current: a file is taken over only when its size and mtime are those the
 *   interrupted run listed and its mtime is older than that listing by the guard prior.ts uses
 *   for prior backups (with --checksum-delta: when its content sha256 matches instead).
 * - Consistency: the resumed run takes its own pg_backup_start and pg_backup_stop; the taken
 *   over files are ones that did not change since before the new start, so WAL replay from the
 *   new start LSN makes the backup consistent exactly as for files it copies itself.
 *
 * The resumed run keeps the interrupted one's label (as pgBackRest does): its objects stay where
 * they are, named and (for encrypted clusters) sealed under that label's data key, so nothing is
 * renamed, copied or re-sealed; the manifest's start and stop times are the resumed run's own.
 * Only a backup of the same cluster, type and prior backup, from the same data directory, whose
 * journal was written within the window, and whose lease is not live is taken over.
 */
import { hostname } from 'node:os';
import { PgfleetError, settleAll, type Logger } from '@pgfleet/core';
import { processAlive } from '@pgfleet/core/process-alive';
import {
  type BackupKind,
  type BackupSource,
  type JournalBatch,
  type ManifestFile,
  type ManifestHead,
  type Repository,
} from '@pgfleet/storage';
import { decideFile } from './prior.js';

/** The default of --resume-window. */
export const DEFAULT_RESUME_WINDOW_MS = 24 * 3_600_000;

/** How a backup treats an interrupted one: undefined (auto) takes one over within the window. */
export type ResumeMode = 'fresh' | 'required' | undefined;

/** A journal entry and when the run that stored it listed PGDATA. */
interface JournaledFile {
  file: ManifestFile;
  listedAtMs: number;
}

/** The interrupted backup a run takes over: its label and the entries whose objects passed the read-back. */
export interface ResumePoint {
  label: string;
  /** The sequence number the resumed run's first journal batch takes. */
  nextSeq: number;
  entries: Map<string, JournaledFile>;
  /** Entries dropped by the read-back (missing, wrong size or checksum). */
  dropped: number;
}

interface ResumeContext {
  repo: Repository;
  cluster: string;
  type: BackupKind;
  /** The prior backup's manifest head (only its label is compared). */
  prior: Pick<ManifestHead, 'label'> | undefined;
  systemIdentifier: string;
  source: BackupSource;
  mode: ResumeMode;
  windowMs: number;
  /** Objects read back at a time. */
  readers: number;
  log: Logger;
  signal?: AbortSignal;
}

/**
 * The interrupted backup this one continues, or undefined (start fresh); NothingToResume when
 * the mode requires one and there is none.
 */
export async function findResumePoint(ctx: ResumeContext): Promise<ResumePoint | undefined> {
  const { repo, cluster, log } = ctx;
  if (ctx.mode === 'fresh' || (ctx.mode === undefined && ctx.windowMs <= 0)) return undefined;
  const now = Date.now();
  // Newest first: labels are start times.
  const candidates = (await repo.listUnfinishedBackups(cluster))
    .filter((u) => u.journalBatches > 0)
    .sort((a, b) => (a.label < b.label ? 1 : -1));
  const refusals: string[] = [];
  for (const u of candidates) {
    const why = await whyNotResumable(ctx, u.label, now);
    if (typeof why === 'string') {
      refusals.push(`${u.label}: ${why}`);
      continue;
    }
    return await verifiedPoint(ctx, u.label, why);
  }
  if (refusals.length) log.info({ refusals }, 'interrupted backups found, none of them can be continued');
  if (ctx.mode === 'required') {
    throw new PgfleetError(
      'NothingToResume',
      `no interrupted ${ctx.type} backup of cluster ${cluster} can be continued${ctx.prior ? ` on ${ctx.prior.label}` : ''}${refusals.length ? ` (${refusals.join('; ')})` : ' (the repository holds none with a progress journal)'}`,
    );
  }
  return undefined;
}

/** Why `label` cannot be continued, or its journal when it can. */
async function whyNotResumable(
  ctx: ResumeContext,
  label: string,
  now: number,
): Promise<string | { batches: JournalBatch[]; nextSeq: number }> {
  const { repo, cluster } = ctx;
  const lease = await repo.readBackupLease(cluster, label, now);
  if (lease && leaseHeld(lease.lease, lease.state)) return 'its lease is live (a backup is running there)';
  const journal = await repo.readJournal(cluster, label);
  for (const r of journal.rejected)
    ctx.log.warn({ label, key: r.key, reason: r.reason }, 'progress journal batch skipped: its files are copied again');
  const last = journal.batches.at(-1);
  if (!last) return 'no readable progress journal';
  if (last.type !== ctx.type) return `it was a ${last.type} backup`;
  if ((last.priorLabel ?? '') !== (ctx.prior?.label ?? '')) return `it was built on ${last.priorLabel ?? 'no prior'}`;
  if (last.systemIdentifier !== ctx.systemIdentifier) return 'it is of another database system';
  const s = last.source;
  if (s.host !== ctx.source.host || s.pgdata !== ctx.source.pgdata || s.role !== ctx.source.role)
    return `it was taken from ${s.role} ${s.host}:${s.pgdata}`;
  const age = now - Math.max(...journal.batches.map((b) => Date.parse(b.writtenAt)));
  if (ctx.mode === undefined && age > ctx.windowMs)
    return `its last progress is ${Math.round(age / 60_000)} min old, beyond the resume window`;
  return journal;
}

/**
 * Whether a lease still holds its backup (or dump): live, unless it names a process of this host
 * that is gone (a killed agent's lease stays live for minutes; its own host knows better at once).
 * A lease with this process's own pid is held when `ownProcessHolds` says so: never for a backup
 * (this process runs one at a time, the job's exclusive lock: it is a leftover), for a dump while
 * it is one this process runs (logical/abandoned-dumps.ts).
 */
export function leaseHeld(
  lease: { host: string; pid: number } | undefined,
  state: 'live' | 'stale' | 'unreadable',
  ownProcessHolds = false,
): boolean {
  if (state !== 'live' || !lease) return false;
  if (lease.host !== hostname()) return true;
  return lease.pid === process.pid ? ownProcessHolds : processAlive(lease.pid);
}

/** The journal's entries (later batches override earlier ones) whose objects read back intact. */
async function verifiedPoint(
  ctx: ResumeContext,
  label: string,
  journal: { batches: JournalBatch[]; nextSeq: number },
): Promise<ResumePoint> {
  const { repo, cluster, log } = ctx;
  const entries = new Map<string, JournaledFile>();
  for (const b of journal.batches)
    for (const file of b.files) entries.set(file.path, { file, listedAtMs: b.listedAtMs });
  // One listing for presence and size; then every object's stored bytes are read and hashed.
  const sizes = new Map<string, number>();
  for (const o of await repo.backupObjects(cluster, label)) sizes.set(o.key, o.size);
  const all = [...entries.values()];
  let dropped = 0;
  let next = 0;
  const reader = async () => {
    while (next < all.length) {
      ctx.signal?.throwIfAborted();
      const j = all[next++]!;
      if (!(await intact(repo, cluster, j.file, sizes))) {
        entries.delete(j.file.path);
        dropped++;
      }
    }
  };
  await settleAll(Array.from({ length: Math.max(1, ctx.readers) }, reader));
  log.info(
    { label, files: entries.size, dropped, batches: journal.batches.length },
    `continuing the interrupted backup ${label}: ${entries.size} stored file(s) read back intact${dropped ? `, ${dropped} dropped` : ''}`,
  );
  return { label, nextSeq: journal.nextSeq, entries, dropped };
}

async function intact(
  repo: Repository,
  cluster: string,
  f: ManifestFile,
  sizes: Map<string, number>,
): Promise<boolean> {
  for (const o of repo.entryObjects(cluster, f)) {
    if (sizes.get(o.key) !== o.storedSize) return false;
    try {
      const m = await repo.objects.measure(o.key, o.codec, false);
      if (m.storedBytes !== o.storedSize || m.storedSha256 !== o.storedSha256) return false;
    } catch (err) {
      if (err instanceof PgfleetError && err.errorName === 'RepoFileMissing') return false;
      throw err;
    }
  }
  return true;
}

/**
 * Whether a journaled file may be taken over as it is: 'reuse', 'compare' (checksum mode: reuse
 * when the content sha256 still matches) or 'copy'.
 */
export function resumeDecision(
  file: { size: number; mtimeMs: number },
  journaled: JournaledFile | undefined,
  checksumDelta: boolean,
): 'reuse' | 'compare' | 'copy' {
  if (!journaled) return 'copy';
  const d = decideFile(file, journaled.file, { priorStartMs: journaled.listedAtMs, nowMs: Date.now(), checksumDelta });
  return d === 'reference' ? 'reuse' : d === 'compare-checksum' ? 'compare' : 'copy';
}

/**
 * Before the manifest of a resumed backup: every object it took over is still listed with its
 * size (an expire that judged the leftover abandoned may have removed it while this run took it
 * over); BackupLeaseLost otherwise.
 */
export async function checkTakenOver(
  repo: Repository,
  cluster: string,
  label: string,
  taken: readonly ManifestFile[],
): Promise<void> {
  if (taken.length === 0) return;
  const sizes = new Map<string, number>();
  for (const o of await repo.backupObjects(cluster, label)) sizes.set(o.key, o.size);
  for (const f of taken) {
    for (const o of repo.entryObjects(cluster, f)) {
      if (sizes.get(o.key) === o.storedSize) continue;
      throw new PgfleetError(
        'BackupLeaseLost',
        `the stored files of interrupted backup ${label} that this backup continues were removed while it ran (${o.what}); it stopped before its manifest`,
      );
    }
  }
}

/** The start time a label names (core backupLabel: YYYYMMDD-HHMMSS and the type letter), or undefined. */
function labelTimeMs(label: string): number | undefined {
  const m = /^(\d{4})(\d{2})(\d{2})-(\d{2})(\d{2})(\d{2})[FDI]$/.exec(label);
  if (!m) return undefined;
  const [y, mo, d, h, mi, se] = m.slice(1).map(Number) as [number, number, number, number, number, number];
  return Date.UTC(y, mo - 1, d, h, mi, se);
}

/**
 * Unfinished backups (no manifest) that nothing will continue any more: no running backup holds
 * their lease, and their resume window has passed since their last sign of life (the journal's
 * last batch, else the lease's last refresh, else the label's start time; the window is the one
 * the interrupted run recorded, else the default). An expire removes them.
 */
export async function abandonedBackups(
  repo: Repository,
  cluster: string,
  nowMs: number,
): Promise<{ label: string; idleMs: number }[]> {
  const out: { label: string; idleMs: number }[] = [];
  for (const u of await repo.listUnfinishedBackups(cluster)) {
    const lease = u.leased ? await repo.readBackupLease(cluster, u.label, nowMs) : undefined;
    if (lease && leaseHeld(lease.lease, lease.state)) continue;
    let lastMs: number | undefined;
    let windowMs = DEFAULT_RESUME_WINDOW_MS;
    if (u.journalBatches > 0) {
      const { batches } = await repo.readJournal(cluster, u.label);
      if (batches.length > 0) {
        lastMs = Math.max(...batches.map((b) => Date.parse(b.writtenAt)));
        windowMs = batches.at(-1)!.resumeWindowMs;
      }
    }
    lastMs ??= lease?.lease ? Date.parse(lease.lease.refreshedAt) : labelTimeMs(u.label);
    // A label that is not a pgfleet one, with nothing that dates it: not ours to judge.
    if (lastMs === undefined || !Number.isFinite(lastMs)) continue;
    if (nowMs - lastMs > windowMs) out.push({ label: u.label, idleMs: nowMs - lastMs });
  }
  return out;
}

/**
 * A batch goes out as soon as the files waiting in it hold this many bytes: a file of a MiB or
 * more is journaled on its own as soon as it is stored, so what a kill loses beyond the files in
 * flight is at most this much (and JOURNAL_BATCH_MS of small files). One small object per large
 * file costs nothing next to the file itself.
 */
const JOURNAL_BATCH_BYTES = 1 << 20;
/** Smaller files go out together, at most this many per batch. */
const JOURNAL_BATCH_FILES = 256;
/** And at least this often while files complete. */
const JOURNAL_BATCH_MS = 3000;

/**
 * The progress journal a running backup writes (storage backup-journal.ts): entries collect as
 * files complete and go out as one batch (JOURNAL_BATCH_BYTES, JOURNAL_BATCH_FILES,
 * JOURNAL_BATCH_MS), after the directories of their objects are fsynced (an entry never names an
 * object a power loss can take away). A batch that fails to write is logged and its entries wait
 * for the next one: the journal only saves work, a backup never fails for it.
 */
export class ProgressJournal {
  private pending: ManifestFile[] = [];
  private pendingBytes = 0;
  private flushing: Promise<void> = Promise.resolve();
  private timer: NodeJS.Timeout | undefined;
  /** Batches written by this run. */
  written = 0;

  constructor(
    private readonly repo: Repository,
    private readonly header: Omit<JournalBatch, 'files' | 'writtenAt'>,
    private seq: number,
    private readonly log: Logger,
  ) {
    this.timer = setInterval(() => void this.flush(), JOURNAL_BATCH_MS);
    this.timer.unref();
  }

  /** When this run listed PGDATA (JournalBatch.listedAtMs). */
  listed(atMs: number): void {
    this.header.listedAtMs = atMs;
  }

  add(file: ManifestFile): void {
    this.pending.push(file);
    this.pendingBytes += file.size;
    if (this.pending.length >= JOURNAL_BATCH_FILES || this.pendingBytes >= JOURNAL_BATCH_BYTES) void this.flush();
  }

  /** Writes what is pending as one batch (after the batch before it). */
  flush(): Promise<void> {
    this.flushing = this.flushing.then(async () => {
      if (this.pending.length === 0) return;
      const files = this.pending;
      this.pending = [];
      this.pendingBytes = 0;
      const { repo, header } = this;
      try {
        await repo.syncKeys(files.flatMap((f) => repo.entryObjects(header.cluster, f).map((o) => o.key)));
        await repo.writeJournalBatch({ ...header, writtenAt: new Date().toISOString(), files }, this.seq);
        this.seq++;
        this.written++;
      } catch (err) {
        this.pending = [...files, ...this.pending];
        this.pendingBytes += files.reduce((n, f) => n + f.size, 0);
        this.log.warn(
          { label: header.label, err: (err as Error).message },
          'could not write a progress journal batch; retried with the next one',
        );
      }
    });
    return this.flushing;
  }

  /** Stops the timer; `flush`: writes what is pending first. */
  async close(flush: boolean): Promise<void> {
    clearInterval(this.timer);
    if (flush) await this.flush();
    await this.flushing;
  }
}
