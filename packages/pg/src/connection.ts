/**
 * libpq-side helpers: connecting with errors users can act on, and the facts about a running
 * cluster the agent needs (system identifier, version, archive settings).
 */
import pg from 'pg';
import { PgfleetError } from '@pgfleet/core';
import { Lsn } from './lsn.js';

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
  // A server shutdown while we hold the connection must not crash the agent: errors surface on
  // the next query. Listening before connect(): a FATAL that arrives in the same network read as
  // the ReadyForQuery that completes the connection is emitted before connect()'s promise
  // resumes the caller (a fast shutdown during a heartbeat crashed the agent this way).
  client.on('error', () => {});
  try {
    await client.connect();
  } catch (err) {
    throw new PgfleetError(
      'PgConnectFailed',
      `cannot connect to PostgreSQL at ${opts.host ?? 'localhost'}:${opts.port ?? 5432} as ${opts.user ?? 'postgres'}: ${(err as Error).message}`,
      { cause: err },
    );
  }
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
  const r = await client.query(
    'SELECT archived_count, last_archived_wal, last_archived_time, failed_count, last_failed_wal, last_failed_time FROM pg_stat_archiver',
  );
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

/**
 * Where the server stands in its cluster, for heartbeats: the primary's current WAL position, or
 * a standby's replay position and lag. pg_current_wal_lsn() fails during recovery ("recovery is
 * in progress"), so a standby reports pg_last_wal_replay_lsn() instead. A standby cannot see the
 * primary's position; what it can see is what it received and has not replayed yet, and the
 * commit time of the last transaction it replayed.
 */
export interface ServerPosition {
  inRecovery: boolean;
  /** Primary: pg_current_wal_lsn(); standby: pg_last_wal_replay_lsn() ('' before anything replayed). */
  lsn: string;
  /** Standby only ('' elsewhere or without streaming). */
  receiveLsn: string;
  replayLsn: string;
  receiveReplayBytes: number;
  lastReplayTime: Date | undefined;
  /** now - lastReplayTime while received WAL waits for replay, else 0 (an idle primary commits nothing, so the timestamp alone would age). */
  replayLagSeconds: number;
  /** Primary only: the timeline it writes (from the current WAL file's name: right after a promotion, before any checkpoint); 0 on a standby. */
  timeline: number;
}

export async function serverPosition(client: pg.Client): Promise<ServerPosition> {
  // CASE evaluates only the branch taken: pg_current_wal_lsn() never runs on a standby.
  const r = await client.query(`
    SELECT pg_is_in_recovery() AS in_recovery,
           (CASE WHEN pg_is_in_recovery() THEN pg_last_wal_replay_lsn() ELSE pg_current_wal_lsn() END)::text AS lsn,
           pg_last_wal_receive_lsn()::text AS receive_lsn,
           pg_last_wal_replay_lsn()::text AS replay_lsn,
           greatest(coalesce(pg_wal_lsn_diff(pg_last_wal_receive_lsn(), pg_last_wal_replay_lsn()), 0), 0)::text AS behind,
           pg_last_xact_replay_timestamp() AS replay_time,
           CASE WHEN pg_last_wal_receive_lsn() > pg_last_wal_replay_lsn()
                THEN greatest(extract(epoch FROM clock_timestamp() - pg_last_xact_replay_timestamp()), 0) ELSE 0 END::float8 AS lag_seconds,
           CASE WHEN pg_is_in_recovery() THEN NULL ELSE substr(pg_walfile_name(pg_current_wal_lsn()), 1, 8) END AS tli_hex`);
  const row = r.rows[0];
  const inRecovery = Boolean(row.in_recovery);
  return {
    inRecovery,
    lsn: row.lsn ?? '',
    receiveLsn: inRecovery ? (row.receive_lsn ?? '') : '',
    replayLsn: inRecovery ? (row.replay_lsn ?? '') : '',
    receiveReplayBytes: inRecovery ? Number(row.behind) : 0,
    lastReplayTime: inRecovery ? (row.replay_time ?? undefined) : undefined,
    replayLagSeconds: inRecovery ? Number(row.lag_seconds ?? 0) : 0,
    timeline: row.tli_hex ? Number.parseInt(row.tli_hex, 16) : 0,
  };
}

/**
 * pg_switch_wal() on a primary whose insert position is still in the segment holding `lsn`, so
 * that segment is completed and handed to archive_command. Returns false when nothing was needed:
 * the primary is past that segment already (it is complete). Throws on a standby, which cannot
 * switch WAL (that is why a standby's backup asks its primary, agent.proto WalSwitch).
 */
export async function switchWalIfIn(client: pg.Client, lsn: Lsn): Promise<boolean> {
  const r = await client.query(`
    SELECT pg_is_in_recovery() AS in_recovery,
           (CASE WHEN pg_is_in_recovery() THEN NULL ELSE pg_current_wal_insert_lsn() END)::text AS insert_lsn,
           (SELECT setting::bigint FROM pg_settings WHERE name = 'wal_segment_size') AS wal_segment_size`);
  const row = r.rows[0];
  if (row.in_recovery)
    throw new PgfleetError(
      'InvalidArgument',
      'this server is a standby: it cannot switch WAL (pg_switch_wal() fails during recovery)',
    );
  const segmentSize = Number(row.wal_segment_size);
  if (Lsn.parse(String(row.insert_lsn)).segmentNumber(segmentSize) > lsn.segmentNumber(segmentSize)) return false;
  await client.query('SELECT pg_switch_wal()');
  return true;
}
