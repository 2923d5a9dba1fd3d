/**
 * The controller's scheduler loop: every tick, on the controller that holds the 'scheduler'
 * leadership, it starts the backups the clusters' schedules make due and the expire jobs their
 * retention makes due. The decisions are schedule.ts and retention/plan.ts (pure); this module feeds
 * them from the catalog and acts on the answer.
 *
 * - Only clusters with a connected agent are scheduled: a job needs an open stream. A schedule
 *   missed while the agent was away stays due (lastRun did not move) and runs once when it is
 *   back, like catch-up after controller downtime.
 * - lastRun is persisted (schedule_runs) in the transaction that creates the job, for the backup's
 *   own type and the lesser types it covers; a restarted or newly elected controller reads it
 *   back, so a run is neither repeated nor lost, even when the leader dies between creating the
 *   job and sending it. A start refused before the job exists (no agent connected, the cluster
 *   busy) records nothing: it stays due. A job created whose agent went away before it was sent
 *   fails (AgentDisconnected) and its fire time counts as run: the next fire time retries.
 * - The concurrency gate sees every active backup and expire job of the catalog (whichever
 *   controller started it), so limits hold across controllers and restarts.
 * - A schedule that never ran (no schedule_runs row) is not due at once: its first tick records
 *   "now" as its last run, so the first run is the next cron time, unless the policy's catchUp is
 *   on (then its latest fire time runs at once, the old behaviour). Drill schedules alike.
 * - Retention runs on its own only for clusters whose policy turns autoExpire on: after each
 *   successful backup and otherwise at most once an hour per cluster. A plan that deletes backups
 *   is first announced (retention.planned, through the outbox) and waits the policy's grace; at
 *   the end of the grace the plan is made again (a backup pinned meanwhile has left it), holding
 *   back as if pinned any backup that was not announced (it is announced at the next look), and
 *   its expire job starts. A plan that only moves the PITR anchor (WAL, no backup) needs no
 *   grace. Announced plans live in memory: a restarted or newly elected controller announces
 *   again (a longer wait, never a shorter one). Never while the cluster has a backup or expire job
 *   running.
 * - Restore drills run from each cluster's drill cron (drills.ts startDueDrills): once per fire
 *   time, recorded as schedule run 'drill', never while the cluster's previous drill runs.
 *   Logical dumps alike from the logical cron (logical.ts startDueDumps, schedule run 'logical'),
 *   and dump drills of the newest dump from the dump drill cron (drills.ts startDueDrills,
 *   schedule run 'dump-drill'; one drill of a cluster at a time, physical or dump).
 * - Queued jobs whose controller died before recording their send, and that their agent never
 *   claimed, are failed first (schedule/lost-dispatches.ts): they would hold their cluster's gate.
 * - `tick(now)` is public so tests drive the loop with their own clock instead of timers.
 */
import { remoteSessions } from '../agents/peers.js';
import { tryLead } from '../leadership.js';
import { asPgfleetError, timeSlicer, type Logger } from '@pgfleet/core';
import {
  FLEET_POLICY_SCOPE,
  type BackupKind,
  type JobRecord,
  type LeadershipFence,
  type ScheduleRunRecord,
} from '@pgfleet/catalog';
import { timestampFromMs } from '@bufbuild/protobuf/wkt';
import { outboxEvent } from '../jobs/events.js';
import type { ControllerContext } from '../context.js';
import { startBackupJob } from '../jobs/backup.js';
import { failLostDispatches } from './lost-dispatches.js';
import { startExpireJob } from '../jobs/expire.js';
import { startDueDrills, type DrillSchedule } from '../drill/drills.js';
import { startDueDumps, type DumpSchedule } from './logical.js';
import { effectivePolicy, settingsOf } from './policy.js';
import { planClusterRetention, plannedLabels, planRemovesSomething, type ClusterRetention } from '../retention/jobs.js';
import { Scheduler, type BackupSlot, type ClusterSchedules, type ConcurrencyLimits } from './schedule.js';

export const SCHEDULER_LEADERSHIP = 'scheduler';
const RETENTION_INTERVAL_MS = 3_600_000;
const SCHEDULE_TYPES = ['full', 'diff', 'incr'] as const satisfies readonly BackupKind[];

export interface SchedulerLoopOptions {
  intervalSeconds: number;
  limits: ConcurrencyLimits;
}

export interface TickReport {
  /** False when another controller leads: nothing was looked at. */
  leader: boolean;
  started: Array<{ cluster: string; type: BackupKind; scheduledAt: Date; jobId: string }>;
  waiting: Array<{ cluster: string; type: BackupKind; reason: string }>;
  failed: Array<{ cluster: string; type: BackupKind; error: string }>;
  expireJobs: Array<{ cluster: string; jobId: string; labels: string[] }>;
  /** Expiries announced this round (retention.planned): they start after the grace, if still planned. */
  plannedExpiries?: Array<{ cluster: string; labels: string[]; expireAfter: number }>;
  /** Restore drills the clusters' drill schedules started (drills.ts). */
  drills?: Array<{ cluster: string; jobId: string; scheduledAt: Date }>;
  /** Logical dumps the clusters' logical schedules started (logical.ts). */
  dumps?: Array<{ cluster: string; jobId: string; scheduledAt: Date }>;
  /** Queued jobs of dead controllers this round failed (schedule/lost-dispatches.ts). */
  lostDispatches?: string[];
  /** Dump drills the clusters' dump drill schedules started (drills.ts). */
  dumpDrills?: Array<{ cluster: string; jobId: string; scheduledAt: Date }>;
}

export class SchedulerLoop {
  readonly scheduler: Scheduler;
  private readonly log: Logger;
  private timer: NodeJS.Timeout | undefined;
  private running: Promise<unknown> | undefined;
  /** Per cluster: when retention was last looked at, and the WAL anchor the last expire job kept from. */
  private readonly retentionCheckedAt = new Map<string, number>();
  private readonly expiredFrom = new Map<string, string>();
  /** Per cluster: the backups announced by retention.planned and when their grace ends. */
  private readonly planned = new Map<string, { labels: Set<string>; expireAfter: number }>();
  /** Bad cron expressions already logged (cluster/type/cron), so a tick every second does not flood the log. */
  private readonly reported = new Set<string>();

  constructor(
    private readonly ctx: ControllerContext,
    private readonly options: SchedulerLoopOptions,
  ) {
    this.scheduler = new Scheduler({ spreadMinutes: 0, limits: options.limits });
    this.log = ctx.logger.child({ component: 'scheduler' });
  }

  /** Ticks every intervalSeconds until stop(); a tick never overlaps the previous one. */
  start(): void {
    if (this.timer) return;
    this.timer = setInterval(() => {
      if (this.running) return;
      this.running = this.tick()
        .catch((err: unknown) => {
          const e = asPgfleetError(err);
          this.log.error({ code: e.code, err: e.message }, 'scheduler tick failed');
        })
        .finally(() => (this.running = undefined));
    }, this.options.intervalSeconds * 1000);
    this.timer.unref();
  }

  async stop(): Promise<void> {
    if (this.timer) clearInterval(this.timer);
    this.timer = undefined;
    await this.running;
  }

  /** Runs one round at `now` (ms): start due backups, then due expire jobs. */
  async tick(now: number = this.ctx.now()): Promise<TickReport> {
    const report: TickReport = { leader: false, started: [], waiting: [], failed: [], expireJobs: [] };
    const { store } = this.ctx;
    if (!(await tryLead(store, SCHEDULER_LEADERSHIP, this.log))) return report;
    report.leader = true;
    // Carried by this round's writes: if another controller took the leadership meanwhile (this
    // one paused), they are refused (LeadershipLost) and nothing fires twice.
    const fence = store.leadershipFence(SCHEDULER_LEADERSHIP);
    // Timed so an operator (and bench/fleet-scale.mjs) sees what a round costs at fleet size; a
    // round longer than the interval delays every schedule, so that one is a warning.
    const started = performance.now();
    const seen = { clusters: 0 };
    try {
      await this.failLostDispatches(now, fence, report);
      return await this.leaderRound(now, fence, report, seen);
    } finally {
      const durationMs = Math.round(performance.now() - started);
      const fields = { clusters: seen.clusters, started: report.started.length, durationMs };
      if (durationMs > this.options.intervalSeconds * 1000)
        this.log.warn(fields, 'scheduler round took longer than its interval');
      else this.log.debug(fields, 'scheduler round');
    }
  }

  /**
   * Jobs a dead controller created and never recorded as sent hold their cluster's gate: failed
   * here (schedule/lost-dispatches.ts), before the schedule is looked at, so the fire time due now
   * is not refused for them. Whatever goes wrong, the round goes on.
   */
  private async failLostDispatches(now: number, fence: LeadershipFence | undefined, report: TickReport): Promise<void> {
    try {
      const failed = await failLostDispatches(this.ctx, now, fence);
      if (failed.length > 0) report.lostDispatches = failed.map((j) => j.id);
    } catch (err) {
      const e = asPgfleetError(err);
      this.log.warn({ code: e.code, err: e.message }, 'queued jobs of dead controllers not looked at this round');
    }
  }

  private async leaderRound(
    now: number,
    fence: LeadershipFence | undefined,
    report: TickReport,
    seen: { clusters: number },
  ): Promise<TickReport> {
    const { store } = this.ctx;
    // The clusters with a connected agent, on this controller or on another sharing the catalog.
    const held = [...this.ctx.sessions.all(), ...(await remoteSessions(this.ctx))].sort(
      (a, b) => a.connectedAt - b.connectedAt,
    );
    // The host a schedule is spread by: the longest connected agent of the cluster (the backup
    // itself goes where backup_from says). A map: a search per cluster is 50 M comparisons at 10,000.
    const firstHeld = new Map<string, (typeof held)[number]>();
    for (const s of held) if (!firstHeld.has(s.cluster)) firstHeld.set(s.cluster, s);
    const clusters = [...firstHeld.keys()].sort();
    seen.clusters = clusters.length;
    // Between clusters, agent streams and admin calls get their turn (a SQLite catalog never makes
    // this round wait for I/O by itself); the fence still guards every write the round makes.
    const slice = timeSlicer();
    if (clusters.length === 0) return report;
    const policies = new Map((await store.listPolicies()).map((p) => [p.scope, settingsOf(p)]));
    const fleet = policies.get(FLEET_POLICY_SCOPE);
    const active = await store.listActiveJobs();
    const running = this.runningSlots(active);

    const schedules: ClusterSchedules[] = [];
    const drillSchedules: DrillSchedule[] = [];
    const dumpSchedules: DumpSchedule[] = [];
    const dumpDrillSchedules: DrillSchedule[] = [];
    const retentionClusters: Array<{ cluster: string; graceSeconds: number }> = [];
    const catchUp = new Map<string, boolean>();
    for (const cluster of clusters) {
      await slice();
      const session = firstHeld.get(cluster)!;
      const eff = effectivePolicy(fleet, policies.get(cluster));
      if (eff.autoExpire) retentionClusters.push({ cluster, graceSeconds: eff.expireGraceSeconds });
      catchUp.set(cluster, eff.catchUp);
      if (eff.drill) drillSchedules.push({ cluster, cron: eff.drill, spreadMinutes: eff.spreadMinutes });
      if (eff.logical) dumpSchedules.push({ cluster, cron: eff.logical, spreadMinutes: eff.spreadMinutes });
      if (eff.dumpDrill) dumpDrillSchedules.push({ cluster, cron: eff.dumpDrill, spreadMinutes: eff.spreadMinutes });
      if (Object.keys(eff.schedules).length === 0) continue;
      schedules.push({
        cluster,
        repository: this.ctx.repositoryKey,
        host: session.hostname,
        ...eff.schedules,
        spreadMinutes: eff.spreadMinutes,
      });
    }

    const cronRuns = { drill: drillSchedules, logical: dumpSchedules, 'dump-drill': dumpDrillSchedules };
    const lastRuns = new Map(
      schedules.length || drillSchedules.length || dumpSchedules.length || dumpDrillSchedules.length
        ? (await store.listScheduleRuns()).map((r) => [`${r.cluster}\u0000${r.type}`, r.lastRun])
        : [],
    );
    await this.baselineNewSchedules(now, schedules, cronRuns, catchUp, lastRuns, fence);
    if (schedules.length) {
      const result = this.scheduler.tick(new Date(now), {
        schedules,
        lastRun: (cluster, type) => {
          const t = lastRuns.get(`${cluster}\u0000${type}`);
          return t === undefined ? undefined : new Date(t);
        },
        running,
      });
      for (const e of result.errors) {
        const key = `${e.cluster}/${e.type}/${schedules.find((s) => s.cluster === e.cluster)?.[e.type] ?? ''}`;
        if (!this.reported.has(key))
          this.log.warn(
            { cluster: e.cluster, type: e.type, code: e.error.code },
            `schedule not evaluated: ${e.error.message}`,
          );
        this.reported.add(key);
      }
      for (const w of result.waiting) {
        report.waiting.push({ cluster: w.backup.cluster, type: w.backup.type, reason: w.reason });
        this.log.debug({ cluster: w.backup.cluster, type: w.backup.type, reason: w.reason }, 'due backup waits');
      }
      for (const p of result.start) {
        await slice();
        let jobId: string;
        try {
          // The job and the record of its run (and the lesser due types it covers) in one
          // transaction: a leader killed in between leaves both or neither, so its successor
          // neither fires this fire time again nor loses it.
          const job = await startBackupJob(
            this.ctx,
            p.cluster,
            p.type,
            { scheduledAt: p.scheduledAt.toISOString() },
            undefined,
            fence,
            p.record.map((r) => ({ cluster: p.cluster, type: r.type, lastRun: r.scheduledAt.getTime() })),
          );
          jobId = job.id ?? '';
        } catch (err) {
          const e = asPgfleetError(err);
          if (e.errorName === 'LeadershipLost') {
            this.log.warn({ code: e.code }, `scheduler round stopped: ${e.message}`);
            return report;
          }
          report.failed.push({ cluster: p.cluster, type: p.type, error: e.message });
          this.log.warn(
            { cluster: p.cluster, type: p.type, code: e.code },
            `scheduled backup not started: ${e.message}`,
          );
          continue;
        }
        report.started.push({ cluster: p.cluster, type: p.type, scheduledAt: p.scheduledAt, jobId });
        this.log.info(
          {
            cluster: p.cluster,
            type: p.type,
            scheduledAt: p.scheduledAt.toISOString(),
            dueSince: p.dueSince?.toISOString(),
            jobId,
          },
          'scheduled backup started',
        );
      }
    }

    try {
      report.drills = await startDueDrills(this.ctx, 'drill', drillSchedules, now, this.log, fence);
      report.dumps = await startDueDumps(this.ctx, dumpSchedules, now, this.log, fence);
      // After the physical drills: a cluster whose drill just started is busy, its dump drill waits.
      report.dumpDrills = await startDueDrills(this.ctx, 'dump-drill', dumpDrillSchedules, now, this.log, fence);
      await this.retention(now, retentionClusters, report, fence);
    } catch (err) {
      const e = asPgfleetError(err);
      if (e.errorName !== 'LeadershipLost') throw err;
      this.log.warn({ code: e.code }, `scheduler round stopped: ${e.message}`);
    }
    return report;
  }

  /**
   * A schedule that never ran gets "now" as its last run (persisted, so every controller agrees):
   * its first run is the next cron time. Skipped for clusters whose policy asks for catch-up.
   */
  private async baselineNewSchedules(
    now: number,
    schedules: readonly ClusterSchedules[],
    /** The cron schedules of due-runs.ts by their schedule_runs type. */
    cronRuns: Readonly<Record<'drill' | 'logical' | 'dump-drill', readonly DrillSchedule[]>>,
    catchUp: ReadonlyMap<string, boolean>,
    lastRuns: Map<string, number>,
    fence: LeadershipFence | undefined,
  ): Promise<void> {
    const baseline: ScheduleRunRecord[] = [];
    const add = (cluster: string, type: ScheduleRunRecord['type']): void => {
      const key = `${cluster}\u0000${type}`;
      if (catchUp.get(cluster) === true || lastRuns.has(key)) return;
      lastRuns.set(key, now);
      baseline.push({ cluster, type, lastRun: now });
    };
    for (const s of schedules) for (const type of SCHEDULE_TYPES) if (s[type] !== undefined) add(s.cluster, type);
    for (const [type, crons] of Object.entries(cronRuns) as Array<[keyof typeof cronRuns, readonly DrillSchedule[]]>)
      for (const c of crons) add(c.cluster, type);
    if (baseline.length === 0) return;
    await this.ctx.store.recordScheduleRuns(baseline, fence);
    this.log.info(
      { schedules: baseline.map((b) => `${b.cluster}/${b.type}`) },
      'new schedules: first run at the next cron time (policy --catch-up on runs a due one at once)',
    );
  }

  private runningSlots(active: readonly JobRecord[]): BackupSlot[] {
    const slots: BackupSlot[] = [];
    for (const job of active) {
      if (job.kind !== 'backup' && job.kind !== 'expire') continue;
      const host = this.ctx.sessions.get(job.cluster, job.agentId)?.hostname ?? `agent:${job.agentId}`;
      slots.push({ cluster: job.cluster, repository: this.ctx.repositoryKey, host });
    }
    return slots;
  }

  private async retention(
    now: number,
    clusters: ReadonlyArray<{ cluster: string; graceSeconds: number }>,
    report: TickReport,
    fence: LeadershipFence | undefined,
  ): Promise<void> {
    // An announced plan of a cluster whose auto-expire was turned off is dropped: nothing starts.
    const expiring = new Set(clusters.map((c) => c.cluster));
    for (const cluster of this.planned.keys()) if (!expiring.has(cluster)) this.planned.delete(cluster);
    if (clusters.length === 0) return;
    // Jobs started just now by this tick count as busy too. Only a filter: a busy cluster is looked
    // at again once its job ends (retentionDue stays); startExpireJob's createJobIfIdle decides.
    const busy = new Set(
      (await this.ctx.store.listActiveJobs())
        .filter((j) => j.kind === 'backup' || j.kind === 'expire')
        .map((j) => j.cluster),
    );
    const slice = timeSlicer();
    for (const { cluster, graceSeconds } of clusters) {
      await slice();
      const asked = this.ctx.retentionDue.has(cluster);
      const last = this.retentionCheckedAt.get(cluster);
      const pending = this.planned.get(cluster);
      const graceOver = pending !== undefined && now >= pending.expireAfter;
      if (pending && !graceOver) continue; // announced: nothing moves before the grace ends
      if (!asked && !graceOver && last !== undefined && now - last < RETENTION_INTERVAL_MS) continue;
      if (busy.has(cluster)) continue; // looked at again once the running job is done
      this.ctx.retentionDue.delete(cluster);
      this.retentionCheckedAt.set(cluster, now);
      this.planned.delete(cluster);
      try {
        // Made now, at the end of any grace: a backup pinned meanwhile is kept by it, and so is
        // one that became expirable during the grace (it was not announced: it is next time).
        const r = await planClusterRetention(
          this.ctx,
          cluster,
          pending ? (label) => !pending.labels.has(label) : undefined,
        );
        const anchorFrom = r.plan.anchor?.walStart ?? '';
        if (!planRemovesSomething(r.plan, r.dumpPlan)) continue;
        // Backups and dumps alike are announced (retention.planned) and wait the grace.
        const labels = plannedLabels(r);
        if (labels.length === 0 && this.expiredFrom.get(cluster) === anchorFrom) continue;
        if (labels.length > 0 && !pending) {
          await this.announce(cluster, r, now, graceSeconds, report);
          continue;
        }
        const job = await startExpireJob(this.ctx, r, asked ? 'after backup' : 'periodic', fence);
        this.expiredFrom.set(cluster, anchorFrom);
        report.expireJobs.push({ cluster, jobId: job.id ?? '', labels });
        this.log.info(
          { cluster, jobId: job.id, expire: r.plan.expire, walKeepFrom: anchorFrom },
          'retention expire job started',
        );
      } catch (err) {
        const e = asPgfleetError(err);
        if (e.errorName === 'LeadershipLost') throw e;
        this.log.warn({ cluster, code: e.code }, `retention not applied: ${e.message}`);
      }
    }
  }

  /** retention.planned through the outbox (backups and dumps apart); the expire job waits until expireAfter. */
  private async announce(
    cluster: string,
    r: Pick<ClusterRetention, 'plan' | 'dumpPlan'>,
    now: number,
    graceSeconds: number,
    report: TickReport,
  ): Promise<void> {
    const expireAfter = now + graceSeconds * 1000;
    const labels = plannedLabels(r);
    await this.ctx.store.appendEvents([
      outboxEvent(
        cluster,
        {
          case: 'retentionPlanned',
          value: {
            backupLabels: r.plan.expire.map((e) => e.label),
            dumpLabels: [...r.dumpPlan.expire],
            expireAfter: timestampFromMs(expireAfter),
            graceSeconds,
          },
        },
        now,
      ),
    ]);
    this.planned.set(cluster, { labels: new Set(labels), expireAfter });
    (report.plannedExpiries ??= []).push({ cluster, labels, expireAfter });
    this.log.info(
      { cluster, labels, expireAfter: new Date(expireAfter).toISOString() },
      'retention planned: these backups and dumps expire after the grace (a backup pinned meanwhile stays)',
    );
  }
}
