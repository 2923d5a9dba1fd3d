/**
 * Source row counts for restore drills (docs/drills.md), taken on the cluster's own agent: the
 * rows of every user table, then a named restore point the drill recovers to, so that the
 * restored copy can be compared with what the source held at that point.
 *
 *   1. n_tup_ins + n_tup_del of pg_stat_user_tables, summed over every database ("before");
 *   2. per database, one snapshot: a REPEATABLE READ READ ONLY transaction takes it
 *      (pg_current_snapshot()) and exports it (pg_export_snapshot()); every table is then counted
 *      in a short transaction of its own that imports that snapshot, so each table is locked
 *      (ACCESS SHARE) only while it is counted, not until the whole database is done, and a lock
 *      that is not granted within COUNT_LOCK_TIMEOUT fails the count instead of queueing behind DDL;
 *   3. pg_create_restore_point('pgfleet-drill-<job>'), pg_switch_wal(), and wait until the
 *      segment holding the restore point is in the repository, so recovery can reach it;
 *   4. pg_current_snapshot() again: when it equals the first database's counting snapshot no
 *      transaction ended in between, so the state at the restore point is the counted state and
 *      change_bound is 0 (exact comparison). Otherwise change_bound is the growth of
 *      n_tup_ins + n_tup_del from step 1 to now, read after the statistics had time to flush,
 *      plus the rows then and now of every table rewritten since it was counted (TRUNCATE
 *      empties a table without counting deleted tuples); tables dropped meanwhile are not compared.
 *
 * The only writes are the restore point and the WAL switch (no transaction id is assigned).
 * Unlogged tables are not counted: their contents are not in WAL, a restored copy has them
 * empty. Temporary tables belong to their sessions and are not in backups either.
 */
import { timestampFromDate } from '@bufbuild/protobuf/wkt';
import type { Timestamp } from '@bufbuild/protobuf/wkt';
import { PgfleetError, sleep, type Logger } from '@pgfleet/core';
import { clusterFacts, connectPg, quoteIdentifier, type PgConnectionOptions } from '@pgfleet/pg';
import type { Repository } from '@pgfleet/storage';
import type { ProgressSink } from '../progress.js';

/** The libpq client @pgfleet/pg hands out (the agent declares no direct dependency on pg). */
export type PgClient = Awaited<ReturnType<typeof connectPg>>;

export interface TableRowCountInit {
  database: string;
  schema: string;
  table: string;
  rows: bigint;
}

/** The SourceCounts message (agent.proto) as the agent builds and reads it. */
export interface SourceCountsInit {
  restorePoint: string;
  lsn: string;
  time?: Timestamp;
  tables: TableRowCountInit[];
  changeBound: bigint;
}

export interface CaptureOptions {
  cluster: string;
  pg: PgConnectionOptions;
  repo: Repository;
  restorePoint: string;
  archiveTimeoutMs: number;
  log: Logger;
  progress: ProgressSink;
  signal?: AbortSignal;
}

/**
 * How long after the restore point the "after" statistics are read on a busy source. A backend
 * flushes its table counters when it goes idle, at most once a second (PGSTAT_MIN_INTERVAL), so
 * after this long every transaction that ended before the restore point has reported its rows
 * (unless the statistics lock is contended, see docs/drills.md). A quiet source does not wait.
 */
export const STATS_SETTLE_MS = 3_000;

/**
 * How long one table's count waits for its ACCESS SHARE lock (held by ALTER TABLE, VACUUM FULL,
 * TRUNCATE, CLUSTER ...), and how often it tries. A count queued behind DDL would hold up every
 * later query on that table; failing fast and saying which table is better.
 */
export const COUNT_LOCK_TIMEOUT = '2s';
export const COUNT_LOCK_ATTEMPTS = 3;
/** Cap on one table's count(*): a scan that long is already holding up DDL on that table. */
export const COUNT_STATEMENT_TIMEOUT = '1h';
/** Restarts of one database's count when a table was rewritten (TRUNCATE, ALTER TABLE) between its snapshot and its count. */
const COUNT_SNAPSHOT_ATTEMPTS = 3;

/** Drills need amcheck's verify_heapam (PostgreSQL 14) and pg_current_snapshot() (13). */
export const DRILL_MIN_VERSION_NUM = 140000;

/** Fails with PGF-3010 when `versionNum` (server_version_num) is older than drills support. */
export function requireDrillVersion(versionNum: number, what: string): void {
  if (versionNum >= DRILL_MIN_VERSION_NUM) return;
  throw new PgfleetError(
    'PgVersionUnsupported',
    `${what} is PostgreSQL ${Math.floor(versionNum / 10000)}: restore drills need PostgreSQL 14 or later (amcheck's verify_heapam checks the restored tables, pg_current_snapshot() fixes the source's counts)`,
  );
}

export const quoteIdent = quoteIdentifier;

/** Databases a drill looks at: every one that accepts connections, templates excepted. */
export async function listDatabases(c: PgClient): Promise<string[]> {
  return (
    await c.query<{ datname: string }>(
      'SELECT datname FROM pg_database WHERE datallowconn AND NOT datistemplate ORDER BY datname',
    )
  ).rows.map((r) => r.datname);
}

/**
 * The tables counted: plain tables (leaf partitions included; partitioned parents hold no rows
 * of their own) and populated materialized views, outside the system schemas; permanent only
 * (persistence 'p'; the caller skips the others).
 */
export const COUNTED_TABLES_SQL = `
  SELECT n.nspname AS schema, c.relname AS table, c.relkind AS kind, c.relpersistence AS persistence,
         c.oid::text AS oid, c.relfilenode::text AS filenode
    FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
   WHERE c.relkind IN ('r', 'm') AND (c.relkind <> 'm' OR c.relispopulated)
     AND n.nspname NOT IN ('pg_catalog', 'information_schema') AND n.nspname !~ '^pg_(toast|temp_)'
   ORDER BY 1, 2`;

export interface CountedTableRow {
  schema: string;
  table: string;
  kind: string;
  persistence: string;
  oid: string;
  filenode: string;
}

/** The FROM target of a count: ONLY for tables, so that inheritance children are not counted twice. */
export const countTarget = (schema: string, table: string, kind: string): string =>
  `${kind === 'r' ? 'ONLY ' : ''}${quoteIdent(schema)}.${quoteIdent(table)}`;

/** count(*) of one table. */
export async function countRows(c: PgClient, schema: string, table: string, kind: string): Promise<bigint> {
  const r = await c.query<{ n: string }>(`SELECT count(*)::text AS n FROM ${countTarget(schema, table, kind)}`);
  return BigInt(r.rows[0]!.n);
}

async function tupleChanges(c: PgClient): Promise<bigint> {
  // Its own statement, so the statistics snapshot (stats_fetch_consistency) is fresh.
  const r = await c.query<{ n: string }>(`SELECT coalesce(sum(s.n_tup_ins + s.n_tup_del), 0)::text AS n
    FROM pg_stat_user_tables s JOIN pg_class c ON c.oid = s.relid WHERE c.relpersistence = 'p'`);
  return BigInt(r.rows[0]!.n);
}

/** A counted table, with what identifies its storage when it was counted (a rewrite gives it a new filenode). */
interface CountedTable extends TableRowCountInit {
  kind: string;
  oid: string;
  filenode: string;
}

interface DatabaseCounts {
  snapshot: string;
  tables: CountedTable[];
  unlogged: string[];
  /** Tables dropped between the snapshot and their count. */
  dropped: string[];
}

const sqlState = (err: unknown): string | undefined => (err as { code?: unknown })?.code as string | undefined;

/**
 * Session settings of the capture's connections, over the role's own: a lock not granted soon
 * fails the statement (COUNT_LOCK_TIMEOUT), a count may scan for long, and the snapshot's holder
 * must not be killed while it sits idle in its transaction.
 */
async function prepareSession(c: PgClient, versionNum: number): Promise<void> {
  await c.query(
    `SET lock_timeout = '${COUNT_LOCK_TIMEOUT}'; SET statement_timeout = '${COUNT_STATEMENT_TIMEOUT}'; SET idle_in_transaction_session_timeout = 0${versionNum >= 170000 ? '; SET transaction_timeout = 0' : ''}`,
  );
}

/** Thrown inside countDatabase when a table was rewritten or renamed after the snapshot: its count is not the snapshot's. */
class ChangedSinceSnapshot extends Error {}

/**
 * Counts one database in one snapshot (see the header). `holder` takes and exports the snapshot
 * and stays idle in its transaction; `worker` lists and counts the tables, one short transaction
 * each, importing it.
 */
async function countDatabase(
  holder: PgClient,
  worker: PgClient,
  database: string,
  log: Logger,
  signal: AbortSignal | undefined,
): Promise<DatabaseCounts> {
  for (let attempt = 1; ; attempt++) {
    try {
      return await countDatabaseOnce(holder, worker, database, signal);
    } catch (err) {
      if (!(err instanceof ChangedSinceSnapshot)) throw err;
      if (attempt >= COUNT_SNAPSHOT_ATTEMPTS) {
        throw new PgfleetError(
          'PgQueryFailed',
          `counting the rows of database ${database} failed: ${err.message}, ${attempt} times; run the drill again when no TRUNCATE or ALTER TABLE runs`,
        );
      }
      log.info({ database, reason: err.message }, 'counting the database again in a new snapshot');
    }
  }
}

async function countDatabaseOnce(
  holder: PgClient,
  worker: PgClient,
  database: string,
  signal: AbortSignal | undefined,
): Promise<DatabaseCounts> {
  await holder.query('BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY');
  try {
    // The first statement takes the transaction's snapshot; the export lets other transactions use exactly it.
    const { s: snapshot, e: exported } = (
      await holder.query<{ s: string; e: string }>('SELECT pg_current_snapshot()::text AS s, pg_export_snapshot() AS e')
    ).rows[0]!;
    // The id is spliced into SET TRANSACTION SNAPSHOT below. The message is the one the catch
    // below would have given a plain Error: counting failed, with the reason.
    if (!/^[0-9A-F-]+$/i.test(exported))
      throw new PgfleetError(
        'PgQueryFailed',
        `counting the rows of database ${database} failed: unexpected snapshot id '${exported}'`,
      );
    const listed = await inExportedSnapshot(
      worker,
      exported,
      async () => (await worker.query<CountedTableRow>(COUNTED_TABLES_SQL)).rows,
    );
    const tables: CountedTable[] = [];
    const unlogged: string[] = [];
    const dropped: string[] = [];
    for (const t of listed) {
      if (t.persistence !== 'p') {
        if (t.persistence === 'u') unlogged.push(`${database}.${t.schema}.${t.table}`);
        continue;
      }
      signal?.throwIfAborted();
      const name = `${database}.${t.schema}.${t.table}`;
      const counted = await countTableInSnapshot(worker, exported, database, t);
      if (counted === undefined) {
        dropped.push(name);
        continue;
      }
      // A TRUNCATE or table-rewriting ALTER TABLE committed after the snapshot is not MVCC-safe: the count saw the new storage, not the snapshot's rows.
      if (counted.f !== t.filenode)
        throw new ChangedSinceSnapshot(
          `table ${name} was rewritten (TRUNCATE, ALTER TABLE, VACUUM FULL or CLUSTER) after the snapshot was taken`,
        );
      tables.push({
        database,
        schema: t.schema,
        table: t.table,
        rows: BigInt(counted.n),
        kind: t.kind,
        oid: t.oid,
        filenode: t.filenode,
      });
    }
    await holder.query('COMMIT');
    return { snapshot, tables, unlogged, dropped };
  } catch (err) {
    await holder.query('ROLLBACK').catch(() => {});
    if (err instanceof ChangedSinceSnapshot || err instanceof PgfleetError || signal?.aborted) throw err;
    throw new PgfleetError(
      'PgQueryFailed',
      `counting the rows of database ${database} failed: ${(err as Error).message}`,
      { cause: err },
    );
  }
}

/** Runs fn on `worker` in a read-only transaction that imports the exported snapshot. */
async function inExportedSnapshot<T>(worker: PgClient, exported: string, fn: () => Promise<T>): Promise<T> {
  await worker.query(`BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY; SET TRANSACTION SNAPSHOT '${exported}'`);
  try {
    const out = await fn();
    await worker.query('COMMIT');
    return out;
  } catch (err) {
    await worker.query('ROLLBACK').catch(() => {});
    throw err;
  }
}

/**
 * count(*) of one table in the snapshot, with the filenode its storage had then; undefined when
 * the table was dropped after the snapshot. A lock not granted is waited for again, up to
 * COUNT_LOCK_ATTEMPTS times.
 */
async function countTableInSnapshot(
  worker: PgClient,
  exported: string,
  database: string,
  t: CountedTableRow,
): Promise<{ n: string; f: string | null } | undefined> {
  const name = `${database}.${t.schema}.${t.table}`;
  for (let attempt = 1; ; attempt++) {
    try {
      // The filenode is read after the lock is granted: the storage count(*) read.
      return await inExportedSnapshot(
        worker,
        exported,
        async () =>
          (
            await worker.query<{ n: string; f: string | null }>(
              `SELECT count(*)::text AS n, pg_relation_filenode($1::oid)::text AS f FROM ${countTarget(t.schema, t.table, t.kind)}`,
              [t.oid],
            )
          ).rows[0]!,
      );
    } catch (err) {
      // 42P01: the name is looked up in the current catalog; dropped after the snapshot (not in the copy either), or renamed.
      if (sqlState(err) === '42P01') {
        if ((await worker.query('SELECT 1 FROM pg_class WHERE oid = $1::oid', [t.oid])).rows.length === 0)
          return undefined;
        throw new ChangedSinceSnapshot(`table ${name} was renamed after the snapshot was taken`);
      }
      if (sqlState(err) !== '55P03') throw err;
      if (attempt >= COUNT_LOCK_ATTEMPTS) {
        throw new PgfleetError(
          'PgQueryFailed',
          `counting the rows of database ${database} failed: table ${name} stayed locked by another session: ${attempt} waits of ${COUNT_LOCK_TIMEOUT} for its ACCESS SHARE lock timed out`,
          {
            cause: err,
            hint: 'Another session holds or waits for an exclusive lock on the table (ALTER TABLE, VACUUM FULL, TRUNCATE, CLUSTER, LOCK TABLE); the drill does not queue behind it. Run the drill again when it is done (pg_locks shows who holds it).',
          },
        );
      }
      await sleep(1000);
    }
  }
}

/**
 * After the restore point: tables whose storage changed since they were counted (TRUNCATE,
 * table-rewriting ALTER TABLE, VACUUM FULL, CLUSTER, REFRESH MATERIALIZED VIEW), with their rows
 * now, and tables dropped since. A rewrite's rows are not in n_tup_ins/n_tup_del (TRUNCATE
 * deletes none, a rewrite or refresh fills a transient heap whose statistics are dropped), so
 * between the count and the restore point such a table can have lost every counted row and
 * gained at most the rows it has now (or changes n_tup_* counted): both widen the bound.
 */
async function changedSinceCounted(
  c: PgClient,
  tables: readonly CountedTable[],
): Promise<{ rewritten: { table: CountedTable; rowsNow: bigint }[]; dropped: CountedTable[] }> {
  const now = new Map(
    (
      await c.query<{ oid: string; f: string | null }>(
        'SELECT oid::text AS oid, pg_relation_filenode(oid)::text AS f FROM pg_class WHERE oid = ANY($1::oid[])',
        [tables.map((t) => t.oid)],
      )
    ).rows.map((r) => [r.oid, r.f]),
  );
  const rewritten: { table: CountedTable; rowsNow: bigint }[] = [];
  for (const t of tables) {
    if (!now.has(t.oid) || now.get(t.oid) === t.filenode) continue;
    try {
      rewritten.push({ table: t, rowsNow: await countRows(c, t.schema, t.table, t.kind) });
    } catch (err) {
      throw new PgfleetError(
        'PgQueryFailed',
        `counting table ${t.database}.${t.schema}.${t.table}, rewritten since the drill counted it, failed: ${(err as Error).message}`,
        { cause: err },
      );
    }
  }
  return { rewritten, dropped: tables.filter((t) => !now.has(t.oid)) };
}

/** Counts every table of the source, then creates the restore point the drill recovers to (see the header). */
export async function captureSourceCounts(o: CaptureOptions): Promise<SourceCountsInit> {
  const main = await connectPg(o.pg);
  const others: PgClient[] = [];
  try {
    const facts = await clusterFacts(main);
    requireCapturableSource(o.cluster, facts);
    const open = async (database: string): Promise<PgClient> => {
      const c = await connectPg({ ...o.pg, database });
      others.push(c);
      await prepareSession(c, facts.versionNum);
      return c;
    };
    const close = async (c: PgClient): Promise<void> => {
      others.splice(others.indexOf(c), 1);
      await c.end().catch(() => {});
    };
    await prepareSession(main, facts.versionNum);
    const databases = await listDatabases(main);
    const conns = new Map<string, PgClient>();
    for (const db of databases) conns.set(db, db === (o.pg.database ?? 'postgres') ? main : await open(db));
    o.progress({
      phase: 'capture',
      bytesDone: 0,
      bytesTotal: 0,
      filesDone: 0,
      filesTotal: databases.length,
      message: `counting the rows of ${databases.length} database(s) on the source`,
    });
    let before = 0n;
    for (const c of conns.values()) before += await tupleChanges(c);

    const counted = await countEveryDatabase(o, conns, open, close);
    const rp = await createRestorePoint(o, main, databases.length);

    const snapshotAfter = (await main.query<{ s: string }>('SELECT pg_current_snapshot()::text AS s')).rows[0]!.s;
    const quiet = snapshotAfter === counted.firstSnapshot;
    const { changeBound, compared } = quiet
      ? { changeBound: 0n, compared: counted.tables }
      : await boundChangesSinceCounted(o, conns, counted, before, rp.createdAt);
    if (counted.dropped.length)
      o.log.info({ dropped: counted.dropped }, 'tables dropped on the source while it was counted are not compared');
    o.log.info(
      {
        restorePoint: o.restorePoint,
        lsn: rp.lsn,
        tables: compared.length,
        quiet,
        changeBound: changeBound.toString(),
      },
      'source counts captured',
    );
    return {
      restorePoint: o.restorePoint,
      lsn: rp.lsn,
      time: timestampFromDate(new Date(rp.t)),
      tables: compared.map(({ database, schema, table, rows }) => ({ database, schema, table, rows })),
      changeBound,
    };
  } finally {
    for (const c of others) await c.end().catch(() => {});
    await main.end().catch(() => {});
  }
}

/** Counts are taken on a primary of a supported version that archives its WAL. */
function requireCapturableSource(
  cluster: string,
  facts: { versionNum: number; inRecovery: boolean; archiveMode: string },
): void {
  requireDrillVersion(facts.versionNum, `cluster ${cluster}`);
  if (facts.inRecovery)
    throw new PgfleetError(
      'InvalidArgument',
      `cluster ${cluster} is in recovery: source counts and the restore point are taken on the primary`,
    );
  if (facts.archiveMode === 'off')
    throw new PgfleetError(
      'ArchiveModeOff',
      `archive_mode is off on cluster ${cluster}: the restore point would never reach the repository`,
    );
}

/** Step 2 of the header over every database; firstSnapshot is the first database's counting snapshot. */
interface SourceCounts {
  firstSnapshot: string | undefined;
  tables: CountedTable[];
  /** Tables not compared (dropped while counted, and after step 4 dropped since). */
  dropped: string[];
}

async function countEveryDatabase(
  o: CaptureOptions,
  conns: ReadonlyMap<string, PgClient>,
  open: (database: string) => Promise<PgClient>,
  close: (c: PgClient) => Promise<void>,
): Promise<SourceCounts> {
  let firstSnapshot: string | undefined;
  const tables: CountedTable[] = [];
  const unlogged: string[] = [];
  const dropped: string[] = [];
  for (const [db, c] of conns) {
    o.signal?.throwIfAborted();
    // A second connection counts while the first holds the snapshot; closed when the database is done.
    const worker = await open(db);
    try {
      const counted = await countDatabase(c, worker, db, o.log, o.signal);
      firstSnapshot ??= counted.snapshot;
      tables.push(...counted.tables);
      unlogged.push(...counted.unlogged);
      dropped.push(...counted.dropped);
    } finally {
      await close(worker);
    }
  }
  if (unlogged.length) o.log.info({ unlogged }, 'unlogged tables are not counted: a restored copy has them empty');
  return { firstSnapshot, tables, dropped };
}

/** Step 3 of the header: the restore point, a WAL switch, and its segment in the repository. */
async function createRestorePoint(
  o: CaptureOptions,
  main: PgClient,
  databases: number,
): Promise<{ lsn: string; t: Date; createdAt: number }> {
  const rp = (
    await main.query<{ lsn: string; t: Date }>(
      'SELECT pg_create_restore_point($1)::text AS lsn, clock_timestamp() AS t',
      [o.restorePoint],
    )
  ).rows[0]!;
  const createdAt = Date.now();
  // The second write: a segment switch, so the segment holding the restore point is archived now, not when it fills.
  const seg = (
    await main.query<{ seg: string }>('SELECT pg_walfile_name($1::pg_lsn) AS seg, pg_switch_wal()', [rp.lsn])
  ).rows[0]!.seg;
  o.progress({
    phase: 'capture',
    bytesDone: 0,
    bytesTotal: 0,
    filesDone: databases,
    filesTotal: databases,
    message: `restore point ${o.restorePoint} at ${rp.lsn}: waiting for WAL ${seg} in the repository`,
  });
  await waitArchived(o, seg);
  return { lsn: rp.lsn, t: rp.t, createdAt };
}

/**
 * Step 4 of the header on a source that was not quiet: the change bound from the statistics and
 * the rewritten tables, and the tables still compared (those dropped since are added to
 * counts.dropped).
 */
async function boundChangesSinceCounted(
  o: CaptureOptions,
  conns: ReadonlyMap<string, PgClient>,
  counts: SourceCounts,
  before: bigint,
  restorePointAt: number,
): Promise<{ changeBound: bigint; compared: CountedTable[] }> {
  await sleep(Math.max(0, STATS_SETTLE_MS - (Date.now() - restorePointAt)));
  let after = 0n;
  for (const c of conns.values()) after += await tupleChanges(c);
  let changeBound = after > before ? after - before : 0n;
  const rewritten: string[] = [];
  const gone = new Set<CountedTable>();
  for (const [db, c] of conns) {
    const changed = await changedSinceCounted(
      c,
      counts.tables.filter((t) => t.database === db),
    );
    for (const { table: t, rowsNow } of changed.rewritten) {
      changeBound += t.rows + rowsNow;
      rewritten.push(`${db}.${t.schema}.${t.table}`);
    }
    for (const t of changed.dropped) {
      gone.add(t);
      counts.dropped.push(`${db}.${t.schema}.${t.table}`);
    }
  }
  if (rewritten.length)
    o.log.info(
      { rewritten },
      'tables rewritten (TRUNCATE, ALTER TABLE, VACUUM FULL, CLUSTER, REFRESH) since they were counted: their rows then and now widen the change bound',
    );
  // A table dropped on the source before the restore point is not in the copy; after it, the copy has it as a table the source did not count.
  return { changeBound, compared: counts.tables.filter((t) => !gone.has(t)) };
}

/** Waits until the segment is in the repository (the archiver, not us, puts it there). */
async function waitArchived(o: CaptureOptions, segment: string): Promise<void> {
  const deadline = Date.now() + o.archiveTimeoutMs;
  let pollMs = 20;
  while (!(await o.repo.authenticWal(o.cluster, segment))) {
    o.signal?.throwIfAborted();
    if (Date.now() > deadline) {
      throw new PgfleetError(
        'WalArchiveTimeout',
        `WAL segment ${segment} holding the drill's restore point did not reach the repository within ${Math.round(o.archiveTimeoutMs / 1000)} s`,
      );
    }
    await sleep(pollMs);
    pollMs = Math.min(250, Math.round(pollMs * 1.5));
  }
}
