/**
 * recover-table (docs/undo.md): tables as they were at a recovery target, brought back into the
 * live cluster beside today's rows, which nothing here touches.
 *
 *   restore   the backup into <scratch>/pgfleet-drill-<job>/data, as a drill does (drill.ts:
 *             same scratch area, same cleanup on agent start), recovery to the target, promote;
 *   recovery  a throwaway PostgreSQL on it (scratch-postgres.ts) replays WAL to the target;
 *   dump      per table, in the copy (it is thrown away, so it may be changed): the table and its
 *             partitions move to schema pgfleet_recovered under the new name, its indexes and
 *             owned sequences are renamed after it, its foreign keys and triggers are dropped
 *             (they would point at or fire on live objects); then pg_dump of the backup's major
 *             version dumps exactly those relations, definition and data;
 *   load      pg_dump's output is piped into psql on the live cluster (the agent's own connection,
 *             --database), one transaction per table; a name already taken in pgfleet_recovered
 *             is refused (RecoveredTableExists), never overwritten;
 *   report    rows recovered, the live table's rows now, and the SQL to compare or merge.
 *
 * Sequences owned by the table move with it (ALTER TABLE SET SCHEMA does that), so the dump's
 * setval() sets pgfleet_recovered's copies and never the live sequences. A partitioned table
 * lands as a partitioned table, its partitions beside it under their own names. The repository is
 * only read (recovery fetches WAL with the read-only wal-fetch); the scratch copy is removed
 * whatever happens.
 */
import { spawn } from 'node:child_process';
import { join } from 'node:path';
import { Transform } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import type { MessageInitShape } from '@bufbuild/protobuf';
import { asPgfleetError, PgfleetError } from '@pgfleet/core';
import {
  connectPg,
  quoteIdentifier,
  quoteQualified,
  RECOVERED_SCHEMA,
  recoverTablePlan,
  type PgConnectionOptions,
  type QualifiedName,
} from '@pgfleet/pg';
import type { RecoveredTableSchema, RecoverTableResultSchema } from '@pgfleet/proto';
import { requireDrillVersion, type PgClient } from '../drill/capture.js';
import {
  chooseDrillBackup,
  newDrillRun,
  prepareScratch,
  requireAbsoluteScratch,
  restoreCopy,
  startAndRecover,
  tearDown,
  withClient,
  type DrillOptions,
  type DrillRun,
  type DrillTarget,
} from '../drill/drill.js';
import type { ScratchPostgres } from '../drill/scratch-postgres.js';
import { mergeStatements } from './merge-sql.js';
import { exitCode, libpqEnv, tail } from '../pg-tools.js';

export type RecoverTableResultInit = MessageInitShape<typeof RecoverTableResultSchema>;
type RecoveredTableInit = MessageInitShape<typeof RecoveredTableSchema>;

/** A drill's options (the scratch area, the repository, the live connection), a target, and the tables. */
export interface RecoverTableOptions extends Omit<DrillOptions, 'target' | 'source' | 'keep'> {
  target: DrillTarget;
  /** schema.name of each table, and its new name in pgfleet_recovered (none: their own). */
  tables: readonly string[];
  into: readonly string[];
  /** The tables' database ('' or absent: the agent connection's). */
  database?: string;
}

/** One table of the plan: where it was and the name it lands under. */
interface PlannedTable {
  table: QualifiedName;
  into: string;
}

/** What the copy says about a table once it is moved into pgfleet_recovered. */
interface PreparedTable {
  rows: bigint;
  primaryKey: string[];
  identityAlways: boolean;
  partitions: string[];
  droppedForeignKeys: string[];
  /** CHECK constraints and indexes dropped, generated columns made plain: they call non-pg_catalog functions. */
  droppedFunctionCalls: string[];
  /** The tables pg_dump is asked for: the table and its partitions (owned sequences come with them). */
  dumped: string[];
  /** Every relation the dump creates in pgfleet_recovered (tables, indexes, sequences): names that must be free. */
  relations: string[];
}

export async function runRecoverTable(o: RecoverTableOptions): Promise<RecoverTableResultInit> {
  const t0 = Date.now();
  const plan = recoverTablePlan(o.tables, o.into);
  requireAbsoluteScratch(o.scratchDir);
  const database = o.database || o.pg.database || 'postgres';
  const live: PgConnectionOptions = { ...o.pg, database, applicationName: 'pgfleet-recover-table' };
  // Before restoring gigabytes: the live cluster answers and the new names are free.
  await withLive(live, (c) =>
    refuseTaken(
      c,
      plan.map((p) => p.into),
    ),
  );
  // The scratch steps are a drill's (never kept): pg is the live connection, used only through withLive here.
  const run = newDrillRun({ ...o, keep: false });
  try {
    run.stage('restore', 'choosing the backup');
    const manifest = await chooseDrillBackup(run.o, o.target.spec, undefined);
    requireDrillVersion(manifest.pgVersionNum, `backup ${manifest.label}`);
    const pgdata = await prepareScratch(run, manifest);
    await restoreCopy(run, manifest, o.target, pgdata);
    const { server, major } = await startAndRecover(run, manifest, pgdata);
    const binDir = o.pgBinDir ?? `/usr/lib/postgresql/${major}/bin`;
    const t2 = Date.now();
    const exists = await withClient(
      server,
      'postgres',
      async (c) => (await c.query('SELECT 1 FROM pg_database WHERE datname = $1', [database])).rows.length > 0,
    );
    if (!exists)
      throw new PgfleetError(
        'RecoverTableNotFound',
        `database ${quoteIdentifier(database)} does not exist in the copy recovered to the target`,
      );
    // Every table first: a missing one fails the job before anything is loaded into the live cluster.
    await withClient(server, database, async (c) => {
      for (const p of plan) await findInCopy(c, p.table);
    });
    const tables: RecoveredTableInit[] = [];
    for (const p of plan) {
      o.signal?.throwIfAborted();
      tables.push(await recoverOne(run, server, binDir, live, p));
    }
    const r = run.r;
    const result: RecoverTableResultInit = {
      backupLabel: manifest.label,
      database,
      tables,
      recoveredLsn: r.recoveredLsn ?? '',
      ...(r.recoveredTime ? { recoveredTime: r.recoveredTime } : {}),
      restoreSeconds: r.restoreSeconds,
      recoverySeconds: r.recoverySeconds,
      dumpLoadSeconds: (Date.now() - t2) / 1000,
      totalSeconds: (Date.now() - t0) / 1000,
      restoredBytes: r.restoredBytes ?? 0n,
    };
    run.stage(
      'done',
      `${tables.map((t) => `${t.rowsRecovered} row(s) of ${t.table} in ${t.recoveredAs}`).join(', ')} after ${result.totalSeconds!.toFixed(1)} s`,
    );
    return result;
  } catch (err) {
    if (o.signal?.aborted)
      throw new PgfleetError('JobCancelled', `recover-table cancelled in stage ${run.r.stage}`, { cause: err });
    const e = asPgfleetError(err);
    // PostgreSQL's own words when the copy failed to recover, read before the teardown removes its log.
    const log = run.server ? await run.server.logExcerpt().catch(() => undefined) : undefined;
    const fatal = log?.firstFatal ? ` (PostgreSQL: ${log.firstFatal})` : '';
    // The scratch steps call a copy that did not start or recover a failed drill; here it is the copy.
    const name = e.errorName === 'DrillFailed' ? 'RecoverTableCopyFailed' : e.errorName;
    o.log.warn({ stage: run.r.stage, code: e.code }, 'recover-table failed');
    throw new PgfleetError(name, `recover-table failed in stage ${run.r.stage}: ${e.message}${fatal}`, {
      cause: err,
    });
  } finally {
    const t3 = Date.now();
    await tearDown(run);
    // After the rows are back (the reported total): the copy's server stopped and its files removed.
    o.log.info({ seconds: (Date.now() - t3) / 1000, dir: run.drillDir }, 'scratch copy removed');
  }
}

/** One table: prepared in the copy, dumped and loaded into the live cluster, counted on both sides. */
async function recoverOne(
  run: DrillRun,
  server: ScratchPostgres,
  binDir: string,
  live: PgConnectionOptions,
  p: PlannedTable,
): Promise<RecoveredTableInit> {
  const name = `${p.table.schema}.${p.table.name}`;
  const as = `${RECOVERED_SCHEMA}.${p.into}`;
  run.stage('dump', `preparing ${name} in the recovered copy as ${as}`);
  const prepared = await withClient(server, live.database!, (c) => prepareInCopy(c, p));
  await withLive(live, (c) => refuseTaken(c, prepared.relations));
  run.stage('load', `loading ${prepared.rows} row(s) of ${name} into the live cluster as ${as}`);
  const dumpBytes = await dumpAndLoad(run, server, binDir, live, prepared, `${prepared.rows} row(s) of ${name}`);
  return withLive(live, async (c) => {
    const rec = quoteQualified({ schema: RECOVERED_SCHEMA, name: p.into });
    const rowsRecovered = BigInt((await c.query<{ n: string }>(`SELECT count(*)::text AS n FROM ${rec}`)).rows[0]!.n);
    const exists =
      (await c.query<{ r: string | null }>('SELECT to_regclass($1)::text AS r', [quoteQualified(p.table)])).rows[0]!
        .r !== null;
    const liveRows = exists
      ? BigInt((await c.query<{ n: string }>(`SELECT count(*)::text AS n FROM ${quoteQualified(p.table)}`)).rows[0]!.n)
      : -1n;
    const sql = mergeStatements({
      live: p.table,
      recovered: p.into,
      primaryKey: prepared.primaryKey,
      liveExists: exists,
      identityAlways: prepared.identityAlways,
    });
    run.o.log.info({ table: name, recoveredAs: as, rowsRecovered, liveRows }, 'table recovered');
    return {
      table: name,
      recoveredAs: as,
      rowsRecovered,
      liveRows,
      primaryKey: prepared.primaryKey,
      mergeSql: sql.merge,
      compareSql: sql.compare,
      partitions: prepared.partitions.map((n) => `${RECOVERED_SCHEMA}.${n}`),
      dumpBytes: BigInt(dumpBytes),
      droppedForeignKeys: prepared.droppedForeignKeys,
      droppedFunctionCalls: prepared.droppedFunctionCalls,
    };
  });
}

/** Runs `fn` on a connection to the live cluster; a refused connection is RecoverTableLiveUnreachable. */
async function withLive<T>(live: PgConnectionOptions, fn: (c: PgClient) => Promise<T>): Promise<T> {
  let c: PgClient;
  try {
    c = await connectPg(live);
  } catch (err) {
    throw new PgfleetError(
      'RecoverTableLiveUnreachable',
      `cannot connect to database ${quoteIdentifier(live.database ?? '')} of the live cluster: ${(err as Error).message}`,
      { cause: err },
    );
  }
  try {
    return await fn(c);
  } finally {
    await c.end().catch(() => {});
  }
}

/** Refuses names already taken in the live cluster's pgfleet_recovered: recover-table never overwrites. */
async function refuseTaken(c: PgClient, names: readonly string[]): Promise<void> {
  const taken = (
    await c.query<{ n: string }>(
      `SELECT c.relname AS n FROM pg_class c JOIN pg_namespace s ON s.oid = c.relnamespace
        WHERE s.nspname = $1 AND c.relname = ANY($2::text[]) ORDER BY 1`,
      [RECOVERED_SCHEMA, names],
    )
  ).rows.map((r) => `${RECOVERED_SCHEMA}.${quoteIdentifier(r.n)}`);
  if (taken.length > 0)
    throw new PgfleetError(
      'RecoveredTableExists',
      `${taken.join(', ')} already exist${taken.length === 1 ? 's' : ''} in the live cluster: recover-table never overwrites; choose another name with --into, or drop the old copy`,
    );
}

/**
 * Moves the table (and its partitions) into pgfleet_recovered in the copy under the new name,
 * renames its indexes and owned sequences after it, drops its foreign keys and triggers; returns
 * what the dump will create. The copy is thrown away, so changing it is free.
 */
/** The table in the copy (a table or a partitioned table); RecoverTableNotFound when it did not exist at the target. */
async function findInCopy(c: PgClient, table: QualifiedName): Promise<{ oid: string; partition: boolean }> {
  const found = (
    await c.query<{ oid: string; partition: boolean }>(
      `SELECT c.oid::text AS oid, c.relispartition AS partition FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
        WHERE n.nspname = $1 AND c.relname = $2 AND c.relkind IN ('r', 'p')`,
      [table.schema, table.name],
    )
  ).rows[0];
  if (!found)
    throw new PgfleetError(
      'RecoverTableNotFound',
      `table ${quoteQualified(table)} does not exist in database ${quoteIdentifier(c.database ?? '')} of the copy recovered to the target (it did not exist then)`,
    );
  return found;
}

async function prepareInCopy(c: PgClient, p: PlannedTable): Promise<PreparedTable> {
  const found = await findInCopy(c, p.table);
  const oid = found.oid;
  await c.query('BEGIN');
  if (found.partition) {
    // Asked for one partition: it lands as a table of its own, never attached to a live parent.
    const parent = (
      await c.query<{ p: string }>('SELECT inhparent::regclass::text AS p FROM pg_inherits WHERE inhrelid = $1', [oid])
    ).rows[0]!.p;
    await c.query(`ALTER TABLE ${parent} DETACH PARTITION ${await regclass(c, oid)}`);
  }
  const rows = BigInt(
    (await c.query<{ n: string }>(`SELECT count(*)::text AS n FROM ${await regclass(c, oid)}`)).rows[0]!.n,
  );
  const partitionOids = (
    await c.query<{ oid: string }>(
      `WITH RECURSIVE parts(oid) AS (
         SELECT inhrelid FROM pg_inherits WHERE inhparent = $1::oid
         UNION ALL SELECT i.inhrelid FROM pg_inherits i JOIN parts p ON i.inhparent = p.oid)
       SELECT oid::text AS oid FROM parts`,
      [oid],
    )
  ).rows.map((r) => r.oid);
  const rels = [oid, ...partitionOids];
  const primaryKey = (
    await c.query<{ a: string }>(
      `SELECT a.attname AS a FROM pg_index i JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = ANY(i.indkey)
        WHERE i.indrelid = $1::oid AND i.indisprimary ORDER BY array_position(i.indkey::int2[], a.attnum)`,
      [oid],
    )
  ).rows.map((r) => r.a);
  const identityAlways =
    (
      await c.query(
        `SELECT 1 FROM pg_attribute WHERE attrelid = $1::oid AND attnum > 0 AND NOT attisdropped AND attidentity = 'a'`,
        [oid],
      )
    ).rows.length > 0;
  // Foreign keys would point at live tables (or at nothing); inherited ones go with their parent's.
  const fks = (
    await c.query<{ rel: string; name: string; con: string }>(
      `SELECT conrelid::regclass::text AS rel, format('%I.%I.%I', n.nspname, c.relname, conname) AS name, conname AS con
         FROM pg_constraint k JOIN pg_class c ON c.oid = k.conrelid JOIN pg_namespace n ON n.oid = c.relnamespace
        WHERE contype = 'f' AND conrelid = ANY($1::oid[]) AND conparentid = 0 ORDER BY conrelid, conname`,
      [rels],
    )
  ).rows;
  for (const fk of fks) await c.query(`ALTER TABLE ${fk.rel} DROP CONSTRAINT ${quoteIdentifier(fk.con)}`);
  // Triggers would fire on the live cluster for rows a DBA merges by hand, calling live functions.
  const triggers = (
    await c.query<{ rel: string; tg: string }>(
      `SELECT tgrelid::regclass::text AS rel, tgname AS tg FROM pg_trigger
        WHERE tgrelid = ANY($1::oid[]) AND NOT tgisinternal AND tgparentid = 0`,
      [rels],
    )
  ).rows;
  for (const t of triggers) await c.query(`DROP TRIGGER ${quoteIdentifier(t.tg)} ON ${t.rel}`);
  const functionCalls = await dropFunctionCalls(c, rels);
  if (p.table.schema !== RECOVERED_SCHEMA) {
    // What the copy held in pgfleet_recovered (an earlier recovery, at the target) is not wanted here.
    await c.query(`DROP SCHEMA IF EXISTS ${quoteIdentifier(RECOVERED_SCHEMA)} CASCADE`);
    await c.query(`CREATE SCHEMA ${quoteIdentifier(RECOVERED_SCHEMA)}`);
  }
  for (const rel of rels) {
    const schema = (
      await c.query<{ s: string }>('SELECT relnamespace::regnamespace::text AS s FROM pg_class WHERE oid = $1::oid', [
        rel,
      ])
    ).rows[0]!.s;
    if (schema !== quoteIdentifier(RECOVERED_SCHEMA) && schema !== RECOVERED_SCHEMA)
      await c.query(`ALTER TABLE ${await regclass(c, rel)} SET SCHEMA ${quoteIdentifier(RECOVERED_SCHEMA)}`);
  }
  if (p.into !== p.table.name) {
    await c.query(`ALTER TABLE ${await regclass(c, oid)} RENAME TO ${quoteIdentifier(p.into)}`);
    // Index and sequence names share the schema's namespace: named after the new name, a second
    // recovery of the same table under another name does not collide with the first.
    const owned = (
      await c.query<{ oid: string; name: string }>(
        `SELECT c.oid::text AS oid, c.relname AS name FROM pg_class c
          WHERE c.oid IN (SELECT indexrelid FROM pg_index WHERE indrelid = $1::oid
                          UNION SELECT objid FROM pg_depend WHERE classid = 'pg_class'::regclass AND refobjid = $1::oid AND deptype IN ('a', 'i'))
            AND c.relkind IN ('i', 'I', 'S')`,
        [oid],
      )
    ).rows;
    for (const r of owned) {
      const renamed = r.name.startsWith(p.table.name)
        ? `${p.into}${r.name.slice(p.table.name.length)}`
        : `${p.into}_${r.name}`;
      const kind = (await c.query<{ k: string }>('SELECT relkind AS k FROM pg_class WHERE oid = $1::oid', [r.oid]))
        .rows[0]!.k;
      const what = kind === 'S' ? 'SEQUENCE' : 'INDEX';
      await c.query(`ALTER ${what} ${await regclass(c, r.oid)} RENAME TO ${quoteIdentifier(truncateName(renamed))}`);
    }
  }
  const relations = (
    await c.query<{ name: string; kind: string; oid: string }>(
      `SELECT c.relname AS name, c.relkind AS kind, c.oid::text AS oid FROM pg_class c
        WHERE c.oid = ANY($1::oid[])
           OR c.oid IN (SELECT indexrelid FROM pg_index WHERE indrelid = ANY($1::oid[]))
           OR c.oid IN (SELECT objid FROM pg_depend WHERE classid = 'pg_class'::regclass AND refobjid = ANY($1::oid[]) AND deptype IN ('a', 'i'))
        ORDER BY c.oid`,
      [rels],
    )
  ).rows;
  await c.query('COMMIT');
  return {
    rows,
    primaryKey,
    identityAlways,
    partitions: relations.filter((r) => partitionOids.includes(r.oid)).map((r) => r.name),
    dumped: relations.filter((r) => rels.includes(r.oid)).map((r) => r.name),
    droppedForeignKeys: fks.map((f) => f.name),
    droppedFunctionCalls: functionCalls,
    // TOAST tables live in pg_toast, never in pgfleet_recovered.
    relations: relations.filter((r) => r.kind !== 't').map((r) => r.name),
  };
}

/** The relation's name as SQL accepts it (schema-qualified when not on the search path, quoted as needed). */
async function regclass(c: PgClient, oid: string): Promise<string> {
  return (await c.query<{ r: string }>('SELECT $1::oid::regclass::text AS r', [oid])).rows[0]!.r;
}

/** Identifiers longer than 63 bytes are cut by PostgreSQL; cut here so the name reported is the one made. */
function truncateName(name: string): string {
  let out = name;
  while (Buffer.byteLength(out) > 63) out = out.slice(0, -1);
  return out;
}

/**
 * pg_dump of the relations in pgfleet_recovered piped into psql on the live cluster, one
 * transaction (--single-transaction with ON_ERROR_STOP: a failed load leaves nothing). Returns
 * the bytes loaded.
 */
async function dumpAndLoad(
  run: DrillRun,
  server: ScratchPostgres,
  binDir: string,
  live: PgConnectionOptions,
  prepared: PreparedTable,
  what: string,
): Promise<number> {
  const { o } = run;
  const patterns = prepared.dumped.flatMap((n) => ['-t', `${quoteIdentifier(RECOVERED_SCHEMA)}.${quoteIdentifier(n)}`]);
  const scratch = { ...server.libpqTarget(), database: live.database! };
  const dump = spawn(
    join(binDir, 'pg_dump'),
    [
      '--no-owner',
      '--no-privileges',
      '--no-publications',
      '--no-subscriptions',
      '--no-security-labels',
      '--no-tablespaces',
      '--strict-names',
      ...patterns,
    ],
    {
      env: libpqEnv(scratch, 'pgfleet-recover-table'),
      stdio: ['ignore', 'pipe', 'pipe'],
      ...(o.signal ? { signal: o.signal } : {}),
    },
  );
  const load = spawn(
    join(binDir, 'psql'),
    [
      '-X',
      '-q',
      '-v',
      'ON_ERROR_STOP=1',
      '--single-transaction',
      '-c',
      `CREATE SCHEMA IF NOT EXISTS ${quoteIdentifier(RECOVERED_SCHEMA)}`,
      '-f',
      '-',
    ],
    {
      env: libpqEnv(live, 'pgfleet-recover-table'),
      stdio: ['pipe', 'pipe', 'pipe'],
      ...(o.signal ? { signal: o.signal } : {}),
    },
  );
  const dumpErr = tail(dump.stderr);
  const loadErr = tail(load.stderr);
  load.stdout?.resume();
  const dumpExit = exitCode(dump);
  const loadExit = exitCode(load);
  let bytes = 0;
  let reported = 0;
  const counter = new Transform({
    transform(chunk: Buffer, _enc, cb) {
      bytes += chunk.length;
      if (bytes - reported >= 8 * 2 ** 20) {
        reported = bytes;
        o.progress({ phase: 'load', bytesDone: bytes, bytesTotal: 0, filesDone: 0, filesTotal: 0, message: what });
      }
      cb(null, chunk);
    },
  });
  // psql's input is ended only once pg_dump has exited 0: at the end of its input psql commits
  // what it read, so a dump that failed half way must never reach an end; psql is killed instead
  // (the server rolls the transaction back).
  const piped = await pipeline(dump.stdout!, counter, load.stdin!, { end: false }).then(
    () => undefined,
    (err: unknown) => err as Error,
  );
  const dumpCode = await dumpExit;
  const dumped = dumpCode === 0 && !piped;
  if (dumped) load.stdin!.end();
  else load.kill('SIGKILL');
  const loadCode = await loadExit;
  o.signal?.throwIfAborted();
  // psql stopping on an error (ON_ERROR_STOP: exit 3) breaks pg_dump's pipe: its message is the one that matters.
  if (loadCode > 0 || (dumped && loadCode !== 0))
    throw new PgfleetError(
      'RecoverTableLoadFailed',
      `loading into the live cluster failed (psql exit ${loadCode}): ${loadErr() || 'no message'}`,
    );
  if (!dumped)
    throw new PgfleetError(
      'RecoverTableLoadFailed',
      `pg_dump from the recovered copy failed (exit ${dumpCode}): ${dumpErr() || piped?.message || 'no message'}`,
    );
  o.progress({ phase: 'load', bytesDone: bytes, bytesTotal: bytes, filesDone: 1, filesTotal: 1, message: what });
  return bytes;
}

/** pg_depend rows of `classid` objects on functions outside pg_catalog (SQL fragment). */
const CALLS_USER_FUNCTION = (classid: string, objid: string) => `EXISTS (
  SELECT 1 FROM pg_depend dep JOIN pg_proc f ON f.oid = dep.refobjid JOIN pg_namespace fn ON fn.oid = f.pronamespace
   WHERE dep.classid = '${classid}'::regclass AND dep.objid = ${objid} AND dep.refclassid = 'pg_proc'::regclass
     AND fn.nspname <> 'pg_catalog')`;

/**
 * In the copy: what would run code of the table's owner in the live cluster while the rows load
 * (as the agent's role, which may be a superuser): CHECK constraints and indexes whose expressions
 * call functions outside pg_catalog are dropped, generated columns calling them keep their values
 * as plain columns. A function replaced since the mistake could otherwise do anything there.
 */
async function dropFunctionCalls(c: PgClient, rels: readonly string[]): Promise<string[]> {
  const dropped: string[] = [];
  const checks = (
    await c.query<{ rel: string; con: string; name: string }>(
      `SELECT k.conrelid::regclass::text AS rel, k.conname AS con, format('%I.%I.%I', n.nspname, r.relname, k.conname) AS name
         FROM pg_constraint k JOIN pg_class r ON r.oid = k.conrelid JOIN pg_namespace n ON n.oid = r.relnamespace
        WHERE k.contype = 'c' AND k.conrelid = ANY($1::oid[]) AND k.conparentid = 0 AND NOT k.coninhcount > 0
          AND ${CALLS_USER_FUNCTION('pg_constraint', 'k.oid')}
        ORDER BY k.conrelid, k.conname`,
      [rels],
    )
  ).rows;
  for (const k of checks) {
    await c.query(`ALTER TABLE ${k.rel} DROP CONSTRAINT ${quoteIdentifier(k.con)}`);
    dropped.push(`check ${k.name}`);
  }
  const indexes = (
    await c.query<{ idx: string; name: string }>(
      `SELECT i.indexrelid::regclass::text AS idx, format('%I.%I', n.nspname, x.relname) AS name
         FROM pg_index i JOIN pg_class x ON x.oid = i.indexrelid JOIN pg_namespace n ON n.oid = x.relnamespace
        WHERE i.indrelid = ANY($1::oid[]) AND NOT i.indisprimary
          AND NOT EXISTS (SELECT 1 FROM pg_constraint k WHERE k.conindid = i.indexrelid AND k.contype IN ('p', 'u', 'x') AND k.conparentid <> 0)
          AND NOT EXISTS (SELECT 1 FROM pg_inherits h WHERE h.inhrelid = i.indexrelid)
          AND ${CALLS_USER_FUNCTION('pg_class', 'i.indexrelid')}
        ORDER BY 1`,
      [rels],
    )
  ).rows;
  for (const i of indexes) {
    const con = (
      await c.query<{ rel: string; con: string }>(
        `SELECT conrelid::regclass::text AS rel, conname AS con FROM pg_constraint WHERE conindid = $1::regclass AND contype IN ('u', 'x')`,
        [i.idx],
      )
    ).rows[0];
    if (con) await c.query(`ALTER TABLE ${con.rel} DROP CONSTRAINT ${quoteIdentifier(con.con)}`);
    else await c.query(`DROP INDEX ${i.idx}`);
    dropped.push(`index ${i.name}`);
  }
  const generated = (
    await c.query<{ rel: string; col: string; name: string }>(
      `SELECT a.attrelid::regclass::text AS rel, a.attname AS col, format('%I.%I.%I', n.nspname, r.relname, a.attname) AS name
         FROM pg_attribute a JOIN pg_attrdef d ON d.adrelid = a.attrelid AND d.adnum = a.attnum
         JOIN pg_class r ON r.oid = a.attrelid JOIN pg_namespace n ON n.oid = r.relnamespace
        WHERE a.attrelid = ANY($1::oid[]) AND a.attgenerated = 's' AND a.attinhcount = 0
          AND ${CALLS_USER_FUNCTION('pg_attrdef', 'd.oid')}
        ORDER BY 1, 2`,
      [rels],
    )
  ).rows;
  for (const g of generated) {
    await c.query(`ALTER TABLE ${g.rel} ALTER COLUMN ${quoteIdentifier(g.col)} DROP EXPRESSION`);
    dropped.push(`generated column ${g.name}`);
  }
  return dropped;
}
