/**
 * Scheduled logical dumps (policy `--logical CRON`, docs/logical.md): on the scheduler's tick, on
 * the leader only, a dump of every database starts for each cluster whose logical schedule is due.
 * The rules are the backups' and drills' (schedule.ts dueRuns): at most one run per fire time, a
 * run missed while the agent was away runs once when it is back, spreading by the policy's
 * spread window, the first run at the next cron time unless catch-up is on (loop.ts baselines
 * new schedules). The run is recorded in schedule_runs as 'logical' once the job is out; the job
 * is created under the scheduler's leadership fence and only while the cluster has no dump
 * running (one catalog transaction), so a paused ex-leader or a second controller starts none.
 */
import { asPgfleetError, type Logger } from '@pgfleet/core';
import type { LeadershipFence } from '@pgfleet/catalog';
import type { ControllerContext } from '../context.js';
import { startDumpJob } from '../jobs/dump.js';
import { dueRuns } from './schedule.js';

export interface DumpSchedule {
  cluster: string;
  cron: string;
  spreadMinutes: number;
}

/** Errors after which the run stays due (the agent comes back, the running dump ends). */
const RETRY_LATER = new Set(['AgentNotConnected', 'AgentDisconnected', 'BackupInProgress']);

export async function startDueDumps(
  ctx: ControllerContext,
  schedules: readonly DumpSchedule[],
  now: number,
  log: Logger,
  fence?: LeadershipFence,
): Promise<Array<{ cluster: string; jobId: string; scheduledAt: Date }>> {
  if (schedules.length === 0) return [];
  const busy = new Set((await ctx.store.listActiveJobs()).filter((j) => j.kind === 'dump').map((j) => j.cluster));
  const lastRuns = new Map(
    (await ctx.store.listScheduleRuns()).filter((r) => r.type === 'logical').map((r) => [r.cluster, r.lastRun]),
  );
  const started: Array<{ cluster: string; jobId: string; scheduledAt: Date }> = [];
  for (const s of schedules) {
    if (busy.has(s.cluster)) continue;
    const last = lastRuns.get(s.cluster);
    let run;
    try {
      [run] = dueRuns(
        { cluster: s.cluster, type: 'logical', cron: s.cron, spreadMinutes: s.spreadMinutes },
        last === undefined ? undefined : new Date(last),
        new Date(now),
      );
    } catch (err) {
      log.debug({ cluster: s.cluster, code: asPgfleetError(err).code }, 'logical schedule not evaluated');
      continue;
    }
    if (!run) continue;
    const record = () =>
      ctx.store.recordScheduleRuns(
        [{ cluster: s.cluster, type: 'logical', lastRun: run.scheduledAt.getTime() }],
        fence,
      );
    try {
      const job = await startDumpJob(ctx, s.cluster, undefined, { scheduledAt: run.scheduledAt.toISOString(), fence });
      await record();
      started.push({ cluster: s.cluster, jobId: job.id ?? '', scheduledAt: run.scheduledAt });
      log.info(
        { cluster: s.cluster, scheduledAt: run.scheduledAt.toISOString(), jobId: job.id },
        'scheduled dump started',
      );
    } catch (err) {
      const e = asPgfleetError(err);
      if (e.errorName === 'LeadershipLost') throw e;
      log.warn({ cluster: s.cluster, code: e.code }, `scheduled dump not started: ${e.message}`);
      // Anything but an absent agent or a running dump waits for the next fire time.
      if (!RETRY_LATER.has(e.errorName)) await record();
    }
  }
  return started;
}
