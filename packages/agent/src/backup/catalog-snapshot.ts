/**
 * The catalog snapshot every backup stores (BackupManifest.catalogSnapshot): per database that
 * allows connections, its namespaces and pg_class rows with each relation's file number, taken
 * right after pg_backup_start. `pgfleet wal search` reads the WAL from the backup's start on, so
 * this snapshot plus the pg_class changes in that WAL (followed by packages/pg) name every
 * relation file a later record touches, as it was named at that moment.
 *
 * Per database one read-only REPEATABLE READ transaction of three queries (packages/pg
 * takeCatalogSnapshotOfDatabase: the WAL position first, then pg_class and pg_namespace rows
 * with their ctids; 10k tables are one result of 10k rows). Mapped relations (pg_class itself and
 * the other nailed catalogs) have relfilenode 0 in pg_class: pg_class's and pg_namespace's own
 * files, which the follower reads, come from the relation mapper through pg_relation_filenode(). A database that refuses the
 * connection (CONNECT revoked, connection limit, pg_hba) must not fail the backup: it is listed
 * as skipped and the search names its relations from the WAL only.
 */
import { Readable } from 'node:stream';
import type { Logger } from '@pgfleet/core';
import {
  connectPg,
  Lsn,
  takeCatalogSnapshotOfDatabase,
  type CatalogSnapshot,
  type CatalogSnapshotDatabase,
  type PgConnectionOptions,
} from '@pgfleet/pg';
import type { CatalogSnapshotEntry, Codec, Repository } from '@pgfleet/storage';

export interface TakeSnapshotOptions {
  pg: PgConnectionOptions;
  log: Logger;
}

/** Reads every database's catalog (see the module header); skipped ones are named with why. */
export async function takeCatalogSnapshot(
  o: TakeSnapshotOptions,
): Promise<{ snapshot: CatalogSnapshot; skipped: { database: string; reason: string }[] }> {
  const main = await connectPg(o.pg);
  let standby: boolean;
  let databases: { oid: number; name: string }[];
  try {
    standby = Boolean((await main.query('SELECT pg_is_in_recovery() AS r')).rows[0].r);
    const d = await main.query('SELECT oid::int8 AS oid, datname FROM pg_database WHERE datallowconn ORDER BY oid');
    databases = d.rows.map((x: { oid: string; datname: string }) => ({ oid: Number(x.oid), name: x.datname }));
  } finally {
    await main.end().catch(() => {});
  }
  const out: CatalogSnapshotDatabase[] = [];
  const skipped: { database: string; reason: string }[] = [];
  let lsn: Lsn | undefined;
  for (const db of databases) {
    try {
      const read = await snapshotDatabase(o.pg, db, standby);
      out.push(read.db);
      if (!lsn || read.lsn.compare(lsn) < 0) lsn = read.lsn;
    } catch (err) {
      const reason = (err as Error).message;
      o.log.warn({ database: db.name, err: reason }, 'catalog snapshot: database skipped');
      skipped.push({ database: db.name, reason });
    }
  }
  return { snapshot: { lsn: (lsn ?? Lsn.ZERO).toString(), databases: out }, skipped };
}

async function snapshotDatabase(
  pg: PgConnectionOptions,
  db: { oid: number; name: string },
  standby: boolean,
): Promise<{ db: CatalogSnapshotDatabase; lsn: Lsn }> {
  const client = await connectPg({ ...pg, database: db.name, applicationName: 'pgfleet-agent catalog snapshot' });
  try {
    // A standby refuses the insert position: the replayed position is where its catalog is.
    const read = await takeCatalogSnapshotOfDatabase(
      async (sql) =>
        (await client.query(standby ? sql.replace('pg_current_wal_insert_lsn()', 'pg_last_wal_replay_lsn()') : sql))
          .rows,
    );
    return { db: read.database, lsn: Lsn.parse(read.lsn) };
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
