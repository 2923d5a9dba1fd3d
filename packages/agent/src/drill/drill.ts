/**
 * Restore drills (docs/drills.md): prove that a backup restores, and how long it takes.
 *
 *   capture   (no target and no source counts given) count the source's rows and create the
 *             restore point the drill recovers to (capture.ts);
 *   restore   the backup into <scratch>/pgfleet-drill-<job>/data with restore.ts (every file
 *             checked against its sha256), recovery to the target with action promote;
 *   start     a throwaway PostgreSQL on it (scratch-postgres.ts: own socket, archive_mode off);
 *   recovery  wait until it is consistent and promoted; restore + recovery time = the RTO;
 *   amcheck   verify_heapam on every heap relation and bt_index_check on every btree index of
 *             every database (the amcheck extension is created in the copy, never the source);
 *   counts    the rows of every table the source counted, compared with the source's counts
 *             (exactly when change_bound is 0, else the sum of differences within the bound);
 *   done      and, whatever happened, the server is stopped and the scratch directory removed
 *             (or, asked to keep it, stopped cleanly and the directory marked kept and reported).
 *
 * Drill directories an agent left behind (killed mid-drill) are removed, their server stopped,
 * before each drill and when the agent starts (cleanScratchArea).
 *
 * A drill never writes to the repository: recovery fetches WAL with the read-only wal-fetch and
 * the copy does not archive. Any failed stage or check ends the job as failed (PGF-5006, or the
 * stage's own error code) and still carries the DrillResult with the stage and the reasons, never
 * none: a failure names what happened, and when the throwaway server had started, its log's
 * FATAL/PANIC/ERROR lines and last lines are read before the teardown removes them and kept in
 * the result (the first FATAL or PANIC quoted as a reason: "recovery failed: FATAL: requested
 * timeline 2 is not a child of this server's history").
 */
import { mkdir, mkdtemp, rm, statfs } from 'node:fs/promises';
import { Writable } from 'node:stream';
import { tmpdir } from 'node:os';
import { isAbsolute, join } from 'node:path';
import type { MessageInitShape } from '@bufbuild/protobuf';
import { timestampFromDate } from '@bufbuild/protobuf/wkt';
import { asPgfleetError, PgfleetError, type ErrorName, type Logger } from '@pgfleet/core';
import { Lsn, recoveryMayLackWal, WalSegmentName, type PgConnectionOptions, type ServerLogExcerpt } from '@pgfleet/pg';
import type { DrillResultSchema, RecoveryTarget } from '@pgfleet/proto';
import type { BackupSummary, CountedManifestHead, Repository } from '@pgfleet/storage';
import {
  captureSourceCounts,
  COUNTED_TABLES_SQL,
  countRows,
  listDatabases,
  quoteIdent,
  requireDrillVersion,
  type CountedTableRow,
  type PgClient,
  type SourceCountsInit,
} from './capture.js';
import type { ProgressSink } from '../progress.js';
import type { RateLimiter } from '../copy/rate-limit.js';
import { runRestore, type TargetSpec } from '../restore/restore.js';
import {
  cleanDrillLeftovers,
  DRILL_DIR_PREFIX,
  markDrillKept,
  ScratchPostgres,
  waitForProcessesUsing,
  writeDrillOwner,
} from './scratch-postgres.js';
import { findTargetLsn } from '../restore/target-resolver.js';

export type DrillResultInit = MessageInitShape<typeof DrillResultSchema>;

export interface DrillOptions {
  jobId: string;
  cluster: string;
  repo: Repository;
  /** restore_command's wal-fetch options naming the same repositories (see restore.ts). */
  walFetchArgs: readonly string[];
  /** The cluster's own PostgreSQL (used only to capture source counts). */
  pg: PgConnectionOptions;
  backupLabel?: string;
  /** DrillJob.target as the restore code reads it (undefined: the source's restore point). */
  target?: { spec: TargetSpec; inclusive?: boolean; proto: RecoveryTarget };
  /** Counts captured by the cluster's agent (a drill on another host); undefined: capture here. */
  source?: SourceCountsInit;
  /** Parent of the scratch directory. */
  scratchDir: string;
  pgBinDir?: string;
  /** Keep the scratch directory for inspection (DrillJob.keep): clean shutdown, marked kept, reported in keptDir. */
  keep?: boolean;
  /** The timeline the cluster's primary writes (DrillJob.current_timeline): the restore follows its lineage. */
  currentTimeline?: number;
  workers: number;
  /** The agent's --max-rate bucket: a drill's restore is a restore (its RTO is what this agent would give). */
  rateLimit?: RateLimiter;
  archiveTimeoutMs: number;
  log: Logger;
  progress: ProgressSink;
  signal?: AbortSignal;
}

/** A drill that ran but did not prove the backup: the job fails and still reports its DrillResult. */
export class DrillFailure extends PgfleetError {
  constructor(
    name: ErrorName,
    message: string,
    readonly result: DrillResultInit,
    cause?: unknown,
  ) {
    super(name, message, cause === undefined ? undefined : { cause });
  }
}

/** Findings kept per relation and per drill, so a badly damaged cluster does not flood the job record. */
const MAX_FINDINGS_PER_RELATION = 20;
const MAX_FINDINGS = 500;
const MAX_DIFFS = 200;

export const restorePointName = (jobId: string): string => `pgfleet-drill-${jobId}`;

/** Drill directories of the drills running in this process: never taken for leftovers. */
const activeDrillDirs = new Set<string>();

/**
 * Removes what earlier drills left in `scratchRoot` (see cleanDrillLeftovers): called when the
 * agent starts and before each drill. Never throws; returns the directories removed.
 */
export async function cleanScratchArea(scratchRoot: string, log: Logger): Promise<string[]> {
  try {
    return await cleanDrillLeftovers(scratchRoot, { log, active: activeDrillDirs });
  } catch (err) {
    log.warn({ dir: scratchRoot, err: (err as Error).message }, 'could not look for drill directories left behind');
    return [];
  }
}

interface AmcheckFindingInit {
  database: string;
  relation: string;
  check: string;
  message: string;
}

/** One table whose counts differ; -1 rows: the table is missing on that side. */
export interface TableCountDiffInit {
  database: string;
  schema: string;
  table: string;
  sourceRows: bigint;
  restoredRows: bigint;
}

/** The result being built, with the lists the steps append to. */
export type DrillResultDraft = DrillResultInit & {
  restoreSeconds: number;
  recoverySeconds: number;
  rtoSeconds: number;
  reasons: string[];
  amcheckFindings: AmcheckFindingInit[];
  countDiffs: TableCountDiffInit[];
};

/**
 * What the steps of one drill share: the result so far and what the teardown must undo. A
 * recover-table job (recover/recover-table.ts) runs the same scratch steps (prepareScratch,
 * restoreCopy, startAndRecover, tearDown) on a run of its own, reading the timings from `r`.
 */
export interface DrillRun {
  readonly o: DrillOptions;
  readonly r: DrillResultDraft;
  /** <scratch>/pgfleet-drill-<job>: the restored copy, its server's files and the owner mark. */
  readonly drillDir: string;
  /** The throwaway server's socket directory: drillDir, or a short one under tmpdir. */
  socketDir?: string;
  server?: ScratchPostgres;
  /** Set when the checks failed and r.reasons already says why (one reason per problem). */
  reasonsRecorded: boolean;
  /** Enters a stage: the result says where the drill is, the log and the job's progress say what it does. */
  stage(s: string, message: string): void;
}

/** A run's empty result: what the steps fill in. */
function emptyDraft(o: Pick<DrillOptions, 'target'>): DrillResultDraft {
  return {
    backupLabel: '',
    ok: false,
    stage: 'capture',
    reasons: [],
    restoreSeconds: 0,
    recoverySeconds: 0,
    rtoSeconds: 0,
    amcheckFindings: [],
    countDiffs: [],
    ...(o.target ? { target: o.target.proto } : {}),
  };
}

/** A run of the scratch steps for job `o.jobId`: its directory is <scratch>/pgfleet-drill-<job> (cleanScratchArea knows it). */
export function newDrillRun(o: DrillOptions): DrillRun {
  const r = emptyDraft(o);
  return {
    o,
    r,
    drillDir: join(o.scratchDir, `${DRILL_DIR_PREFIX}${o.jobId}`),
    reasonsRecorded: false,
    stage(s, message) {
      r.stage = s;
      o.log.info({ stage: s }, message);
      o.progress({ phase: s, bytesDone: 0, bytesTotal: 0, filesDone: 0, filesTotal: 0, message });
    },
  };
}

/** The target a drill recovers to, as the restore code and the result read it. */
export interface DrillTarget {
  spec: TargetSpec;
  inclusive?: boolean;
  proto: RecoveryTarget;
}

/** The stages of the module header in order; the teardown runs whatever happened. */
export async function runDrill(o: DrillOptions): Promise<DrillResultInit> {
  const run = newDrillRun(o);
  const r = run.r;
  try {
    requireAbsoluteScratch(o.scratchDir);
    const { source, target } = await captureSourceAndTarget(run);
    run.stage('restore', 'choosing the backup');
    const manifest = await chooseDrillBackup(o, target.spec, source);
    r.backupLabel = manifest.label;
    requireDrillVersion(manifest.pgVersionNum, `backup ${manifest.label}`);
    const pgdata = await prepareScratch(run, manifest);
    await restoreCopy(run, manifest, target, pgdata);
    const { server, major } = await startAndRecover(run, manifest, pgdata);
    const databases = await checkWithAmcheck(run, server, major);
    await compareCounts(run, server, databases, source);
    if (r.reasons.length > 0) {
      run.reasonsRecorded = true;
      throw new PgfleetError('DrillFailed', r.reasons.join('; '));
    }
    run.stage(
      'done',
      `drill passed: RTO ${r.rtoSeconds.toFixed(1)} s, ${r.relationsChecked ?? 0} relation(s) checked${r.countsCompared ? `, ${r.tablesCompared} table count(s) ${r.countsEqual ? 'equal' : 'within the change bound'}` : ''}`,
    );
    r.ok = true;
    return r;
  } catch (err) {
    throw await drillFailure(run, err);
  } finally {
    await tearDown(run);
  }
}

export function requireAbsoluteScratch(dir: string): void {
  if (!isAbsolute(dir))
    throw new PgfleetError('InvalidArgument', `the scratch directory '${dir}' is not an absolute path`);
}

/**
 * The source's counts and the target: with neither given, counts the source's rows and creates
 * the restore point the drill recovers to (capture.ts).
 */
async function captureSourceAndTarget(
  run: DrillRun,
): Promise<{ source: SourceCountsInit | undefined; target: DrillTarget }> {
  const { o, r } = run;
  let source = o.source;
  if (!o.target && !source) {
    run.stage('capture', 'counting rows on the source and creating the restore point');
    source = await captureSourceCounts({
      cluster: o.cluster,
      pg: o.pg,
      repo: o.repo,
      restorePoint: restorePointName(o.jobId),
      archiveTimeoutMs: o.archiveTimeoutMs,
      log: o.log,
      progress: o.progress,
      ...(o.signal ? { signal: o.signal } : {}),
    });
  }
  if (source) r.source = source;
  const target = o.target ?? {
    spec: { kind: 'name', name: source!.restorePoint } as TargetSpec,
    proto: { target: { case: 'name', value: source!.restorePoint } } as RecoveryTarget,
  };
  if (!o.target) r.target = target.proto;
  return { source, target };
}

/**
 * Makes the drill's scratch directory (after removing what earlier drills left and checking
 * there is room for the backup) and its socket directory; returns where PGDATA goes.
 */
export function prepareScratch(run: DrillRun, manifest: CountedManifestHead): Promise<string> {
  return prepareScratchFor(run, () => checkScratchSpace(run.o.scratchDir, manifest));
}

/** prepareScratch with the drill's own check of the room it needs (a dump drill's, dump-drill.ts). */
export async function prepareScratchFor(run: DrillRun, checkSpace: () => Promise<void>): Promise<string> {
  const { o, drillDir } = run;
  await mkdir(o.scratchDir, { recursive: true, mode: 0o700 }).catch((err: unknown) => {
    throw new PgfleetError(
      'InvalidConfig',
      `cannot create the drills' scratch directory ${o.scratchDir}: ${(err as Error).message}; point the agent's --scratch-dir at a directory its OS user can write`,
      { cause: err },
    );
  });
  await cleanScratchArea(o.scratchDir, o.log);
  await checkSpace();
  activeDrillDirs.add(drillDir);
  await mkdir(drillDir, { mode: 0o700 });
  // A unix socket path is limited to 107 bytes: fall back to a short directory under tmpdir.
  run.socketDir =
    join(drillDir, `.s.PGSQL.65535`).length < 100 ? drillDir : await mkdtemp(join(tmpdir(), 'pgfleet-sock-'));
  await writeDrillOwner(drillDir, run.socketDir === drillDir ? undefined : run.socketDir);
  return join(drillDir, 'data');
}

/** Restores the backup into `pgdata` with recovery to the target and action promote; times it. */
export async function restoreCopy(
  run: DrillRun,
  manifest: CountedManifestHead,
  target: DrillTarget,
  pgdata: string,
): Promise<void> {
  const { o, r } = run;
  run.stage('restore', `restoring backup ${manifest.label} into ${pgdata}`);
  const t0 = Date.now();
  const restored = await runRestore({
    cluster: o.cluster,
    repo: o.repo,
    walFetchArgs: o.walFetchArgs,
    backupLabel: manifest.label,
    ...(o.currentTimeline ? { currentTimeline: o.currentTimeline } : {}),
    targetDir: pgdata,
    target: target.spec,
    ...(target.inclusive !== undefined ? { inclusive: target.inclusive } : {}),
    action: 'promote',
    workers: o.workers,
    ...(o.rateLimit ? { rateLimit: o.rateLimit } : {}),
    ...(o.pgBinDir ? { pgBinDir: o.pgBinDir } : {}),
    log: o.log,
    progress: (p) => o.progress({ ...p, phase: `restore-${p.phase}` }),
    ...(o.signal ? { signal: o.signal } : {}),
  });
  r.restoreSeconds = (Date.now() - t0) / 1000;
  r.restoredBytes = BigInt(restored.bytes);
}

/**
 * Starts the throwaway PostgreSQL on the copy and waits until it is consistent and promoted;
 * restore + recovery time is the RTO. A recovery that stopped for want of WAL says which
 * segment the archive lacks.
 */
export async function startAndRecover(
  run: DrillRun,
  manifest: CountedManifestHead,
  pgdata: string,
): Promise<{ server: ScratchPostgres; major: number }> {
  const { o, r } = run;
  run.stage('start', 'starting PostgreSQL on the restored copy');
  const major = Math.floor(manifest.pgVersionNum / 10000);
  const server = new ScratchPostgres({
    pgdata,
    runDir: run.drillDir,
    socketDir: run.socketDir!,
    binDir: o.pgBinDir ?? `/usr/lib/postgresql/${major}/bin`,
    major,
    user: o.pg.user ?? 'postgres',
    jobId: o.jobId,
  });
  // Known to the teardown from here on: whatever happens next, it stops this server.
  run.server = server;
  await server.configure();
  const t1 = Date.now();
  await server.start();
  run.stage('recovery', 'replaying WAL to the target');
  let promoted;
  try {
    promoted = await server.waitPromoted(o.signal, () =>
      o.progress({
        phase: 'recovery',
        bytesDone: 0,
        bytesTotal: 0,
        filesDone: 0,
        filesTotal: 0,
        message: `consistent after ${((Date.now() - t1) / 1000).toFixed(1)} s, waiting for promotion`,
      }),
    );
  } catch (err) {
    if (o.signal?.aborted) throw err;
    // A segment not archived yet is no cause when PostgreSQL stopped for another reason (a timeline that does not fit).
    const missing = recoveryMayLackWal(await server.logExcerpt().catch(() => undefined))
      ? await missingWal(o, server, manifest)
      : undefined;
    throw new PgfleetError(
      missing?.code ?? 'DrillFailed',
      missing ? `${missing.message}; ${asPgfleetError(err).message}` : asPgfleetError(err).message,
      { cause: err },
    );
  }
  r.recoverySeconds = (Date.now() - t1) / 1000;
  r.rtoSeconds = r.restoreSeconds + r.recoverySeconds;
  r.recoveredLsn = promoted.recoveredLsn;
  if (promoted.recoveredTime) r.recoveredTime = timestampFromDate(promoted.recoveredTime);
  o.log.info(
    {
      restoreSeconds: r.restoreSeconds,
      recoverySeconds: r.recoverySeconds,
      consistentSeconds: promoted.consistentMs / 1000,
      recoveredLsn: r.recoveredLsn,
    },
    'restored copy promoted',
  );
  return { server, major };
}

/** amcheck on every database of the promoted copy; returns the databases. Findings become one reason. */
async function checkWithAmcheck(run: DrillRun, server: ScratchPostgres, major: number): Promise<string[]> {
  const { o, r } = run;
  run.stage(
    'amcheck',
    `promoted after ${r.recoverySeconds.toFixed(1)} s (RTO ${r.rtoSeconds.toFixed(1)} s): running amcheck`,
  );
  const databases = await withClient(server, 'postgres', listDatabases);
  for (const db of databases) {
    o.signal?.throwIfAborted();
    const checked = await withClient(server, db, (c) => amcheckDatabase(c, db, major, r.amcheckFindings));
    r.relationsChecked = (r.relationsChecked ?? 0) + checked;
  }
  r.databasesChecked = databases.length;
  if (r.amcheckFindings.length > 0)
    r.reasons.push(
      `amcheck found ${r.amcheckFindings.length} problem(s) in ${new Set(r.amcheckFindings.map((f) => `${f.database}.${f.relation}`)).size} relation(s)`,
    );
  return databases;
}

/** Compares the copy's row counts with the source's, when the drill recovered to the source's restore point. */
async function compareCounts(
  run: DrillRun,
  server: ScratchPostgres,
  databases: readonly string[],
  source: SourceCountsInit | undefined,
): Promise<void> {
  const { o, r } = run;
  run.stage(
    'counts',
    source && !o.target
      ? `comparing the row counts of ${source.tables.length} table(s)`
      : "row counts not compared: the target is not the source's restore point",
  );
  if (source && !o.target) {
    const compared = compareTableCounts(source, await countRestored(server, databases));
    r.countDiffs.push(...compared.diffs);
    r.countsCompared = true;
    r.tablesCompared = source.tables.length;
    r.countChangeBound = source.changeBound;
    r.countsEqual = compared.differing === 0;
    if (!compared.ok) r.reasons.push(compared.reason!);
  }
}

/**
 * The error a failed drill ends with: JobCancelled when it was cancelled, else a DrillFailure
 * carrying the result, with the server log's problems read before the teardown removes them.
 */
export async function drillFailure(run: DrillRun, err: unknown): Promise<PgfleetError> {
  const { o, r } = run;
  if (o.signal?.aborted) return new PgfleetError('JobCancelled', `drill cancelled in stage ${r.stage}`, { cause: err });
  const e = asPgfleetError(err);
  // Read before the teardown removes the log (or stops a server still writing to it).
  const log = run.server ? await run.server.logExcerpt().catch(() => undefined) : undefined;
  if (log) {
    r.postgresLogProblems = log.problems;
    r.postgresLogTail = log.tail;
  }
  const failure = failureReasons(r.stage!, e, log);
  if (!run.reasonsRecorded) r.reasons.push(...failure.reasons);
  o.log.warn({ stage: r.stage, code: e.code, reasons: r.reasons }, 'drill failed');
  return new DrillFailure(
    e.errorName,
    `drill of cluster ${o.cluster} failed in stage ${r.stage}: ${run.reasonsRecorded ? r.reasons.join('; ') : failure.summary}`,
    r,
    err,
  );
}

/**
 * Whatever happened: stops the server and removes the scratch directory, or, for a drill asked to
 * keep it that ran to an end, stops the server cleanly and marks the directory kept.
 */
export async function tearDown(run: DrillRun): Promise<void> {
  const { o, r, drillDir, server, socketDir } = run;
  // Kept only when the drill ran to an end: a cancelled one (agent stopping) is torn down.
  const keep = o.keep === true && !o.signal?.aborted && activeDrillDirs.has(drillDir);
  await server
    ?.stop(keep ? 'fast' : 'immediate')
    .catch((err: unknown) => o.log.warn({ err: (err as Error).message }, "could not stop the drill's PostgreSQL"));
  if (server) await waitForProcessesUsing(drillDir, 10_000);
  // r is what the caller gets (returned, or in the DrillFailure): keptDir is set here, after the stop.
  if (
    keep &&
    (await markDrillKept(drillDir, o.jobId).then(
      () => true,
      (err: unknown) => (
        o.log.warn(
          { err: (err as Error).message, dir: drillDir },
          "could not mark the drill's scratch directory kept: removing it",
        ),
        false
      ),
    ))
  ) {
    r.keptDir = drillDir;
    activeDrillDirs.delete(drillDir);
    o.log.info({ dir: drillDir }, 'drill directory kept for inspection: remove it when done (docs/drills.md)');
  }
  if (activeDrillDirs.has(drillDir)) {
    await rm(drillDir, { recursive: true, force: true, maxRetries: 3 }).catch((err: unknown) =>
      o.log.warn({ err: (err as Error).message, dir: drillDir }, "could not remove the drill's scratch directory"),
    );
    if (socketDir && socketDir !== drillDir) await rm(socketDir, { recursive: true, force: true }).catch(() => {});
    activeDrillDirs.delete(drillDir);
  }
}

/**
 * The reasons a failed stage adds, never empty: the first FATAL or PANIC of the server's log
 * when there is one (PostgreSQL's own words for why it stopped), then what the stage saw, with
 * the log's last ERROR or WARNING when nothing was fatal.
 */
export function failureReasons(
  stage: string,
  e: PgfleetError,
  log: ServerLogExcerpt | undefined,
): { reasons: string[]; summary: string } {
  const what = e.message.trim() || `${e.errorName} (${e.code}) without a message`;
  const fatal = log?.firstFatal;
  const clue = !fatal && log?.lastProblem ? ` (server log: ${log.lastProblem})` : '';
  return {
    reasons: [...(fatal ? [`${stage} failed: ${fatal}`] : []), `${stage}: ${what}${clue}`],
    // The job's error message: what the stage saw, and PostgreSQL's words.
    summary: `${what}${fatal ? ` (PostgreSQL: ${fatal})` : clue}`,
  };
}

export async function withClient<T>(server: ScratchPostgres, db: string, fn: (c: PgClient) => Promise<T>): Promise<T> {
  const c = await server.connect(db);
  try {
    // Role or database settings restored with the copy (ALTER ROLE ... SET statement_timeout) must not cut the checks short.
    await c.query('SET statement_timeout = 0; SET lock_timeout = 0');
    return await fn(c);
  } finally {
    await c.end().catch(() => {});
  }
}

/**
 * The backup to restore: the one asked for; for the source's restore point, the newest that is
 * consistent (stop LSN) at or before it; for name/xid targets, the one the WAL says; otherwise the
 * newest (the controller resolves time and LSN targets to a label itself).
 */
export async function chooseDrillBackup(
  o: DrillOptions,
  target: TargetSpec,
  source: SourceCountsInit | undefined,
): Promise<CountedManifestHead> {
  // Only its head is kept: the manifest is authenticated and checked as a stream, its entries
  // never held (a 100k-file backup's are tens of MB); the restore reads them again itself.
  if (o.backupLabel) return o.repo.readManifestHead(o.cluster, o.backupLabel);
  // Chosen by the summaries; only the chosen manifest is read.
  return o.repo.manifestHeadFor(await chooseDrillSummary(o, target, source));
}

async function chooseDrillSummary(
  o: DrillOptions,
  target: TargetSpec,
  source: SourceCountsInit | undefined,
): Promise<BackupSummary> {
  const backups = await o.repo.listBackups(o.cluster);
  if (backups.length === 0)
    throw new PgfleetError('NoBackup', `cluster ${o.cluster} has no complete backup in ${o.repo.location}`);
  if (source && !o.target) {
    const at = Lsn.parse(source.lsn);
    const before = backups.filter((b) => Lsn.parse(b.stopLsn).compare(at) <= 0);
    if (before.length === 0)
      throw new PgfleetError(
        'NoBackup',
        `no backup of cluster ${o.cluster} ends before the drill's restore point (${source.lsn})`,
      );
    return before.at(-1)!;
  }
  if (target.kind === 'name' || target.kind === 'xid')
    return (
      await findTargetLsn(o.repo, o.cluster, backups, target, {
        ...(o.pgBinDir ? { pgBinDir: o.pgBinDir } : {}),
        log: o.log,
      })
    ).backup;
  return backups.at(-1)!;
}

/** The restored copy needs the backup's size plus its WAL; refuse early instead of filling the disk. */
function checkScratchSpace(dir: string, manifest: CountedManifestHead): Promise<void> {
  return requireScratchSpace(
    dir,
    Math.ceil(manifest.sizeBytes * 1.1) + 4 * manifest.walSegmentSize,
    `restoring backup ${manifest.label} (${Math.ceil(manifest.sizeBytes / 2 ** 20)} MiB)`,
  );
}

/** Refuses early (ScratchSpaceLow) when `dir`'s file system has less than `need` bytes free for `what`. */
export async function requireScratchSpace(dir: string, need: number, what: string): Promise<void> {
  const fs = await statfs(dir);
  const free = Number(fs.bavail) * Number(fs.bsize);
  if (free < need) {
    throw new PgfleetError(
      'ScratchSpaceLow',
      `scratch area ${dir} has ${Math.floor(free / 2 ** 20)} MiB free; ${what} needs about ${Math.ceil(need / 2 ** 20)} MiB`,
    );
  }
}

/**
 * After recovery failed: the WAL segment it could not get. Recovery asks for the segment after the
 * last one it restored (or the backup's first); when the repository lacks it or it does not read
 * back with its checksum, that is the reason, named precisely.
 */
async function missingWal(
  o: DrillOptions,
  server: ScratchPostgres,
  manifest: CountedManifestHead,
): Promise<{ code: ErrorName; message: string } | undefined> {
  try {
    const restored = await server.restoredSegments();
    const last = restored.at(-1);
    const next = last ? WalSegmentName.parse(last, manifest.walSegmentSize).next().toString() : manifest.walStart;
    const found = await o.repo.findWal(o.cluster, next);
    if (found.length === 0) {
      return {
        code: 'WalNotInRepository',
        message: `WAL segment ${next} needed by recovery is not in the repository${last ? ` (recovery restored up to ${last})` : ''}`,
      };
    }
    try {
      await o.repo.fetchWal(o.cluster, next, new Writable({ write: (_c, _e, cb) => cb() }));
    } catch (err) {
      return {
        code: asPgfleetError(err).errorName,
        message: `WAL segment ${next} needed by recovery does not read back: ${(err as Error).message}`,
      };
    }
    return undefined;
  } catch {
    return undefined;
  }
}

/** amcheck over one database of the copy; returns the number of relations checked. */
async function amcheckDatabase(
  c: PgClient,
  db: string,
  major: number,
  findings: AmcheckFindingInit[],
): Promise<number> {
  // The source's event triggers (audit tables, notifications) must not fire on CREATE EXTENSION:
  // they would write into the copy before its rows are counted, or reach outside it. Triggers
  // enabled ALWAYS still fire under 'replica'; event_triggers = off (17+) stops those too.
  await c.query(`SET session_replication_role = replica${major >= 17 ? '; SET event_triggers = off' : ''}`);
  await c.query('CREATE EXTENSION IF NOT EXISTS amcheck');
  await c.query(`RESET session_replication_role${major >= 17 ? '; RESET event_triggers' : ''}`);
  const schema = (
    await c.query<{ s: string }>(
      `SELECT n.nspname AS s FROM pg_extension e JOIN pg_namespace n ON n.oid = e.extnamespace WHERE e.extname = 'amcheck'`,
    )
  ).rows[0]!.s;
  const fn = (name: string) => `${quoteIdent(schema)}.${name}`;
  const add = (f: AmcheckFindingInit) => {
    if (findings.length < MAX_FINDINGS) findings.push(f);
  };
  let checked = 0;
  // Heaps: tables, materialized views and TOAST tables, system catalogs included.
  const heaps = (
    await c.query<{ oid: string; name: string; kind: string }>(`
    SELECT c.oid::text AS oid, format('%I.%I', n.nspname, c.relname) AS name, c.relkind AS kind
      FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
     WHERE c.relkind IN ('r', 'm', 't') AND c.relpersistence <> 't' AND (c.relkind <> 'm' OR c.relispopulated)
     ORDER BY c.oid`)
  ).rows;
  for (const h of heaps) {
    try {
      const rows = (
        await c.query<{ blkno: string | null; offnum: number | null; attnum: number | null; msg: string }>(
          `SELECT blkno::text AS blkno, offnum, attnum, msg FROM ${fn('verify_heapam')}($1::oid::regclass, check_toast => $2) LIMIT ${MAX_FINDINGS_PER_RELATION}`,
          [h.oid, h.kind !== 't'],
        )
      ).rows;
      for (const row of rows) {
        const where = [
          row.blkno !== null ? `block ${row.blkno}` : '',
          row.offnum !== null ? `offset ${row.offnum}` : '',
          row.attnum !== null ? `attribute ${row.attnum}` : '',
        ]
          .filter(Boolean)
          .join(', ');
        add({
          database: db,
          relation: h.name,
          check: 'verify_heapam',
          message: where ? `${where}: ${row.msg}` : row.msg,
        });
      }
    } catch (err) {
      add({ database: db, relation: h.name, check: 'verify_heapam', message: (err as Error).message });
    }
    checked++;
  }
  const indexes = (
    await c.query<{ oid: string; name: string }>(`
    SELECT c.oid::text AS oid, format('%I.%I', n.nspname, c.relname) AS name
      FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid JOIN pg_namespace n ON n.oid = c.relnamespace JOIN pg_am a ON a.oid = c.relam
     WHERE a.amname = 'btree' AND c.relkind = 'i' AND c.relpersistence <> 't' AND i.indisvalid AND i.indisready
     ORDER BY c.oid`)
  ).rows;
  for (const ix of indexes) {
    try {
      // bt_index_check raises an error on the first inconsistency it finds.
      await c.query(`SELECT ${fn('bt_index_check')}($1::oid::regclass)`, [ix.oid]);
    } catch (err) {
      add({ database: db, relation: ix.name, check: 'bt_index_check', message: (err as Error).message });
    }
    checked++;
  }
  return checked;
}

/** Rows of every counted table of the copy: database -> `schema\0table` -> rows. */
export type RestoredCounts = ReadonlyMap<string, ReadonlyMap<string, bigint>>;

export const tableKey = (schema: string, table: string): string => `${schema}\u0000${table}`;

/** Counts every permanent table of the copy (the same selection the source counted, COUNTED_TABLES_SQL). */
async function countRestored(server: ScratchPostgres, databases: readonly string[]): Promise<RestoredCounts> {
  const out = new Map<string, Map<string, bigint>>();
  for (const db of databases) {
    const counts = new Map<string, bigint>();
    await withClient(server, db, async (c) => {
      for (const t of (await c.query<CountedTableRow>(COUNTED_TABLES_SQL)).rows) {
        if (t.persistence === 'p')
          counts.set(tableKey(t.schema, t.table), await countRows(c, t.schema, t.table, t.kind));
      }
    });
    out.set(db, counts);
  }
  return out;
}

export interface CountComparison {
  ok: boolean;
  /** Why not ok, one line. */
  reason?: string;
  /** Every table that differs, at most MAX_DIFFS: missing from the copy (restoredRows -1), extra in the copy (sourceRows -1), or counted differently. */
  diffs: TableCountDiffInit[];
  /** How many tables differ in all (diffs is capped). */
  differing: number;
  missing: number;
  extra: number;
  /** Sum of |restored - source| over the tables on both sides, plus the rows of the extra tables. */
  sumAbs: bigint;
}

/**
 * Compares the source's counts with the copy's. Each inserted or deleted row changes one count by
 * one, so the sum of |difference| can never exceed the number of rows changed: 0 on a quiet
 * source (exact), at most `changeBound` on a busy one. A table of the source missing from the
 * copy fails whatever the bound: rows changing never makes a table disappear (the capture leaves
 * out tables dropped on the source meanwhile). A table only the copy has (created on a busy
 * source after it was counted) counts with all its rows.
 */
export function compareTableCounts(
  source: Pick<SourceCountsInit, 'tables' | 'changeBound'>,
  restored: RestoredCounts,
): CountComparison {
  const diffs: TableCountDiffInit[] = [];
  let differing = 0;
  let sumAbs = 0n;
  const missing: string[] = [];
  let extra = 0;
  const note = (d: TableCountDiffInit) => {
    differing++;
    if (diffs.length < MAX_DIFFS) diffs.push(d);
  };
  const counted = new Set<string>();
  for (const t of source.tables) {
    const key = tableKey(t.schema, t.table);
    counted.add(`${t.database}\u0000${key}`);
    const rows = restored.get(t.database)?.get(key);
    if (rows === undefined) {
      missing.push(`${t.database}.${t.schema}.${t.table}`);
      note({ database: t.database, schema: t.schema, table: t.table, sourceRows: t.rows, restoredRows: -1n });
    } else if (rows !== t.rows) {
      sumAbs += rows > t.rows ? rows - t.rows : t.rows - rows;
      note({ database: t.database, schema: t.schema, table: t.table, sourceRows: t.rows, restoredRows: rows });
    }
  }
  for (const [database, tables] of restored) {
    for (const [key, rows] of tables) {
      if (counted.has(`${database}\u0000${key}`)) continue;
      const [schema = '', table = ''] = key.split('\u0000');
      extra++;
      sumAbs += rows;
      note({ database, schema, table, sourceRows: -1n, restoredRows: rows });
    }
  }
  const result = { diffs, differing, missing: missing.length, extra, sumAbs };
  const bound = source.changeBound;
  const present = differing - missing.length;
  const what = `row counts differ in ${present} table(s)${extra ? ` (${extra} not counted on the source)` : ''}, sum of differences ${sumAbs}`;
  if (missing.length > 0) {
    const names = `${missing.slice(0, 5).join(', ')}${missing.length > 5 ? `, ... (${missing.length - 5} more)` : ''}`;
    return {
      ...result,
      ok: false,
      reason: `${missing.length} table(s) of the source missing from the restored copy: ${names}${present ? `; ${what}` : ''}`,
    };
  }
  if (differing === 0) return { ...result, ok: true };
  if (bound === 0n)
    return {
      ...result,
      ok: false,
      reason: `${what}; the source was quiet at the restore point, so they must be equal`,
    };
  if (sumAbs <= bound) return { ...result, ok: true };
  return {
    ...result,
    ok: false,
    reason: `${what}, more than the ${bound} row change(s) the source made while it was counted`,
  };
}
