/**
 * Catalog rows as both stores read them, and their mapping to records. Column names are the same
 * in both dialects; what differs is decoded before mapping: JSON columns (TEXT in SQLite, parsed
 * JSONB in PostgreSQL) through the store's `decodeJson`, booleans (0/1 vs true/false) by
 * truthiness, 64-bit integers by the PostgreSQL store's int8 parser (ms timestamps and byte
 * counts stay below 2^53).
 */
import { PgfleetError } from '@pgfleet/core';
import { Lsn } from '@pgfleet/pg';
import type {
  ClusterHistoryBucket,
  HistoryResolution,
  AdminRole,
  AdminTokenRecord,
  AgentArchiveSetup,
  AgentMessageRecord,
  AgentRecord,
  AgentStreamRecord,
  ControllerRecord,
  AgentReplay,
  AgentWalHealth,
  ServerRoleName,
  BackupKind,
  EnrollmentTokenRecord,
  HealthStateRecord,
  JobFilter,
  BackupRecord,
  ClusterRecord,
  DumpRecord,
  JobKind,
  JobRecord,
  JobStateName,
  OutboxEventInput,
  OutboxEventRecord,
  PolicyHealth,
  PolicyRecord,
  PolicyRetention,
  PolicySchedules,
  ScheduleKind,
  ScheduleRunRecord,
} from './store.js';

export interface ClusterRow {
  name: string;
  system_identifier: string;
  pg_version: number;
  created_at: number;
}
export interface AgentRow {
  id: string;
  cluster: string;
  hostname: string;
  version: string;
  connected: number | boolean;
  last_seen: number | null;
  archiver: unknown;
  current_lsn: string | null;
  wal_health: unknown;
  archive_setup: unknown;
  role: string | null;
  replay: unknown;
  timeline: number | string | null;
}
export interface ControllerRow {
  id: string;
  address: string;
  started_at: number | string;
  last_seen: number | string;
  leads: string;
}
export function controllerRow(r: ControllerRow): ControllerRecord {
  return {
    id: r.id,
    address: r.address,
    startedAt: Number(r.started_at),
    lastSeen: Number(r.last_seen),
    leads: r.leads ? r.leads.split(',') : [],
  };
}
export interface AgentStreamRow {
  cluster: string;
  agent_id: string;
  controller_id: string;
  since: number | string;
}
export function agentStreamRow(r: AgentStreamRow): AgentStreamRecord {
  return { cluster: r.cluster, agentId: r.agent_id, controllerId: r.controller_id, since: Number(r.since) };
}
export interface AgentMessageRow {
  seq: number | string;
  cluster: string;
  agent_id: string;
  payload: Uint8Array;
}
export function agentMessageRow(r: AgentMessageRow): AgentMessageRecord {
  return { seq: Number(r.seq), cluster: r.cluster, agentId: r.agent_id, payload: new Uint8Array(r.payload) };
}
export interface BackupRow {
  cluster: string;
  label: string;
  type: string;
  start_lsn: string;
  stop_lsn: string;
  start_time: number;
  stop_time: number;
  timeline: number;
  system_identifier: string;
  pg_version: number;
  size_bytes: number;
  stored_bytes: number;
  file_count: number;
  wal_start: string;
  wal_stop: string;
  job_id: string;
  prior_label: string;
  pinned: number | boolean;
}
export interface PolicyRow {
  scope: string;
  schedules: unknown;
  retention: unknown;
  health: unknown;
  updated_at: number;
}
export interface ScheduleRunRow {
  cluster: string;
  type: string;
  last_run: number;
}
export interface JobRow {
  id: string;
  cluster: string;
  kind: string;
  state: string;
  agent_id: string;
  params: unknown;
  created_at: number;
  started_at: number | null;
  finished_at: number | null;
  error_code: string | null;
  error_message: string | null;
  progress: unknown;
  result: unknown;
  /** The jobs.dispatcher column (a later schema version than the rest of the row). */
  dispatcher?: string | null;
}

/** 64-bit columns (seq, ms times) may arrive as text from PostgreSQL; `Number` reads both. */
export interface OutboxEventRow {
  seq: number | string;
  id: string;
  cluster: string;
  kind: string;
  time: number | string;
  payload: Buffer;
  sent_at: number | string | null;
}
export interface HealthStateRow {
  cluster: string;
  condition: string;
  state: 'ok' | 'breached';
  since: number | string;
  data: unknown;
}

export type DecodeJson = (value: unknown) => unknown;

/** How a store's driver spells what the shared statements need. */
export interface SqlDialect {
  /** The n-th (1-based) placeholder: `$n` or `?`. */
  param: (n: number) => string;
  /** A boolean parameter: node-postgres sends true/false, better-sqlite3 binds only numbers. */
  bool: (value: boolean) => boolean | number;
  /**
   * `column` is one of the names bound at placeholder n (namesParam): one statement whatever the
   * count, so a page of 1,000 clusters is one prepared query, not 1,000.
   */
  inNames: (column: string, n: number) => string;
  /** The parameter inNames reads: a text[] for PostgreSQL, JSON text for SQLite's json_each. */
  namesParam: (names: readonly string[]) => unknown;
}

/** JSON text for a column (TEXT in SQLite, a ::jsonb parameter in PostgreSQL); null for absent values. */
export const encodeJson = (value: unknown): string | null =>
  value === undefined || value === null ? null : JSON.stringify(value);

export function clusterFromRow(r: ClusterRow): ClusterRecord {
  return { name: r.name, systemIdentifier: r.system_identifier, pgVersion: r.pg_version, createdAt: r.created_at };
}

export function agentFromRow(r: AgentRow, decodeJson: DecodeJson): AgentRecord {
  return {
    id: r.id,
    cluster: r.cluster,
    hostname: r.hostname,
    version: r.version,
    connected: Boolean(r.connected),
    lastSeen: r.last_seen,
    archiver: decodeJson(r.archiver),
    currentLsn: r.current_lsn,
    walHealth: (decodeJson(r.wal_health) ?? null) as AgentWalHealth | null,
    archiveSetup: (decodeJson(r.archive_setup) ?? null) as AgentArchiveSetup | null,
    role: (r.role ?? null) as ServerRoleName | null,
    timeline: r.timeline === null || r.timeline === undefined ? null : Number(r.timeline),
    replay: (decodeJson(r.replay) ?? null) as AgentReplay | null,
  };
}

export function backupFromRow(r: BackupRow): BackupRecord {
  return {
    cluster: r.cluster,
    label: r.label,
    type: r.type as BackupKind,
    startLsn: r.start_lsn,
    stopLsn: r.stop_lsn,
    startTime: r.start_time,
    stopTime: r.stop_time,
    timeline: r.timeline,
    systemIdentifier: r.system_identifier,
    pgVersion: r.pg_version,
    sizeBytes: r.size_bytes,
    storedBytes: r.stored_bytes,
    fileCount: r.file_count,
    walStart: r.wal_start,
    walStop: r.wal_stop,
    jobId: r.job_id,
    priorLabel: r.prior_label,
    pinned: Boolean(r.pinned),
  };
}

/**
 * The columns a backup insert fills, in the order of backupRowParams. The *_lsn_num columns are
 * the LSNs as numbers (NUMERIC in PostgreSQL, INTEGER in SQLite) so that listings sort by position.
 */
const BACKUP_INSERT_COLUMNS = [
  'cluster',
  'label',
  'type',
  'start_lsn',
  'start_lsn_num',
  'stop_lsn',
  'stop_lsn_num',
  'start_time',
  'stop_time',
  'timeline',
  'system_identifier',
  'pg_version',
  'size_bytes',
  'stored_bytes',
  'file_count',
  'wal_start',
  'wal_stop',
  'job_id',
  'prior_label',
  'pinned',
] as const;

/**
 * The backup insert. The same (cluster, label) again is the same backup reported twice (a retried
 * JobResult): the first row is kept.
 */
export function insertBackupSql(dialect: SqlDialect): string {
  const values = BACKUP_INSERT_COLUMNS.map((_, i) => dialect.param(i + 1));
  return `INSERT INTO backups (${BACKUP_INSERT_COLUMNS.join(', ')}) VALUES (${values.join(', ')})
    ON CONFLICT (cluster, label) DO NOTHING`;
}

/**
 * The values of BACKUP_INSERT_COLUMNS for one backup. The LSNs are parsed here, before anything
 * is sent: a bad LSN is the caller's InvalidArgument, not a SQL error. The sort keys are bigints
 * (better-sqlite3 binds them as INTEGER, node-postgres sends their decimal text to NUMERIC).
 */
export function backupRowParams(b: BackupRecord, dialect: SqlDialect): unknown[] {
  return [
    b.cluster,
    b.label,
    b.type,
    b.startLsn,
    Lsn.parse(b.startLsn).value,
    b.stopLsn,
    Lsn.parse(b.stopLsn).value,
    b.startTime,
    b.stopTime,
    b.timeline,
    b.systemIdentifier,
    b.pgVersion,
    b.sizeBytes,
    b.storedBytes,
    b.fileCount,
    b.walStart,
    b.walStop,
    b.jobId,
    b.priorLabel,
    dialect.bool(b.pinned === true),
  ];
}

export interface DumpRow {
  cluster: string;
  label: string;
  job_id: string;
  start_time: number;
  stop_time: number;
  size_bytes: number;
  stored_bytes: number;
  result: unknown;
  expired_at: number | null;
}

export function dumpFromRow(r: DumpRow, decodeJson: DecodeJson): DumpRecord {
  return {
    cluster: r.cluster,
    label: r.label,
    jobId: r.job_id,
    startTime: r.start_time,
    stopTime: r.stop_time,
    sizeBytes: r.size_bytes,
    storedBytes: r.stored_bytes,
    result: decodeJson(r.result) ?? null,
    expiredAt: r.expired_at ?? null,
  };
}

/** The dump insert; the same (cluster, label) again is the same dump reported twice: the first row stays. */
export function insertDumpSql(dialect: SqlDialect, json: (n: number) => string = dialect.param): string {
  const p = dialect.param;
  return `INSERT INTO dumps (cluster, label, job_id, start_time, stop_time, size_bytes, stored_bytes, result)
    VALUES (${p(1)}, ${p(2)}, ${p(3)}, ${p(4)}, ${p(5)}, ${p(6)}, ${p(7)}, ${json(8)})
    ON CONFLICT (cluster, label) DO NOTHING`;
}

export function dumpRowParams(d: DumpRecord): unknown[] {
  return [d.cluster, d.label, d.jobId, d.startTime, d.stopTime, d.sizeBytes, d.storedBytes, encodeJson(d.result ?? {})];
}

export function policyFromRow(r: PolicyRow, decodeJson: DecodeJson): PolicyRecord {
  return {
    scope: r.scope,
    schedules: (decodeJson(r.schedules) ?? {}) as PolicySchedules,
    retention: (decodeJson(r.retention) ?? {}) as PolicyRetention,
    health: (decodeJson(r.health) ?? {}) as PolicyHealth,
    updatedAt: r.updated_at,
  };
}

export function scheduleRunFromRow(r: ScheduleRunRow): ScheduleRunRecord {
  return { cluster: r.cluster, type: r.type as ScheduleKind, lastRun: r.last_run };
}

export function jobFromRow(r: JobRow, decodeJson: DecodeJson): JobRecord {
  return {
    id: r.id,
    cluster: r.cluster,
    kind: r.kind as JobKind,
    state: r.state as JobStateName,
    agentId: r.agent_id,
    params: decodeJson(r.params),
    createdAt: r.created_at,
    startedAt: r.started_at,
    finishedAt: r.finished_at,
    error: r.error_code === null ? null : { code: r.error_code, message: r.error_message ?? '' },
    progress: decodeJson(r.progress),
    result: decodeJson(r.result),
    dispatcher: r.dispatcher ?? null,
  };
}

export function outboxEventFromRow(r: OutboxEventRow): OutboxEventRecord {
  return {
    seq: Number(r.seq),
    id: r.id,
    cluster: r.cluster,
    kind: r.kind,
    time: Number(r.time),
    payload: new Uint8Array(r.payload.buffer, r.payload.byteOffset, r.payload.byteLength),
    sentAt: r.sent_at === null ? null : Number(r.sent_at),
  };
}

/** The outbox insert; seq and sent_at are the catalog's to fill. */
export function insertOutboxEventSql(dialect: SqlDialect): string {
  return `INSERT INTO events_outbox (id, cluster, kind, time, payload) VALUES (${[1, 2, 3, 4, 5].map(dialect.param).join(', ')})`;
}

export function outboxEventParams(e: OutboxEventInput): unknown[] {
  return [e.id, e.cluster, e.kind, e.time, Buffer.from(e.payload.buffer, e.payload.byteOffset, e.payload.byteLength)];
}

export function healthStateFromRow(r: HealthStateRow, decodeJson: DecodeJson): HealthStateRecord {
  return {
    cluster: r.cluster,
    condition: r.condition,
    state: r.state,
    since: Number(r.since),
    data: decodeJson(r.data),
  };
}

export interface EnrollmentTokenRow {
  token_hash: string;
  cluster: string;
  created_at: number;
  expires_at: number;
  used_at: number | null;
  agent_id: string | null;
}
export interface AdminTokenRow {
  id: string;
  name: string;
  role: string;
  token_hash: string;
  created_at: number;
  revoked_at: number | null;
}

export function enrollmentTokenFromRow(r: EnrollmentTokenRow): EnrollmentTokenRecord {
  return {
    tokenHash: r.token_hash,
    cluster: r.cluster,
    createdAt: r.created_at,
    expiresAt: r.expires_at,
    usedAt: r.used_at,
    agentId: r.agent_id,
  };
}

export function adminTokenFromRow(r: AdminTokenRow): AdminTokenRecord {
  return {
    id: r.id,
    name: r.name,
    role: r.role as AdminRole,
    tokenHash: r.token_hash,
    createdAt: r.created_at,
    revokedAt: r.revoked_at,
  };
}

/** A second admin token with a name in use (the unique index refused the insert). */
export function adminTokenNameTaken(name: string, cause: unknown): PgfleetError {
  return new PgfleetError('InvalidArgument', `an admin token named '${name}' exists already`, {
    cause,
    hint: 'Choose another --name, or revoke the existing token first.',
  });
}

/** Why an enrollment token that could not be used was refused (the row as it is after the failed update). */
export function enrollmentRefusal(
  row: EnrollmentTokenRow | undefined,
  now: number,
): { ok: false; reason: 'unknown' | 'used' | 'expired'; token?: EnrollmentTokenRecord } {
  if (!row) return { ok: false, reason: 'unknown' };
  const token = enrollmentTokenFromRow(row);
  return { ok: false, reason: token.usedAt !== null ? 'used' : token.expiresAt <= now ? 'expired' : 'unknown', token };
}

/** The WHERE clause of a job listing; `param(n)` spells the n-th (1-based) placeholder of the dialect. */
export function jobWhere(filter: JobFilter, dialect: SqlDialect): { where: string; args: unknown[] } {
  const conds: string[] = [];
  const args: unknown[] = [];
  for (const col of ['cluster', 'kind', 'state'] as const) {
    const v = filter[col];
    if (v === undefined || v === '') continue;
    args.push(v);
    conds.push(`${col} = ${dialect.param(args.length)}`);
  }
  if (filter.clusters) {
    args.push(dialect.namesParam(filter.clusters));
    conds.push(dialect.inNames('cluster', args.length));
  }
  return { where: conds.length ? `WHERE ${conds.join(' AND ')}` : '', args };
}

/** A cluster_history row: the mean is kept as a sum and a count so that samples add up in one upsert. */
export interface ClusterHistoryRow {
  cluster: string;
  resolution: number;
  start: number;
  rpo_max: number;
  rpo_sum: number;
  samples: number;
}

/** Adds one sample to a bucket (params: historySampleParams); `greatest` is SQLite's two-argument max. */
export function upsertHistorySql(dialect: SqlDialect, greatest: 'max' | 'GREATEST'): string {
  const values = [1, 2, 3, 4, 5].map(dialect.param).join(', ');
  return `INSERT INTO cluster_history (cluster, resolution, start, rpo_max, rpo_sum, samples) VALUES (${values}, 1)
    ON CONFLICT (cluster, resolution, start) DO UPDATE SET rpo_max = ${greatest}(cluster_history.rpo_max, EXCLUDED.rpo_max),
      rpo_sum = cluster_history.rpo_sum + EXCLUDED.rpo_sum, samples = cluster_history.samples + 1`;
}

/** The parameters of upsertHistorySql for one sample into one bucket. */
export function historySampleParams(
  cluster: string,
  at: number,
  rpo: number,
  resolution: HistoryResolution,
): unknown[] {
  return [cluster, resolution, historyBucketStart(at, resolution), rpo, rpo];
}

/** The bucket of `resolution` seconds holding the time `at` (ms). */
export function historyBucketStart(at: number, resolution: HistoryResolution): number {
  const size = resolution * 1000;
  return Math.floor(at / size) * size;
}

export function clusterHistoryFromRow(r: ClusterHistoryRow): ClusterHistoryBucket {
  return {
    cluster: r.cluster,
    resolution: Number(r.resolution) as HistoryResolution,
    start: Number(r.start),
    rpoMaxSeconds: Number(r.rpo_max),
    rpoAvgSeconds: Number(r.rpo_sum) / Math.max(1, Number(r.samples)),
    samples: Number(r.samples),
  };
}
