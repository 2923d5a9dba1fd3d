/**
 * libpq-side helpers: connecting with errors users can act on, and the facts about a running
 * cluster the agent needs (system identifier, version, archive settings).
 */
import pg from 'pg';
import { PgfleetError } from '@pgfleet/core';

export interface PgConnectionOptions {
  host?: string;
  port?: number;
  user?: string;
  database?: string;
  password?: string;
  /** 'database' or true opens a replication connection (WAL streaming). */
  replication?: 'database' | boolean;
  applicationName?: string;
}

export async function connectPg(opts: PgConnectionOptions): Promise<pg.Client> {
  const client = new pg.Client({
    host: opts.host,
    port: opts.port,
    user: opts.user,
    database: opts.database,
    password: opts.password,
    application_name: opts.applicationName ?? 'pgfleet-agent',
    ...(opts.replication !== undefined ? { replication: opts.replication } : {}),
    connectionTimeoutMillis: 10_000,
  } as pg.ClientConfig);
  try {
    await client.connect();
  } catch (err) {
    throw new PgfleetError('PgConnectFailed', `cannot connect to PostgreSQL at ${opts.host ?? 'localhost'}:${opts.port ?? 5432} as ${opts.user ?? 'postgres'}: ${(err as Error).message}`, { cause: err });
  }
  // A server shutdown while we hold the connection must not crash the agent: errors surface on the next query.
  client.on('error', () => {});
  return client;
}

export interface ClusterFacts {
  systemIdentifier: string;
  /** server_version_num, e.g. 150019 */
  versionNum: number;
  major: number;
  dataDirectory: string;
  archiveMode: string;
  archiveCommand: string;
  dataChecksums: boolean;
  walSegmentSize: number;
  blockSize: number;
  inRecovery: boolean;
}

export async function clusterFacts(client: pg.Client): Promise<ClusterFacts> {
  const r = await client.query(`
    SELECT (SELECT system_identifier::text FROM pg_control_system()) AS sysid,
           current_setting('server_version_num')::int AS version_num,
           current_setting('data_directory') AS data_directory,
           current_setting('archive_mode') AS archive_mode,
           current_setting('archive_command') AS archive_command,
           current_setting('data_checksums') AS data_checksums,
           (SELECT setting::bigint FROM pg_settings WHERE name = 'wal_segment_size') AS wal_segment_size,
           current_setting('block_size')::int AS block_size,
           pg_is_in_recovery() AS in_recovery`);
  const row = r.rows[0];
  const versionNum = Number(row.version_num);
  return {
    systemIdentifier: String(row.sysid),
    versionNum,
    major: Math.floor(versionNum / 10000),
    dataDirectory: String(row.data_directory),
    archiveMode: String(row.archive_mode),
    archiveCommand: String(row.archive_command),
    dataChecksums: row.data_checksums === 'on',
    walSegmentSize: Number(row.wal_segment_size),
    blockSize: Number(row.block_size),
    inRecovery: Boolean(row.in_recovery),
  };
}

/** Mirrors pg_stat_archiver for heartbeats. */
export interface ArchiverStats {
  archivedCount: number;
  lastArchivedWal: string;
  lastArchivedTime: Date | undefined;
  failedCount: number;
  lastFailedWal: string;
  lastFailedTime: Date | undefined;
}

export async function archiverStats(client: pg.Client): Promise<ArchiverStats> {
  const r = await client.query('SELECT archived_count, last_archived_wal, last_archived_time, failed_count, last_failed_wal, last_failed_time FROM pg_stat_archiver');
  const row = r.rows[0];
  return {
    archivedCount: Number(row.archived_count),
    lastArchivedWal: row.last_archived_wal ?? '',
    lastArchivedTime: row.last_archived_time ?? undefined,
    failedCount: Number(row.failed_count),
    lastFailedWal: row.last_failed_wal ?? '',
    lastFailedTime: row.last_failed_time ?? undefined,
  };
}
