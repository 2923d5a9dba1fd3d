/**
 * A physical backup (full, diff or incr) of a running cluster, non-exclusive (pg_backup_start/stop
 * on one held connection: if the agent dies, PostgreSQL ends the backup with the session):
 *   1. refuse when WAL is not archived: a base backup without its WAL cannot be restored; the
 *      first backup of a cluster first proves archiving end to end (wal/check.ts), so a
 *      command like '/bin/true' fails it in seconds instead of after the WAL wait;
 *   2. for diff/incr, find the prior backup in the repository (a diff/incr without one becomes a
 *      full);
 *   3. pg_backup_start with a fast checkpoint;
 *   4. copy every new or changed PGDATA file in parallel, hashing, validating page checksums and
 *      compressing in one pass; unchanged files are referenced from the prior backup;
 *   5. pg_backup_stop: returns backup_label and forces a switch to a new segment, so the last
 *      segment the backup needs becomes ready for archiving;
 *   6. wait until every segment from start to stop LSN is in the repository (proof that the
 *      backup is restorable, not just copied), and make them durable whoever archived them;
 *   7. write the manifest, last and atomically: before it exists the backup is invisible.
 * From its label on the backup holds a lease in the repository naming the backups it references
 * (lease.ts), so that an expire running meanwhile keeps them.
 *
 * On a standby (HA clusters, docs/ha.md) the same steps run there, with what PostgreSQL does
 * differently during recovery (xlog.c do_pg_backup_start/stop):
 * - pg_backup_start starts at the last restartpoint (a checkpoint replayed from the primary);
 * - no end-of-backup record can be written, so the backup ends where the copied pg_control's
 *   minRecoveryPoint says: pg_control must be copied after every other file (pg_basebackup sends
 *   it last for the same reason), and pg_backup_stop returns the current minRecoveryPoint;
 * - pg_backup_stop neither switches WAL nor waits for archiving, and a standby cannot run
 *   pg_switch_wal(): the segment holding the stop LSN is still being written by the primary.
 *   The agent asks the controller to have the primary's agent switch WAL (agent.proto WalSwitch),
 *   repeating it while it waits, and waits for every segment in the repository as on a primary.
 *   Archiving by the primary (or archive_mode=always on this standby) delivers them.
 */
import { hostname } from 'node:os';
import { join } from 'node:path';
import { Readable } from 'node:stream';
import { backupLabel, ErrorCodes, forEachLimit, PgfleetError, settleAll, sleep, type Logger } from '@pgfleet/core';
import {
  BLCKSZ,
  clusterFacts,
  connectPg,
  Lsn,
  lsnHalves,
  parseBackupLabel,
  type ClusterFacts,
  RELSEG_SIZE,
  relationSegmentNumber,
  WalSegmentName,
  type LsnHalves,
  type PgConnectionOptions,
} from '@pgfleet/pg';
import {
  BLOCK_SUM_BYTES,
  BlockMap,
  blockCount,
  incrementalLoad,
  chunkedContentDigest,
  compressLevel,
  mergeBlockMap,
  REBASE_LOAD,
  wholeFileMap,
  type BlockMapPart,
  type ObjectFigures,
  type BackupKind,
  type BackupSource,
  type Codec,
  type ManifestChunk,
  type ManifestFile,
  type ManifestHead,
  type Repository,
  summarizeHead,
  type BackupSummary,
} from '@pgfleet/storage';
import { storeCatalogSnapshot } from './catalog-snapshot.js';
import { EntrySpool } from './entry-spool.js';
import { ListingSpool } from './listing-spool.js';
import { BackupLeaseHolder, leaseChain } from './lease.js';
import { choosePriorBackup, decideFile, type FileDecision } from './prior.js';
import { PriorEntries, type PriorFacts, type PriorManifest } from './prior-entries.js';
import {
  checkTakenOver,
  DEFAULT_RESUME_WINDOW_MS,
  findResumePoint,
  ProgressJournal,
  resumeDecision,
  type ResumeMode,
  type ResumePoint,
} from './resume.js';
import { CopyPool } from '../copy/pool.js';
import type { RateLimiter } from '../copy/rate-limit.js';
import { walkPgdata, type PgdataEntry, type PgdataTree } from '../pgdata/walk.js';
import { ProgressTracker, type ProgressSink } from '../progress.js';
import { AGENT_VERSION } from '../version.js';

export interface BackupOptions {
  cluster: string;
  pgdata: string;
  pg: PgConnectionOptions;
  repo: Repository;
  codec: Codec;
  /** Requested type; diff and incr fall back to full when there is no prior backup to build on. */
  type?: BackupKind;
  /** diff/incr: compare file content (sha256) instead of size + mtime to find unchanged files. */
  checksumDelta?: boolean;
  /** Worker threads copying files (each with a few files in flight). */
  workers: number;
  /** Compression level (codec default when absent). */
  level?: number;
  /** The agent's --max-rate bucket: every byte read from PGDATA for the copy goes through it. */
  rateLimit?: RateLimiter;
  /** Files larger than this are stored in chunks of this size (default DEFAULT_CHUNK_BYTES). */
  chunkBytes?: number;
  /**
   * Block maps for relation files (default on): every backup writes one per main-fork relation
   * segment of at least `blockMinBytes`, and a diff/incr stores only the changed blocks of such
   * a file when its prior entry has a map (docs/block-incremental.md). Off: files are copied
   * whole, as before block maps existed.
   */
  blockIncremental?: boolean;
  /** Smallest relation file given a block map (default DEFAULT_BLOCK_MIN_BYTES). */
  blockMinBytes?: number;
  /**
   * Changed blocks stored as compressed XOR deltas over the versions the prior map rebuilds
   * (default on; docs/block-incremental.md, "XOR deltas"), where the prior map's parts can be
   * read block by block (block codecs: local object files, or ranged reads on S3) and the
   * backup's codec has a block form. Off (--whole-blocks): every changed block is stored whole.
   */
  blockDeltas?: boolean;
  archiveTimeoutMs: number;
  /**
   * Before the cluster's first backup (none complete in the repository yet): proves WAL archiving
   * works, throwing its error when it does not.
   */
  checkArchiving?: () => Promise<unknown>;
  /**
   * On a standby: asks the cluster's primary to complete the WAL segment holding this LSN (sent
   * through the controller). Called again while the backup waits for it.
   */
  requestWalSwitch?: (lsn: Lsn) => void;
  /** Whether to continue an interrupted backup (resume.ts): undefined within the window, 'fresh' never, 'required' or fail. */
  resume?: ResumeMode;
  /** How long an interrupted backup may be continued automatically (default DEFAULT_RESUME_WINDOW_MS; 0: only when required). */
  resumeWindowMs?: number;
  /**
   * After a failure: whether the stored files stay for a later backup to continue (default: yes,
   * unless `signal` was aborted); when not, they are removed.
   */
  keepInterrupted?: () => boolean;
  /** How often the backup's lease is refreshed (default lease.ts LEASE_REFRESH_MS). */
  leaseRefreshMs?: number;
  log: Logger;
  progress: ProgressSink;
  signal?: AbortSignal;
}

/** How often a standby's backup repeats its WAL switch request while it waits for the segment. */
const WAL_SWITCH_REPEAT_MS = 5000;

/** The data file whose copy ends a standby backup (its minRecoveryPoint is the backup's end). */
const PG_CONTROL = 'global/pg_control';

/**
 * The last WAL segment a backup needs. The stop LSN is the end of the last record the backup
 * needs; when it falls exactly on a segment boundary that record ended in the previous segment,
 * and the next one (possibly not written at all yet: pg_switch_wal() on an empty segment does
 * nothing) is not needed. A standby's stop LSN (minRecoveryPoint) lands there after replaying a
 * WAL switch.
 */
export function lastNeededLsn(stop: Lsn, segmentSize: number): Lsn {
  return stop.value > 0n && stop.segmentOffset(segmentSize) === 0 ? Lsn.fromBigInt(stop.value - 1n) : stop;
}

/** The held connection that runs pg_backup_start and pg_backup_stop. */
type PgClient = Awaited<ReturnType<typeof connectPg>>;

/** Takes a backup; its summary (what its manifest says, without the file list: summarizeHead). */
export async function runBackup(opts: BackupOptions): Promise<BackupSummary> {
  const { repo } = opts;
  const tracker = new ProgressTracker(opts.progress, 'starting');
  const client = await connectPg(opts.pg);
  const windowMs = opts.resumeWindowMs ?? DEFAULT_RESUME_WINDOW_MS;
  let label: string | undefined;
  let lease: BackupLeaseHolder | undefined;
  let journal: ProgressJournal | undefined;
  let point: ResumePoint | undefined;
  let completed = false;
  let copied: CopiedPgdata | undefined;
  let base: BackupBase | undefined;
  try {
    const facts = await clusterFacts(client);
    const source: BackupSource = {
      role: facts.inRecovery ? 'standby' : 'primary',
      host: hostname(),
      pgdata: opts.pgdata,
    };
    requireArchiving(opts, facts);
    // Later backups skip it: the WAL of the earlier ones already proved the way (pgfleet check proves it on demand).
    if (opts.checkArchiving && !(await repo.hasBackups(opts.cluster))) {
      tracker.phase('check', 'first backup of the cluster: proving that WAL reaches every repository');
      await opts.checkArchiving();
    }
    await repo.ensureClusterInfo(opts.cluster, {
      systemIdentifier: facts.systemIdentifier,
      pgVersionNum: facts.versionNum,
      walSegmentSize: facts.walSegmentSize,
    });
    base = await choosePrior(opts, client, facts, source);
    tracker.phase('resume-check');
    point = await findResumePoint({
      repo,
      cluster: opts.cluster,
      type: base.type,
      prior: base.prior?.head,
      systemIdentifier: facts.systemIdentifier,
      source,
      mode: opts.resume,
      windowMs,
      readers: Math.max(2, opts.workers),
      log: opts.log,
      ...(opts.signal ? { signal: opts.signal } : {}),
    });
    // A continued backup keeps its label (resume.ts); its start and stop are this run's own.
    const { startTime, label: free } = point
      ? { startTime: new Date(), label: point.label }
      : await freeLabel(repo, opts.cluster, base.type);
    label = free;
    lease = await BackupLeaseHolder.acquire(
      repo,
      opts.cluster,
      label,
      leaseChain(base.prior),
      opts.log,
      opts.leaseRefreshMs,
    );
    journal = new ProgressJournal(
      repo,
      {
        format: 1,
        cluster: opts.cluster,
        label,
        type: base.type,
        ...(base.prior ? { priorLabel: base.prior.head.label } : {}),
        systemIdentifier: facts.systemIdentifier,
        source,
        listedAtMs: 0,
        resumeWindowMs: windowMs,
      },
      point?.nextSeq ?? 0,
      opts.log,
    );
    const startLsn = await startBackup(opts, client, facts, label, base, tracker);
    await lease.recordWalStart(await startSegment(client, startLsn, facts.walSegmentSize));
    // After pg_backup_start: the WAL from the backup's start on explains every later catalog change.
    tracker.phase('catalog-snapshot');
    const catalogSnapshot = await storeCatalogSnapshot({
      pg: opts.pg,
      log: opts.log,
      repo,
      cluster: opts.cluster,
      label,
      codec: opts.codec,
      ...(opts.level === undefined ? {} : { level: opts.level }),
    });
    copied = await copyPgdata(opts, facts, label, startLsn, base, tracker, journal, point);
    const stop = await stopBackup(opts, client, facts, label, tracker);
    await waitForWal(opts, facts, label, stop, tracker);
    await syncBackupWal(opts, label, stop, facts.walSegmentSize);
    const manifest = {
      ...backupManifest(opts, facts, source, label, base, startTime, copied, stop),
      ...(catalogSnapshot ? { catalogSnapshot } : {}),
    };
    tracker.phase('manifest');
    await lease.confirm();
    await checkTakenOver(repo, opts.cluster, label, copied.taken);
    const { entries } = copied;
    const summary = summarizeHead(manifest, entries.count, entries.readsFrom);
    // Streamed from the local file of entries: the manifest is never held whole (entry-spool.ts).
    await repo.writeManifestStream(manifest, entries.entries(), summary);
    completed = true;
    await lease.release(true);
    await journal.close(false);
    // The manifest says everything the journal did.
    await repo
      .deleteJournal(opts.cluster, label)
      .catch((err: unknown) =>
        opts.log.warn({ err: (err as Error).message }, `could not remove the progress journal of backup ${label}`),
      );
    reportBackupDone(opts, manifest, base, source, copied, tracker);
    return summary;
  } finally {
    await copied?.entries.close();
    await base?.prior?.entries.close();
    await client.end().catch(() => {});
    // What was copied but not yet journaled is journaled now (best effort), so a later backup can continue from it.
    await journal?.close(!completed);
    const keep =
      !completed &&
      label !== undefined &&
      windowMs > 0 &&
      ((journal?.written ?? 0) > 0 || point !== undefined) &&
      (opts.keepInterrupted ?? (() => !opts.signal?.aborted))();
    // Kept: without its lease, so the next backup (on any host) may continue it at once.
    await lease?.release(keep);
    if (keep) {
      opts.log.warn(
        { label },
        `backup ${label} did not finish; its stored files are kept (no manifest: never listed or restored) for the next backup of the same kind to continue within ${Math.round(windowMs / 60_000)} min`,
      );
    } else if (!completed && label) await removeUnfinishedBackup(opts, label);
  }
}

/**
 * Refuses a primary that does not archive: the WAL a backup needs would never reach the
 * repository. A standby's own archive settings do not decide whether its backup gets its WAL: the
 * primary archives it (waitForWal proves it did).
 */
function requireArchiving(opts: BackupOptions, facts: ClusterFacts): void {
  if (facts.inRecovery) {
    opts.log.info(
      { archiveMode: facts.archiveMode },
      "backing up a standby: its WAL comes from the primary's archiving",
    );
    return;
  }
  if (facts.archiveMode === 'off') {
    throw new PgfleetError(
      'ArchiveModeOff',
      `archive_mode is off on cluster ${opts.cluster}: the WAL a backup needs would never reach the repository, so the backup could not be restored`,
    );
  }
  if (facts.archiveCommand.trim() === '' || facts.archiveCommand === '(disabled)') {
    throw new PgfleetError(
      'ArchiveModeOff',
      `archive_command is empty on cluster ${opts.cluster}: WAL is not being archived`,
    );
  }
}

/** What the backup builds on: its type after the fallback to full, the prior backup, and how unchanged files are found. */
interface BackupBase {
  type: BackupKind;
  prior: PriorManifest | undefined;
  checksumDelta: boolean;
}

/** For diff/incr, the prior backup in the repository; without one the backup is taken as a full. */
async function choosePrior(
  opts: BackupOptions,
  client: PgClient,
  facts: ClusterFacts,
  source: BackupSource,
): Promise<BackupBase> {
  const { log } = opts;
  let type: BackupKind = opts.type ?? 'full';
  let prior: PriorManifest | undefined;
  let checksumDelta = Boolean(opts.checksumDelta);
  if (type === 'full') return { type, prior, checksumDelta };
  // The timeline of the last checkpoint (on a standby, restartpoint): the one the backup starts on.
  const timeline = Number((await client.query('SELECT timeline_id FROM pg_control_checkpoint()')).rows[0].timeline_id);
  // Chosen by the summaries; only the chosen backup's manifest is read (and checked against its summary).
  const chosen = choosePriorBackup(await opts.repo.listBackups(opts.cluster), type, {
    systemIdentifier: facts.systemIdentifier,
    pgVersionNum: facts.versionNum,
    timeline,
  });
  prior = chosen ? await readPrior(opts, chosen) : undefined;
  if (prior && !sameSource(prior.head.source, source)) {
    // Another host's (or data directory's) files have their own mtimes: size + mtime says
    // nothing about whether this copy changed. Compare content, as pgBackRest's delta does.
    checksumDelta = true;
    log.info(
      { prior: prior.head.label, priorSource: prior.head.source ?? 'primary (before HA)' },
      'the prior backup was taken on another host: unchanged files are found by checksum',
    );
  }
  if (!prior) {
    log.info(
      { requested: type, timeline },
      `no prior ${type === 'diff' ? 'full ' : ''}backup of this system and timeline in the repository: taking a full backup instead`,
    );
    type = 'full';
  }
  return { type, prior, checksumDelta };
}

/**
 * The prior backup's manifest, authenticated and checked against its summary, its entries
 * streamed into a local file indexed by path (prior-entries.ts): never held whole.
 */
async function readPrior(opts: BackupOptions, chosen: BackupSummary): Promise<PriorManifest> {
  const reader = await opts.repo.openManifestFor(chosen);
  try {
    const entries = await PriorEntries.build(reader.files(), opts.cluster, reader.fileCount);
    return { head: reader.head, readsFrom: reader.readsFrom, entries };
  } finally {
    await reader.close();
  }
}

/** pg_backup_start with a fast checkpoint; the backup's start LSN. */
async function startBackup(
  opts: BackupOptions,
  client: PgClient,
  facts: ClusterFacts,
  label: string,
  base: BackupBase,
  tracker: ProgressTracker,
): Promise<Lsn> {
  tracker.phase('pg_backup_start', 'checkpoint');
  const startFn = facts.major >= 15 ? 'pg_backup_start($1, true)' : 'pg_start_backup($1, true, false)';
  const startLsn = Lsn.parse((await client.query(`SELECT ${startFn}::text AS lsn`, [label])).rows[0].lsn);
  opts.log.info(
    { label, type: base.type, ...(base.prior ? { prior: base.prior.head.label } : {}), startLsn: startLsn.toString() },
    'backup started',
  );
  return startLsn;
}

/** The segment holding the redo point of the checkpoint pg_backup_start made: the first one the backup needs. */
async function startSegment(client: PgClient, startLsn: Lsn, segmentSize: number): Promise<string> {
  // pg_control_checkpoint() answers on a standby too, where pg_walfile_name() is refused.
  const timeline = Number((await client.query('SELECT timeline_id FROM pg_control_checkpoint()')).rows[0].timeline_id);
  return WalSegmentName.range(timeline, startLsn, startLsn, segmentSize)[0]!.toString();
}

/** What copyPgdata leaves for the manifest. */
interface CopiedPgdata {
  /** The directories and links of PGDATA (its files are in `entries`). */
  listing: PgdataTree;
  /** Every file's entry (copied or referenced), in a local file, in the order they were stored. */
  entries: EntrySpool;
  /** Entries taken over from the interrupted backup this one continues (resume.ts). */
  taken: ManifestFile[];
  /** Page checksum errors found by this backup's reads. */
  pageErrors: { path: string; blocks: number[] }[];
  /** Content bytes the copy put through the agent's --max-rate bucket (0 without one). */
  pacedBytes: number;
}

/**
 * Copies every new or changed PGDATA file in parallel (hashing, validating page checksums and
 * compressing in one pass) and references unchanged ones from the prior backup; the copied
 * objects are durable when it returns.
 */
async function copyPgdata(
  opts: BackupOptions,
  facts: ClusterFacts,
  label: string,
  startLsn: Lsn,
  base: BackupBase,
  tracker: ProgressTracker,
  journal: ProgressJournal,
  point: ResumePoint | undefined,
): Promise<CopiedPgdata> {
  const { log } = opts;
  const { prior } = base;
  journal.listed(Date.now());
  const planner = copyPlanner(prior, base.checksumDelta);
  let referenced = 0;
  tracker.state.bytesTotal = 0;
  // The walk's files go to a local file as they are found (listing-spool.ts), never held as a
  // list. pg_control is held aside and copied after every other file: on a standby its
  // minRecoveryPoint is where the backup ends, so it must not be older than any page copied.
  const listing: PgdataTree = { directories: [], links: [] };
  const listed = await ListingSpool.create(opts.cluster);
  let control: PgdataEntry | undefined;
  let files: EntrySpool | undefined;
  let completed = false;
  try {
    for await (const f of walkPgdata(opts.pgdata, listing)) {
      if (planner(f).decision === 'reference') referenced++;
      else tracker.state.bytesTotal += f.size;
      if (f.path === PG_CONTROL) control = f;
      else listed.add(f);
    }
    tracker.state.filesTotal = listed.count + (control ? 1 : 0);
    const referencedMessage = () =>
      prior ? `${referenced} unchanged file(s) referenced from ${prior.head.label}` : undefined;
    tracker.phase('copy', referencedMessage());

    // One data key for the whole backup (encrypted clusters): made here, so every copy thread finds it.
    await opts.repo.prepareKeys(opts.repo.backupManifestKey(opts.cluster, label));
    const copier = new FileCopier(opts, label, facts.dataChecksums ? lsnHalves(startLsn.value) : undefined, tracker);
    const spool = await EntrySpool.create(label, opts.cluster);
    files = spool;
    const taken: ManifestFile[] = [];
    const pageErrors: { path: string; blocks: number[] }[] = [];
    const notePageErrors = (entry: ManifestFile) => {
      if (!entry.pageChecksumErrors) return;
      pageErrors.push({ path: entry.path, blocks: entry.pageChecksumErrors });
      log.warn(
        { code: ErrorCodes.PageChecksumMismatch.code, file: entry.path, blocks: entry.pageChecksumErrors },
        `page checksum mismatch in ${entry.path}, block(s) ${entry.pageChecksumErrors.join(', ')}: the data file is damaged on disk`,
      );
    };
    // Planned as they are fed to the copy (one small object per file in flight, not per file listed).
    async function* planned(items: AsyncIterable<PgdataEntry> | Iterable<PgdataEntry>): AsyncGenerator<PlannedFile> {
      for await (const f of items) yield planner(f);
    }
    try {
      const copyOne = async ({ file: f, decision, prior: priorFacts }: PlannedFile): Promise<void> => {
        // The prior entry itself is read only where it is used: to reference it, to compare
        // content with it, or to copy only the blocks changed since its block map.
        const priorFile =
          priorFacts && (decision !== 'copy' || copier.blockMapped(f))
            ? await prior!.entries.entry(priorFacts, f.path)
            : undefined;
        if (decision !== 'copy' && !priorFile) {
          // Another path's entry under the same fingerprint (prior-entries.ts): not unchanged after all.
          if (decision === 'reference') {
            referenced--;
            tracker.state.bytesTotal += f.size;
          }
          decision = 'copy';
        }
        if (decision === 'compare-checksum') {
          const same = await copier.sameContent(f, priorFile!);
          if (same === undefined) {
            tracker.add(f.size, 1); // dropped meanwhile: legal, WAL replay removes it anyway
            return;
          }
          if (same) {
            decision = 'reference';
            referenced++;
            // Nothing copied after all: this file's bytes leave the total (progress counts copied bytes).
            tracker.state.bytesTotal -= f.size;
            tracker.state.message = referencedMessage();
          }
        }
        if (decision === 'reference') {
          // The prior entry names the backup holding the bytes (and its chunks); a referenced file keeps pointing there.
          spool.add({ ...priorFile!, mtimeMs: f.mtimeMs, mode: f.mode });
          tracker.add(0, 1);
          return;
        }
        // Stored intact by the interrupted run this one continues, and unchanged since: taken over.
        // Never pg_control: on a standby this run's own copy, taken last, says where the backup ends.
        const journaled = f.path === PG_CONTROL ? undefined : point?.entries.get(f.path);
        let resumed = resumeDecision(f, journaled, base.checksumDelta);
        if (resumed === 'compare') resumed = (await copier.sameContent(f, journaled!.file)) ? 'reuse' : 'copy';
        if (resumed === 'reuse') {
          const entry = { ...journaled!.file, mtimeMs: f.mtimeMs, mode: f.mode };
          spool.add(entry);
          taken.push(entry);
          notePageErrors(entry);
          tracker.state.bytesTotal -= f.size;
          tracker.add(0, 1);
          return;
        }
        const entry = await copier.copy(f, priorFile);
        if (entry) {
          spool.add(entry);
          journal.add(entry);
          notePageErrors(entry);
        }
        tracker.add(0, 1);
      };
      // Fed lazily, a few files per copy slot ahead (not a promise per file up front: ~1 KB each,
      // 100 MB at 100k files), largest first (listing-spool.ts: so the threads finish together).
      // The first failure stops everything not yet started; running tasks finish before we go on.
      const settle = (items: AsyncIterable<PgdataEntry> | Iterable<PgdataEntry>) =>
        forEachLimit(planned(items), copier.feedLimit, (p) =>
          copyOne(p).catch((err: unknown) => {
            copier.pool.cancel(err);
            throw err;
          }),
        );
      await settle(listed.files());
      await settle(control ? [control] : []);
    } finally {
      await copier.pool.close();
    }
    opts.signal?.throwIfAborted();
    // Objects were fsynced one by one; their directories once here, before the manifest declares them complete.
    await opts.repo.syncKeys(copier.written);
    // Everything copied is in the journal before the WAL wait: a backup interrupted there is continued with no copy.
    await journal.flush();
    if (point) tracker.state.message = `continued ${point.label}: ${taken.length} stored file(s) taken over`;
    completed = true;
    return { listing, entries: spool, taken, pageErrors, pacedBytes: copier.pool.pacedBytes };
  } finally {
    await listed.close();
    if (!completed) await files?.close();
  }
}

/** What pg_backup_stop returned, and the WAL segments the backup needs. */
interface StoppedBackup {
  stopTime: Date;
  stopLsn: Lsn;
  labelInfo: ReturnType<typeof parseBackupLabel>;
  labelFile: string;
  tablespaceMap: string | undefined;
  segments: WalSegmentName[];
}

/**
 * pg_backup_stop: returns backup_label and (on a primary) forces a switch to a new segment, so
 * the last segment the backup needs becomes ready for archiving.
 */
async function stopBackup(
  opts: BackupOptions,
  client: PgClient,
  facts: ClusterFacts,
  label: string,
  tracker: ProgressTracker,
): Promise<StoppedBackup> {
  tracker.phase('pg_backup_stop');
  // wait_for_archive=false: we wait ourselves, against the repository, with a timeout and a clear error.
  const stopSql =
    facts.major >= 15
      ? 'SELECT lsn::text AS lsn, labelfile, spcmapfile FROM pg_backup_stop(false)'
      : 'SELECT lsn::text AS lsn, labelfile, spcmapfile FROM pg_stop_backup(false, false)';
  const stop = (await client.query(stopSql)).rows[0];
  const stopTime = new Date();
  const stopLsn = Lsn.parse(stop.lsn);
  const labelInfo = parseBackupLabel(stop.labelfile);
  const segments = WalSegmentName.range(
    labelInfo.startTimeline,
    labelInfo.startLsn,
    lastNeededLsn(stopLsn, facts.walSegmentSize),
    facts.walSegmentSize,
  );
  opts.log.info(
    { label, stopLsn: stopLsn.toString(), walStart: String(segments[0]), walStop: String(segments.at(-1)) },
    'backup copy done, waiting for WAL',
  );
  return {
    stopTime,
    stopLsn,
    labelInfo,
    labelFile: stop.labelfile,
    tablespaceMap: stop.spcmapfile || undefined,
    segments,
  };
}

/** Waits until every segment from start to stop LSN is in the repository: proof that the backup is restorable, not just copied. */
async function waitForWal(
  opts: BackupOptions,
  facts: ClusterFacts,
  label: string,
  stop: StoppedBackup,
  tracker: ProgressTracker,
): Promise<void> {
  const standby = facts.inRecovery;
  tracker.phase('wait-wal', `waiting for ${stop.segments.length} WAL segment(s) in the repository`);
  const deadline = Date.now() + opts.archiveTimeoutMs;
  // The last segment is normally archived within ~100 ms of pg_backup_stop: poll fast, then back off.
  let pollMs = 20;
  // A standby cannot finish the segment it is receiving: its primary must (see the header).
  const switchLsn = lastNeededLsn(stop.stopLsn, facts.walSegmentSize);
  let switchAskedAt = -Infinity;
  for (const seg of stop.segments) {
    // In every repository (with --repo2 both must hold it for the backup to be restorable from either).
    while (!(await opts.repo.isWalArchived(opts.cluster, seg.toString()))) {
      opts.signal?.throwIfAborted();
      if (standby && opts.requestWalSwitch && Date.now() - switchAskedAt >= WAL_SWITCH_REPEAT_MS) {
        opts.requestWalSwitch(switchLsn);
        switchAskedAt = Date.now();
      }
      if (Date.now() > deadline) {
        const why = standby
          ? " (a standby backup: the primary must finish and archive it; is the primary's agent connected, does the primary archive?)"
          : '';
        throw new PgfleetError(
          'WalArchiveTimeout',
          `WAL segment ${seg} needed by backup ${label} did not reach the repository within ${Math.round(opts.archiveTimeoutMs / 1000)} s${why}`,
        );
      }
      await sleep(pollMs);
      pollMs = Math.min(250, Math.round(pollMs * 1.5));
    }
  }
}

/**
 * Makes the WAL the backup needs durable before its manifest says the backup is restorable: the
 * segments from start to stop LSN (waitForWal found them by a listing, and whoever archived them
 * may have died before its directory fsync), with the backup history file and the timeline's
 * history when they are archived (restore does not need the first; the second is found again by
 * its own push otherwise).
 */
async function syncBackupWal(
  opts: BackupOptions,
  label: string,
  stop: StoppedBackup,
  segmentSize: number,
): Promise<void> {
  const segments = stop.segments.map(String);
  const { startLsn, startTimeline } = stop.labelInfo;
  const first = stop.segments[0]!;
  const backupFile = `${first}.${startLsn.segmentOffset(segmentSize).toString(16).toUpperCase().padStart(8, '0')}.backup`;
  const history = startTimeline > 1 ? [`${startTimeline.toString(16).toUpperCase().padStart(8, '0')}.history`] : [];
  const lacking = await opts.repo.syncWal(opts.cluster, [...segments, backupFile, ...history]);
  const lost = lacking.filter((n) => segments.includes(n));
  if (lost.length > 0) {
    throw new PgfleetError(
      'WalNotInRepository',
      `WAL segment(s) ${lost.join(', ')} needed by backup ${label} vanished from the repository after it was archived`,
    );
  }
}

/** The manifest's head: everything but its entries, which are streamed from `copied.entries` (`files` marks their place). */
function backupManifest(
  opts: BackupOptions,
  facts: ClusterFacts,
  source: BackupSource,
  label: string,
  base: BackupBase,
  startTime: Date,
  copied: CopiedPgdata,
  stop: StoppedBackup,
): ManifestHead & { files: ManifestFile[] } {
  const { entries, listing } = copied;
  return {
    // Format 2 only when it must be: agents that read format 1 still restore the rest.
    format: entries.changedBlocks ? 2 : 1,
    label,
    cluster: opts.cluster,
    type: base.type,
    ...(base.prior ? { priorLabel: base.prior.head.label } : {}),
    systemIdentifier: facts.systemIdentifier,
    pgVersionNum: facts.versionNum,
    walSegmentSize: facts.walSegmentSize,
    timeline: stop.labelInfo.startTimeline,
    startLsn: stop.labelInfo.startLsn.toString(),
    stopLsn: stop.stopLsn.toString(),
    startTime: startTime.toISOString(),
    stopTime: stop.stopTime.toISOString(),
    walStart: stop.segments[0]!.toString(),
    walStop: stop.segments.at(-1)!.toString(),
    backupLabel: stop.labelFile,
    ...(stop.tablespaceMap ? { tablespaceMap: stop.tablespaceMap } : {}),
    directories: listing.directories,
    links: listing.links,
    files: [],
    sizeBytes: entries.sizeBytes,
    storedBytes: entries.storedBytes,
    agentVersion: `${AGENT_VERSION} (${hostname()})`,
    ...compressLevelEntry(opts),
    source,
  };
}

/** The manifest's compressLevel: the level the codec compressed with, explicit or its default. */
function compressLevelEntry(opts: BackupOptions): { compressLevel?: number } {
  const level = compressLevel(opts.codec, opts.level);
  return level === undefined ? {} : { compressLevel: level };
}

/** The summary that stays on the job record (the last progress message: `pgfleet job <id>` shows it) and the log line. */
function reportBackupDone(
  opts: BackupOptions,
  manifest: ManifestHead,
  base: BackupBase,
  source: BackupSource,
  copiedPgdata: CopiedPgdata,
  tracker: ProgressTracker,
): void {
  const { label } = manifest;
  const { prior } = base;
  const { taken, entries } = copiedPgdata;
  const takenBytes = taken.reduce((s, f) => s + f.size, 0);
  // Every entry of this backup's own is copied, or taken over from the interrupted run it continues.
  const copied = entries.own - taken.length;
  const copiedBytes = entries.ownBytes - takenBytes;
  const summary = [`${copied} file(s) copied (${copiedBytes} bytes)`];
  if (taken.length > 0)
    summary.push(`${taken.length} file(s) (${takenBytes} bytes) taken over from the interrupted run of ${label}`);
  if (prior) summary.push(`${entries.count - entries.own} unchanged file(s) referenced from ${prior.head.label}`);
  // Referenced files carry the page errors found when their bytes were read.
  const allPageErrors = [...copiedPgdata.pageErrors, ...entries.carriedPageErrors];
  if (allPageErrors.length > 0) summary.push(describePageErrors(allPageErrors));
  tracker.phase('done', summary.join('; '));
  opts.log.info(
    {
      label,
      type: base.type,
      from: source.role,
      files: entries.count,
      copied,
      copiedBytes,
      takenOver: taken.length,
      takenOverBytes: takenBytes,
      bytes: manifest.sizeBytes,
      stored: manifest.storedBytes,
      pageChecksumErrors: allPageErrors.length,
      ...(opts.rateLimit ? { pacedBytes: copiedPgdata.pacedBytes, maxRate: opts.rateLimit.bytesPerSecond } : {}),
    },
    'backup complete',
  );
}

/**
 * After a failure: the manifest first (with two repositories it may have reached one of them
 * before the other failed, and a manifest is what makes a backup look complete), then the bytes,
 * best effort: a repository that is down must not hide the error that ended the backup.
 */
async function removeUnfinishedBackup(opts: BackupOptions, label: string): Promise<void> {
  const { repo, log } = opts;
  await repo
    .deleteBackupManifest(opts.cluster, label)
    .catch((err: unknown) =>
      log.warn({ err: (err as Error).message }, `could not remove the manifest of the unfinished backup ${label}`),
    );
  try {
    await repo.deleteBackupFiles(opts.cluster, label, await repo.backupObjects(opts.cluster, label));
  } catch (err) {
    log.warn(
      { err: (err as Error).message },
      `files of the unfinished backup ${label} were left in the repository (no manifest: never listed or restored)`,
    );
  }
}

/** Whether two backups were taken from the same data directory (older manifests: on the primary, host unknown). */
function sameSource(prior: BackupSource | undefined, now: BackupSource): boolean {
  if (!prior) return now.role === 'primary';
  return prior.host === now.host && prior.pgdata === now.pgdata;
}

interface PlannedFile {
  file: PgdataEntry;
  decision: FileDecision;
  /** The prior entry's facts in the index (prior-entries.ts); the entry is read when it is used. */
  prior: PriorFacts | undefined;
}

/** Decides for a file whether to copy it or reference it from the prior backup (see prior.ts). */
function copyPlanner(prior: PriorManifest | undefined, checksumDelta: boolean): (file: PgdataEntry) => PlannedFile {
  if (!prior) return (file) => ({ file, decision: 'copy', prior: undefined });
  const ctx = { priorStartMs: Date.parse(prior.head.startTime), nowMs: Date.now(), checksumDelta };
  return (file) => {
    const p = prior.entries.find(file.path);
    return { file, decision: decideFile(file, p, ctx), prior: p };
  };
}

/** Errors reading a prior block map after which a file is copied whole instead of failing the backup. */
const PRIOR_MAP_ERRORS = new Set(['BlockMapInvalid', 'RepoFileMissing', 'RepoChecksumMismatch']);

/** Relation files smaller than this are copied whole without a block map (its object would cost more than it saves). */
export const DEFAULT_BLOCK_MIN_BYTES = 256 << 10;

/** Files larger than this are stored as independently compressed chunks of this size (page-aligned). */
export const DEFAULT_CHUNK_BYTES = 64 << 20;

/**
 * Copies PGDATA files into the repository through a pool of worker threads (copy/pool.ts):
 * read, content sha256, page checksums, compression, stored sha256 and the write happen in one
 * pass in a worker; large files are split into chunks that run on several threads at once.
 */
export class FileCopier {
  readonly pool: CopyPool;
  /**
   * One key written per repository directory, for the directory fsyncs before the manifest (one
   * per directory: a key per file would be a string per file held to the end).
   */
  private readonly writtenDirs = new Map<string, string>();

  /** Keys standing for every directory written into (Repository.syncKeys). */
  get written(): string[] {
    return [...this.writtenDirs.values()];
  }

  private wrote(key: string): void {
    const dir = key.slice(0, key.lastIndexOf('/'));
    if (!this.writtenDirs.has(dir)) this.writtenDirs.set(dir, key);
  }
  private readonly chunkBytes: number;
  /**
   * Files in the copy at once: every thread's slots full (CopyPool runs 2 per thread) with as many
   * queued behind them, so no thread waits for the next file to be planned.
   */
  readonly feedLimit: number;

  constructor(
    private readonly opts: BackupOptions,
    private readonly label: string,
    private readonly startLsn: LsnHalves | undefined,
    private readonly tracker: ProgressTracker,
  ) {
    this.pool = new CopyPool(opts.repo, {
      threads: opts.workers,
      ...(opts.signal ? { signal: opts.signal } : {}),
      ...(opts.rateLimit ? { rateLimit: opts.rateLimit } : {}),
    });
    this.chunkBytes = Math.max(BLCKSZ, Math.floor((opts.chunkBytes ?? DEFAULT_CHUNK_BYTES) / BLCKSZ) * BLCKSZ);
    this.feedLimit = Math.max(1, opts.workers) * 4;
  }

  /** Whether `f` gets a block map: a main-fork relation segment of at least the minimum size (see docs/block-incremental.md for why not the other forks). */
  blockMapped(f: PgdataEntry): boolean {
    return (
      this.opts.blockIncremental !== false &&
      f.size >= (this.opts.blockMinBytes ?? DEFAULT_BLOCK_MIN_BYTES) &&
      relationSegmentNumber(f.path) !== undefined &&
      !/_(?:fsm|vm|init)(?:\.\d+)?$/.test(f.path)
    );
  }

  /**
   * The manifest entry, or undefined when the file was dropped while the backup ran (legal: WAL
   * replay removes it anyway). A relation file whose prior entry has a block map is copied block
   * by block (only changed blocks stored); other block-mapped files are stored whole with a map.
   */
  async copy(f: PgdataEntry, prior?: ManifestFile): Promise<ManifestFile | undefined> {
    if (!this.blockMapped(f)) return this.copyWhole(f, false);
    if (prior?.blocks) {
      try {
        const priorMap = await this.opts.repo.readBlockMap(this.opts.cluster, prior);
        // Re-base: a file whose restore already decodes half a file's worth of incrementals'
        // content or more is stored whole again, so no restore of a later link decodes more
        // than about that on top of the base (docs/block-incremental.md, "Re-base").
        const load = incrementalLoad(priorMap);
        if (load < REBASE_LOAD) return await this.copyChangedBlocks(f, priorMap);
        this.opts.log.debug(
          { file: f.path, prior: prior.backup, load: Math.round(load * 100) / 100 },
          're-base: copying the file whole with a new block map',
        );
      } catch (err) {
        // The prior map cannot be read (damaged, or gone with a repository fault): this file is
        // copied whole with a new map, so the backup and the next ones do not depend on it.
        if (!(err instanceof PgfleetError) || !PRIOR_MAP_ERRORS.has(err.errorName)) throw err;
        this.opts.log.warn(
          { file: f.path, prior: prior.backup, err: err.message },
          'the prior block map cannot be read: copying the file whole',
        );
      }
    }
    const entry = await this.copyWhole(f, true);
    if (!entry) return undefined;
    const { sums, ...rest } = entry;
    // A chunk cut short in the middle (the file was truncated and extended again while it was
    // read) leaves a hole no part covers: no map, the next backup copies the file whole again.
    const irregular = rest.chunks?.some(
      (c, i, all) => i < all.length - 1 && all[i + 1]!.size > 0 && c.size !== this.chunkBytes,
    );
    if (irregular || sums!.length !== blockCount(rest.size) * BLOCK_SUM_BYTES) return rest;
    const parts: BlockMapPart[] = rest.chunks
      ? rest.chunks.map((c, i) => ({
          backup: this.label,
          object: 'chunk' as const,
          chunk: i,
          codec: rest.codec,
          size: c.size,
          sha256: c.sha256,
        }))
      : [{ backup: this.label, object: 'file', codec: rest.codec, size: rest.size, sha256: rest.sha256 }];
    const partBlocks = rest.chunks ? rest.chunks.map((c) => blockCount(c.size)) : [blockCount(rest.size)];
    const map = wholeFileMap(rest.size, parts, partBlocks, sums!);
    return { ...rest, blocks: { map: await this.storeMap(f.path, map) } };
  }

  /** Stores a block map; its figures for the manifest entry. */
  private async storeMap(path: string, map: BlockMap): Promise<ObjectFigures> {
    const { repo, codec, cluster } = this.opts;
    const key = repo.blockMapKey(cluster, this.label, path, codec);
    const r = await repo.objects.storeStream(key, Readable.from([map.encode()]), codec, {
      deferDirSync: true,
      ...(this.opts.level === undefined ? {} : { level: this.opts.level }),
    });
    this.wrote(key);
    return r;
  }

  /** Block-incremental: the file's blocks compared with the prior map, the changed ones stored, a merged map written. */
  private async copyChangedBlocks(f: PgdataEntry, prior: BlockMap): Promise<ManifestFile | undefined> {
    const { repo, codec, cluster } = this.opts;
    const key = repo.blockDataKey(cluster, this.label, f.path, codec);
    const segment = this.startLsn ? relationSegmentNumber(f.path) : undefined;
    // XOR deltas need the prior versions of the changed blocks, read block by block from the
    // prior map's parts: parts of block codecs, local files or ranged reads (S3); a gzip part or
    // a gzip backup stores whole blocks.
    const deltas =
      this.opts.blockDeltas !== false && repo.objects.canReadBlocks([codec, ...prior.parts.map((p) => p.codec)])
        ? {
            deltas: {
              parts: prior.parts.map((part) => ({
                key: repo.blockPartKey(cluster, f.path, part),
                codec: part.codec,
                sha256: part.sha256,
                size: part.size,
              })),
              part: prior.part,
              index: prior.index,
              layers: [...prior.deltas],
              size: prior.size,
            },
          }
        : {};
    const r = await this.pool.run({
      kind: 'backup-blocks',
      src: join(this.opts.pgdata, f.path),
      key,
      codec,
      ...(this.opts.level === undefined ? {} : { level: this.opts.level }),
      ...(segment === undefined
        ? {}
        : { page: { firstBlock: segment * RELSEG_SIZE, hi: this.startLsn!.hi, lo: this.startLsn!.lo } }),
      prior: { sums: prior.sums, blocks: prior.blocks },
      checksum: prior.checksum,
      ...deltas,
    });
    this.tracker.add(f.size);
    if (r.missing) return undefined;
    this.wrote(key);
    const own: BlockMapPart = {
      backup: this.label,
      object: 'blocks',
      codec,
      size: r.data.size,
      sha256: r.data.sha256,
    };
    if (r.priorMismatches)
      this.opts.log.warn(
        { file: f.path, prior: prior.parts.map((p) => p.backup), blocks: r.priorMismatches },
        'blocks rebuilt from the prior block map do not have its checksums: stored whole',
      );
    const map = mergeBlockMap(prior, own, r.size, r.changed, r.sums, r.delta);
    const mapFigures = await this.storeMap(f.path, map);
    const from = map.backupsOtherThan(this.label);
    const entry: ManifestFile = {
      path: f.path,
      size: r.size,
      mtimeMs: f.mtimeMs,
      mode: f.mode,
      sha256: r.sha256,
      storedSize: r.data.storedSize + mapFigures.storedSize,
      storedSha256: chunkedContentDigest([r.data.storedSha256, mapFigures.storedSha256]),
      codec,
      backup: this.label,
      blocks: { map: mapFigures, changed: { ...r.data, count: r.changed.length }, ...(from.length ? { from } : {}) },
    };
    if (r.pageErrors) entry.pageChecksumErrors = r.pageErrors;
    return entry;
  }

  /** A whole file (in chunks when large), with its per-block checksums when `sums`. */
  private async copyWhole(f: PgdataEntry, sums: boolean): Promise<(ManifestFile & { sums?: Uint8Array }) | undefined> {
    const { repo, codec, cluster } = this.opts;
    const src = join(this.opts.pgdata, f.path);
    const segment = this.startLsn ? relationSegmentNumber(f.path) : undefined;
    const page = (offset: number) =>
      segment === undefined
        ? {}
        : {
            page: { firstBlock: segment * RELSEG_SIZE + offset / BLCKSZ, hi: this.startLsn!.hi, lo: this.startLsn!.lo },
          };
    const level = this.opts.level === undefined ? {} : { level: this.opts.level };
    if (f.size <= this.chunkBytes) {
      const key = repo.backupFileKey(cluster, this.label, f.path, codec);
      const r = await this.pool.run({
        kind: 'backup',
        src,
        key,
        codec,
        ...level,
        offset: 0,
        ...page(0),
        ...(sums ? { sums } : {}),
      });
      this.tracker.add(f.size);
      if (r.missing) return undefined;
      this.wrote(key);
      const entry: ManifestFile & { sums?: Uint8Array } = {
        path: f.path,
        size: r.size,
        mtimeMs: f.mtimeMs,
        mode: f.mode,
        sha256: r.sha256,
        storedSize: r.storedSize,
        storedSha256: r.storedSha256,
        codec,
        backup: this.label,
      };
      if (r.pageErrors) entry.pageChecksumErrors = r.pageErrors;
      if (r.sums) entry.sums = r.sums;
      return entry;
    }
    const n = Math.ceil(f.size / this.chunkBytes);
    const tasks = Array.from({ length: n }, (_, i) => {
      const offset = i * this.chunkBytes;
      const key = repo.backupChunkKey(cluster, this.label, f.path, i, codec);
      // The last chunk reads to the end of the file, so a relation extended meanwhile is copied like an unchunked one.
      return {
        kind: 'backup' as const,
        src,
        key,
        codec,
        ...level,
        offset,
        ...(i < n - 1 ? { length: this.chunkBytes } : {}),
        ...page(offset),
        ...(sums ? { sums } : {}),
      };
    });
    const results = await settleAll(
      tasks.map((t, i) =>
        this.pool.run(t).then((r) => {
          this.tracker.add(i < n - 1 ? this.chunkBytes : f.size - t.offset);
          return r;
        }),
      ),
    );
    if (results.some((r) => r.missing)) return undefined;
    for (const t of tasks) this.wrote(t.key);
    const chunks: ManifestChunk[] = results.map((r, i) => ({
      offset: tasks[i]!.offset,
      size: r.size,
      sha256: r.sha256,
      storedSize: r.storedSize,
      storedSha256: r.storedSha256,
      key: tasks[i]!.key,
    }));
    const entry: ManifestFile = {
      path: f.path,
      // A file truncated while it was read ends at its last non-empty chunk.
      size: chunks.reduce((s, c) => (c.size > 0 ? Math.max(s, c.offset + c.size) : s), 0),
      mtimeMs: f.mtimeMs,
      mode: f.mode,
      sha256: chunkedContentDigest(chunks.map((c) => c.sha256)),
      storedSize: chunks.reduce((s, c) => s + c.storedSize, 0),
      storedSha256: chunkedContentDigest(chunks.map((c) => c.storedSha256)),
      codec,
      backup: this.label,
      chunks,
    };
    const bad = results.flatMap((r) => r.pageErrors ?? []);
    if (bad.length > 0) entry.pageChecksumErrors = bad.sort((a, b) => a - b);
    if (sums) {
      // Empty chunks past a file truncated while it was read hold no blocks.
      const all = results.filter((r) => r.size > 0).map((r) => r.sums!);
      const joined = new Uint8Array(all.reduce((n, a) => n + a.length, 0));
      let at = 0;
      for (const a of all) {
        joined.set(a, at);
        at += a.length;
      }
      return { ...entry, sums: joined };
    }
    return entry;
  }

  /** Checksum mode: does the file still hold the prior entry's content? undefined when it is gone. */
  async sameContent(f: PgdataEntry, prior: ManifestFile): Promise<boolean | undefined> {
    const r = await this.pool.run({
      kind: 'hash',
      path: join(this.opts.pgdata, f.path),
      ...(prior.chunks ? { ranges: prior.chunks.map((c) => ({ offset: c.offset, size: c.size })) } : {}),
    });
    if (r.missing) return undefined;
    const digest = prior.chunks ? chunkedContentDigest(r.sha256s) : r.sha256s[0];
    return r.size === prior.size && digest === prior.sha256;
  }
}

/** "PGF-3008 page checksum errors: base/5/16384 block(s) 1, 7; ..." (bounded: a badly damaged cluster must not flood the job record). */
export function describePageErrors(errors: readonly { path: string; blocks: readonly number[] }[]): string {
  const shown = errors
    .slice(0, 10)
    .map(
      (e) =>
        `${e.path} block(s) ${e.blocks.slice(0, 20).join(', ')}${e.blocks.length > 20 ? ` and ${e.blocks.length - 20} more` : ''}`,
    );
  const more = errors.length > 10 ? `; and ${errors.length - 10} more file(s)` : '';
  return `${ErrorCodes.PageChecksumMismatch.code} page checksum errors: ${shown.join('; ')}${more}`;
}

/**
 * A label (second resolution, like pgBackRest's) no other backup of the cluster uses: two backups
 * started within the same second would otherwise share a directory and the second manifest would
 * replace the first. Waits for the next second a few times, then refuses rather than overwrite.
 */
export async function freeLabel(
  repo: Repository,
  cluster: string,
  type: BackupKind,
): Promise<{ startTime: Date; label: string }> {
  for (let attempt = 0; ; attempt++) {
    const startTime = new Date();
    const label = backupLabel(startTime, type);
    if (!(await repo.labelInUse(cluster, label))) return { startTime, label };
    if (attempt >= 4) {
      throw new PgfleetError(
        'BackupLabelInUse',
        `backup label ${label} of cluster ${cluster} is already used in the repository (has the clock gone back?); nothing was overwritten`,
      );
    }
    await sleep(1000 - (Date.now() % 1000) + 5);
  }
}
