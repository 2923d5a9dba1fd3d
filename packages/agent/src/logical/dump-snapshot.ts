/**
 * The snapshot a database is dumped in, exported by the agent and handed to pg_dump
 * (`--snapshot`; its --jobs workers import it too), and each table's exact rows counted in it
 * (docs/logical.md, "Row counts"). The counts are what a dump drill compares the restored tables
 * with: counted in the very snapshot pg_dump copies from, they are the dump's rows, with no
 * drift from writes that run meanwhile, and the agent never reads pg_dump's output back (a gunzip
 * of every table file cost ~5 s of agent CPU on pgbench scale 100; a count(*) costs the server a
 * second scan instead, ~10x less CPU, docs/benchmarks.md).
 *
 * The exporting transaction (REPEATABLE READ READ ONLY) must stay open until pg_dump has ended:
 * a snapshot can be imported only while its exporter's transaction lives. Right after the export
 * it lists the tables and takes ACCESS SHARE on the ordinary ones (what count(*) and pg_dump take),
 * all at once and waiting at most --lock-wait-timeout, as pg_dump does: a count then never queues
 * behind DDL that came after pg_dump's locks, and a table locked by DDL fails the dump before
 * pg_dump starts rather than hours later. The counts then run one after another on this
 * connection while pg_dump runs.
 *
 * The counts take only the CPU pg_dump leaves idle (docs/logical.md, "Exact row counts"): their
 * backend is reniced to 19 (the lowest priority; the agent runs as the server's OS user or root,
 * either may raise a backend's niceness) once its locks are taken, and the counts run without
 * parallel workers (separate processes, which the renice would not reach). The backend exits with
 * the connection, so its niceness is never restored. A count still running when the dump ends
 * early (pg_dump failed, the job was cancelled) is cancelled rather than waited for.
 *
 * Counted: ordinary tables (relkind 'r': plain tables, unlogged ones, partitions' leaves), outside
 * the system schemas and not members of an extension (pg_dump dumps no data of those but a
 * configuration table's, filtered), the largest first; the caller keeps the counts of those with a
 * TABLE DATA entry in pg_dump's TOC only (what pg_dump dumped). Partitioned parents, views, foreign tables and materialized
 * views have no table data of their own in a dump; large objects are not counted (as before).
 */
import { readFile } from 'node:fs/promises';
import { setPriority } from 'node:os';
import { join } from 'node:path';
import { type Logger, PgfleetError } from '@pgfleet/core';
import { connectPg, quoteIdentifier, type PgConnectionOptions } from '@pgfleet/pg';
import type { DumpTableSchema } from '@pgfleet/proto';
import type { MessageInitShape } from '@bufbuild/protobuf';

/** A dump's table: its DumpTable and its pg_class oid (how the TOC names it). */
export interface TableOfDump {
  oid: string;
  table: MessageInitShape<typeof DumpTableSchema>;
}

export interface DumpSnapshot {
  /** pg_export_snapshot()'s id, for pg_dump --snapshot. */
  id: string;
  /** Tables (plain, partitioned, materialized views) with pg_class.reltuples: the estimates the catalog keeps. */
  tables: TableOfDump[];
  /** count(*) in the snapshot of each ordinary table, by oid; rejects as DumpFailed. */
  counts: Promise<Map<string, bigint>>;
  /** Ends the transaction and the connection (a count still running is cancelled). Never throws. */
  close(): Promise<void>;
}

/** The niceness of the counting backend: the lowest priority. */
export const COUNT_NICENESS = 19;

/** Said once per agent process: a renice refused is the same on every later dump. */
let reniceRefusedLogged = false;

/**
 * Renices `pid`, the counting connection's backend, to COUNT_NICENESS: once its postmaster is
 * confirmed to be this host's (the data directory's postmaster.pid names the backend's parent), so
 * that a server in another PID namespace (a container) never gets an unrelated local process
 * reniced. `dataDir` is undefined when the role may not read data_directory. Never throws.
 */
async function lowerCountPriority(pid: number, dataDir: string | undefined, log: Logger): Promise<boolean> {
  let reason: string;
  let err: unknown;
  try {
    const postmaster = dataDir
      ? Number((await readFile(join(dataDir, 'postmaster.pid'), 'utf8')).split('\n')[0])
      : undefined;
    const stat = await readFile(`/proc/${pid}/stat`, 'utf8');
    const ppid = Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[1]);
    if (postmaster === undefined) reason = 'data_directory is not readable by this role';
    else if (!(postmaster > 0) || ppid !== postmaster)
      reason = `process ${pid} is not a child of the postmaster (${postmaster}) on this host`;
    else {
      setPriority(pid, COUNT_NICENESS);
      return true;
    }
  } catch (e) {
    reason = (e as Error).message;
    err = e;
  }
  if (!reniceRefusedLogged) {
    reniceRefusedLogged = true;
    log.warn(
      { err, reason, pid },
      "could not lower the priority of the backend counting a dump's rows; the counts run at normal priority (logged once)",
    );
  }
  return false;
}

/** SQLSTATE lock_not_available: lock_timeout ran out. */
const LOCK_NOT_AVAILABLE = '55P03';

export async function openDumpSnapshot(o: {
  pg: PgConnectionOptions;
  database: string;
  lockWaitTimeoutMs: number;
  applicationName: string;
  signal: AbortSignal;
  log: Logger;
}): Promise<DumpSnapshot> {
  const failed = (what: string, err: unknown) =>
    new PgfleetError('DumpFailed', `database '${o.database}': ${what}: ${(err as Error).message}`, { cause: err });
  let c: Awaited<ReturnType<typeof connectPg>>;
  try {
    c = await connectPg({ ...o.pg, database: o.database, applicationName: o.applicationName });
  } catch (err) {
    // A database dropped since it was chosen fails here, naming it.
    throw failed('cannot connect to export the dump snapshot', err);
  }
  let backendPid: number | undefined;
  let counting = false;
  let closing = false;
  const end = () => c.end().catch(() => {});
  /** A count still running is cancelled first: the backend would finish its scan before it saw the connection end. */
  const close = async () => {
    closing = true;
    if (counting && backendPid !== undefined) await cancelBackend(o.pg, o.database, backendPid);
    await end();
  };
  try {
    await c.query('BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY');
    // The server's own limit on the LOCK below and on each count; SET LOCAL ends with the transaction.
    // No parallel workers for the counts: other processes, at normal priority (module header). No
    // JIT: a count(*) gains nothing from it, and a large table's plan cost would have the backend
    // compile (and past jit_optimize_above_cost optimize) its expressions first.
    await c.query(
      `SET LOCAL lock_timeout = ${Math.max(0, Math.trunc(o.lockWaitTimeoutMs))}; SET LOCAL max_parallel_workers_per_gather = 0; SET LOCAL jit = off`,
    );
    const id = (await c.query<{ id: string }>('SELECT pg_export_snapshot() AS id')).rows[0]!.id;
    const rows = (
      await c.query<{
        oid: string;
        schema: string;
        name: string;
        est: string;
        kind: string;
        pages: number;
        extension: boolean;
      }>(
        `SELECT r.oid::text AS oid, n.nspname AS schema, r.relname AS name, r.reltuples::bigint::text AS est,
                r.relkind::text AS kind, r.relpages AS pages,
                EXISTS (SELECT 1 FROM pg_depend d WHERE d.classid = 'pg_class'::regclass AND d.objid = r.oid
                                                    AND d.deptype = 'e')
                  AND NOT EXISTS (SELECT 1 FROM pg_extension x WHERE r.oid = ANY (x.extconfig)) AS extension
           FROM pg_class r JOIN pg_namespace n ON n.oid = r.relnamespace
          WHERE r.relkind IN ('r', 'p', 'm') AND n.nspname NOT IN ('pg_catalog', 'information_schema')
            AND n.nspname NOT LIKE 'pg\\_toast%' AND n.nspname NOT LIKE 'pg\\_temp\\_%'
          ORDER BY 2, 3`,
      )
    ).rows;
    const tables = rows.map((r) => ({
      oid: r.oid,
      table: { schema: r.schema, name: r.name, rowEstimate: BigInt(r.est) },
    }));
    // Extension members other than configuration tables are left out: pg_dump dumps no data of
    // theirs, CREATE EXTENSION makes them anew. A configuration table (pg_extension_config_dump)
    // is counted: pg_dump dumps the rows its filter selects and CREATE EXTENSION makes the others,
    // so the restored table holds as many rows as the source's (a drill compares them). Largest first: the first count overlaps pg_dump's own start (its catalog queries, one
    // process), when a core is still idle; the later ones take what pg_dump's workers leave.
    const counted = rows.filter((r) => r.kind === 'r' && !r.extension).sort((x, y) => y.pages - x.pages);
    const name = (r: { schema: string; name: string }) => `${quoteIdentifier(r.schema)}.${quoteIdentifier(r.name)}`;
    if (counted.length > 0)
      try {
        await c.query(`LOCK TABLE ${counted.map((r) => `ONLY ${name(r)}`).join(', ')} IN ACCESS SHARE MODE`);
      } catch (err) {
        if ((err as { code?: string }).code === LOCK_NOT_AVAILABLE)
          throw failed(
            `could not lock its tables within --lock-wait-timeout (${o.lockWaitTimeoutMs} ms) to dump and count them`,
            err,
          );
        throw err;
      }
    counting = true;
    const counts = (async () => {
      const out = new Map<string, bigint>();
      if (counted.length === 0) return out;
      // Off pg_dump's path: asked once pg_dump may already be starting. pg_settings hides
      // data_directory from a role that may not read it (no error in the transaction).
      const me = (
        await c.query<{ pid: number; dir: string | null }>(
          "SELECT pg_backend_pid() AS pid, (SELECT setting FROM pg_settings WHERE name = 'data_directory') AS dir",
        )
      ).rows[0]!;
      backendPid = me.pid;
      await lowerCountPriority(me.pid, me.dir ?? undefined, o.log);
      for (const r of counted) {
        o.signal.throwIfAborted();
        if (closing)
          throw new PgfleetError('DumpFailed', `database '${o.database}': the dump ended before its rows were counted`);
        const n = (await c.query<{ n: string }>(`SELECT count(*)::text AS n FROM ONLY ${name(r)}`)).rows[0]!.n;
        out.set(r.oid, BigInt(n));
      }
      return out;
    })()
      .finally(() => (counting = false))
      .catch((err: unknown) => {
        if (err instanceof PgfleetError || o.signal.aborted) throw err;
        throw failed("counting the rows in pg_dump's snapshot failed", err);
      });
    counts.catch(() => {}); // awaited by the caller once pg_dump has ended
    return { id, tables, counts, close };
  } catch (err) {
    await end();
    if (err instanceof PgfleetError) throw err;
    throw failed('exporting the dump snapshot failed', err);
  }
}

/** pg_cancel_backend(pid) from a connection of its own; a failure only leaves the count to finish. Never throws. */
async function cancelBackend(pg: PgConnectionOptions, database: string, pid: number): Promise<void> {
  try {
    const k = await connectPg({ ...pg, database, applicationName: 'pgfleet-dump-cancel' });
    try {
      await k.query('SELECT pg_cancel_backend($1)', [pid]);
    } finally {
      await k.end().catch(() => {});
    }
  } catch {
    // The connection's end below still ends the transaction once the count is over.
  }
}
