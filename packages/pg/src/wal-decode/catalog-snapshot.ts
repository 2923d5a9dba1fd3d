/**
 * Taking a CatalogSnapshot of one database with SQL (what a backup stores so that `wal search`
 * can name relation files later). The LSN is read first, in a statement of its own, and only then
 * does one REPEATABLE READ transaction read the catalog: RelationNames replays every commit after
 * the LSN, so every commit must be either at or before the LSN and in the rows, or after the LSN.
 * Read inside the transaction, by the statement that takes its snapshot, the LSN could pass a
 * commit whose record was written but which was not yet visible (the record is inserted before
 * the transaction leaves the proc array): in neither place, its catalog change lost. Read before,
 * a commit after the LSN may also be in the rows already; replaying it is harmless, since
 * RelationNames applies changes as puts and deletes by ctid in commit order (putClass deletes
 * whatever the ctid held first, a delete of an absent ctid does nothing), so after the replay of
 * the commits the rows already show, the state is the one the rows show.
 */
import type pg from 'pg';
import type { CatalogSnapshot, CatalogSnapshotDatabase } from './relation-names.js';
import { lsnNumber } from './wal-format.js';

export const CATALOG_SNAPSHOT_SQL = {
  // Before `begin`, outside the transaction. A standby refuses pg_current_wal_insert_lsn(): its
  // catalog is at the replayed position.
  lsn: 'select (case when pg_is_in_recovery() then pg_last_wal_replay_lsn() else pg_current_wal_insert_lsn() end)::text as lsn',
  begin: 'begin isolation level repeatable read read only',
  database:
    "select d.oid::int8 as oid, d.datname as name, pg_relation_filenode('pg_class')::int8 as pg_class, pg_relation_filenode('pg_namespace')::int8 as pg_namespace from pg_database d where d.datname = current_database()",
  relations:
    'select c.oid::int8 as oid, c.relfilenode::int8 as relnumber, c.relnamespace::int8 as nsp, c.relname as name, c.relkind as kind, c.reltoastrelid::int8 as toast, (c.ctid::text::point)[0]::int8 as block, (c.ctid::text::point)[1]::int8 as "offset", (select i.inhparent::int8 from pg_inherits i where i.inhrelid = c.oid and c.relispartition limit 1) as parent from pg_class c',
  namespaces:
    'select n.oid::int8 as oid, n.nspname as name, (n.ctid::text::point)[0]::int8 as block, (n.ctid::text::point)[1]::int8 as "offset" from pg_namespace n',
  end: 'commit',
} as const;

/** The snapshot of the database `client` is connected to, and the LSN it shows the catalog at. */
export async function takeCatalogSnapshotOfDatabase(
  client: pg.Client,
): Promise<{ lsn: string; database: CatalogSnapshotDatabase }> {
  const lsn = await readCatalogSnapshotLsn(client);
  return { lsn, database: await readCatalogRows(client) };
}

/** The first step of a snapshot: the WAL position its rows will be at or after (see the module header). */
export async function readCatalogSnapshotLsn(client: pg.Client): Promise<string> {
  const { rows } = await client.query<{ lsn: string }>(CATALOG_SNAPSHOT_SQL.lsn);
  return String(rows[0]!.lsn);
}

/** The second step: the catalog rows, in one REPEATABLE READ transaction. */
export async function readCatalogRows(client: pg.Client): Promise<CatalogSnapshotDatabase> {
  const query = async (sql: string) => (await client.query<Record<string, unknown>>(sql)).rows;
  await query(CATALOG_SNAPSHOT_SQL.begin);
  try {
    const [head] = await query(CATALOG_SNAPSHOT_SQL.database);
    const rels = await query(CATALOG_SNAPSHOT_SQL.relations);
    const nsps = await query(CATALOG_SNAPSHOT_SQL.namespaces);
    const n = (v: unknown) => Number(v);
    return {
      oid: n(head!.oid),
      name: String(head!.name),
      pgClassRelNumber: n(head!.pg_class),
      pgNamespaceRelNumber: n(head!.pg_namespace),
      namespaces: nsps.map((r) => ({ oid: n(r.oid), name: String(r.name), block: n(r.block), offset: n(r.offset) })),
      relations: rels.map((r) => ({
        oid: n(r.oid),
        relNumber: n(r.relnumber),
        namespaceOid: n(r.nsp),
        name: String(r.name),
        kind: String(r.kind),
        toastOid: n(r.toast),
        block: n(r.block),
        offset: n(r.offset),
        ...(r.parent === null ? {} : { parentOid: n(r.parent) }),
      })),
    };
  } finally {
    await query(CATALOG_SNAPSHOT_SQL.end);
  }
}

/** One snapshot from per-database ones: each keeps its own LSN, the snapshot's is the earliest. */
export function combineCatalogSnapshots(parts: { lsn: string; database: CatalogSnapshotDatabase }[]): CatalogSnapshot {
  const first = [...parts].sort((a, b) => lsnNumber(a.lsn) - lsnNumber(b.lsn))[0];
  return { lsn: first?.lsn ?? '0/0', databases: parts.map((p) => ({ ...p.database, lsn: p.lsn })) };
}
