/**
 * What each kind of job records as its params in the catalog, as one union keyed on the kind.
 * The catalog keeps params as opaque JSON (jobs written by older controllers included), so they
 * are parsed here once, where a job read from the catalog enters a kind's code (typedJob), and
 * written only through the kind's type (NewTypedJob). Parsing is lenient as readers always were:
 * a missing or mistyped field takes the default an older job implies, never an error.
 */
import type { JsonValue } from '@bufbuild/protobuf';
import { PgfleetError } from '@pgfleet/core';
import type { BackupFrom, BackupKind, JobKind, JobRecord, NewJob } from '@pgfleet/catalog';
import { BACKUP_FROM_VALUES } from '@pgfleet/catalog';
import type { BackupResumeName } from '@pgfleet/proto';
import type { WalKeepRange } from '../retention/plan.js';

export interface BackupJobParams {
  type: BackupKind;
  /** The host it runs on, when not the primary (jobs without it ran on the primary). */
  from?: BackupFrom;
  /** The scheduler's fire time (ISO) for a scheduled backup. */
  scheduledAt?: string;
  /** `pgfleet backup --resume` / `--no-resume` (absent: continue an interrupted backup within the window). */
  resume?: BackupResumeName;
}

export interface RestoreJobParams {
  targetDir: string;
  /** The backup the controller picked or the user named ('' = the agent picks). */
  backupLabel: string;
  /** The RecoveryTarget as protobuf JSON. */
  target?: JsonValue;
  delta?: boolean;
  tablespaceDir?: string;
  targetTimeline?: number;
  archive?: 'preserve' | 'off';
}

/** What an expire job is told: the plan's deletions and the WAL rule (see ExpireJob in agent.proto). */
export interface ExpireJobParams {
  labels: string[];
  /** The anchor's first segment: WAL from its position on stays ('' = no WAL is expired). */
  walKeepFrom: string;
  keepRanges: WalKeepRange[];
  reason: string;
  /** `pgfleet backup delete`: exactly these labels or nothing (ExpireJob.exact). */
  exact?: boolean;
  /** Logical dumps the plan expires (ExpireJob.dump_labels). */
  dumpLabels?: string[];
}

export interface VerifyJobParams {
  full: boolean;
}

export interface DrillJobParams {
  backupLabel: string;
  /** The RecoveryTarget as protobuf JSON (absent: the source's restore point). */
  target?: JsonValue;
  /** The scheduler's fire time for a scheduled drill. */
  scheduledAt?: string;
  /** The capture job that must succeed before this drill is sent (drill on another agent). */
  captureJobId?: string;
  /** Keep the scratch directory for inspection (`pgfleet drill --keep`). */
  keep?: boolean;
  /** A dump drill (`pgfleet drill --dump`): the dump's label (backupLabel is '') and the database asked for ('' = all). */
  dumpLabel?: string;
  database?: string;
}

export interface CaptureJobParams {
  /** The drill waiting for these counts ('' in a job that names none). */
  drillJobId: string;
  restorePoint: string;
}

export interface CheckJobParams {
  timeoutSeconds: number;
}

/** An info job reads the repository as it is: nothing to say. */
export type InfoJobParams = Record<string, never>;

export interface RestorePointsJobParams {
  /** ISO time: read WAL from the newest backup started at or before it (absent: the oldest backup). */
  since?: string;
}

export interface RecoverTableJobParams {
  /** The backup the controller picked or the user named ('' = the agent picks: name and xid targets). */
  backupLabel: string;
  /** The RecoveryTarget as protobuf JSON. */
  target?: JsonValue;
  tables: string[];
  into: string[];
  database: string;
}

export interface WalSearchJobParams {
  /** ISO times bounding the commit times searched. */
  since?: string;
  until?: string;
  table?: string;
  database?: string;
  kinds?: string[];
  minRows?: number;
  limit?: number;
}

export interface DumpJobParams {
  label: string;
  databases: string[];
  jobs?: number;
  lockWaitTimeoutMs?: number;
  withPasswords?: boolean;
  /** Set when the policy's logical schedule started it (the fire time it stands for, ISO). */
  scheduledAt?: string;
}

export interface RestoreDumpJobParams {
  /** The dump's cluster and label (the job itself runs on an agent of toCluster). */
  fromCluster: string;
  label: string;
  database: string;
  toCluster: string;
  toDatabase: string;
  tables: string[];
  schemas: string[];
  jobs?: number;
  clean?: boolean;
  /** Apply the dump's globals first (`--globals`). */
  globals?: boolean;
}

/** A rotate-key job rotates from the agent's previous key to its current one: nothing to say. */
export type RotateKeyJobParams = Record<string, never>;

export interface JobParamsByKind {
  backup: BackupJobParams;
  restore: RestoreJobParams;
  expire: ExpireJobParams;
  verify: VerifyJobParams;
  drill: DrillJobParams;
  capture: CaptureJobParams;
  check: CheckJobParams;
  info: InfoJobParams;
  'restore-points': RestorePointsJobParams;
  'rotate-key': RotateKeyJobParams;
  'recover-table': RecoverTableJobParams;
  'wal-search': WalSearchJobParams;
  dump: DumpJobParams;
  'restore-dump': RestoreDumpJobParams;
}

/** A catalog job with its params parsed for its kind; `job.kind === 'backup'` narrows `job.params`. */
export type TypedJob<K extends JobKind = JobKind> = {
  [P in K]: Omit<JobRecord, 'kind' | 'params'> & { kind: P; params: JobParamsByKind[P] };
}[K];

/** A job to create, its params typed by its kind. */
export type NewTypedJob<K extends JobKind> = Omit<NewJob, 'kind' | 'params'> & { kind: K; params: JobParamsByKind[K] };

type Fields = Record<string, unknown>;

const str = (v: unknown): string | undefined => (typeof v === 'string' ? v : undefined);
const num = (v: unknown): number | undefined => (typeof v === 'number' && Number.isFinite(v) ? v : undefined);
const bool = (v: unknown): boolean | undefined => (typeof v === 'boolean' ? v : undefined);
const strings = (v: unknown): string[] => (Array.isArray(v) ? v.filter((x): x is string => typeof x === 'string') : []);
/** Present keys only: an absent optional field stays absent (exactOptionalPropertyTypes). */
const some = <T extends object>(o: T): T =>
  Object.fromEntries(Object.entries(o).filter(([, v]) => v !== undefined)) as T;
/** A fire time: any recorded value means "scheduled", as readers always took it. */
const scheduledAt = (v: unknown): string | undefined => (v === undefined || v === null ? undefined : String(v));

const PARSERS: { readonly [K in JobKind]: (p: Fields) => JobParamsByKind[K] } = {
  backup: (p) =>
    some({
      type: p.type === 'diff' || p.type === 'incr' ? p.type : 'full',
      from: BACKUP_FROM_VALUES.find((f) => f === p.from),
      scheduledAt: scheduledAt(p.scheduledAt),
      resume: p.resume === 'fresh' || p.resume === 'required' ? p.resume : undefined,
    }),
  restore: (p) =>
    some({
      targetDir: str(p.targetDir) ?? '',
      backupLabel: str(p.backupLabel) ?? '',
      target: p.target === undefined || p.target === null ? undefined : (p.target as JsonValue),
      delta: bool(p.delta),
      tablespaceDir: str(p.tablespaceDir),
      targetTimeline: num(p.targetTimeline),
      archive: p.archive === 'preserve' || p.archive === 'off' ? p.archive : undefined,
    }),
  expire: (p) => ({
    labels: strings(p.labels),
    walKeepFrom: str(p.walKeepFrom) ?? '',
    keepRanges: Array.isArray(p.keepRanges)
      ? p.keepRanges
          .filter((r): r is Fields => typeof r === 'object' && r !== null)
          .map((r) => ({
            label: str(r.label) ?? '',
            timeline: num(r.timeline) ?? 0,
            walStart: str(r.walStart) ?? '',
            walStop: str(r.walStop) ?? '',
          }))
      : [],
    reason: str(p.reason) ?? '',
    ...(p.exact === true ? { exact: true } : {}),
    ...(Array.isArray(p.dumpLabels) ? { dumpLabels: strings(p.dumpLabels) } : {}),
  }),
  verify: (p) => ({ full: p.full === true }),
  drill: (p) =>
    some({
      backupLabel: str(p.backupLabel) ?? '',
      target: p.target === undefined || p.target === null ? undefined : (p.target as JsonValue),
      scheduledAt: scheduledAt(p.scheduledAt),
      captureJobId: str(p.captureJobId),
      keep: bool(p.keep),
    }),
  capture: (p) => ({ drillJobId: str(p.drillJobId) ?? '', restorePoint: str(p.restorePoint) ?? '' }),
  check: (p) => ({ timeoutSeconds: num(p.timeoutSeconds) ?? 0 }),
  info: () => ({}),
  'restore-points': (p) => some({ since: str(p.since) }),
  'rotate-key': () => ({}),
  'recover-table': (p) =>
    some({
      backupLabel: str(p.backupLabel) ?? '',
      target: p.target === undefined || p.target === null ? undefined : (p.target as JsonValue),
      tables: strings(p.tables),
      into: strings(p.into),
      database: str(p.database) ?? '',
    }),
  'wal-search': (p) =>
    some({
      since: str(p.since),
      until: str(p.until),
      table: str(p.table),
      database: str(p.database),
      kinds: Array.isArray(p.kinds) ? p.kinds.filter((k): k is string => typeof k === 'string') : undefined,
      minRows: num(p.minRows),
      limit: num(p.limit),
    }),
  dump: (p) =>
    some({
      label: str(p.label) ?? '',
      databases: strings(p.databases),
      jobs: num(p.jobs),
      lockWaitTimeoutMs: num(p.lockWaitTimeoutMs),
      withPasswords: bool(p.withPasswords),
      scheduledAt: str(p.scheduledAt),
    }),
  'restore-dump': (p) =>
    some({
      fromCluster: str(p.fromCluster) ?? '',
      label: str(p.label) ?? '',
      database: str(p.database) ?? '',
      toCluster: str(p.toCluster) ?? '',
      toDatabase: str(p.toDatabase) ?? '',
      tables: strings(p.tables),
      schemas: strings(p.schemas),
      jobs: num(p.jobs),
      clean: bool(p.clean),
    }),
};

function parseParams<K extends JobKind>(kind: K, raw: unknown): JobParamsByKind[K] {
  const fields = typeof raw === 'object' && raw !== null && !Array.isArray(raw) ? (raw as Fields) : {};
  return PARSERS[kind](fields);
}

/** The job with its params parsed for its kind (a job's params are read through this only). */
export function typedJob(job: JobRecord): TypedJob {
  return { ...job, params: parseParams(job.kind, job.params) } as TypedJob;
}

/** A job of a kind the caller knows (one it just created, or the job a kind's own code refers to), params parsed. */
export function jobOfKind<K extends JobKind>(kind: K, job: JobRecord): TypedJob<K> {
  if (job.kind !== kind) throw new PgfleetError('Internal', `job ${job.id} is a ${job.kind} job, not a ${kind} job`);
  return { ...job, kind, params: parseParams(kind, job.params) } as TypedJob<K>;
}
