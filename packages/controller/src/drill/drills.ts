/**
 * Restore drills on the controller's side beyond the job itself (jobs/drill.ts starts, hands
 * over and records drills): ListDrills, and the drill schedule of each cluster's policy.
 */
import type { MessageInitShape } from '@bufbuild/protobuf';
import type { Logger } from '@pgfleet/core';
import type { ListDrillsRequest, ListDrillsResponseSchema } from '@pgfleet/proto';
import type { LeadershipFence } from '@pgfleet/catalog';
import type { ControllerContext } from '../context.js';
import { jobInfoFromRecord } from '../wire.js';
import { requireCluster } from '../jobs/dispatch.js';
import { startDrillJob } from '../jobs/drill.js';
import { jobOfKind } from '../jobs/params.js';
import { startDueRuns, type CronSchedule, type DueRunKind } from '../schedule/due-runs.js';

/** ListDrills: drill jobs, newest first, with their DrillResult (failed ones too). */
export async function listDrills(
  ctx: ControllerContext,
  req: ListDrillsRequest,
): Promise<MessageInitShape<typeof ListDrillsResponseSchema>> {
  if (req.cluster) await requireCluster(ctx, req.cluster);
  const jobs = await ctx.store.listJobs({
    ...(req.cluster ? { cluster: req.cluster } : {}),
    kind: 'drill',
    limit: req.limit || 50,
  });
  return {
    drills: jobs.map((j) => {
      const info = jobInfoFromRecord(j);
      return {
        jobId: j.id,
        cluster: j.cluster,
        agentId: j.agentId,
        state: info.state,
        startedAt: info.startedAt,
        finishedAt: info.finishedAt,
        scheduled: jobOfKind('drill', j).params.scheduledAt !== undefined,
        result: info.drill,
        error: info.error,
      };
    }),
  };
}

export type DrillSchedule = CronSchedule;

const DRILL_RUNS: DueRunKind = {
  type: 'drill',
  noun: 'drill',
  busyKinds: ['drill', 'capture'],
  // An agent that went away gets the run when it is back; anything else (no backup yet) waits for the next fire time.
  retryLater: new Set(['AgentNotConnected', 'AgentDisconnected']),
  start: (ctx, cluster, scheduledAt, fence, runs) => startDrillJob(ctx, { cluster, scheduledAt }, fence, runs),
};

/**
 * Starts the drills the clusters' drill schedules make due at `now` (called by the scheduler's
 * tick, on the leader only). Like backups: at most one run per fire time (a run missed while the
 * agent was away runs once, not once per missed time), recorded in schedule_runs as 'drill' once
 * the job is out. A cluster whose drill (or capture) is still running is left for a later tick
 * (schedule/due-runs.ts).
 */
export function startDueDrills(
  ctx: ControllerContext,
  schedules: readonly DrillSchedule[],
  now: number,
  log: Logger,
  fence?: LeadershipFence,
): Promise<Array<{ cluster: string; jobId: string; scheduledAt: Date }>> {
  return startDueRuns(ctx, DRILL_RUNS, schedules, now, log, fence);
}
