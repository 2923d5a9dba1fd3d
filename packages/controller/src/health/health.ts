/**
 * Fleet health (docs/events.md, issue 5): from what agents report in their heartbeats
 * (pg_stat_archiver, current and streamed LSN) and the catalog's backups, the controller derives
 * per cluster
 *   - RPO: now minus the time of the newest WAL safely in the repository (last_archived_time, or
 *     the heartbeat's time when everything written is archived or streamed);
 *   - archive failing: failed_count went up and last_failed_time is newer than last_archived_time;
 *   - backup staleness: no successful backup newer than the threshold; unless a policy sets the
 *     threshold, a cluster with backup schedules is judged against them (the longest gap between
 *     two scheduled backups plus 3 h of grace), the flag otherwise;
 *   - agent silence: the session is open but no heartbeat came for the threshold;
 *   - dump staleness (dump.stale): no complete logical dump newer than the threshold; judged only
 *     where one applies: the policy's --stale-dump-threshold, else derived from its --logical
 *     schedule like the backup one, else the controller's --stale-dump-threshold flag if given.
 * Each (cluster, condition) is a two-state machine (ok <-> breached) kept in the catalog, so an
 * event is written once on crossing and once on recovery, never per heartbeat, and a controller
 * restart does not send them again. The state change and its event commit together.
 *
 * Thresholds are per cluster: its policy's (`pgfleet policy set --rpo-threshold ...`), else the
 * fleet policy's, else the controller's flags. The monitor reads the policies once per timer
 * round and at most once per interval for heartbeats, never once per heartbeat.
 *
 * `assessCluster` and `nextHealthState` are pure (unit-tested); HealthMonitor wires them to the
 * catalog, heartbeats and a timer.
 */
import { fromJson, type JsonValue } from '@bufbuild/protobuf';
import { timestampFromMs } from '@bufbuild/protobuf/wkt';
import { asPgfleetError, type Logger } from '@pgfleet/core';
import { tryLead } from '../leadership.js';
import {
  agentRefKey,
  FLEET_POLICY_SCOPE,
  type AgentRecord,
  type AgentWalHealth,
  type BackupRecord,
  type CatalogStore,
  type HealthStateRecord,
  type LeadershipFence,
  type OutboxEventInput,
  type PolicyRecord,
} from '@pgfleet/catalog';
import type { EventPayloadInit } from '@pgfleet/events';
import { ArchiverStatsSchema, type ArchiverStats, type WalHealth } from '@pgfleet/proto';
import { outboxEvent, timestampMs } from '../jobs/events.js';
import { effectivePolicy, settingsOf } from '../schedule/policy.js';
import { nextRun } from '../schedule/schedule.js';
import { HistoryRecorder } from './history.js';
import { archiverStatsFromCanonicalJson } from './archiver-json.js';

export interface HealthThresholds {
  /** RPO above this many seconds is a breach; default 300. */
  rpoSeconds: number;
  /** No backup newer than this many seconds is stale; default 26 h. */
  staleBackupSeconds: number;
  /** No heartbeat for this many seconds on an open session is silence; default 60. */
  silenceSeconds: number;
  /** The backup schedules the stale threshold was derived from (cron expressions), when it was. */
  staleSchedule?: string;
  /** No complete dump newer than this many seconds is dump.stale; undefined: dumps are not judged. */
  staleDumpSeconds?: number;
  /** The logical schedule the dump threshold was derived from, when it was. */
  staleDumpSchedule?: string;
}

export const DEFAULT_HEALTH_THRESHOLDS: HealthThresholds = {
  rpoSeconds: 300,
  staleBackupSeconds: 26 * 3600,
  silenceSeconds: 60,
};

/**
 * The thresholds a cluster runs under: each one from the cluster's policy if it sets it, else
 * from the fleet policy, else `defaults` (the controller's flags).
 */
export function clusterThresholds(
  defaults: HealthThresholds,
  policies: readonly PolicyRecord[] | ReadonlyMap<string, PolicyRecord>,
  cluster: string,
): HealthThresholds {
  // A map by scope from the monitor: a search of the list per cluster is quadratic in a fleet's round.
  const byScope = (scope: string) =>
    policies instanceof Map
      ? policies.get(scope)
      : (policies as readonly PolicyRecord[]).find((p) => p.scope === scope);
  const fleet = byScope(FLEET_POLICY_SCOPE);
  const own = byScope(cluster);
  const eff = effectivePolicy(fleet && settingsOf(fleet), own && settingsOf(own));
  const set = eff.health;
  const crons = Object.values(eff.schedules);
  const fromSchedule =
    set.staleBackupSeconds === undefined && crons.length > 0 ? scheduleStaleSeconds(crons) : undefined;
  const dumpFromSchedule =
    set.staleDumpSeconds === undefined && eff.logical ? scheduleStaleSeconds([eff.logical]) : undefined;
  const staleDumpSeconds = set.staleDumpSeconds ?? dumpFromSchedule ?? defaults.staleDumpSeconds;
  return {
    rpoSeconds: set.rpoSeconds ?? defaults.rpoSeconds,
    staleBackupSeconds: set.staleBackupSeconds ?? fromSchedule ?? defaults.staleBackupSeconds,
    silenceSeconds: set.silenceSeconds ?? defaults.silenceSeconds,
    ...(fromSchedule !== undefined ? { staleSchedule: crons.join(' | ') } : {}),
    ...(staleDumpSeconds !== undefined ? { staleDumpSeconds } : {}),
    ...(dumpFromSchedule !== undefined ? { staleDumpSchedule: eff.logical } : {}),
  };
}

const staleCache = new Map<string, number>();
/** What a scheduled backup may take beyond its slot before the cluster counts as stale. */
const STALE_GRACE_MS = 3 * 3_600_000;

/**
 * How old the newest backup may get under these schedules before it is stale: the longest gap
 * between two consecutive fire times of any of them (over 400 days from a fixed start, or as far
 * as 2000 fire times of the busiest schedule reach), plus 3 h of grace: a backup takes time (a
 * nightly full of hours holds back the hourly incrs behind it, one backup per cluster at a time)
 * and spreading shifts a cluster's fire times by up to the spread window. A daily full is stale
 * after 27 h, hourly incrs after 4 h. A policy's --stale-backup-threshold overrides this.
 */
export function scheduleStaleSeconds(crons: readonly string[]): number {
  const key = [...crons].sort().join('\n');
  const cached = staleCache.get(key);
  if (cached !== undefined) return cached;
  // A fixed start keeps the figure stable between evaluations.
  const start = Date.UTC(2024, 0, 1);
  let end = start + 400 * 86_400_000;
  const times: number[] = [start];
  for (const cron of crons) {
    let t = new Date(start);
    for (let n = 0; ; n++) {
      t = nextRun(cron, t);
      if (t.getTime() > end) break;
      times.push(t.getTime());
      // A busy schedule stops early: gaps are only judged up to where every schedule was followed.
      if (n === 1999) {
        end = t.getTime();
        break;
      }
    }
  }
  times.push(end);
  times.sort((a, b) => a - b);
  let gap = 0;
  for (let i = 1; i < times.length && times[i]! <= end; i++) gap = Math.max(gap, times[i]! - times[i - 1]!);
  const seconds = (gap + STALE_GRACE_MS) / 1000;
  staleCache.set(key, seconds);
  return seconds;
}

/** Heartbeat.wal as the catalog stores it (AgentRecord.walHealth): 64-bit counts as numbers. */
export function walHealthRecord(w: WalHealth): AgentWalHealth {
  return {
    pgWalBytes: Number(w.pgWalBytes),
    pgWalFreeBytes: Number(w.pgWalFreeBytes),
    pgWalTotalBytes: Number(w.pgWalTotalBytes),
    slotName: w.slotName,
    slotActive: w.slotActive,
    slotRestartLsn: w.slotRestartLsn,
    slotRetainedBytes: Number(w.slotRetainedBytes),
    slotWalStatus: w.slotWalStatus,
    streamLagBytes: Number(w.streamLagBytes),
    streamLagSeconds: w.streamLagSeconds,
    walSegmentsArchived: Number(w.walSegmentsArchived),
    walBytesArchived: Number(w.walBytesArchived),
  };
}

export type HealthCondition = 'archive' | 'rpo' | 'backup_stale' | 'agent_silent' | 'dump_stale';
export const HEALTH_CONDITIONS: readonly HealthCondition[] = [
  'archive',
  'rpo',
  'backup_stale',
  'agent_silent',
  'dump_stale',
];

/** pg_stat_archiver as the controller reads it (times in ms, null when never). */
export interface ArchiverFigures {
  archivedCount: bigint;
  lastArchivedWal: string;
  lastArchivedTime: number | null;
  failedCount: bigint;
  lastFailedWal: string;
  lastFailedTime: number | null;
}

/**
 * The archiver figures an agent reported (its row's JSON) as the protobuf message, parsed once per
 * row object: status reads them three times a cluster (ClusterInfo.archiver, RPO, archive state),
 * and protobuf's JSON parsing was a fifth of a status row's CPU; the form heartbeats store is read
 * without it (archiver-json.ts). Throws what fromJson throws.
 */
export function archiverStatsFromJson(json: JsonValue): ArchiverStats {
  if (json === null || typeof json !== 'object')
    return fromJson(ArchiverStatsSchema, json, { ignoreUnknownFields: true });
  const parsed = parsedArchiver(json);
  if ('err' in parsed) throw parsed.err;
  return parsed.stats;
}

type ParsedArchiver = { stats: ArchiverStats; figures?: ArchiverFigures } | { err: unknown };
const parsedArchivers = new WeakMap<object, ParsedArchiver>();

function parsedArchiver(json: object): ParsedArchiver {
  let parsed = parsedArchivers.get(json);
  if (!parsed) {
    try {
      parsed = {
        stats:
          (Array.isArray(json) ? undefined : archiverStatsFromCanonicalJson(json)) ??
          fromJson(ArchiverStatsSchema, json as JsonValue, { ignoreUnknownFields: true }),
      };
    } catch (err) {
      parsed = { err };
    }
    parsedArchivers.set(json, parsed);
  }
  return parsed;
}

/** The figures of an agent row's archiver JSON (undefined when unreadable), kept with its message. */
export function archiverFromJson(json: unknown): ArchiverFigures | undefined {
  if (json === null || json === undefined) return undefined;
  if (typeof json !== 'object') {
    try {
      return figuresOf(archiverStatsFromJson(json as JsonValue));
    } catch {
      return undefined;
    }
  }
  const parsed = parsedArchiver(json);
  if ('err' in parsed) return undefined;
  return (parsed.figures ??= figuresOf(parsed.stats));
}

function figuresOf(a: ArchiverStats): ArchiverFigures {
  return {
    archivedCount: a.archivedCount,
    lastArchivedWal: a.lastArchivedWal,
    lastArchivedTime: timestampMs(a.lastArchivedTime),
    failedCount: a.failedCount,
    lastFailedWal: a.lastFailedWal,
    lastFailedTime: timestampMs(a.lastFailedTime),
  };
}

/** What one evaluation of a cluster looks at. */
export interface ClusterObservation {
  cluster: string;
  now: number;
  /** When the cluster was first seen (stands in for the last backup before the first one). */
  clusterCreatedAt: number;
  agent?: {
    id: string;
    connected: boolean;
    lastSeen: number | null;
    archiver?: ArchiverFigures;
    currentLsn?: string;
    /** From the last heartbeat this controller received ('' when not streaming or unknown). */
    streamedLsn?: string;
  };
  lastBackup?: { label: string; stopTime: number };
  /** The newest complete logical dump. */
  lastDump?: { label: string; stopTime: number };
}

/**
 * The agent part of a ClusterObservation from the agent's catalog record. streamedLsn is what
 * this controller's last heartbeat of it said; left out where the caller does not know it.
 */
export function observedAgent(agent: AgentRecord, streamedLsn?: string): NonNullable<ClusterObservation['agent']> {
  const archiver = archiverFromJson(agent.archiver);
  return {
    id: agent.id,
    connected: agent.connected,
    lastSeen: agent.lastSeen,
    ...(archiver ? { archiver } : {}),
    ...(agent.currentLsn ? { currentLsn: agent.currentLsn } : {}),
    ...(streamedLsn !== undefined ? { streamedLsn } : {}),
  };
}

export interface Assessment {
  /** undefined: not known (no figures yet); no state change either way. */
  breached: boolean | undefined;
  value?: number;
}

export interface ClusterAssessment {
  cluster: string;
  /** The thresholds the conditions were judged against. */
  thresholds: HealthThresholds;
  rpoSeconds: number | undefined;
  archiveFailing: boolean | undefined;
  conditions: Record<HealthCondition, Assessment>;
  obs: ClusterObservation;
}

const WAL_SEGMENT_BYTES = 16n * 1024n * 1024n;

function parseLsn(lsn: string | undefined): bigint | undefined {
  const m = /^([0-9A-Fa-f]{1,8})\/([0-9A-Fa-f]{1,8})$/.exec(lsn ?? '');
  return m ? (BigInt(`0x${m[1]}`) << 32n) + BigInt(`0x${m[2]}`) : undefined;
}

/** The LSN just past the end of a WAL segment file name (16 MiB segments), if it is one. */
function segmentEnd(wal: string): bigint | undefined {
  const m = /^[0-9A-F]{8}([0-9A-F]{8})([0-9A-F]{8})$/.exec(wal);
  if (!m) return undefined;
  const segno = BigInt(`0x${m[1]}`) * (0x100000000n / WAL_SEGMENT_BYTES) + BigInt(`0x${m[2]}`);
  return (segno + 1n) * WAL_SEGMENT_BYTES;
}

/** Archiving is failing: the newest failure is newer than the newest success. */
export function archiveFailing(a: ArchiverFigures): boolean {
  if (a.failedCount === 0n || a.lastFailedTime === null) return false;
  return a.lastArchivedTime === null || a.lastFailedTime > a.lastArchivedTime;
}

/**
 * The RPO in seconds: now minus the time of the newest WAL safely in the repository. When
 * everything PostgreSQL wrote is archived (the current LSN is not past the last archived
 * segment) or streamed (streamed >= current) and archiving is not failing, nothing is at risk
 * as of the last heartbeat, so that heartbeat's time counts.
 */
export function rpoSeconds(obs: ClusterObservation): number | undefined {
  const agent = obs.agent;
  const a = agent?.archiver;
  if (!agent || !a) return undefined;
  const current = parseLsn(agent.currentLsn);
  const failing = archiveFailing(a);
  let safeTime = a.lastArchivedTime;
  if (!failing && current !== undefined && agent.lastSeen !== null) {
    const archivedEnd = segmentEnd(a.lastArchivedWal);
    const streamed = parseLsn(agent.streamedLsn);
    if ((archivedEnd !== undefined && current <= archivedEnd) || (streamed !== undefined && streamed >= current)) {
      safeTime = Math.max(safeTime ?? 0, agent.lastSeen);
    }
  }
  if (safeTime === null) return undefined;
  return Math.max(0, (obs.now - safeTime) / 1000);
}

export function assessCluster(obs: ClusterObservation, t: HealthThresholds): ClusterAssessment {
  const a = obs.agent?.archiver;
  const rpo = rpoSeconds(obs);
  const failing = a ? archiveFailing(a) : undefined;
  const lastBackupTime = obs.lastBackup?.stopTime ?? obs.clusterCreatedAt;
  const backupAge = (obs.now - lastBackupTime) / 1000;
  const agent = obs.agent;
  const silentFor = agent?.connected ? (obs.now - (agent.lastSeen ?? obs.now)) / 1000 : undefined;
  // Before its first dump a cluster counts from when it was first seen, as for backups.
  const dumpAge = (obs.now - (obs.lastDump?.stopTime ?? obs.clusterCreatedAt)) / 1000;
  return {
    cluster: obs.cluster,
    thresholds: t,
    rpoSeconds: rpo,
    archiveFailing: failing,
    obs,
    conditions: {
      archive: { breached: failing },
      rpo: rpo === undefined ? { breached: undefined } : { breached: rpo > t.rpoSeconds, value: rpo },
      backup_stale: { breached: backupAge > t.staleBackupSeconds, value: backupAge },
      // Only an open session can be silent; a closed one is reported by agent.disconnected.
      agent_silent:
        silentFor === undefined ? { breached: false } : { breached: silentFor > t.silenceSeconds, value: silentFor },
      dump_stale:
        t.staleDumpSeconds === undefined
          ? { breached: false }
          : { breached: dumpAge > t.staleDumpSeconds, value: dumpAge },
    },
  };
}

export interface HealthTransition {
  state: HealthStateRecord;
  /** The event payload reporting the transition (none for a silent recovery). */
  payload?: EventPayloadInit;
}

/**
 * The hysteresis: ok -> breached emits the breach event, breached -> ok the recovery event
 * (kinds without a recovery counterpart, backup.stale and agent.silent, just re-arm). Anything
 * else, including an unknown assessment, changes nothing, so a condition that stays breached
 * across heartbeats and restarts is reported once.
 */
export function nextHealthState(
  condition: HealthCondition,
  prev: HealthStateRecord | undefined,
  assessment: ClusterAssessment,
  t: HealthThresholds,
): HealthTransition | undefined {
  const c = assessment.conditions[condition];
  if (c.breached === undefined) return undefined;
  const was = prev?.state ?? 'ok';
  if (c.breached && was === 'ok') return breachedTransition(condition, c, assessment, t);
  if (!c.breached && was === 'breached') return recoveredTransition(condition, c, prev!.since, assessment, t);
  return undefined;
}

/** The archiver's last archived segment and its time, as the archive and RPO events carry them. */
function lastArchived(a: ArchiverFigures | undefined) {
  return a
    ? {
        lastArchivedWal: a.lastArchivedWal,
        ...(a.lastArchivedTime !== null ? { lastArchivedTime: timestampFromMs(a.lastArchivedTime) } : {}),
      }
    : {};
}

/** A condition that was ok and is now breached: its state since now, and the event saying so. */
function breachedTransition(
  condition: HealthCondition,
  c: Assessment,
  assessment: ClusterAssessment,
  t: HealthThresholds,
): HealthTransition {
  const obs = assessment.obs;
  const now = obs.now;
  const a = obs.agent?.archiver;
  const base = { cluster: assessment.cluster, condition };
  switch (condition) {
    case 'archive':
      return {
        state: { ...base, state: 'breached', since: now, data: { failedCount: String(a?.failedCount ?? 0n) } },
        payload: {
          case: 'walArchiveFailed',
          value: {
            failedCount: a?.failedCount ?? 0n,
            lastFailedWal: a?.lastFailedWal ?? '',
            ...(a?.lastFailedTime ? { lastFailedTime: timestampFromMs(a.lastFailedTime) } : {}),
            message: `archive_command failed for ${a?.lastFailedWal || 'a WAL segment'} (${a?.failedCount ?? 0n} failures)`,
            ...lastArchived(a),
          },
        },
      };
    case 'rpo':
      return {
        state: { ...base, state: 'breached', since: now, data: null },
        payload: {
          case: 'rpoBreached',
          value: { rpoSeconds: c.value ?? 0, thresholdSeconds: t.rpoSeconds, ...lastArchived(a) },
        },
      };
    case 'backup_stale': {
      const b = obs.lastBackup;
      return {
        state: { ...base, state: 'breached', since: now, data: null },
        payload: {
          case: 'backupStale',
          value: {
            lastBackupLabel: b?.label ?? '',
            ...(b ? { lastBackupTime: timestampFromMs(b.stopTime) } : {}),
            ageSeconds: c.value ?? 0,
            thresholdSeconds: t.staleBackupSeconds,
            schedule: t.staleSchedule ?? '',
          },
        },
      };
    }
    case 'dump_stale': {
      const d = obs.lastDump;
      return {
        state: { ...base, state: 'breached', since: now, data: null },
        payload: {
          case: 'dumpStale',
          value: {
            lastDumpLabel: d?.label ?? '',
            ...(d ? { lastDumpTime: timestampFromMs(d.stopTime) } : {}),
            ageSeconds: c.value ?? 0,
            thresholdSeconds: t.staleDumpSeconds ?? 0,
            schedule: t.staleDumpSchedule ?? '',
          },
        },
      };
    }
    case 'agent_silent': {
      const agent = obs.agent!;
      return {
        state: { ...base, state: 'breached', since: now, data: { agentId: agent.id } },
        payload: {
          case: 'agentSilent',
          value: {
            agentId: agent.id,
            ...(agent.lastSeen !== null ? { lastHeartbeatTime: timestampFromMs(agent.lastSeen) } : {}),
            silentSeconds: c.value ?? 0,
            thresholdSeconds: t.silenceSeconds,
          },
        },
      };
    }
  }
}

/** A condition breached since `since` that is ok now: its state, and the recovery event where one is sent. */
function recoveredTransition(
  condition: HealthCondition,
  c: Assessment,
  since: number,
  assessment: ClusterAssessment,
  t: HealthThresholds,
): HealthTransition {
  const now = assessment.obs.now;
  const a = assessment.obs.agent?.archiver;
  const state: HealthStateRecord = { cluster: assessment.cluster, condition, state: 'ok', since: now, data: null };
  switch (condition) {
    case 'archive':
      return {
        state,
        payload: {
          case: 'walArchiveRecovered',
          value: {
            ...lastArchived(a),
            failedCount: a?.failedCount ?? 0n,
            failingSeconds: Math.max(0, (now - since) / 1000),
          },
        },
      };
    case 'rpo':
      return {
        state,
        payload: {
          case: 'rpoRecovered',
          value: {
            rpoSeconds: c.value ?? 0,
            thresholdSeconds: t.rpoSeconds,
            ...lastArchived(a),
            breachedSeconds: Math.max(0, (now - since) / 1000),
          },
        },
      };
    default:
      return { state };
  }
}

/** Clusters evaluated together: one catalog read of each kind and one history write per batch. */
const EVALUATION_BATCH = 500;

/** An evaluation asked for and not started: its callers wait for `done`. */
interface QueuedEvaluation {
  done: Promise<ClusterAssessment | undefined>;
  resolve: (assessment: ClusterAssessment | undefined) => void;
  fence: LeadershipFence | undefined;
}

/** Rows by their cluster, in the order they came. */
export function groupByCluster<T extends { cluster: string }>(rows: readonly T[]): Map<string, T[]> {
  const m = new Map<string, T[]>();
  for (const r of rows) {
    const list = m.get(r.cluster);
    if (list) list.push(r);
    else m.set(r.cluster, [r]);
  }
  return m;
}

/** The leadership (tryAcquireLeadership name) of the timer's evaluation of every cluster. */
export const HEALTH_LEADERSHIP = 'health';

export interface HealthMonitorOptions {
  /** The controller's flags: thresholds of clusters whose policies set none. */
  thresholds: HealthThresholds;
  /** Seconds between timer evaluations of every cluster (and the age of the policies heartbeats are judged by); 0: no timer. */
  intervalSeconds: number;
  logger: Logger;
  now: () => number;
  /** Called after health events were committed. */
  onEvents?: () => void;
}

/** Wires the pure evaluation to the catalog: on each heartbeat and on a timer. */
export class HealthMonitor {
  /** The last streamed LSN per agent (agentRefKey: an id of another cluster is another agent). */
  private readonly streamed = new Map<string, string>();
  private readonly latest = new Map<string, ClusterAssessment>();
  private chain: Promise<unknown> = Promise.resolve();
  /**
   * Evaluations asked for and not started yet, per cluster: a second request joins the queued one.
   * They are evaluated in batches (evaluateBatch): the clusters queued while a batch runs are read
   * together by the next, so heartbeats of a large fleet cost a few queries per batch, not six per
   * cluster.
   */
  private readonly queued = new Map<string, QueuedEvaluation>();
  /** A batch is on the chain and will take what is queued by then. */
  private drainQueued = false;
  /**
   * When each cluster's last evaluation was queued by a heartbeat or a timer round (opts.now()):
   * a heartbeat within an interval of either adds nothing, so a fleet beating every few seconds
   * costs one evaluation per cluster and interval, not one for the beats and one for the round.
   */
  private readonly evaluatedAt = new Map<string, number>();
  /** The timer's round over every cluster while it runs: a slow round is not overlapped by the next. */
  private round: Promise<void> | undefined;
  private timer: NodeJS.Timeout | undefined;
  /** The stored policies as last read, and when (opts.now()). */
  private policies: { at: number; byScope: Map<string, PolicyRecord> } | undefined;
  /** The RPO samples the console charts (history.ts). */
  private readonly history: HistoryRecorder;

  constructor(
    private readonly store: CatalogStore,
    private readonly opts: HealthMonitorOptions,
  ) {
    this.history = new HistoryRecorder(store);
  }

  start(): void {
    if (this.timer || this.opts.intervalSeconds <= 0) return;
    this.timer = setInterval(() => void this.evaluateAll().catch(() => undefined), this.opts.intervalSeconds * 1000);
    this.timer.unref();
  }

  async stop(): Promise<void> {
    if (this.timer) clearInterval(this.timer);
    this.timer = undefined;
    await this.chain.catch(() => undefined);
  }

  /** The most recent assessment of each cluster (metrics read it). */
  assessments(): ReadonlyMap<string, ClusterAssessment> {
    return this.latest;
  }

  async onHeartbeat(
    agentId: string,
    cluster: string,
    beat: { streamedLsn: string; currentLsn: string },
  ): Promise<void> {
    this.streamed.set(agentRefKey({ cluster, agentId }), beat.streamedLsn);
    // At most once per interval per cluster: with 10,000 agents beating every 5 s, one evaluation
    // (five catalog reads) per heartbeat is 2,000 a second and the queue outgrows the controller
    // (bench/fleet-scale.mjs). Thresholds are minutes; an interval's delay changes no verdict.
    const now = this.opts.now();
    const last = this.evaluatedAt.get(cluster);
    const every = this.opts.intervalSeconds * 1000;
    if (every > 0 && last !== undefined && now >= last && now - last < every) return;
    this.evaluatedAt.set(cluster, now);
    await this.evaluate(cluster);
  }

  /**
   * Evaluates one cluster (serialised with every other evaluation of this controller). A request
   * for a cluster whose evaluation is queued and not started joins it: that one reads the catalog
   * after this request anyway, so the queue never holds more than one evaluation per cluster.
   */
  evaluate(cluster: string, fence?: LeadershipFence): Promise<ClusterAssessment | undefined> {
    const pending = this.queued.get(cluster);
    if (pending) return pending.done;
    let resolve!: (a: ClusterAssessment | undefined) => void;
    const done = new Promise<ClusterAssessment | undefined>((r) => (resolve = r));
    this.queued.set(cluster, { done, resolve, fence });
    if (!this.drainQueued) {
      this.drainQueued = true;
      this.chain = this.chain.then(() => this.drain()).catch(() => undefined);
    }
    return done;
  }

  /** Evaluates what is queued, a batch at a time, until nothing is (one on the chain at a time). */
  private async drain(): Promise<void> {
    while (this.queued.size > 0) {
      // One batch shares one fence (the timer round's, or none for heartbeats): the first queued's.
      const fence = this.queued.values().next().value!.fence;
      const batch: Array<[string, QueuedEvaluation]> = [];
      for (const entry of this.queued) {
        if (entry[1].fence !== fence) continue;
        batch.push(entry);
        if (batch.length >= EVALUATION_BATCH) break;
      }
      for (const [cluster] of batch) this.queued.delete(cluster);
      let results = new Map<string, ClusterAssessment | undefined>();
      try {
        results = await this.evaluateBatch(
          batch.map(([cluster]) => cluster),
          fence,
        );
      } catch (err) {
        this.opts.logger.warn({ err, clusters: batch.length }, 'health evaluation failed');
      }
      // Every caller hears back, with undefined where no assessment was made.
      for (const [cluster, q] of batch) q.resolve(results.get(cluster));
      // Let heartbeats and calls in between two batches (a SQLite catalog never waits for I/O).
      await new Promise<void>((r) => setImmediate(r));
    }
    this.drainQueued = false;
  }

  evaluateAll(): Promise<void> {
    // A round over 10,000 clusters may outlast the interval: the next tick then waits for it.
    this.round ??= this.evaluateRound().finally(() => (this.round = undefined));
    return this.round;
  }

  private async evaluateRound(): Promise<void> {
    // Several controllers on one catalog: one of them evaluates on the timer (heartbeats are
    // evaluated by the controller holding the agent's stream).
    if (!(await tryLead(this.store, HEALTH_LEADERSHIP, this.opts.logger))) return;
    // Carried by the round's writes: a leader that paused while another took over writes nothing late.
    const fence = this.store.leadershipFence(HEALTH_LEADERSHIP);
    // Policies are read once for the whole round.
    this.policiesChanged();
    // Evaluations on a SQLite catalog never wait for I/O: a round over 10,000 clusters would hold
    // every agent stream and admin call for its whole length without the slices.
    // A page of clusters at a time (the catalog read per batch, not per cluster): a round over
    // 10,000 clusters was 60,000 queries and 10,000 history transactions each interval.
    let after = '';
    for (;;) {
      const page = await this.store.listClusters({ after, limit: EVALUATION_BATCH });
      if (page.length === 0) return;
      after = page.at(-1)!.name;
      const now = this.opts.now();
      for (const c of page) this.evaluatedAt.set(c.name, now);
      await Promise.all(page.map((c) => this.evaluate(c.name, fence)));
      if (this.fenceLost) {
        this.fenceLost = false;
        this.opts.logger.warn('health round stopped: another controller leads health evaluation now');
        return;
      }
      if (page.length < EVALUATION_BATCH) return;
    }
  }

  /** Makes the next evaluation read the policies again (after `pgfleet policy set`). */
  policiesChanged(): void {
    this.policies = undefined;
  }

  /** The stored policies by scope, read at most once per interval (10 s without a timer). */
  private async policiesByScope(): Promise<Map<string, PolicyRecord>> {
    const now = this.opts.now();
    const maxAge = (this.opts.intervalSeconds > 0 ? this.opts.intervalSeconds : 10) * 1000;
    if (!this.policies || now - this.policies.at >= maxAge || now < this.policies.at) {
      this.policies = { at: now, byScope: new Map((await this.store.listPolicies()).map((p) => [p.scope, p])) };
    }
    return this.policies.byScope;
  }

  /** Set when a fenced write was refused (LeadershipLost): the round stops there. */
  private fenceLost = false;

  /**
   * Evaluates `clusters` with one read of each kind for all of them (clusters, agents, newest
   * backups and dumps, health states), their RPO samples in one write, and a state write only
   * where a condition changed. A cluster the catalog does not hold has no assessment.
   */
  private async evaluateBatch(
    clusters: readonly string[],
    fence?: LeadershipFence,
  ): Promise<Map<string, ClusterAssessment | undefined>> {
    const out = new Map<string, ClusterAssessment | undefined>();
    let read;
    try {
      read = await Promise.all([
        this.store.getClusters(clusters),
        this.store.listAgents(clusters),
        // Only the newest: this runs for every heartbeat's cluster, and a cluster may have thousands of backups.
        this.store.latestBackups(clusters),
        this.store.listHealthStates(clusters),
        this.store.latestDumps(clusters),
        this.policiesByScope(),
      ]);
    } catch (err) {
      const e = asPgfleetError(err);
      this.opts.logger.warn({ clusters: clusters.length, code: e.code }, `health evaluation failed: ${e.message}`);
      return out;
    }
    const [records, agents, backups, states, dumps, policies] = read;
    const agentsOf = groupByCluster(agents);
    const statesOf = groupByCluster(states);
    const lastBackupOf = new Map(backups.map((b) => [b.cluster, b]));
    const lastDumpOf = new Map(dumps.map((d) => [d.cluster, d]));
    const now = this.opts.now();
    const assessed: Array<{
      assessment: ClusterAssessment;
      thresholds: HealthThresholds;
      states: HealthStateRecord[];
    }> = [];
    for (const record of records) {
      const cluster = record.name;
      const agent = pickAgent(agentsOf.get(cluster) ?? []);
      const last: BackupRecord | undefined = lastBackupOf.get(cluster);
      const lastDump = lastDumpOf.get(cluster);
      const thresholds = clusterThresholds(this.opts.thresholds, policies, cluster);
      const obs: ClusterObservation = {
        cluster,
        now,
        clusterCreatedAt: record.createdAt,
        ...(agent
          ? {
              agent: observedAgent(
                agent,
                this.streamed.get(agentRefKey({ cluster: agent.cluster, agentId: agent.id })) ?? '',
              ),
            }
          : {}),
        ...(last ? { lastBackup: { label: last.label, stopTime: last.stopTime } } : {}),
        ...(lastDump ? { lastDump: { label: lastDump.label, stopTime: lastDump.stopTime } } : {}),
      };
      const assessment = assessCluster(obs, thresholds);
      this.latest.set(cluster, assessment);
      assessed.push({ assessment, thresholds, states: statesOf.get(cluster) ?? [] });
    }
    try {
      await this.history.recordMany(
        assessed.flatMap(({ assessment: a }) =>
          a.rpoSeconds !== undefined ? [{ cluster: a.cluster, at: now, rpoSeconds: a.rpoSeconds }] : [],
        ),
      );
    } catch (err) {
      const e = asPgfleetError(err);
      this.opts.logger.warn({ clusters: clusters.length, code: e.code }, `RPO history not recorded: ${e.message}`);
    }
    let wrote = false;
    for (const { assessment, thresholds, states: prevStates } of assessed) {
      const cluster = assessment.cluster;
      try {
        for (const condition of HEALTH_CONDITIONS) {
          const prev = prevStates.find((s) => s.condition === condition);
          const next = nextHealthState(condition, prev, assessment, thresholds);
          if (!next) continue;
          const events: OutboxEventInput[] = next.payload ? [outboxEvent(cluster, next.payload, now)] : [];
          await this.store.putHealthState(next.state, events, fence);
          if (events.length) {
            wrote = true;
            this.opts.logger.warn(
              { cluster, condition, state: next.state.state, kind: events[0]!.kind },
              `cluster health: ${events[0]!.kind}`,
            );
          }
        }
        out.set(cluster, assessment);
      } catch (err) {
        const e = asPgfleetError(err);
        this.opts.logger.warn({ cluster, code: e.code }, `health evaluation failed: ${e.message}`);
        if (e.errorName === 'LeadershipLost') {
          this.fenceLost = true;
          break;
        }
      }
    }
    if (wrote) this.opts.onEvents?.();
    return out;
  }
}

/**
 * The agent whose figures stand for the cluster: the primary's (in an HA cluster its archiver and
 * current LSN are the cluster's; a standby's archiver counts only what it archives itself), then a
 * connected one over one that is away, then the newest heartbeat. One agent: that one.
 */
export function pickAgent(agents: readonly AgentRecord[]): AgentRecord | undefined {
  const rank = (a: AgentRecord) => (a.role === 'primary' ? 2 : 0) + (a.connected ? 1 : 0);
  return [...agents].sort((x, y) => rank(y) - rank(x) || (y.lastSeen ?? 0) - (x.lastSeen ?? 0))[0];
}
