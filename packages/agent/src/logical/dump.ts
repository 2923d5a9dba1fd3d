/**
 * Logical backups (`pgfleet dump`, docs/logical.md): per database, pg_dump in directory format
 * (-Fd: the only format pg_dump and pg_restore run in parallel) into a spool directory under the
 * agent's scratch area, every file stored through the repository layer (sha256 of content and
 * stored bytes, encrypted when the cluster is, in every repository of the job), and the spool
 * removed. Each table's data file is stored while pg_dump still writes the others (spool-drain.ts:
 * followed as it grows, complete once no pg_dump process has it open) and leaves the spool then;
 * what is left (large objects, toc.dat last) is stored once pg_dump has ended. pg_dump compresses
 * its table files itself (gzip, its default for -Fd), inside its parallel workers and while it
 * reads; the repository stores those bytes as they are (codec none). Letting pg_dump write
 * uncompressed and the repository compress afterwards measured 3.3x the bare pg_dump's time (two
 * passes over the data, one of them on the agent's single thread); compressing them while they
 * are stored during pg_dump (so that the row count reads plain text, not a gunzip) measured more
 * agent CPU than the gunzip it saves, and restores 2x slower (docs/benchmarks.md).
 *
 * One snapshot per database: the agent exports it and pg_dump dumps in it (--snapshot; its --jobs
 * workers import it too), so each database is consistent in itself. The agent's transaction and
 * pg_dump take ACCESS SHARE locks on every table at start and wait for them at most
 * --lock-wait-timeout; a dump that cannot get them fails rather than queue behind DDL for hours
 * (and make DDL queue behind it).
 *
 * Globals (roles, tablespaces) come from `pg_dumpall --globals-only`, streamed straight into the
 * repository (no spool), role passwords left out unless asked for.
 *
 * The manifest (dump.json, the DumpResult) is written last: a failed dump removes what it stored
 * and leaves no manifest, and the controller lists only dumps whose job succeeded. A dump holds a
 * lease in the repository while it runs (backup/lease.ts acquireDump), so that what a dump killed
 * with its agent stored is told from what a running one stores and removed by the next dump of the
 * cluster or an expire (abandoned-dumps.ts), never a running dump's.
 *
 * Each table's exact rows are counted with count(*) in pg_dump's own snapshot, which the agent
 * exports and keeps open while pg_dump runs (dump-snapshot.ts), and kept in the DumpResult
 * (DumpTable.rows): what a dump drill compares the restored tables with.
 *
 * The spool is bounded: pg_dump's output is measured while it runs (and once more when it ends),
 * and a database whose dump grows past --dump-spool-max stops pg_dump and fails the job
 * (DumpSpoolFull); a disk that fills first fails it as DiskFull. The spool's name,
 * `pgfleet-dump-<cluster>-<pid>-job-<job id>` (restore-dump's `pgfleet-restore-dump-...` alike),
 * says whose it is: an agent killed mid-dump cannot remove it, the next agent of the cluster does
 * (sweepDumpSpools, at start), never a live agent's or another cluster's.
 */
import { spawn } from 'node:child_process';
import { createReadStream } from 'node:fs';
import { mkdir, readdir, rm, stat } from 'node:fs/promises';
import { join } from 'node:path';
import type { Readable } from 'node:stream';
import type { MessageInitShape } from '@bufbuild/protobuf';
import { toJson } from '@bufbuild/protobuf';
import { timestampFromDate } from '@bufbuild/protobuf/wkt';
import { type Logger, mapLimit, PgfleetError } from '@pgfleet/core';
import { connectPg, type PgConnectionOptions } from '@pgfleet/pg';
import { DumpResultSchema, type DumpFileSchema, type DumpedDatabaseSchema } from '@pgfleet/proto';
import { create } from '@bufbuild/protobuf';
import type { Codec, Repository, StoredFile } from '@pgfleet/storage';
import { sweepDeadSpools } from '../backup/entry-spool.js';
import { BackupLeaseHolder } from '../backup/lease.js';
import { removeAbandonedDumps, runningDump } from './abandoned-dumps.js';
import { exitCode, libpqEnv, runClientProgram, tail } from '../pg-tools.js';
import { readTableDataEntries } from './toc-entries.js';
import { openDumpSnapshot, type DumpSnapshot } from './dump-snapshot.js';
import { processTreeOpenFiles, type OpenFilesProbe } from './open-files.js';
import { SpoolDrain } from './spool-drain.js';
import type { Progress } from '../progress.js';

type DumpFileInit = MessageInitShape<typeof DumpFileSchema>;
type DumpedDatabaseInit = MessageInitShape<typeof DumpedDatabaseSchema>;
export type DumpResultInit = MessageInitShape<typeof DumpResultSchema>;

export interface DumpOptions {
  jobId: string;
  cluster: string;
  label: string;
  repo: Repository;
  codec: Codec;
  level?: number;
  pg: PgConnectionOptions;
  pgBinDir?: string;
  /** Parent of the spool directory (the agent's --scratch-dir). */
  scratchDir: string;
  /** Bytes the spool may hold (--dump-spool-max); undefined: no bound. */
  spoolMaxBytes?: number;
  databases: readonly string[];
  jobs: number;
  lockWaitTimeoutMs: number;
  withPasswords: boolean;
  /** Files stored at once. */
  uploads: number;
  /**
   * Store each table file once pg_dump has closed it, while pg_dump goes on (spool-drain.ts;
   * --dump-store-early); false: every file after pg_dump ends. Default true.
   */
  storeEarly?: boolean;
  /** How pg_dump's open files are seen (tests); default processTreeOpenFiles, /proc. */
  openFilesProbe?: (pid: number, dir: string) => OpenFilesProbe;
  log: Logger;
  progress: (p: Progress) => void;
  signal: AbortSignal;
}

const APP = 'pgfleet-dump';

/** The client programs of the server's major version (or --pg-bin-dir, which may be newer). */
export function clientBinDir(pgBinDir: string | undefined, versionNum: number): string {
  return pgBinDir ?? `/usr/lib/postgresql/${Math.floor(versionNum / 10000)}/bin`;
}

/** `<program> --version`, e.g. "pg_dump (PostgreSQL) 15.10". */
export async function programVersion(path: string): Promise<string> {
  const child = spawn(path, ['--version'], { stdio: ['ignore', 'pipe', 'pipe'] });
  let out = '';
  child.stdout.on('data', (d: Buffer) => (out += d.toString()));
  const err = tail(child.stderr);
  const code = await exitCode(child);
  if (code !== 0)
    throw new PgfleetError('DumpFailed', `${path} --version failed (exit ${code}): ${err() || 'no message'}`);
  return out.trim();
}

interface DatabaseToDump {
  name: string;
  oid: string;
}

/**
 * What the steps of one dump share besides its options: `leased` settles once the dump's lease is
 * in the repository (rejects when it could not be written). Every store waits for it; nothing else
 * does, so the lease's write (an fsync'd repository write) overlaps the server's questions, the
 * snapshot's export and pg_dump's start instead of coming before them.
 */
interface DumpRun extends DumpOptions {
  leased: Promise<void>;
  /** When the first pg_dump was started (the 'dump stored' log line). */
  firstPgDumpAt?: number;
}

export async function runDump(o: DumpOptions): Promise<DumpResultInit> {
  const started = new Date();
  const prefix = o.repo.dumpPrefix(o.cluster, o.label);
  const spool = join(o.scratchDir, spoolName('dump', o.cluster, o.jobId));
  // Running here from before its lease exists: no sweep of this process takes it for a dead dump.
  const ended = runningDump(o.cluster, o.label);
  let tLease = 0;
  // The lease before anything is stored (what tells this dump's objects from a dead dump's), but
  // not before anything is started: pg_dump writes into the spool meanwhile, and only the stores
  // wait for the lease (DumpRun). A lease that cannot be written stops what started (leaseFailed).
  const leasing = (async () => {
    const held = await BackupLeaseHolder.acquireDump(o.repo, o.cluster, o.label, o.log);
    tLease = Date.now();
    try {
      await o.repo.prepareKeys(`${prefix}/dump.json`);
    } catch (err) {
      await held.release(false);
      throw err;
    }
    return held;
  })();
  const leaseFailed = new AbortController();
  leasing.catch((err: unknown) => leaseFailed.abort(err));
  const run: DumpRun = {
    ...o,
    signal: AbortSignal.any([o.signal, leaseFailed.signal]),
    leased: leasing.then(() => {}),
  };
  run.leased.catch(() => {}); // awaited by each store, and through `leasing` below
  // What dumps of this cluster killed earlier left is removed while this one's pg_dump runs.
  const sweep = leasing.then(
    () =>
      removeAbandonedDumps({ repo: o.repo, cluster: o.cluster, log: o.log, signal: o.signal }).catch((err: unknown) =>
        o.log.warn({ err }, 'could not remove the files of dumps whose agent died; the next dump tries again'),
      ),
    () => {},
  );
  const dumped: DumpedDatabaseInit[] = [];
  let committed = false;
  let lease: BackupLeaseHolder | undefined;
  let globalsRun: Promise<DumpFileInit> | undefined;
  let firstSnapshot: Promise<DumpSnapshot> | undefined;
  try {
    // A job that names its databases has the first one's snapshot exported while the server is
    // asked which databases there are (whose answer, e.g. DumpDatabaseUnknown, is the one reported).
    const first = o.databases[0];
    if (first !== undefined) {
      firstSnapshot = openSnapshot(run, first);
      firstSnapshot.catch(() => {}); // awaited by its database's dump, or closed in finally
    }
    const maint = await connectPg({ ...o.pg, applicationName: APP });
    let versionNum: number;
    let databases: DatabaseToDump[];
    try {
      versionNum = Number(
        (await maint.query<{ v: string }>("SELECT current_setting('server_version_num') AS v")).rows[0]!.v,
      );
      databases = await chooseDatabases(maint, o.databases);
    } finally {
      await maint.end().catch(() => {});
    }
    const binDir = clientBinDir(o.pgBinDir, versionNum);
    // Recorded in the result only: asked while the dump runs, not before it.
    const pgDumpVersion = programVersion(join(binDir, 'pg_dump'));
    pgDumpVersion.catch(() => {}); // awaited with the result (pg_dump itself fails first when missing)
    // The globals while the databases are dumped (roles and tablespaces are no part of a
    // database's snapshot): pg_dumpall's start, its queries and its store are off the serial path.
    globalsRun = dumpGlobals(run, binDir, `${prefix}/globals.sql`);
    globalsRun.catch(() => {}); // awaited below (and in finally when a database fails first)
    const tDatabases = Date.now();
    for (const db of databases) {
      run.signal.throwIfAborted();
      // chooseDatabases keeps the order asked: the first is the one whose snapshot is open.
      const opened = db.name === first ? firstSnapshot : undefined;
      firstSnapshot = undefined;
      dumped.push(await dumpDatabase(run, binDir, prefix, spool, db, opened));
    }
    const tDumped = Date.now();
    lease = await leasing;
    const globals = await globalsRun;
    await sweep;
    await confirmStored(o, lease, prefix, dumped, globals);
    const finished = new Date();
    const result: DumpResultInit = {
      label: o.label,
      databases: dumped,
      pgDumpVersion: await pgDumpVersion,
      serverMajor: Math.floor(versionNum / 10000),
      globals,
      withPasswords: o.withPasswords,
      started: timestampFromDate(started),
      finished: timestampFromDate(finished),
      seconds: (finished.getTime() - started.getTime()) / 1000,
      codec: o.codec,
    };
    // The manifest last: its presence is what makes the dump complete in the repository.
    await o.repo.objects.storeSmall(
      `${prefix}/dump.json`,
      Buffer.from(JSON.stringify(toJson(DumpResultSchema, create(DumpResultSchema, result)), null, 2)),
    );
    committed = true;
    // Where the job's own time went around its databases' (docs/logical.md, "Dump"); the lease's
    // write overlaps beforeDatabasesSeconds and the first database.
    o.log.info(
      {
        label: o.label,
        leaseSeconds: (tLease - started.getTime()) / 1000,
        firstPgDumpSeconds: ((run.firstPgDumpAt ?? tDumped) - started.getTime()) / 1000,
        beforeDatabasesSeconds: (tDatabases - started.getTime()) / 1000,
        databasesSeconds: (tDumped - tDatabases) / 1000,
        afterDatabasesSeconds: (Date.now() - tDumped) / 1000,
      },
      'dump stored',
    );
    return result;
  } catch (caught) {
    // A lease not written stopped the dump: that is the failure to report, not the stop it caused,
    // unless the dump had already failed for a reason of its own (a code of its own, e.g. DiskFull).
    const leaseError: unknown = leaseFailed.signal.aborted && !o.signal.aborted ? leaseFailed.signal.reason : undefined;
    const ownFailure =
      caught instanceof PgfleetError && caught !== leaseError && !PgfleetError.is(caught, 'DumpFailed');
    const err: unknown = leaseError !== undefined && !ownFailure ? leaseError : caught;
    // A cancel stays a cancel; anything that is not already a pgfleet condition is a failed dump.
    if (err instanceof PgfleetError || o.signal.aborted) throw err;
    throw new PgfleetError('DumpFailed', `dump ${o.label}: ${(err as Error).message}`, { cause: err });
  } finally {
    // A snapshot opened for a database the dump never reached (it failed before).
    await firstSnapshot?.then(
      (x) => x.close(),
      () => {},
    );
    // Nothing of this dump is written after its removal below.
    await globalsRun?.catch(() => {});
    lease ??= await leasing.catch(() => undefined);
    await sweep;
    // Refreshes stop before a failed dump's removal, so none writes its lease back after it.
    await lease?.release(committed);
    await removeSpool(spool, o.log);
    if (!committed)
      await o.repo.deleteDump(o.cluster, o.label).catch((err: unknown) => {
        o.log.warn({ err, label: o.label }, 'could not remove the failed dump from the repository');
      });
    ended();
  }
}

/**
 * Right before dump.json: the lease refreshed (DumpLeaseLost when it cannot be) and every file
 * the dump stored still in the repository with its stored size. A dump stalled for longer than its
 * lease's staleness may have been taken for a dead one and its files removed (abandoned-dumps.ts);
 * it then fails rather than list what is gone.
 */
async function confirmStored(
  o: DumpOptions,
  lease: BackupLeaseHolder,
  prefix: string,
  dumped: readonly DumpedDatabaseInit[],
  globals: DumpFileInit,
): Promise<void> {
  await lease.confirm();
  const sizes = new Map((await o.repo.dumpObjects(o.cluster, o.label)).map((x) => [x.key, x.size]));
  const stored = [
    ...dumped.flatMap((d) => (d.files ?? []).map((f) => [`${prefix}/${d.dir}/${f.name}`, f.storedSize] as const)),
    [`${prefix}/globals.sql`, globals.storedSize] as const,
  ];
  const missing = stored.filter(([key, size]) => sizes.get(key) !== Number(size ?? 0)).map(([key]) => key);
  if (missing.length > 0)
    throw new PgfleetError(
      'DumpLeaseLost',
      `dump ${o.label}: ${missing.length} stored file(s) were removed while it ran (${missing.slice(0, 3).join(', ')}${missing.length > 3 ? ', ...' : ''}), taken for a dead dump's after its lease went stale; it stopped before its dump.json`,
    );
}

/** The databases asked for (each must exist and allow connections), or every non-template one. */
async function chooseDatabases(
  c: Awaited<ReturnType<typeof connectPg>>,
  asked: readonly string[],
): Promise<DatabaseToDump[]> {
  const rows = (
    await c.query<{ name: string; oid: string; allow: boolean; template: boolean }>(
      'SELECT datname AS name, oid::text AS oid, datallowconn AS allow, datistemplate AS template FROM pg_database ORDER BY datname',
    )
  ).rows;
  if (asked.length === 0) return rows.filter((r) => r.allow && !r.template).map(({ name, oid }) => ({ name, oid }));
  return [...new Set(asked)].map((name) => {
    const r = rows.find((x) => x.name === name);
    if (!r) throw new PgfleetError('DumpDatabaseUnknown', `the cluster has no database '${name}'`);
    if (!r.allow) throw new PgfleetError('DumpDatabaseUnknown', `database '${name}' does not allow connections`);
    return { name: r.name, oid: r.oid };
  });
}

async function dumpDatabase(
  o: DumpRun,
  binDir: string,
  prefix: string,
  spool: string,
  db: DatabaseToDump,
  /** Its snapshot, when it was opened beforehand (runDump); otherwise opened here. */
  opened?: Promise<DumpSnapshot>,
): Promise<DumpedDatabaseInit> {
  const t0 = Date.now();
  const dir = join(spool, db.oid);
  let snapshot: DumpSnapshot | undefined;
  try {
    await mkdir(spool, { recursive: true, mode: 0o700 });
    o.progress({ phase: 'dump', bytesDone: 0, bytesTotal: 0, filesDone: 0, filesTotal: 0, message: db.name });
    // pg_dump dumps in the agent's snapshot, whose transaction counts each table's rows meanwhile (dump-snapshot.ts).
    snapshot = await (opened ?? openSnapshot(o, db.name));
    return await dumpInSnapshot(o, binDir, prefix, dir, db, snapshot, t0);
  } finally {
    // Only once pg_dump has ended: its workers import the snapshot while this transaction lives.
    // One opened beforehand is closed too when this failed before taking it (its locks, its xmin).
    await (snapshot ?? (await opened?.catch(() => undefined)))?.close();
  }
}

function openSnapshot(o: DumpRun, database: string): Promise<DumpSnapshot> {
  return openDumpSnapshot({
    pg: o.pg,
    database,
    lockWaitTimeoutMs: o.lockWaitTimeoutMs,
    applicationName: APP,
    signal: o.signal,
    log: o.log,
  });
}

async function dumpInSnapshot(
  o: DumpRun,
  binDir: string,
  prefix: string,
  dir: string,
  db: DatabaseToDump,
  snapshot: DumpSnapshot,
  t0: number,
): Promise<DumpedDatabaseInit> {
  const args = [
    '--format=directory',
    `--file=${dir}`,
    `--jobs=${Math.max(1, o.jobs)}`,
    `--snapshot=${snapshot.id}`,
    ...(o.lockWaitTimeoutMs > 0 ? [`--lock-wait-timeout=${o.lockWaitTimeoutMs}`] : []),
    // The spool is scratch (what must last is the repository's copy, written with its own fsync),
    // and pg_dump's closing fsync pass would reopen files the drain has stored and removed.
    '--no-sync',
    '--no-password',
  ];
  const key = (name: string) => `${prefix}/${db.oid}/${name}`;
  // Nothing is stored before the dump's lease is (DumpRun); pg_dump's file waits in the spool.
  const store = async (name: string, content: Readable) => {
    // A cancel is not held up by a lease write that hangs (pg_dump is stopped by it already).
    await Promise.race([
      o.leased,
      new Promise<never>((_, reject) => {
        if (o.signal.aborted) reject(o.signal.reason);
        else o.signal.addEventListener('abort', () => reject(o.signal.reason), { once: true });
      }),
    ]);
    return (await o.repo.writeObject(
      key(name),
      content,
      o.codec,
      [],
      o.level !== undefined ? { level: o.level } : {},
    )) as StoredFile;
  };
  const tPgDump = Date.now();
  o.firstPgDumpAt ??= tPgDump;
  const { early, exitedAt } = await runDrainedPgDump(o, binDir, args, db.name, dir, store);
  const tDrained = Date.now();
  // After pg_dump (whose failure is the one reported: nothing below runs then), three things at
  // once rather than one after another: the rest of the files stored, the counts' end awaited,
  // and pg_restore's listing of the TOC (which tables pg_dump dumped), read from the spool's
  // toc.dat before the spool is removed.
  let tCounted = 0;
  const counted = snapshot.counts.then((c) => {
    tCounted = Date.now();
    return c;
  });
  const listing = readTableDataEntries(join(binDir, 'pg_restore'), dir);
  // Both awaited below; handled here too, for a readdir that throws before that.
  counted.catch(() => {});
  listing.catch(() => {});
  // What is still in the spool: files not stored while pg_dump ran (and toc.dat).
  const names = (await readdir(dir)).sort();
  const files = new Map<string, DumpFileInit>();
  let done = 0;
  for (const [name, stored] of early) {
    files.set(name, { name, ...storedFigures(stored) });
    done += stored.size;
  }
  const sizes = new Map(await Promise.all(names.map(async (n) => [n, (await stat(join(dir, n))).size] as const)));
  const total = done + [...sizes.values()].reduce((a, b) => a + b, 0);
  const filesTotal = early.size + names.length;
  const storeRest = async (name: string) => {
    const stored = await store(name, createReadStream(join(dir, name)));
    files.set(name, { name, ...storedFigures(stored) });
    done += sizes.get(name)!;
    o.progress({
      phase: 'store',
      bytesDone: done,
      bytesTotal: total,
      filesDone: files.size,
      filesTotal,
      message: db.name,
    });
  };
  // Largest first, a few at once: the table files are independent objects. toc.dat last.
  const rest = names.filter((n) => n !== TOC).sort((x, y) => sizes.get(y)! - sizes.get(x)!);
  const storing = (async () => {
    await mapLimit(rest, o.uploads, storeRest, o.signal);
    if (sizes.has(TOC)) await storeRest(TOC);
  })();
  // Each settled before any failure is thrown: no store still writes when the caller removes the dump.
  const settled = await Promise.allSettled([counted, listing, storing]);
  for (const r of settled) if (r.status === 'rejected') throw r.reason;
  const counts = (settled[0] as PromiseFulfilledResult<Map<string, bigint>>).value;
  const entries = (settled[1] as PromiseFulfilledResult<Map<string, string>>).value;
  const tables = snapshot.tables;
  // Which tables pg_dump dumped: the TOC's TABLE DATA entries by table oid; those get their counts.
  for (const t of tables) {
    const rows = entries.has(t.oid) ? counts.get(t.oid) : undefined;
    if (rows !== undefined) {
      t.table.rows = rows;
      t.table.rowsCounted = true;
    }
  }
  await removeSpool(dir, o.log);
  const recorded = [...files.values()].sort((a, b) => (a.name! < b.name! ? -1 : a.name! > b.name! ? 1 : 0));
  const size = recorded.reduce((a, f) => a + Number(f.size ?? 0), 0);
  const storedSize = recorded.reduce((a, f) => a + Number(f.storedSize ?? 0), 0);
  o.log.info(
    {
      database: db.name,
      files: recorded.length,
      storedWhilePgDumpRan: early.size,
      size,
      storedSize,
      // Where the time went: before pg_dump, pg_dump, the followers' ends after it, the rest stored after them.
      startSeconds: (tPgDump - t0) / 1000,
      pgDumpSeconds: (exitedAt - tPgDump) / 1000,
      drainSeconds: (tDrained - exitedAt) / 1000,
      storeAfterSeconds: (Date.now() - tDrained) / 1000,
      // The counts' end after pg_dump's (0: they ended while it ran).
      countsAfterSeconds: Math.max(0, tCounted - exitedAt) / 1000,
    },
    'database dumped',
  );
  return {
    name: db.name,
    dir: db.oid,
    files: recorded,
    tables: tables.map((t) => t.table),
    size: BigInt(size),
    storedSize: BigInt(storedSize),
    seconds: (Date.now() - t0) / 1000,
  };
}

/** pg_dump's table of contents: stored last. */
const TOC = 'toc.dat';

function storedFigures(s: StoredFile): { size: bigint; sha256: string; storedSize: bigint; storedSha256: string } {
  return { size: BigInt(s.size), sha256: s.sha256, storedSize: BigInt(s.storedSize), storedSha256: s.storedSha256 };
}

/** pg_dumpall --globals-only streamed into the repository. */
async function dumpGlobals(o: DumpRun, binDir: string, key: string): Promise<DumpFileInit> {
  // Started once the lease is there (DumpRun), not before with its output held in the pipe: a
  // child that exits before its stdout has a reader has that output resumed and dropped by Node.
  await o.leased;
  const child = spawn(
    join(binDir, 'pg_dumpall'),
    ['--globals-only', '--no-password', ...(o.withPasswords ? [] : ['--no-role-passwords'])],
    {
      env: libpqEnv({ ...o.pg, database: o.pg.database || 'postgres' }, APP),
      stdio: ['ignore', 'pipe', 'pipe'],
      signal: o.signal,
    },
  );
  const err = tail(child.stderr);
  const exited = exitCode(child);
  const stored = await o.repo.writeObject(key, child.stdout, o.codec);
  const code = await exited;
  if (code !== 0)
    throw new PgfleetError('DumpFailed', `pg_dumpall --globals-only failed (exit ${code}): ${err() || 'no message'}`);
  return { name: 'globals.sql', ...storedFigures(stored) };
}

/** Removes a spool directory; a failure is logged, never thrown over the job's own outcome. */
export async function removeSpool(dir: string, log: Logger): Promise<void> {
  await rm(dir, { recursive: true, force: true, maxRetries: 3 }).catch((err: unknown) => {
    log.warn({ err, dir }, 'could not remove the spool directory');
  });
}

/** `pgfleet-<kind>-<cluster>-<pid>-job-<job id>`: a spool that says whose it is (module header). */
export function spoolName(kind: 'dump' | 'restore-dump', cluster: string, jobId: string): string {
  return `pgfleet-${kind}-${cluster}-${process.pid}-job-${jobId}`;
}

/** <kind>, <cluster>, <pid>: the last "-<digits>-job-" separates the cluster from the job id (a UUID). */
const SPOOL_NAME_RE = /^pgfleet-(?:dump|restore-dump)-(.+)-(\d+)-job-[^/]+$/;

/** Removes the dump and restore-dump spools of `cluster` whose agent process is gone (module header); at agent start. */
export function sweepDumpSpools(scratchDir: string, cluster: string, log: Logger): Promise<string[]> {
  return sweepDeadSpools({
    parent: scratchDir,
    cluster,
    pattern: SPOOL_NAME_RE,
    what: 'dump spools of dumps and restore-dumps',
    log,
  });
}

/** How often pg_dump's output is measured while it runs. */
const SPOOL_CHECK_MS = 250;

/** Bytes of the files under `dir` (pg_dump's -Fd output: one level); 0 when it does not exist yet. */
async function spoolBytes(dir: string): Promise<number> {
  const names = await readdir(dir).catch(() => [] as string[]);
  const sizes = await Promise.all(
    names.map((n) =>
      stat(join(dir, n)).then(
        (s) => s.size,
        () => 0,
      ),
    ),
  );
  return sizes.reduce((a, b) => a + b, 0);
}

/**
 * pg_dump into `dir`, measured every SPOOL_CHECK_MS and once more at its end: past
 * o.spoolMaxBytes it is stopped and the dump fails (DumpSpoolFull); a full disk is DiskFull. The
 * spool counts what is in it: table files the drain stored while pg_dump ran have left it.
 * Unless o.storeEarly is false, the same rounds drive the SpoolDrain (spool-drain.ts), and its
 * files stored early are returned; after any failure its followers are stopped and waited for
 * before this throws, so the caller's removal of the dump is the last word in the repository.
 */
async function runDrainedPgDump(
  o: DumpRun,
  binDir: string,
  args: string[],
  database: string,
  dir: string,
  store: (name: string, content: Readable) => Promise<StoredFile>,
): Promise<{ early: ReadonlyMap<string, StoredFile>; exitedAt: number }> {
  const max = o.spoolMaxBytes;
  const stop = new AbortController();
  let over: number | undefined;
  let drain: SpoolDrain | undefined;
  const measure = async () => {
    const bytes = await spoolBytes(dir);
    if (max !== undefined && bytes > max && over === undefined) {
      over = bytes;
      stop.abort();
    }
  };
  let reported = 0;
  const round = async () => {
    await measure();
    await drain?.tick();
    if (drain && drain.bytesStored !== reported)
      o.progress({
        phase: 'dump',
        bytesDone: drain.bytesStored,
        bytesTotal: 0,
        filesDone: 0,
        filesTotal: 0,
        message: database,
      });
    reported = drain?.bytesStored ?? 0;
  };
  let timer: NodeJS.Timeout | undefined;
  let measuring: Promise<void> = Promise.resolve();
  const tooBig = () =>
    new PgfleetError(
      'DumpSpoolFull',
      `pg_dump of database '${database}' wrote ${over} bytes into ${dir}, more than --dump-spool-max (${max} bytes)`,
    );
  const onSpawn = (pid: number) => {
    if (o.storeEarly !== false)
      drain = new SpoolDrain({
        dir,
        probe: (o.openFilesProbe ?? processTreeOpenFiles)(pid, dir),
        // pg_dump has at most --jobs files open at once: the rest of the places serve closed ones.
        limit: o.uploads + Math.max(1, o.jobs),
        store,
        beforeRemove: measure,
        log: o.log,
      });
    if (max !== undefined || drain)
      timer = setInterval(() => {
        measuring = measuring.then(round);
      }, SPOOL_CHECK_MS);
  };
  try {
    let result: { code: number; stderr: string };
    try {
      // The database by environment, not --dbname: a name holding '=' would be read as a connection string.
      result = await runClientProgram(
        join(binDir, 'pg_dump'),
        args,
        libpqEnv({ ...o.pg, database }, APP),
        AbortSignal.any([o.signal, stop.signal]),
        onSpawn,
      );
    } catch (err) {
      if (over !== undefined && !o.signal.aborted) throw tooBig();
      throw err;
    } finally {
      clearInterval(timer);
      await measuring;
    }
    const exitedAt = Date.now();
    const { code, stderr } = result;
    if (code !== 0) {
      // pg_dump's words for a full disk: "could not write to file ...: No space left on device".
      if (/No space left on device|Disk quota exceeded/i.test(stderr))
        throw new PgfleetError('DiskFull', `pg_dump of database '${database}' filled the disk of ${dir}: ${stderr}`);
      throw new PgfleetError('DumpFailed', `pg_dump of database '${database}' failed (exit ${code}): ${stderr}`);
    }
    await measure();
    if (over !== undefined) throw tooBig();
    if (!drain) return { early: new Map(), exitedAt };
    drain.pgDumpEnded();
    const early = await drain.finish();
    // The followers measured the spool once more before each removal.
    if (over !== undefined) throw tooBig();
    return { early, exitedAt };
  } catch (err) {
    await drain?.stop(err instanceof Error ? err : new Error(String(err)));
    throw err;
  }
}
