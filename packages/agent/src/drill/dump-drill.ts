/**
 * Dump drills (`pgfleet drill <cluster> --dump [LABEL]`, docs/drills.md): prove that a logical
 * dump restores, every table with the rows it was dumped with, and how long the restore takes.
 *
 *   start     initdb of a throwaway PostgreSQL of the dump's server major version in
 *             <scratch>/pgfleet-drill-<job>/data, started like a physical drill's copy
 *             (scratch-postgres.ts: own socket only, trust on it, never archiving);
 *   restore   per database: its files fetched from the repository into the drill directory, each
 *             checked against the catalog's size and sha256 (restore-dump.ts's fetchFiles), the
 *             database created and loaded with pg_restore --jobs of that major version. Fetch +
 *             pg_restore is the restore time (the RTO figure); initdb and the start are not in it,
 *             a restore-dump into an existing cluster needs neither;
 *   counts    count(*) of every table the dump counted (DumpTable.rows, its count(*)
 *             in pg_dump's snapshot, dump-snapshot.ts) compared with it: they must be equal, a
 *             table missing or counted differently fails the drill (DumpDrillCountsDiffer) naming
 *             the tables;
 *   done      and, whatever happened, the server stopped and the directory removed (drill.ts's
 *             tearDown; a drill directory an agent left behind is a physical drill's leftover too).
 *
 * The restore leaves out what cannot or must not exist in a throwaway copy: owners and grants (the
 * copy has none of the source's roles), tablespaces (the source's paths), subscriptions and
 * security labels. None of them changes a row count. The repository is only read.
 */
import { execFile } from 'node:child_process';
import { rm } from 'node:fs/promises';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { PgfleetError } from '@pgfleet/core';
import { quoteIdentifier } from '@pgfleet/pg';
import type { DumpDrill, DumpedDatabase } from '@pgfleet/proto';
import { isCodec, type Codec } from '@pgfleet/storage';
import { clientBinDir } from '../logical/dump.js';
import { fetchFiles } from '../logical/restore-dump.js';
import { libpqEnv, runClientProgram } from '../pg-tools.js';
import type { SourceCountsInit } from './capture.js';
import {
  compareTableCounts,
  drillFailure,
  newDrillRun,
  prepareScratchFor,
  requireAbsoluteScratch,
  requireScratchSpace,
  tableKey,
  tearDown,
  withClient,
  type DrillOptions,
  type DrillResultInit,
  type DrillRun,
  type RestoredCounts,
  type TableCountDiffInit,
} from './drill.js';
import { ScratchPostgres } from './scratch-postgres.js';

const run = promisify(execFile);
const APP = 'pgfleet-dump-drill';

export type DumpDrillOptions = DrillOptions & { dump: DumpDrill };

/** The stages of the module header; the teardown runs whatever happened. */
export async function runDumpDrill(o: DumpDrillOptions): Promise<DrillResultInit> {
  const d = o.dump;
  const drill = newDrillRun(o);
  const r = drill.r;
  r.dumpLabel = d.label;
  r.dumpDatabases = d.databases.map((x) => x.name);
  r.stage = 'start';
  try {
    requireAbsoluteScratch(o.scratchDir);
    if (!isCodec(d.codec)) throw new PgfleetError('DumpInvalid', `dump codec '${d.codec}' is not one this agent reads`);
    const expected = expectedCounts(d);
    const bytes = d.databases.reduce((a, db) => a + db.files.reduce((b, f) => b + Number(f.size), 0), 0);
    // The fetched files, and room for the restored tables: at least as much again (compressed dumps grow).
    const pgdata = await prepareScratchFor(drill, () =>
      requireScratchSpace(o.scratchDir, 3 * bytes + 64 * 2 ** 20, `restoring dump ${d.label} (${bytes} bytes)`),
    );
    const server = await startScratch(drill, pgdata, d.serverMajor);
    const binDir = clientBinDir(o.pgBinDir, d.serverMajor * 10000);
    drill.stage('restore', `restoring dump ${d.label}: ${r.dumpDatabases.join(', ')}`);
    const t0 = Date.now();
    for (const db of d.databases) {
      o.signal?.throwIfAborted();
      await restoreDatabase(drill, server, binDir, db, d.codec);
    }
    r.restoreSeconds = (Date.now() - t0) / 1000;
    r.rtoSeconds = r.restoreSeconds;
    r.restoredBytes = BigInt(bytes);
    drill.stage(
      'counts',
      `restored in ${r.restoreSeconds.toFixed(1)} s: comparing ${expected.tables.length} table count(s)`,
    );
    compareWithDump(drill, expected, await countRestored(server, expected));
    drill.stage(
      'done',
      `dump drill passed: restored in ${r.restoreSeconds.toFixed(1)} s, ${r.tablesCompared} table count(s) equal`,
    );
    r.ok = true;
    return r;
  } catch (err) {
    throw await drillFailure(drill, err);
  } finally {
    await tearDown(drill);
  }
}

/** The dump's exact counts as a SourceCounts (changeBound 0: a dump is one snapshot per database). */
export function expectedCounts(d: Pick<DumpDrill, 'label' | 'databases'>): SourceCountsInit {
  const tables = d.databases.flatMap((db) =>
    db.tables
      .filter((t) => t.rowsCounted)
      .map((t) => ({ database: db.name, schema: t.schema, table: t.name, rows: t.rows })),
  );
  // A dump of tables none of which was counted was taken before counts were recorded.
  const uncounted = d.databases.some((db) => db.tables.length > 0 && !db.tables.some((t) => t.rowsCounted));
  if (uncounted && tables.length === 0)
    throw new PgfleetError('DumpDrillUnavailable', `dump ${d.label} recorded no exact row counts to compare with`);
  return { restorePoint: '', lsn: '', tables, changeBound: 0n };
}

/** initdb (the agent's role as bootstrap superuser, trust only on the drill's socket), configure, start, wait until it takes connections. */
async function startScratch(drill: DrillRun, pgdata: string, major: number): Promise<ScratchPostgres> {
  const { o } = drill;
  const binDir = o.pgBinDir ?? `/usr/lib/postgresql/${major}/bin`;
  const user = o.pg.user ?? 'postgres';
  drill.stage('start', `initdb and start of a throwaway PostgreSQL ${major}`);
  try {
    // No fsync: the copy is thrown away; UTF8 holds whatever the dump's encoding converts to.
    await run(
      join(binDir, 'initdb'),
      ['-D', pgdata, '-U', user, '--auth=trust', '-E', 'UTF8', '--locale=C', '--no-sync'],
      { timeout: 120_000, ...(o.signal ? { signal: o.signal } : {}) },
    );
  } catch (err) {
    o.signal?.throwIfAborted();
    throw new PgfleetError(
      'DumpDrillFailed',
      `initdb of the throwaway PostgreSQL ${major} failed: ${(err as { stderr?: string }).stderr?.trim() || (err as Error).message}`,
      { cause: err },
    );
  }
  const server = new ScratchPostgres({
    pgdata,
    runDir: drill.drillDir,
    socketDir: drill.socketDir!,
    binDir,
    major,
    user,
    jobId: o.jobId,
  });
  // Known to the teardown from here on: whatever happens next, it stops this server.
  drill.server = server;
  await server.configure();
  await server.start();
  // Never in recovery: "promoted" as soon as it takes connections.
  await server.waitPromoted(o.signal, () => {});
  return server;
}

/** One database of the dump: fetched (checked) into the drill directory, created, pg_restore'd; its files removed after. */
async function restoreDatabase(
  drill: DrillRun,
  server: ScratchPostgres,
  binDir: string,
  db: DumpedDatabase,
  codec: Codec,
): Promise<void> {
  const { o } = drill;
  const d = o as DumpDrillOptions;
  const dir = join(drill.drillDir, `dump-${db.dir}`);
  await fetchFiles(
    {
      database: db,
      downloads: Math.max(2, o.workers),
      repo: o.repo,
      codec,
      label: d.dump.label,
      progress: (p) => o.progress({ ...p, phase: `restore-${p.phase}` }),
      signal: o.signal ?? new AbortController().signal,
    },
    `${o.repo.dumpPrefix(d.dump.cluster || o.cluster, d.dump.label)}/${db.dir}`,
    dir,
  );
  // A fresh cluster has postgres, template0 and template1: a dumped 'postgres' replaces its own.
  await withClient(server, 'template1', async (c) => {
    await c.query(`DROP DATABASE IF EXISTS ${quoteIdentifier(db.name)}`);
    await c.query(`CREATE DATABASE ${quoteIdentifier(db.name)} TEMPLATE template0`);
  });
  const dbname = `dbname='${db.name.replaceAll('\\', '\\\\').replaceAll("'", "\\'")}'`;
  const { code, stderr } = await runClientProgram(
    join(binDir, 'pg_restore'),
    [
      '--dbname',
      dbname,
      '--format=directory',
      `--jobs=${Math.max(1, d.dump.jobs || 2)}`,
      '--exit-on-error',
      '--no-password',
      '--no-owner',
      '--no-privileges',
      '--no-tablespaces',
      '--no-subscriptions',
      '--no-security-labels',
      dir,
    ],
    libpqEnv({ ...server.libpqTarget(), database: db.name }, APP),
    o.signal ?? new AbortController().signal,
  );
  if (code !== 0)
    throw new PgfleetError(
      'DumpDrillFailed',
      `pg_restore of database '${db.name}' of dump ${d.dump.label} failed (exit ${code}): ${stderr}`,
    );
  await rm(dir, { recursive: true, force: true });
}

/** count(*) of every table the dump counted, in the restored copy (ONLY: COPY TO wrote no child's rows). */
async function countRestored(server: ScratchPostgres, expected: SourceCountsInit): Promise<RestoredCounts> {
  const out = new Map<string, Map<string, bigint>>();
  for (const database of new Set(expected.tables.map((t) => t.database))) {
    const counts = new Map<string, bigint>();
    await withClient(server, database, async (c) => {
      for (const t of expected.tables.filter((x) => x.database === database)) {
        const exists = await c.query(
          'SELECT 1 FROM pg_class r JOIN pg_namespace n ON n.oid = r.relnamespace WHERE n.nspname = $1 AND r.relname = $2',
          [t.schema, t.table],
        );
        if (exists.rows.length === 0) continue;
        const n = await c.query<{ n: string }>(
          `SELECT count(*)::text AS n FROM ONLY ${quoteIdentifier(t.schema)}.${quoteIdentifier(t.table)}`,
        );
        counts.set(tableKey(t.schema, t.table), BigInt(n.rows[0]!.n));
      }
    });
    out.set(database, counts);
  }
  return out;
}

/** Tables named in a failure: at most this many. */
const NAMED_TABLES = 10;

/** `db.schema.table (dump N, restored M)` for each differing table, at most NAMED_TABLES. */
export function describeCountDiffs(diffs: readonly TableCountDiffInit[], differing: number): string {
  const one = (x: TableCountDiffInit) =>
    `${x.database}.${x.schema}.${x.table} (dump ${x.sourceRows}, restored ${x.restoredRows < 0n ? 'missing' : x.restoredRows})`;
  const more = differing > NAMED_TABLES ? `, ... (${differing - NAMED_TABLES} more)` : '';
  return `${diffs.slice(0, NAMED_TABLES).map(one).join(', ')}${more}`;
}

/** Records the comparison in the result; differing counts fail the drill (DumpDrillCountsDiffer) naming the tables. */
function compareWithDump(drill: DrillRun, expected: SourceCountsInit, restored: RestoredCounts): void {
  const { r } = drill;
  const compared = compareTableCounts(expected, restored);
  r.countDiffs.push(...compared.diffs);
  r.countsCompared = true;
  r.tablesCompared = expected.tables.length;
  r.countChangeBound = 0n;
  r.countsEqual = compared.differing === 0;
  if (compared.ok) return;
  r.reasons.push(
    `row counts differ from the dump's in ${compared.differing} table(s): ${describeCountDiffs(compared.diffs, compared.differing)}`,
  );
  drill.reasonsRecorded = true;
  throw new PgfleetError('DumpDrillCountsDiffer', r.reasons.join('; '));
}
