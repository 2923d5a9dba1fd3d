/**
 * Restore drills on the controller's side beyond the job itself (jobs/drill.ts starts, hands
 * over and records drills): ListDrills, and the drill schedules of each cluster's policy: `drill`
 * (a physical backup) and `dumpDrill` (the newest logical dump).
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

/** The drills' rules, physical and dump drills alike: one drill of a cluster at a time, whichever kind. */
const DRILL_RULES = {
  busyKinds: ['drill', 'capture'],
  // An agent that went away gets the run when it is back; anything else (no backup or no dump
  // yet: NoBackup, DumpNotFound, logged with the reason) waits for the next fire time.
  retryLater: new Set(['AgentNotConnected', 'AgentDisconnected']),
} as const satisfies Pick<DueRunKind, 'busyKinds' | 'retryLater'>;

const DRILL_RUNS: DueRunKind = {
  type: 'drill',
  noun: 'drill',
  ...DRILL_RULES,
  start: (ctx, cluster, scheduledAt, fence, runs) => startDrillJob(ctx, { cluster, scheduledAt }, fence, runs),
};

/** A dump drill of the cluster's newest complete dump, every database of it (`--dump latest`). */
const DUMP_DRILL_RUNS: DueRunKind = {
  type: 'dump-drill',
  noun: 'dump drill',
  ...DRILL_RULES,
  start: (ctx, cluster, scheduledAt, fence, runs) =>
    startDrillJob(ctx, { cluster, scheduledAt, dump: { label: '', database: '', jobs: 0 } }, fence, runs),
};

/** The drill schedules of a policy by their schedule_runs type: `drill` (a backup) and `dump-drill` (the newest dump). */
const DRILL_SCHEDULES = { drill: DRILL_RUNS, 'dump-drill': DUMP_DRILL_RUNS };

/**
 * Starts the drills the clusters' drill schedules of `kind` make due at `now` (called by the
 * scheduler's tick, on the leader only). Like backups: at most one run per fire time (a run
 * missed while the agent was away runs once, not once per missed time), recorded in schedule_runs
 * under `kind` in the job's transaction. A cluster whose drill (or capture) is still running, of
 * either kind, is left for a later tick (schedule/due-runs.ts). A dump drill drills the newest
 * complete dump; a cluster without a dump is skipped for that fire time with the reason logged
 * (DumpNotFound), as one without a backup is for a backup drill (NoBackup).
 */
export function startDueDrills(
  ctx: ControllerContext,
  kind: keyof typeof DRILL_SCHEDULES,
  schedules: readonly DrillSchedule[],
  now: number,
  log: Logger,
  fence?: LeadershipFence,
): Promise<Array<{ cluster: string; jobId: string; scheduledAt: Date }>> {
  return startDueRuns(ctx, DRILL_SCHEDULES[kind], schedules, now, log, fence);
}
