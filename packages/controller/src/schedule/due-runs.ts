/**
 * Starting the jobs of a per-cluster cron other than the backup types' (restore drills,
 * drills.ts; logical dumps, logical.ts), on the scheduler's tick on the leader only. The rules are
 * the backups' (schedule.ts dueRuns): at most one run per fire time (a run missed while the agent
 * was away runs once, not once per missed time), recorded in schedule_runs under its kind in the
 * same catalog transaction as its job (a leader killed in between leaves both or neither, so its
 * successor never fires that time again); a cluster with such a job still running is left for a
 * later tick; a start that fails for a reason in `retryLater` stays due (no job, nothing recorded,
 * or a job that failed after creation with its fire time recorded), any other failure waits for
 * the next fire time.
 */
import { asPgfleetError, timeSlicer, type Logger } from '@pgfleet/core';
import type { JobKind, LeadershipFence, ScheduleKind, ScheduleRunRecord } from '@pgfleet/catalog';
import type { ControllerContext } from '../context.js';
import { dueRuns } from './schedule.js';

export interface CronSchedule {
  cluster: string;
  cron: string;
  spreadMinutes: number;
}

export interface DueRunKind {
  /** The schedule_runs type the runs are recorded under. */
  type: Exclude<ScheduleKind, 'full' | 'diff' | 'incr'>;
  /** What the log calls it ('drill', 'dump'). */
  noun: string;
  /** Job kinds that make a cluster busy (its previous run still going). */
  busyKinds: readonly JobKind[];
  /** Error names after which the run stays due. */
  retryLater: ReadonlySet<string>;
  /** Creates the job with `runs` recorded in its transaction (createJobIfIdle). */
  start(
    ctx: ControllerContext,
    cluster: string,
    scheduledAt: string,
    fence: LeadershipFence | undefined,
    runs: readonly ScheduleRunRecord[],
  ): Promise<{ id?: string }>;
}

export async function startDueRuns(
  ctx: ControllerContext,
  kind: DueRunKind,
  schedules: readonly CronSchedule[],
  now: number,
  log: Logger,
  fence?: LeadershipFence,
): Promise<Array<{ cluster: string; jobId: string; scheduledAt: Date }>> {
  if (schedules.length === 0) return [];
  const busy = new Set(
    (await ctx.store.listActiveJobs()).filter((j) => kind.busyKinds.includes(j.kind)).map((j) => j.cluster),
  );
  const lastRuns = new Map(
    (await ctx.store.listScheduleRuns()).filter((r) => r.type === kind.type).map((r) => [r.cluster, r.lastRun]),
  );
  const started: Array<{ cluster: string; jobId: string; scheduledAt: Date }> = [];
  const slice = timeSlicer();
  for (const s of schedules) {
    await slice();
    if (busy.has(s.cluster)) continue;
    const last = lastRuns.get(s.cluster);
    let run;
    try {
      [run] = dueRuns(
        { cluster: s.cluster, type: kind.type, cron: s.cron, spreadMinutes: s.spreadMinutes },
        last === undefined ? undefined : new Date(last),
        new Date(now),
      );
    } catch (err) {
      log.debug(
        { cluster: s.cluster, code: asPgfleetError(err).code },
        `${kind.noun} schedule not evaluated: ${asPgfleetError(err).message}`,
      );
      continue;
    }
    if (!run) continue;
    const runs = [{ cluster: s.cluster, type: kind.type, lastRun: run.scheduledAt.getTime() }];
    try {
      const job = await kind.start(ctx, s.cluster, run.scheduledAt.toISOString(), fence, runs);
      started.push({ cluster: s.cluster, jobId: job.id ?? '', scheduledAt: run.scheduledAt });
      log.info(
        { cluster: s.cluster, scheduledAt: run.scheduledAt.toISOString(), jobId: job.id },
        `scheduled ${kind.noun} started`,
      );
    } catch (err) {
      const e = asPgfleetError(err);
      // Another controller leads now: it fires this run; the round stops here (loop.ts).
      if (e.errorName === 'LeadershipLost') throw e;
      log.warn({ cluster: s.cluster, code: e.code }, `scheduled ${kind.noun} not started: ${e.message}`);
      if (!kind.retryLater.has(e.errorName)) await ctx.store.recordScheduleRuns(runs, fence);
    }
  }
  return started;
}
