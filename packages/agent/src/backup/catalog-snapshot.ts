/**
 * The catalog snapshot every backup stores (BackupManifest.catalogSnapshot): per database that
 * allows connections, its namespaces and pg_class rows with each relation's file number, taken
 * right after pg_backup_start. `pgfleet wal search` reads the WAL from the backup's start on, so
 * this snapshot plus the pg_class changes in that WAL (followed by packages/pg) name every
 * relation file a later record touches, as it was named at that moment.
 *
 * Per database the WAL position, then one read-only REPEATABLE READ transaction of three queries
 * (packages/pg takeCatalogSnapshotOfDatabase: the position read before the transaction so that no
 * commit falls between it and the rows; then pg_class and pg_namespace rows with their ctids; 10k tables are one result of 10k rows). Mapped relations (pg_class itself and
 * the other nailed catalogs) have relfilenode 0 in pg_class: pg_class's and pg_namespace's own
 * files, which the follower reads, come from the relation mapper through pg_relation_filenode().
 * A database that refuses the connection (CONNECT revoked, connection limit, pg_hba) must not
 * fail the backup: it is listed as skipped and the search names its relations from the WAL only.
 */
import { Readable } from 'node:stream';
import type { Logger } from '@pgfleet/core';
import {
  combineCatalogSnapshots,
  connectPg,
  takeCatalogSnapshotOfDatabase,
  type CatalogSnapshot,
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
  let databases: string[];
  try {
    const d = await main.query('SELECT datname FROM pg_database WHERE datallowconn ORDER BY oid');
    databases = d.rows.map((x: { datname: string }) => x.datname);
  } finally {
    await main.end().catch(() => {});
  }
  const parts: Awaited<ReturnType<typeof takeCatalogSnapshotOfDatabase>>[] = [];
  const skipped: { database: string; reason: string }[] = [];
  for (const database of databases) {
    try {
      const client = await connectPg({ ...o.pg, database, applicationName: 'pgfleet-agent catalog snapshot' });
      try {
        parts.push(await takeCatalogSnapshotOfDatabase(client));
      } finally {
        await client.end().catch(() => {});
      }
    } catch (err) {
      const reason = (err as Error).message;
      o.log.warn({ database, err: reason }, 'catalog snapshot: database skipped');
      skipped.push({ database, reason });
    }
  }
  return { snapshot: combineCatalogSnapshots(parts), skipped };
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
