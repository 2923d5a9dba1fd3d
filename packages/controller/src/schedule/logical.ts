/**
 * Scheduled logical dumps (policy `--logical CRON`, docs/logical.md): on the scheduler's tick, on
 * the leader only, a dump of every database starts for each cluster whose logical schedule is due,
 * by the rules of due-runs.ts (those of backups and drills: one run per fire time, spreading,
 * catch-up through loop.ts's baseline of new schedules), recorded in schedule_runs as 'logical'.
 * The job is created under the scheduler's leadership fence and only while the cluster has no
 * dump running (one catalog transaction), so a paused ex-leader or a second controller starts none.
 */
import type { Logger } from '@pgfleet/core';
import type { LeadershipFence } from '@pgfleet/catalog';
import type { ControllerContext } from '../context.js';
import { startDumpJob } from '../jobs/dump.js';
import { startDueRuns, type CronSchedule, type DueRunKind } from './due-runs.js';

export type DumpSchedule = CronSchedule;

const LOGICAL_RUNS: DueRunKind = {
  type: 'logical',
  noun: 'dump',
  busyKinds: ['dump'],
  // An absent agent or a dump still running: the run stays due.
  retryLater: new Set(['AgentNotConnected', 'AgentDisconnected', 'BackupInProgress']),
  start: (ctx, cluster, scheduledAt, fence, runs) =>
    startDumpJob(ctx, cluster, undefined, { scheduledAt, ...(fence ? { fence } : {}), runs }),
};

export function startDueDumps(
  ctx: ControllerContext,
  schedules: readonly DumpSchedule[],
  now: number,
  log: Logger,
  fence?: LeadershipFence,
): Promise<Array<{ cluster: string; jobId: string; scheduledAt: Date }>> {
  return startDueRuns(ctx, LOGICAL_RUNS, schedules, now, log, fence);
}
