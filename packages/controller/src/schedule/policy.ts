/**
 * Backup policies: what the catalog stores (a partial policy per cluster, and a fleet default
 * under FLEET_POLICY_SCOPE) and the effective policy a cluster runs under. A value comes from the
 * cluster's override if it sets it, else from the fleet default, else from the built-in default,
 * and `effectivePolicy` says which for every key so `pgfleet policy get` can show it.
 *
 * - Schedules: an unset cron is inherited; '' means "not scheduled" and stops an inherited one
 *   (a cluster can opt out of the fleet's incr schedule). No built-in schedule: nothing runs
 *   until someone asks for it.
 * - backupFrom: which host of an HA cluster backups run on (primary, standby, prefer-standby);
 *   built-in: the primary.
 * - catchUp: a schedule that never ran fires its latest due time at once only when this is on;
 *   otherwise its first run is the next cron time (a new `--full` must not start a full now).
 * - Retention: unset values take the built-in defaults below, but retention only runs on its own
 *   (after backups, hourly) when autoExpire is on (set explicitly; setting a retention count does
 *   not turn it on): a controller must never start deleting backups nobody asked it to (pgBackRest
 *   also refuses to expire without repo-retention-full). Even then an expiry is announced first
 *   (retention.planned) and waits expireGraceSeconds, so a `pgfleet pin` still wins.
 *   `pgfleet retention apply` runs it at once whatever the switch says.
 * - Logical dumps (docs/logical.md): `logical` is the dump schedule (cron, like drill); the
 *   logical-* tiers keep dumps by GFS of their own, counted over dumps only. With no logical tier
 *   set anywhere every dump is kept (no built-in deletes a dump nobody asked to expire);
 *   setting any one of them turns dump retention on, the unset ones taking DEFAULT_LOGICAL_RETENTION.
 *   `dumpDrill` (cron) schedules drills of the cluster's newest dump, as `drill` does for backups.
 */
import { PgfleetError } from '@pgfleet/core';
import {
  BACKUP_FROM_VALUES,
  FLEET_POLICY_SCOPE,
  type BackupFrom,
  type BackupKind,
  type CatalogStore,
  type PolicyHealth,
  type PolicyRecord,
  type PolicyRetention,
  type PolicySchedules,
} from '@pgfleet/catalog';
import { validateRetentionPolicy, type RetentionPolicy } from '../retention/plan.js';
import { CronSchedule } from './schedule.js';

export { FLEET_POLICY_SCOPE };

/** Built-in retention: a week of PITR, 7 daily, 4 weekly and 12 monthly fulls, never fewer than 1 full. */
export const DEFAULT_RETENTION: Readonly<RetentionPolicy> = {
  pitrWindowDays: 7,
  daily: 7,
  weekly: 4,
  monthly: 12,
  yearly: 0,
  minFull: 1,
};
/** Logical tiers once dump retention is on (a logical-* key is set): 7 daily, 4 weekly, 12 monthly, never fewer than 1. */
export const DEFAULT_LOGICAL_RETENTION: Readonly<LogicalRetention> = {
  daily: 7,
  weekly: 4,
  monthly: 12,
  yearly: 0,
  min: 1,
};
/** The logical GFS tiers (counts of dumps). */
export interface LogicalRetention {
  daily: number;
  weekly: number;
  monthly: number;
  yearly: number;
  min: number;
}
export const LOGICAL_RETENTION_KEYS = [
  'logicalDaily',
  'logicalWeekly',
  'logicalMonthly',
  'logicalYearly',
  'logicalMin',
] as const;
type LogicalRetentionKey = (typeof LOGICAL_RETENTION_KEYS)[number];
const LOGICAL_FIELDS: Record<LogicalRetentionKey, keyof LogicalRetention> = {
  logicalDaily: 'daily',
  logicalWeekly: 'weekly',
  logicalMonthly: 'monthly',
  logicalYearly: 'yearly',
  logicalMin: 'min',
};

/** Built-in grace between retention.planned and the automatic expire job: an hour to pin. */
export const DEFAULT_EXPIRE_GRACE_SECONDS = 3600;
/** The longest grace accepted: a week (longer would let the repository grow unbounded by surprise). */
export const MAX_EXPIRE_GRACE_SECONDS = 7 * 24 * 3600;
/** Built-in spreading: a fleet scheduled at 01:00 starts over 01:00-01:30. */
export const DEFAULT_SPREAD_MINUTES = 30;

export const SCHEDULE_KEYS = ['full', 'diff', 'incr'] as const satisfies readonly BackupKind[];
export const RETENTION_KEYS = ['pitrWindowDays', 'daily', 'weekly', 'monthly', 'yearly', 'minFull'] as const;
/** How retention runs on its own (stored with the retention values, not part of the plan's policy). */
export const EXPIRY_KEYS = ['autoExpire', 'expireGraceSeconds'] as const;
/**
 * Health thresholds (seconds) and the catalog field each is stored under. Unset everywhere, the
 * controller's flags (--rpo-threshold, ...) apply.
 */
export const HEALTH_KEYS = [
  'rpoThresholdSeconds',
  'staleBackupThresholdSeconds',
  'agentSilenceThresholdSeconds',
  'staleDumpThresholdSeconds',
] as const;
export type HealthKey = (typeof HEALTH_KEYS)[number];
export const HEALTH_FIELDS: Record<HealthKey, keyof PolicyHealth> = {
  rpoThresholdSeconds: 'rpoSeconds',
  staleBackupThresholdSeconds: 'staleBackupSeconds',
  agentSilenceThresholdSeconds: 'silenceSeconds',
  staleDumpThresholdSeconds: 'staleDumpSeconds',
};
/** Every key in the order `policy get` lists them. */
export const POLICY_KEYS = [
  ...SCHEDULE_KEYS,
  'drill',
  'logical',
  'dumpDrill',
  'spreadMinutes',
  'backupFrom',
  'catchUp',
  ...RETENTION_KEYS,
  ...EXPIRY_KEYS,
  ...LOGICAL_RETENTION_KEYS,
  ...HEALTH_KEYS,
] as const;
/** Built-in backup source: the primary, as before HA clusters (a standby backup is opted into). */
export const DEFAULT_BACKUP_FROM: BackupFrom = 'primary';
export type PolicyKey = (typeof POLICY_KEYS)[number];
export type PolicySource = 'cluster' | 'fleet' | 'default';

/** The CLI flag of each key, named in validation errors so a user knows what to fix. */
export const POLICY_FLAGS: Record<PolicyKey, string> = {
  full: '--full',
  diff: '--diff',
  incr: '--incr',
  drill: '--drill',
  logical: '--logical',
  dumpDrill: '--dump-drill',
  spreadMinutes: '--spread-minutes',
  backupFrom: '--backup-from',
  catchUp: '--catch-up',
  pitrWindowDays: '--pitr-window-days',
  daily: '--daily',
  weekly: '--weekly',
  monthly: '--monthly',
  yearly: '--yearly',
  minFull: '--min-full',
  autoExpire: '--auto-expire',
  expireGraceSeconds: '--expire-grace',
  logicalDaily: '--logical-daily',
  logicalWeekly: '--logical-weekly',
  logicalMonthly: '--logical-monthly',
  logicalYearly: '--logical-yearly',
  logicalMin: '--logical-min',
  rpoThresholdSeconds: '--rpo-threshold',
  staleBackupThresholdSeconds: '--stale-backup-threshold',
  agentSilenceThresholdSeconds: '--agent-silence-threshold',
  staleDumpThresholdSeconds: '--stale-dump-threshold',
};

/** A partial policy as stored for one scope. */
export interface PolicySettings {
  schedules: PolicySchedules;
  retention: PolicyRetention;
  health?: PolicyHealth;
}

export interface EffectivePolicy {
  /** Cron expressions of the scheduled types ('' and unset types are left out). */
  schedules: Partial<Record<BackupKind, string>>;
  /** Cron of the restore drill schedule (unset: no scheduled drills). */
  drill?: string;
  /** Cron of the logical dump schedule (unset: no scheduled dumps). */
  logical?: string;
  /** Cron of the dump drill schedule: drills of the newest dump (unset: none). */
  dumpDrill?: string;
  /** The logical tiers; undefined while no logical-* key is set anywhere (every dump is kept). */
  logicalRetention?: LogicalRetention;
  spreadMinutes: number;
  /** Which host backups run on (agents/choice.ts). */
  backupFrom: BackupFrom;
  /** Thresholds set by the cluster or fleet policy; unset ones come from the controller's flags. */
  health: PolicyHealth;
  retention: RetentionPolicy;
  sources: Record<PolicyKey, PolicySource>;
  /** Whether a schedule that never ran fires at once (else its first run is the next cron time). */
  catchUp: boolean;
  /** Whether retention runs on its own (set explicitly; the built-in is off). */
  autoExpire: boolean;
  /** Seconds between retention.planned and the automatic expire job. */
  expireGraceSeconds: number;
}

const EMPTY: PolicySettings = { schedules: {}, retention: {}, health: {} };

function isLogicalRetentionKey(key: PolicyKey): key is LogicalRetentionKey {
  return (LOGICAL_RETENTION_KEYS as readonly string[]).includes(key);
}

function isHealthKey(key: PolicyKey): key is HealthKey {
  return (HEALTH_KEYS as readonly string[]).includes(key);
}

function valueOf(p: PolicySettings | undefined, key: PolicyKey): string | number | boolean | undefined {
  if (!p) return undefined;
  if (
    key === 'full' ||
    key === 'diff' ||
    key === 'incr' ||
    key === 'drill' ||
    key === 'logical' ||
    key === 'dumpDrill' ||
    key === 'spreadMinutes' ||
    key === 'backupFrom' ||
    key === 'catchUp'
  )
    return p.schedules[key];
  if (isHealthKey(key)) return p.health?.[HEALTH_FIELDS[key]];
  return p.retention[key];
}

/** The cluster's effective policy: its override over the fleet default over the built-in defaults. */
export function effectivePolicy(
  fleet: PolicySettings | undefined,
  cluster: PolicySettings | undefined,
): EffectivePolicy {
  const sources = {} as Record<PolicyKey, PolicySource>;
  const pick = (key: PolicyKey): string | number | boolean | undefined => {
    const c = valueOf(cluster, key);
    if (c !== undefined) {
      sources[key] = 'cluster';
      return c;
    }
    const f = valueOf(fleet, key);
    if (f !== undefined) {
      sources[key] = 'fleet';
      return f;
    }
    sources[key] = 'default';
    return undefined;
  };
  const schedules: Partial<Record<BackupKind, string>> = {};
  for (const type of SCHEDULE_KEYS) {
    const cron = pick(type);
    if (typeof cron === 'string' && cron.trim() !== '') schedules[type] = cron.trim();
  }
  const drillCron = pick('drill');
  const logicalCron = pick('logical');
  const dumpDrillCron = pick('dumpDrill');
  let logicalRetention: LogicalRetention | undefined;
  for (const key of LOGICAL_RETENTION_KEYS) {
    const v = pick(key);
    if (typeof v === 'number') (logicalRetention ??= { ...DEFAULT_LOGICAL_RETENTION })[LOGICAL_FIELDS[key]] = v;
  }
  const spread = pick('spreadMinutes');
  const backupFrom = pick('backupFrom');
  const retention = { ...DEFAULT_RETENTION };
  for (const key of RETENTION_KEYS) {
    const v = pick(key);
    if (typeof v === 'number') retention[key] = v;
  }
  const health: PolicyHealth = {};
  for (const key of HEALTH_KEYS) {
    const v = pick(key);
    if (typeof v === 'number') health[HEALTH_FIELDS[key]] = v;
  }
  const catchUp = pick('catchUp');
  const autoExpire = pick('autoExpire');
  const grace = pick('expireGraceSeconds');
  return {
    schedules,
    ...(typeof drillCron === 'string' && drillCron.trim() !== '' ? { drill: drillCron.trim() } : {}),
    ...(typeof logicalCron === 'string' && logicalCron.trim() !== '' ? { logical: logicalCron.trim() } : {}),
    ...(typeof dumpDrillCron === 'string' && dumpDrillCron.trim() !== '' ? { dumpDrill: dumpDrillCron.trim() } : {}),
    ...(logicalRetention ? { logicalRetention } : {}),
    spreadMinutes: typeof spread === 'number' ? spread : DEFAULT_SPREAD_MINUTES,
    backupFrom: isBackupFrom(backupFrom) ? backupFrom : DEFAULT_BACKUP_FROM,
    retention,
    health,
    sources,
    catchUp: catchUp === true,
    autoExpire: autoExpire === true,
    expireGraceSeconds: typeof grace === 'number' ? grace : DEFAULT_EXPIRE_GRACE_SECONDS,
  };
}

/** A cron as effectivePolicy keeps it: trimmed, and undefined when unset or blank. */
function cronValue(v: string | number | boolean | undefined): string | undefined {
  return typeof v === 'string' && v.trim() !== '' ? v.trim() : undefined;
}

/**
 * The part of effectivePolicy that says what a schedule starts and when (schedules, drill, logical,
 * dumpDrill, spreadMinutes), the same values: a status row needs only these, and the whole policy
 * of 10,000 clusters was a seventh of a status listing's CPU.
 */
export function effectiveSchedules(
  fleet: PolicySettings | undefined,
  cluster: PolicySettings | undefined,
): Pick<EffectivePolicy, 'schedules' | 'drill' | 'logical' | 'dumpDrill' | 'spreadMinutes'> {
  const pick = (key: PolicyKey) => {
    const c = valueOf(cluster, key);
    return c !== undefined ? c : valueOf(fleet, key);
  };
  const schedules: Partial<Record<BackupKind, string>> = {};
  for (const type of SCHEDULE_KEYS) {
    const cron = cronValue(pick(type));
    if (cron !== undefined) schedules[type] = cron;
  }
  const drill = cronValue(pick('drill'));
  const logical = cronValue(pick('logical'));
  const dumpDrill = cronValue(pick('dumpDrill'));
  const spread = pick('spreadMinutes');
  return {
    schedules,
    ...(drill !== undefined ? { drill } : {}),
    ...(logical !== undefined ? { logical } : {}),
    ...(dumpDrill !== undefined ? { dumpDrill } : {}),
    spreadMinutes: typeof spread === 'number' ? spread : DEFAULT_SPREAD_MINUTES,
  };
}

export interface ClusterPolicy {
  fleet: PolicyRecord | undefined;
  cluster: PolicyRecord | undefined;
  effective: EffectivePolicy;
}

/** The cluster's stored override and the fleet default, and the effective policy they make. */
export async function loadClusterPolicy(
  store: Pick<CatalogStore, 'getPolicy'>,
  cluster: string,
): Promise<ClusterPolicy> {
  const [fleet, own] = await Promise.all([store.getPolicy(FLEET_POLICY_SCOPE), store.getPolicy(cluster)]);
  return { fleet, cluster: own, effective: effectivePolicy(fleet && settingsOf(fleet), own && settingsOf(own)) };
}

function isBackupFrom(v: unknown): v is BackupFrom {
  return (BACKUP_FROM_VALUES as readonly unknown[]).includes(v);
}

/** The stored form of a policy record (or an empty one). */
export function settingsOf(record: PolicyRecord | undefined): PolicySettings {
  return record
    ? { schedules: { ...record.schedules }, retention: { ...record.retention }, health: { ...record.health } }
    : { schedules: {}, retention: {}, health: {} };
}

/** `patch` over `base`: keys the patch sets replace the base's, the others stay. */
export function mergeSettings(base: PolicySettings = EMPTY, patch: PolicySettings): PolicySettings {
  const drop = <T extends object>(o: T): T =>
    Object.fromEntries(Object.entries(o).filter(([, v]) => v !== undefined)) as T;
  return {
    schedules: drop({ ...base.schedules, ...drop(patch.schedules) }),
    retention: drop({ ...base.retention, ...drop(patch.retention) }),
    health: drop({ ...base.health, ...drop(patch.health ?? {}) }),
  };
}

/** Whether a stored policy sets nothing at all (then its row is dropped). */
export function isEmptySettings(s: PolicySettings): boolean {
  return (
    Object.keys(s.schedules).length === 0 &&
    Object.keys(s.retention).length === 0 &&
    Object.keys(s.health ?? {}).length === 0
  );
}

/**
 * Throws InvalidArgument naming the flag of the first bad value: a cron expression that does not
 * parse, a negative or fractional count, a negative window.
 */
export function validatePolicySettings(settings: PolicySettings): void {
  const bad = (key: PolicyKey, what: string, cause?: unknown): never => {
    throw new PgfleetError(
      'InvalidArgument',
      `policy ${key} (${POLICY_FLAGS[key]}): ${what}`,
      cause === undefined ? {} : { cause },
    );
  };
  for (const type of [...SCHEDULE_KEYS, 'drill', 'logical', 'dumpDrill'] as const) {
    const cron = settings.schedules[type];
    if (cron === undefined || cron.trim() === '') continue;
    try {
      CronSchedule.parse(cron);
    } catch (err) {
      bad(type, (err as Error).message, err);
    }
  }
  const spread = settings.schedules.spreadMinutes;
  if (spread !== undefined && (!Number.isFinite(spread) || spread < 0 || spread > 7 * 24 * 60)) {
    bad('spreadMinutes', `must be a number of minutes from 0 to ${7 * 24 * 60}, got ${String(spread)}`);
  }
  const from = settings.schedules.backupFrom;
  if (from !== undefined && !isBackupFrom(from))
    bad('backupFrom', `must be one of ${BACKUP_FROM_VALUES.join(', ')}, got '${String(from)}'`);
  const days = settings.retention.pitrWindowDays;
  if (days !== undefined && (!Number.isFinite(days) || days < 0))
    bad('pitrWindowDays', `must be a number of days >= 0, got ${String(days)}`);
  for (const key of ['daily', 'weekly', 'monthly', 'yearly', 'minFull'] as const) {
    const v = settings.retention[key];
    if (v !== undefined && (!Number.isInteger(v) || v < 0))
      bad(key, `must be a whole number of full backups >= 0 (0 turns it off), got ${String(v)}`);
  }
  for (const key of LOGICAL_RETENTION_KEYS) {
    const v = settings.retention[key];
    if (v !== undefined && (!Number.isInteger(v) || v < 0 || v > 100_000))
      bad(key, `must be a whole number of dumps from 0 to 100000 (0 turns the tier off), got ${String(v)}`);
  }
  const grace = settings.retention.expireGraceSeconds;
  if (grace !== undefined && (!Number.isFinite(grace) || grace < 0 || grace > MAX_EXPIRE_GRACE_SECONDS))
    bad(
      'expireGraceSeconds',
      `must be a number of seconds from 0 to ${MAX_EXPIRE_GRACE_SECONDS}, got ${String(grace)}`,
    );
  for (const key of HEALTH_KEYS) {
    const v = settings.health?.[HEALTH_FIELDS[key]];
    if (v !== undefined && (!Number.isFinite(v) || v < 1 || v > 365 * 24 * 3600))
      bad(key, `must be a number of seconds from 1 to ${365 * 24 * 3600}, got ${String(v)}`);
  }
  // The retention function's own check, so the two can never disagree about what is valid.
  const counts: Partial<RetentionPolicy> = {};
  for (const key of RETENTION_KEYS) if (settings.retention[key] !== undefined) counts[key] = settings.retention[key];
  validateRetentionPolicy({ ...DEFAULT_RETENTION, ...counts });
}

/** The text of a value for listings. */
export function formatPolicyValue(key: PolicyKey, eff: EffectivePolicy, healthDefaults?: PolicyHealth): string {
  if (key === 'full' || key === 'diff' || key === 'incr') return eff.schedules[key] ?? '-';
  if (key === 'drill') return eff.drill ?? '-';
  if (key === 'logical') return eff.logical ?? '-';
  if (key === 'dumpDrill') return eff.dumpDrill ?? '-';
  if (isLogicalRetentionKey(key))
    return eff.logicalRetention ? String(eff.logicalRetention[LOGICAL_FIELDS[key]]) : 'off';
  if (key === 'spreadMinutes') return String(eff.spreadMinutes);
  if (key === 'backupFrom') return eff.backupFrom;
  if (key === 'catchUp') return eff.catchUp ? 'on' : 'off';
  if (key === 'autoExpire') return eff.autoExpire ? 'on' : 'off';
  if (key === 'expireGraceSeconds') return String(eff.expireGraceSeconds);
  if (isHealthKey(key)) {
    const v = eff.health[HEALTH_FIELDS[key]] ?? healthDefaults?.[HEALTH_FIELDS[key]];
    return v === undefined ? '-' : String(v);
  }
  return String(eff.retention[key]);
}
