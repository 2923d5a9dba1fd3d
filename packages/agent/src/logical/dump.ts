/**
 * Logical backups (`pgfleet dump`, docs/logical.md): per database, pg_dump in directory format
 * (-Fd: the only format pg_dump and pg_restore run in parallel) into a spool directory under the
 * agent's scratch area, then every file stored through the repository layer (sha256 of content
 * and stored bytes, encrypted when the cluster is, in every repository of the job), and the spool
 * removed. pg_dump compresses its table files itself (gzip, its default for -Fd), inside its
 * parallel workers and while it reads; the repository stores those bytes as they are (codec
 * none). Letting pg_dump write uncompressed and the repository compress afterwards measured
 * 3.3x the bare pg_dump's time (two passes over the data, one of them on the agent's single
 * thread); this way a dump costs pg_dump's own time plus a copy of its compressed output.
 *
 * One snapshot per database: pg_dump takes it (with --jobs its workers import the leader's
 * exported snapshot), so each database is consistent in itself. pg_dump takes ACCESS SHARE locks
 * on every table at start and waits for them at most --lock-wait-timeout; a dump that cannot
 * get them fails rather than queue behind DDL for hours (and make DDL queue behind it).
 *
 * Globals (roles, tablespaces) come from `pg_dumpall --globals-only`, streamed straight into the
 * repository (no spool), role passwords left out unless asked for.
 *
 * The manifest (dump.json, the DumpResult) is written last: a failed dump removes what it stored
 * and leaves no manifest, and the controller lists only dumps whose job succeeded.
 *
 * Each table's exact rows are counted from its data file as the file is stored (copy-rows.ts) and
 * kept in the DumpResult (DumpTable.rows): what a dump drill compares the restored tables with.
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
import type { MessageInitShape } from '@bufbuild/protobuf';
import { toJson } from '@bufbuild/protobuf';
import { timestampFromDate } from '@bufbuild/protobuf/wkt';
import { type Logger, mapLimit, PgfleetError } from '@pgfleet/core';
import { connectPg, type PgConnectionOptions } from '@pgfleet/pg';
import { DumpResultSchema, type DumpFileSchema, type DumpTableSchema, type DumpedDatabaseSchema } from '@pgfleet/proto';
import { create } from '@bufbuild/protobuf';
import type { Codec, Repository, StoredFile } from '@pgfleet/storage';
import { sweepDeadSpools } from '../backup/entry-spool.js';
import { exitCode, libpqEnv, runClientProgram, tail } from '../pg-tools.js';
import { countCopyRows, readTableDataEntries } from './copy-rows.js';
import type { Progress } from '../progress.js';

type DumpFileInit = MessageInitShape<typeof DumpFileSchema>;
type DumpTableInit = MessageInitShape<typeof DumpTableSchema>;
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

export async function runDump(o: DumpOptions): Promise<DumpResultInit> {
  const started = new Date();
  const prefix = o.repo.dumpPrefix(o.cluster, o.label);
  const spool = join(o.scratchDir, spoolName('dump', o.cluster, o.jobId));
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
  const pgDumpVersion = await programVersion(join(binDir, 'pg_dump'));
  const dumped: DumpedDatabaseInit[] = [];
  let committed = false;
  try {
    await o.repo.prepareKeys(`${prefix}/dump.json`);
    for (const db of databases) {
      o.signal.throwIfAborted();
      dumped.push(await dumpDatabase(o, binDir, prefix, spool, db));
    }
    const globals = await dumpGlobals(o, binDir, `${prefix}/globals.sql`);
    const finished = new Date();
    const result: DumpResultInit = {
      label: o.label,
      databases: dumped,
      pgDumpVersion,
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
    return result;
  } catch (err) {
    // A cancel stays a cancel; anything that is not already a pgfleet condition is a failed dump.
    if (err instanceof PgfleetError || o.signal.aborted) throw err;
    throw new PgfleetError('DumpFailed', `dump ${o.label}: ${(err as Error).message}`, { cause: err });
  } finally {
    await removeSpool(spool, o.log);
    if (!committed)
      await o.repo.deleteDump(o.cluster, o.label).catch((err: unknown) => {
        o.log.warn({ err, label: o.label }, 'could not remove the failed dump from the repository');
      });
  }
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

/** A dump's table: its DumpTable and its pg_class oid (how the TOC names it). */
interface TableOfDump {
  oid: string;
  table: DumpTableInit;
}

/** Tables (plain, partitioned, materialized views) with pg_class.reltuples: the row estimates the catalog keeps. */
async function tableEstimates(pg: PgConnectionOptions, database: string): Promise<TableOfDump[]> {
  const c = await connectPg({ ...pg, database, applicationName: APP });
  try {
    const rows = (
      await c.query<{ oid: string; schema: string; name: string; est: string }>(
        `SELECT r.oid::text AS oid, n.nspname AS schema, r.relname AS name, r.reltuples::bigint::text AS est
           FROM pg_class r JOIN pg_namespace n ON n.oid = r.relnamespace
          WHERE r.relkind IN ('r', 'p', 'm') AND n.nspname NOT IN ('pg_catalog', 'information_schema')
            AND n.nspname NOT LIKE 'pg\\_toast%' AND n.nspname NOT LIKE 'pg\\_temp\\_%'
          ORDER BY 2, 3`,
      )
    ).rows;
    return rows.map((r) => ({ oid: r.oid, table: { schema: r.schema, name: r.name, rowEstimate: BigInt(r.est) } }));
  } finally {
    await c.end().catch(() => {});
  }
}

async function dumpDatabase(
  o: DumpOptions,
  binDir: string,
  prefix: string,
  spool: string,
  db: DatabaseToDump,
): Promise<DumpedDatabaseInit> {
  const t0 = Date.now();
  const dir = join(spool, db.oid);
  await mkdir(spool, { recursive: true, mode: 0o700 });
  let tables: TableOfDump[];
  try {
    tables = await tableEstimates(o.pg, db.name);
  } catch (err) {
    throw new PgfleetError('DumpFailed', `database '${db.name}': ${(err as Error).message}`, { cause: err });
  }
  o.progress({ phase: 'dump', bytesDone: 0, bytesTotal: 0, filesDone: 0, filesTotal: 0, message: db.name });
  const args = [
    '--format=directory',
    `--file=${dir}`,
    `--jobs=${Math.max(1, o.jobs)}`,
    ...(o.lockWaitTimeoutMs > 0 ? [`--lock-wait-timeout=${o.lockWaitTimeoutMs}`] : []),
    '--no-password',
  ];
  await runBoundedPgDump(o, binDir, args, db.name, dir);
  // Which data file is which table's: the TOC's TABLE DATA entries by table oid.
  const entries = await readTableDataEntries(join(binDir, 'pg_restore'), dir);
  const names = (await readdir(dir)).sort();
  const tableOfFile = new Map<string, DumpTableInit>();
  for (const t of tables) {
    const id = entries.get(t.oid);
    const file = id === undefined ? undefined : names.find((n) => n === `${id}.dat.gz` || n === `${id}.dat`);
    if (file) tableOfFile.set(file, t.table);
  }
  const sizes = await Promise.all(names.map(async (n) => (await stat(join(dir, n))).size));
  const total = sizes.reduce((a, b) => a + b, 0);
  let done = 0;
  let filesDone = 0;
  const key = (name: string) => `${prefix}/${db.oid}/${name}`;
  // Largest first, a few at once: the table files are independent objects.
  const order = names.map((_, i) => i).sort((x, y) => sizes[y]! - sizes[x]!);
  const files: DumpFileInit[] = new Array(names.length);
  await mapLimit(
    order,
    o.uploads,
    async (i) => {
      const table = tableOfFile.get(names[i]!);
      // The rows counted from a second read of the file (from the page cache) while it is stored.
      const [stored, rows] = await Promise.all([
        o.repo.writeObject(
          key(names[i]!),
          createReadStream(join(dir, names[i]!)),
          o.codec,
          [],
          o.level !== undefined ? { level: o.level } : {},
        ) as Promise<StoredFile>,
        table ? countCopyRows(join(dir, names[i]!), o.signal) : undefined,
      ]);
      if (table && rows !== undefined) {
        table.rows = BigInt(rows);
        table.rowsCounted = true;
      }
      files[i] = { name: names[i]!, ...storedFigures(stored) };
      done += sizes[i]!;
      filesDone++;
      o.progress({
        phase: 'store',
        bytesDone: done,
        bytesTotal: total,
        filesDone,
        filesTotal: names.length,
        message: db.name,
      });
    },
    o.signal,
  );
  await removeSpool(dir, o.log);
  const size = files.reduce((a, f) => a + Number(f.size ?? 0), 0);
  const storedSize = files.reduce((a, f) => a + Number(f.storedSize ?? 0), 0);
  o.log.info({ database: db.name, files: files.length, size, storedSize }, 'database dumped');
  return {
    name: db.name,
    dir: db.oid,
    files,
    tables: tables.map((t) => t.table),
    size: BigInt(size),
    storedSize: BigInt(storedSize),
    seconds: (Date.now() - t0) / 1000,
  };
}

function storedFigures(s: StoredFile): { size: bigint; sha256: string; storedSize: bigint; storedSha256: string } {
  return { size: BigInt(s.size), sha256: s.sha256, storedSize: BigInt(s.storedSize), storedSha256: s.storedSha256 };
}

/** pg_dumpall --globals-only streamed into the repository. */
async function dumpGlobals(o: DumpOptions, binDir: string, key: string): Promise<DumpFileInit> {
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
 * o.spoolMaxBytes it is stopped and the dump fails (DumpSpoolFull); a full disk is DiskFull.
 */
async function runBoundedPgDump(
  o: DumpOptions,
  binDir: string,
  args: string[],
  database: string,
  dir: string,
): Promise<void> {
  const max = o.spoolMaxBytes;
  const stop = new AbortController();
  let over: number | undefined;
  const measure = async () => {
    const bytes = await spoolBytes(dir);
    if (max !== undefined && bytes > max && over === undefined) {
      over = bytes;
      stop.abort();
    }
  };
  let timer: NodeJS.Timeout | undefined;
  let measuring: Promise<void> = Promise.resolve();
  if (max !== undefined)
    timer = setInterval(() => {
      measuring = measuring.then(measure);
    }, SPOOL_CHECK_MS);
  const tooBig = () =>
    new PgfleetError(
      'DumpSpoolFull',
      `pg_dump of database '${database}' wrote ${over} bytes into ${dir}, more than --dump-spool-max (${max} bytes)`,
    );
  let result: { code: number; stderr: string };
  try {
    // The database by environment, not --dbname: a name holding '=' would be read as a connection string.
    result = await runClientProgram(
      join(binDir, 'pg_dump'),
      args,
      libpqEnv({ ...o.pg, database }, APP),
      AbortSignal.any([o.signal, stop.signal]),
    );
  } catch (err) {
    if (over !== undefined && !o.signal.aborted) throw tooBig();
    throw err;
  } finally {
    clearInterval(timer);
    await measuring;
  }
  const { code, stderr } = result;
  if (code !== 0) {
    // pg_dump's words for a full disk: "could not write to file ...: No space left on device".
    if (/No space left on device|Disk quota exceeded/i.test(stderr))
      throw new PgfleetError('DiskFull', `pg_dump of database '${database}' filled the disk of ${dir}: ${stderr}`);
    throw new PgfleetError('DumpFailed', `pg_dump of database '${database}' failed (exit ${code}): ${stderr}`);
  }
  await measure();
  if (over !== undefined) throw tooBig();
}
