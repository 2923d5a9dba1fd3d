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
 * Counted: ordinary tables (relkind 'r': plain tables, unlogged ones, partitions' leaves), outside
 * the system schemas; the caller keeps the counts of those with a TABLE DATA entry in pg_dump's
 * TOC only (what pg_dump dumped). Partitioned parents, views, foreign tables and materialized
 * views have no table data of their own in a dump; large objects are not counted (as before).
 */
import { PgfleetError } from '@pgfleet/core';
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
  /** Ends the transaction and the connection (a count still running is abandoned). Never throws. */
  close(): Promise<void>;
}

/** SQLSTATE lock_not_available: lock_timeout ran out. */
const LOCK_NOT_AVAILABLE = '55P03';

export async function openDumpSnapshot(o: {
  pg: PgConnectionOptions;
  database: string;
  lockWaitTimeoutMs: number;
  applicationName: string;
  signal: AbortSignal;
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
  const close = () => c.end().catch(() => {});
  try {
    await c.query('BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY');
    // The server's own limit on the LOCK below and on each count; SET LOCAL ends with the transaction.
    await c.query(`SET LOCAL lock_timeout = ${Math.max(0, Math.trunc(o.lockWaitTimeoutMs))}`);
    const id = (await c.query<{ id: string }>('SELECT pg_export_snapshot() AS id')).rows[0]!.id;
    const rows = (
      await c.query<{ oid: string; schema: string; name: string; est: string; kind: string }>(
        `SELECT r.oid::text AS oid, n.nspname AS schema, r.relname AS name, r.reltuples::bigint::text AS est,
                r.relkind::text AS kind
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
    const counted = rows.filter((r) => r.kind === 'r');
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
    const counts = (async () => {
      const out = new Map<string, bigint>();
      for (const r of counted) {
        o.signal.throwIfAborted();
        const n = (await c.query<{ n: string }>(`SELECT count(*)::text AS n FROM ONLY ${name(r)}`)).rows[0]!.n;
        out.set(r.oid, BigInt(n));
      }
      return out;
    })().catch((err: unknown) => {
      if (err instanceof PgfleetError || o.signal.aborted) throw err;
      throw failed("counting the rows in pg_dump's snapshot failed", err);
    });
    counts.catch(() => {}); // awaited by the caller once pg_dump has ended
    return { id, tables, counts, close };
  } catch (err) {
    await close();
    if (err instanceof PgfleetError) throw err;
    throw failed('exporting the dump snapshot failed', err);
  }
}
