/**
 * Restore drills on the controller's side beyond the job itself (jobs/drill.ts starts, hands
 * over and records drills): ListDrills, and the drill schedule of each cluster's policy.
 */
import type { MessageInitShape } from '@bufbuild/protobuf';
import { asPgfleetError, type Logger } from '@pgfleet/core';
import type { ListDrillsRequest, ListDrillsResponseSchema } from '@pgfleet/proto';
import type { LeadershipFence } from '@pgfleet/catalog';
import type { ControllerContext } from '../context.js';
import { jobInfoFromRecord } from '../wire.js';
import { requireCluster } from '../jobs/dispatch.js';
import { startDrillJob } from '../jobs/drill.js';
import { jobOfKind } from '../jobs/params.js';
import { dueRuns } from '../schedule/schedule.js';

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

export interface DrillSchedule {
  cluster: string;
  cron: string;
  spreadMinutes: number;
}

/**
 * Starts the drills the clusters' drill schedules make due at `now` (called by the scheduler's
 * tick, on the leader only). Like backups: at most one run per fire time (a run missed while the
 * agent was away runs once, not once per missed time), recorded in schedule_runs as 'drill' once
 * the job is out. A cluster whose drill (or capture) is still running is left for a later tick.
 */
export async function startDueDrills(
  ctx: ControllerContext,
  schedules: readonly DrillSchedule[],
  now: number,
  log: Logger,
  fence?: LeadershipFence,
): Promise<Array<{ cluster: string; jobId: string; scheduledAt: Date }>> {
  if (schedules.length === 0) return [];
  const busy = new Set(
    (await ctx.store.listActiveJobs()).filter((j) => j.kind === 'drill' || j.kind === 'capture').map((j) => j.cluster),
  );
  const lastRuns = new Map(
    (await ctx.store.listScheduleRuns()).filter((r) => r.type === 'drill').map((r) => [r.cluster, r.lastRun]),
  );
  const started: Array<{ cluster: string; jobId: string; scheduledAt: Date }> = [];
  for (const s of schedules) {
    if (busy.has(s.cluster)) continue;
    const last = lastRuns.get(s.cluster);
    let run;
    try {
      [run] = dueRuns(
        { cluster: s.cluster, type: 'drill', cron: s.cron, spreadMinutes: s.spreadMinutes },
        last === undefined ? undefined : new Date(last),
        new Date(now),
      );
    } catch (err) {
      log.debug(
        { cluster: s.cluster, code: asPgfleetError(err).code },
        `drill schedule not evaluated: ${asPgfleetError(err).message}`,
      );
      continue;
    }
    if (!run) continue;
    try {
      // Created with the record of its fire time in one transaction (a leader killed in between
      // leaves both or neither).
      const job = await startDrillJob(ctx, { cluster: s.cluster, scheduledAt: run.scheduledAt.toISOString() }, fence, [
        { cluster: s.cluster, type: 'drill', lastRun: run.scheduledAt.getTime() },
      ]);
      started.push({ cluster: s.cluster, jobId: job.id ?? '', scheduledAt: run.scheduledAt });
      log.info(
        { cluster: s.cluster, scheduledAt: run.scheduledAt.toISOString(), jobId: job.id },
        'scheduled drill started',
      );
    } catch (err) {
      const e = asPgfleetError(err);
      // Another controller leads now: it fires this drill; the round stops here (loop.ts).
      if (e.errorName === 'LeadershipLost') throw e;
      log.warn({ cluster: s.cluster, code: e.code }, `scheduled drill not started: ${e.message}`);
      // An agent not connected gets the run when it is back (no job was created, nothing recorded);
      // a job created and then failed (AgentDisconnected: its agent went away before it was sent)
      // recorded its fire time with it; anything else (no backup yet) waits for the next fire time.
      if (e.errorName !== 'AgentNotConnected' && e.errorName !== 'AgentDisconnected') {
        await ctx.store.recordScheduleRuns(
          [{ cluster: s.cluster, type: 'drill', lastRun: run.scheduledAt.getTime() }],
          fence,
        );
      }
    }
  }
  return started;
}
