/**
 * Mapping between catalog records (plain data, milliseconds, JSON blobs) and protocol messages.
 * JSON blobs in the catalog hold the canonical protobuf JSON of the message (toJson), so they
 * stay readable with sqlite3 and decode back losslessly (64-bit counters are strings there).
 */
import { fromJson, protoInt64, toJson, type JsonValue, type MessageInitShape } from '@bufbuild/protobuf';
import { timestampFromMs, timestampMs, type Timestamp } from '@bufbuild/protobuf/wkt';
import { PgfleetError } from '@pgfleet/core';
import type {
  AgentArchiveSetup,
  AgentRecord,
  AgentReplay,
  AgentWalHealth,
  BackupFrom,
  BackupKind,
  ServerRoleName,
  BackupRecord,
  ClusterRecord,
  JobRecord,
  JobStateName,
} from '@pgfleet/catalog';
import {
  ArchiverStatsSchema,
  BackupInfoSchema,
  BackupSource,
  CheckResultSchema,
  RepositoryInfoSchema,
  RestorePointListSchema,
  WalSearchResultSchema,
  DumpResultSchema,
  RestoreDumpResultSchema,
  RotateKeyResultSchema,
  RecoverTableResultSchema,
  ServerRole,
  backupTypeFromProto,
  backupTypeToProto,
  type BackupType,
  type StandbyReplay,
  ClusterInfoSchema,
  ExpireResultSchema,
  VerifyResultSchema,
  WalHealthSchema,
  DrillResultSchema,
  SourceCountsSchema,
  JobInfoSchema,
  JobProgressSchema,
  JobState,
  RecoveryTargetSchema,
  RestoreResultSchema,
  type ArchiverStats,
  type ArchiveSetup,
  type BackupInfo,
  type CheckResult,
  type RepositoryInfo,
  type RestorePointList,
  type WalSearchResult,
  type DumpResult,
  type RestoreDumpResult,
  type RotateKeyResult,
  type RecoverTableResult,
  type ExpireResult,
  type VerifyResult,
  type DrillResult,
  type SourceCounts,
  type JobProgress,
  type RecoveryTarget,
  type RestoreResult,
} from '@pgfleet/proto';
import type { PitrTarget } from './restore/pitr.js';
import { archiverStatsFromJson } from './health/health.js';

const STATE_TO_PROTO: Record<JobStateName, JobState> = {
  queued: JobState.QUEUED,
  dispatched: JobState.DISPATCHED,
  running: JobState.RUNNING,
  succeeded: JobState.SUCCEEDED,
  failed: JobState.FAILED,
  cancelled: JobState.CANCELLED,
};

export function jobStateToProto(state: JobStateName): JobState {
  return STATE_TO_PROTO[state];
}

const BACKUP_FROM: Record<BackupSource, BackupFrom | undefined> = {
  [BackupSource.UNSPECIFIED]: undefined,
  [BackupSource.PRIMARY]: 'primary',
  [BackupSource.STANDBY]: 'standby',
  [BackupSource.PREFER_STANDBY]: 'prefer-standby',
};

/** StartBackupRequest.from; undefined (UNSPECIFIED): the policy decides. */
export function backupFromProto(from: BackupSource): BackupFrom | undefined {
  return BACKUP_FROM[from];
}

/** Heartbeat.role as the catalog keeps it (UNSPECIFIED: not known). */
export function serverRoleFromProto(role: ServerRole): ServerRoleName | null {
  return role === ServerRole.PRIMARY ? 'primary' : role === ServerRole.STANDBY ? 'standby' : null;
}

export function serverRoleToProto(role: ServerRoleName | null): ServerRole {
  return role === 'primary' ? ServerRole.PRIMARY : role === 'standby' ? ServerRole.STANDBY : ServerRole.UNSPECIFIED;
}

/** Heartbeat.replay as the catalog keeps it (a standby's only). */
export function agentReplayRecord(role: ServerRoleName | null, r: StandbyReplay | undefined): AgentReplay | null {
  if (role !== 'standby' || !r) return null;
  return {
    receiveLsn: r.receiveLsn,
    replayLsn: r.replayLsn,
    receiveReplayBytes: Number(r.receiveReplayBytes),
    lastReplayTime: r.lastReplayTime ? timestampMs(r.lastReplayTime) : null,
    replayLagSeconds: r.replayLagSeconds,
  };
}

/** A request's or result's backup type; UNSPECIFIED is full (the mapping itself is @pgfleet/proto's). */
export function backupKindFromProto(type: BackupType): BackupKind {
  const kind = backupTypeFromProto(type);
  if (kind === undefined) throw new PgfleetError('InvalidArgument', `unknown backup type ${String(type)}`);
  return kind;
}

/**
 * timestampFromMs as a message literal: the same message without create()'s copy of an init
 * object, which status pays several times a cluster (10,000 BackupInfo messages with their two
 * times cost 35-100 ms of CPU through create(), 3-20 ms as literals). The types check every field.
 */
export function timestampOfMs(ms: number): Timestamp {
  const seconds = Math.floor(ms / 1000);
  return {
    $typeName: 'google.protobuf.Timestamp',
    seconds: protoInt64.parse(seconds),
    nanos: (ms - seconds * 1000) * 1_000_000,
  };
}

const ts = (ms: number | null): Timestamp | undefined => (ms === null ? undefined : timestampOfMs(ms));

/** What the catalog stores of a successful backup job: the agent's BackupInfo, with cluster and job filled in by the controller. */
export function backupRecordFromInfo(info: BackupInfo, cluster: string, jobId: string): BackupRecord {
  if (!info.label) throw new PgfleetError('InvalidArgument', 'the backup result has no label');
  if (!info.stopTime || !info.startTime)
    throw new PgfleetError('InvalidArgument', `backup ${info.label} has no start or stop time`);
  return {
    cluster,
    label: info.label,
    type: backupKindFromProto(info.type),
    startLsn: info.startLsn,
    stopLsn: info.stopLsn,
    startTime: timestampMs(info.startTime),
    stopTime: timestampMs(info.stopTime),
    timeline: info.timeline,
    systemIdentifier: info.systemIdentifier,
    pgVersion: info.pgVersion,
    sizeBytes: Number(info.sizeBytes),
    storedBytes: Number(info.storedBytes),
    fileCount: info.fileCount,
    walStart: info.walStart,
    walStop: info.walStop,
    jobId: info.jobId || jobId,
    priorLabel: info.priorLabel,
  };
}

/** The fields a manifest decides; job id and pin are the catalog's own. */
const BACKUP_FACTS: readonly (keyof BackupRecord)[] = [
  'type',
  'startLsn',
  'stopLsn',
  'startTime',
  'stopTime',
  'timeline',
  'systemIdentifier',
  'pgVersion',
  'sizeBytes',
  'storedBytes',
  'fileCount',
  'walStart',
  'walStop',
  'priorLabel',
];

/** The manifest facts two rows of one backup disagree on (a row is a summary of its manifest). */
export function backupRecordDifferences(a: BackupRecord, b: BackupRecord): string[] {
  return BACKUP_FACTS.filter((k) => a[k] !== b[k]);
}

export function backupInfoFromRecord(b: BackupRecord): BackupInfo {
  // A literal rather than create(): status builds one per cluster (see timestampOfMs).
  return {
    $typeName: 'pgfleet.v1.BackupInfo',
    label: b.label,
    cluster: b.cluster,
    type: backupTypeToProto(b.type),
    startLsn: b.startLsn,
    stopLsn: b.stopLsn,
    startTime: timestampOfMs(b.startTime),
    stopTime: timestampOfMs(b.stopTime),
    timeline: b.timeline,
    systemIdentifier: b.systemIdentifier,
    pgVersion: b.pgVersion,
    sizeBytes: BigInt(b.sizeBytes),
    storedBytes: BigInt(b.storedBytes),
    fileCount: b.fileCount,
    walStart: b.walStart,
    walStop: b.walStop,
    jobId: b.jobId,
    priorLabel: b.priorLabel,
    pinned: b.pinned === true,
  };
}

/** The job's result blob: exactly one of the two result messages, as protobuf JSON. */
export interface JobResultJson {
  backup?: JsonValue;
  restore?: JsonValue;
  expire?: JsonValue;
  verify?: JsonValue;
  /** A drill's DrillResult (stored on failure too: the stage and reasons of a failed drill). */
  drill?: JsonValue;
  /** A capture job's SourceCounts. */
  capture?: JsonValue;
  /** A check job's CheckResult (stored on failure too: which check failed and why). */
  check?: JsonValue;
  /** An info job's RepositoryInfo. */
  info?: JsonValue;
  /** A restore points job's RestorePointList. */
  restorePoints?: JsonValue;
  /** A rotate-key job's RotateKeyResult. */
  rotateKey?: JsonValue;
  /** A recover-table job's RecoverTableResult. */
  recoverTable?: JsonValue;
  /** A WAL search job's WalSearchResult. */
  walSearch?: JsonValue;
  /** A dump job's DumpResult: the catalog's record of the dump (pgfleet dumps lists these). */
  dump?: JsonValue;
  /** A restore-dump job's RestoreDumpResult. */
  restoreDump?: JsonValue;
}

export function resultJson(result: {
  backup?: BackupInfo;
  restore?: RestoreResult;
  expire?: ExpireResult;
  verify?: VerifyResult;
  drill?: DrillResult;
  capture?: SourceCounts;
  check?: CheckResult;
  info?: RepositoryInfo;
  restorePoints?: RestorePointList;
  rotateKey?: RotateKeyResult;
  recoverTable?: RecoverTableResult;
  walSearch?: WalSearchResult;
  dump?: DumpResult;
  restoreDump?: RestoreDumpResult;
}): JobResultJson {
  if (result.backup) return { backup: toJson(BackupInfoSchema, result.backup) };
  if (result.restore) return { restore: toJson(RestoreResultSchema, result.restore) };
  if (result.expire) return { expire: toJson(ExpireResultSchema, result.expire) };
  if (result.verify) return { verify: toJson(VerifyResultSchema, result.verify) };
  if (result.drill) return { drill: toJson(DrillResultSchema, result.drill) };
  if (result.capture) return { capture: toJson(SourceCountsSchema, result.capture) };
  if (result.check) return { check: toJson(CheckResultSchema, result.check) };
  if (result.info) return { info: toJson(RepositoryInfoSchema, result.info) };
  if (result.restorePoints) return { restorePoints: toJson(RestorePointListSchema, result.restorePoints) };
  if (result.rotateKey) return { rotateKey: toJson(RotateKeyResultSchema, result.rotateKey) };
  if (result.recoverTable) return { recoverTable: toJson(RecoverTableResultSchema, result.recoverTable) };
  if (result.walSearch) return { walSearch: toJson(WalSearchResultSchema, result.walSearch) };
  if (result.dump) return { dump: toJson(DumpResultSchema, result.dump) };
  if (result.restoreDump) return { restoreDump: toJson(RestoreDumpResultSchema, result.restoreDump) };
  return {};
}

export function progressJson(p: JobProgress): JsonValue {
  return toJson(JobProgressSchema, p);
}

export function archiverJson(a: ArchiverStats): JsonValue {
  return toJson(ArchiverStatsSchema, a);
}

/** Heartbeat.archive_setup as the catalog keeps it (plain fields; the message object has a $typeName). */
export function archiveSetupRecord(a: ArchiveSetup): AgentArchiveSetup {
  return { archiveMode: a.archiveMode, archiveCommand: a.archiveCommand, viaPgfleet: a.viaPgfleet, problem: a.problem };
}

export function jobInfoFromRecord(job: JobRecord): MessageInitShape<typeof JobInfoSchema> {
  const result = (job.result ?? {}) as JobResultJson;
  return {
    id: job.id,
    cluster: job.cluster,
    kind: job.kind,
    state: jobStateToProto(job.state),
    agentId: job.agentId,
    createdAt: timestampFromMs(job.createdAt),
    startedAt: ts(job.startedAt),
    finishedAt: ts(job.finishedAt),
    error: job.error
      ? { code: job.error.code, message: job.error.message, hint: PgfleetError.fromCode(job.error.code, '').hint }
      : undefined,
    progress: job.progress
      ? fromJson(JobProgressSchema, job.progress as JsonValue, { ignoreUnknownFields: true })
      : undefined,
    backup: result.backup ? fromJson(BackupInfoSchema, result.backup, { ignoreUnknownFields: true }) : undefined,
    restore: result.restore ? fromJson(RestoreResultSchema, result.restore, { ignoreUnknownFields: true }) : undefined,
    expire: result.expire ? fromJson(ExpireResultSchema, result.expire, { ignoreUnknownFields: true }) : undefined,
    verify: result.verify ? fromJson(VerifyResultSchema, result.verify, { ignoreUnknownFields: true }) : undefined,
    drill: result.drill ? fromJson(DrillResultSchema, result.drill, { ignoreUnknownFields: true }) : undefined,
    capture: result.capture ? fromJson(SourceCountsSchema, result.capture, { ignoreUnknownFields: true }) : undefined,
    check: result.check ? fromJson(CheckResultSchema, result.check, { ignoreUnknownFields: true }) : undefined,
    info: result.info ? fromJson(RepositoryInfoSchema, result.info, { ignoreUnknownFields: true }) : undefined,
    restorePoints: result.restorePoints
      ? fromJson(RestorePointListSchema, result.restorePoints, { ignoreUnknownFields: true })
      : undefined,
    rotateKey: result.rotateKey
      ? fromJson(RotateKeyResultSchema, result.rotateKey, { ignoreUnknownFields: true })
      : undefined,
    recoverTable: result.recoverTable
      ? fromJson(RecoverTableResultSchema, result.recoverTable, { ignoreUnknownFields: true })
      : undefined,
    walSearch: result.walSearch
      ? fromJson(WalSearchResultSchema, result.walSearch, { ignoreUnknownFields: true })
      : undefined,
    dump: result.dump ? fromJson(DumpResultSchema, result.dump, { ignoreUnknownFields: true }) : undefined,
    restoreDump: result.restoreDump
      ? fromJson(RestoreDumpResultSchema, result.restoreDump, { ignoreUnknownFields: true })
      : undefined,
  };
}

/** AgentRecord.walHealth (numbers) as the protocol's WalHealth (64-bit counts as bigint). */
export function walHealthFromRecord(w: AgentWalHealth): MessageInitShape<typeof WalHealthSchema> {
  const u64 = (n: number): bigint => BigInt(Math.max(0, Math.round(n)));
  return {
    pgWalBytes: u64(w.pgWalBytes),
    pgWalFreeBytes: u64(w.pgWalFreeBytes),
    pgWalTotalBytes: u64(w.pgWalTotalBytes),
    slotName: w.slotName,
    slotActive: w.slotActive,
    slotRestartLsn: w.slotRestartLsn,
    slotRetainedBytes: u64(w.slotRetainedBytes),
    slotWalStatus: w.slotWalStatus,
    streamLagBytes: u64(w.streamLagBytes),
    streamLagSeconds: w.streamLagSeconds,
    walSegmentsArchived: u64(w.walSegmentsArchived),
    walBytesArchived: u64(w.walBytesArchived),
  };
}

/** The ClusterInfo fields the fleet status fills in (plain init objects, not messages). */
export type ClusterStatusFields = Omit<
  Extract<MessageInitShape<typeof ClusterInfoSchema>, { $typeName?: undefined }>,
  '$typeName' | 'name'
>;

/** A cluster as ListClusters shows it; `status` adds the fleet-status figures (status.ts). */
export function clusterInfo(
  cluster: ClusterRecord,
  agent: AgentRecord | undefined,
  lastBackup: BackupRecord | undefined,
  status: ClusterStatusFields = {},
): MessageInitShape<typeof ClusterInfoSchema> {
  return {
    ...status,
    name: cluster.name,
    systemIdentifier: cluster.systemIdentifier,
    pgVersion: cluster.pgVersion,
    agentConnected: agent?.connected ?? false,
    agentId: agent?.id ?? '',
    lastSeen: ts(agent?.lastSeen ?? null),
    lastBackup: lastBackup ? backupInfoFromRecord(lastBackup) : undefined,
    archiver: agent?.archiver ? archiverStatsFromJson(agent.archiver as JsonValue) : undefined,
  };
}

/** The recovery target of a request as a PitrTarget; a missing or empty target is TargetInvalid. */
export function pitrTargetFromProto(target: RecoveryTarget | undefined): PitrTarget {
  const t = target?.target;
  switch (t?.case) {
    case 'time':
      return { kind: 'time', time: timestampMs(t.value) };
    case 'lsn':
      return { kind: 'lsn', lsn: t.value };
    case 'name':
      return { kind: 'name', name: t.value };
    case 'xid':
      return { kind: 'xid', xid: t.value };
    case 'immediate':
      if (t.value) return { kind: 'immediate' };
      break;
    case 'latest':
      if (t.value) return { kind: 'latest' };
      break;
    default:
      break;
  }
  throw new PgfleetError('TargetInvalid', 'the restore request has no recovery target');
}

export function recoveryTargetJson(target: RecoveryTarget): JsonValue {
  return toJson(RecoveryTargetSchema, target);
}

/** A job's recorded target back as the message (undefined when none was recorded). */
export function recoveryTargetFromJson(json: JsonValue | undefined): RecoveryTarget | undefined {
  return json === undefined ? undefined : fromJson(RecoveryTargetSchema, json, { ignoreUnknownFields: true });
}
