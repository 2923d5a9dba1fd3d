/**
 * The catalog snapshot every backup stores (BackupManifest.catalogSnapshot): per database that
 * allows connections, its namespaces and pg_class rows with each relation's file number, taken
 * right after pg_backup_start. `pgfleet wal search` reads the WAL from the backup's start on, so
 * this snapshot plus the pg_class changes in that WAL (followed by packages/pg) name every
 * relation file a later record touches, as it was named at that moment.
 *
 * One query per database (10k tables is one result of 10k rows). Mapped relations (pg_class
 * itself and the other nailed catalogs) have relfilenode 0 in pg_class: their file number comes
 * from the relation mapper, which pg_relation_filenode() reads. A database that refuses the
 * connection (CONNECT revoked, connection limit, pg_hba) must not fail the backup: it is listed
 * as skipped and the search names its relations from the WAL only.
 */
import { Readable } from 'node:stream';
import type { Logger } from '@pgfleet/core';
import { connectPg, type PgConnectionOptions } from '@pgfleet/pg';
import type { CatalogSnapshotEntry, Codec, Repository } from '@pgfleet/storage';

export interface CatalogSnapshotRelation {
  oid: number;
  /** The relation's file number (pg_relation_filenode: the mapper's for mapped catalogs). */
  relNumber: number;
  /** Its tablespace (the database's default resolved). */
  tablespaceOid: number;
  namespaceOid: number;
  name: string;
  /** pg_class.relkind: r table, p partitioned, t toast, i index, m matview, S sequence, ... */
  kind: string;
  /** The pg_class row's ctid: where a later heap update or delete of this row points. */
  block: number;
  offset: number;
}

export interface CatalogSnapshotDatabase {
  oid: number;
  name: string;
  tablespaceOid: number;
  /** pg_class's own file number in this database (it is a mapped relation). */
  pgClassRelNumber: number;
  namespaces: { oid: number; name: string }[];
  relations: CatalogSnapshotRelation[];
}

export interface CatalogSnapshot {
  /** The WAL position when the first database was read (the backup's start is before it). */
  lsn: string;
  databases: CatalogSnapshotDatabase[];
}

/** Everything one database says in one round trip (json, so 10k rows are one text value). */
// oid columns cast to int8: json renders oid as a string.
const DATABASE_QUERY = `
  SELECT json_build_object(
    'pgClass', pg_relation_filenode('pg_catalog.pg_class'::regclass)::int8,
    'namespaces', (SELECT coalesce(json_agg(json_build_array(n.oid::int8, n.nspname)), '[]') FROM pg_namespace n),
    'relations', (SELECT coalesce(json_agg(json_build_array(
        c.oid::int8, pg_relation_filenode(c.oid)::int8, c.reltablespace::int8, c.relnamespace::int8, c.relname,
        c.relkind, (c.ctid::text::point)[0]::int8, (c.ctid::text::point)[1]::int8)), '[]')
      FROM pg_class c WHERE c.relkind NOT IN ('v', 'c', 'f'))
  )::text AS doc`;

interface DatabaseDoc {
  pgClass: number;
  namespaces: [number, string][];
  relations: [number, number | null, number, number, string, string, number, number][];
}

export interface TakeSnapshotOptions {
  pg: PgConnectionOptions;
  log: Logger;
}

/** Reads every database's catalog (see the module header); skipped ones are named with why. */
export async function takeCatalogSnapshot(
  o: TakeSnapshotOptions,
): Promise<{ snapshot: CatalogSnapshot; skipped: { database: string; reason: string }[] }> {
  const main = await connectPg(o.pg);
  let lsn: string;
  let databases: { oid: number; name: string; tablespace: number }[];
  try {
    // On a standby pg_current_wal_lsn() is refused: the replayed position is where its catalog is.
    const r = await main.query(`
      SELECT (CASE WHEN pg_is_in_recovery() THEN pg_last_wal_replay_lsn() ELSE pg_current_wal_lsn() END)::text AS lsn`);
    lsn = String(r.rows[0].lsn);
    const d = await main.query(
      'SELECT oid::int8 AS oid, datname, dattablespace::int8 AS spc FROM pg_database WHERE datallowconn ORDER BY oid',
    );
    databases = d.rows.map((x: { oid: string; datname: string; spc: string }) => ({
      oid: Number(x.oid),
      name: x.datname,
      tablespace: Number(x.spc),
    }));
  } finally {
    await main.end().catch(() => {});
  }
  const out: CatalogSnapshotDatabase[] = [];
  const skipped: { database: string; reason: string }[] = [];
  for (const db of databases) {
    try {
      out.push(await snapshotDatabase(o.pg, db));
    } catch (err) {
      const reason = (err as Error).message;
      o.log.warn({ database: db.name, err: reason }, 'catalog snapshot: database skipped');
      skipped.push({ database: db.name, reason });
    }
  }
  return { snapshot: { lsn, databases: out }, skipped };
}

async function snapshotDatabase(
  pg: PgConnectionOptions,
  db: { oid: number; name: string; tablespace: number },
): Promise<CatalogSnapshotDatabase> {
  const client = await connectPg({ ...pg, database: db.name, applicationName: 'pgfleet-agent catalog snapshot' });
  try {
    const doc = JSON.parse(String((await client.query(DATABASE_QUERY)).rows[0].doc)) as DatabaseDoc;
    return {
      oid: db.oid,
      name: db.name,
      tablespaceOid: db.tablespace,
      pgClassRelNumber: doc.pgClass,
      namespaces: doc.namespaces.map(([oid, name]) => ({ oid, name })),
      relations: doc.relations
        // Relations without storage (partitioned tables and indexes) have no file: nothing in the WAL names them.
        .filter((r) => r[1] !== null && r[1] !== 0)
        .map(([oid, relNumber, spc, namespaceOid, name, kind, block, offset]) => ({
          oid,
          relNumber: relNumber!,
          tablespaceOid: spc === 0 ? db.tablespace : spc,
          namespaceOid,
          name,
          kind,
          block,
          offset,
        })),
    };
  } finally {
    await client.end().catch(() => {});
  }
}

/**
 * Takes the snapshot and stores it as an object of the backup (compressed, and encrypted when the
 * repository is), returning the manifest's entry; undefined when no database could be read.
 * Never throws for PostgreSQL's sake: a backup is worth more than its snapshot.
 */
export async function storeCatalogSnapshot(
  o: TakeSnapshotOptions & { repo: Repository; cluster: string; label: string; codec: Codec; level?: number },
): Promise<CatalogSnapshotEntry | undefined> {
  let taken: Awaited<ReturnType<typeof takeCatalogSnapshot>>;
  try {
    taken = await takeCatalogSnapshot(o);
  } catch (err) {
    o.log.warn(
      { err: (err as Error).message },
      'catalog snapshot not taken: wal search names relations from the WAL only',
    );
    return undefined;
  }
  const { snapshot, skipped } = taken;
  if (snapshot.databases.length === 0) return undefined;
  const key = o.repo.catalogSnapshotKey(o.cluster, o.label, o.codec);
  const stored = await o.repo.writeObject(
    key,
    Readable.from([Buffer.from(JSON.stringify(snapshot))]),
    o.codec,
    [],
    o.level === undefined ? {} : { level: o.level },
  );
  o.log.info(
    { databases: snapshot.databases.length, skipped: skipped.length, bytes: stored.size },
    'catalog snapshot stored',
  );
  return { ...stored, codec: o.codec, databases: snapshot.databases.length, skipped };
}
