/**
 * Jobs whose send died with their controller. A job is a catalog row (queued, naming its
 * dispatcher) before it is sent; a controller killed between that insert and recording the send
 * leaves a job queued for good, and a queued backup or expire holds its cluster's one-at-a-time
 * gate (createJobIfIdle), so every later backup of the cluster was refused until an operator
 * cancelled it.
 *
 * The scheduler leader fails such a job (DispatcherLost, with its kind's failure event) once its
 * dispatcher has not beaten for the lease plus the reclaim grace, unless the agent claimed it
 * first: the dead controller may have sent it after all (on its own stream, or left in the
 * catalog for the controller holding the agent's stream), and an agent that has it says so by
 * reporting progress or a result on it, or by naming it in the Hello of its reconnect (each moves
 * the job out of queued). The lease and grace give it that time: the reclaim grace is already
 * how long a running job waits for its agent to come back.
 *
 * Why fail and not send it again: the Job message is built at dispatch from what the dead
 * controller saw (the host chosen by role and lag, the live timeline, a drill's source counts,
 * the controller's repositories and keys), and is not in the catalog; rebuilding it elsewhere could
 * run something other than what was asked, and a second send can reach an agent that got the
 * first one and has since restarted (it then cannot know it). A failed job runs nowhere, says
 * why, and opens the gate: a scheduled job runs again at its next fire time, a manual one is
 * started again by its user.
 */
import { ErrorCodes } from '@pgfleet/core';
import type { JobRecord, LeadershipFence } from '@pgfleet/catalog';
import { LEASE_MS } from '../agents/peers.js';
import { eventsCommitted, publishJobs, type ControllerContext } from '../context.js';
import { failedJobEvents, jobsEnded } from '../jobs/registry.js';

/** Fails the queued jobs of dead dispatchers that no agent claimed; the scheduler leader's round calls it under its fence. */
export async function failLostDispatches(
  ctx: ControllerContext,
  now: number,
  fence?: LeadershipFence,
): Promise<JobRecord[]> {
  const waitMs = LEASE_MS + ctx.jobReclaimGraceMs;
  const error = {
    code: ErrorCodes.DispatcherLost.code,
    message: `the controller that created the job died before recording that its agent had it, and the agent did not claim it within ${waitMs / 1000} s`,
  };
  const failed = await ctx.store.failLostDispatches(
    ctx.controllerId,
    now - waitMs,
    error,
    now,
    failedJobEvents(error, now),
    fence,
  );
  if (failed.length === 0) return failed;
  eventsCommitted(ctx);
  for (const job of failed)
    ctx.logger.warn(
      {
        jobId: job.id,
        kind: job.kind,
        cluster: job.cluster,
        agentId: job.agentId,
        dispatcher: job.dispatcher,
        code: error.code,
      },
      'failed a queued job whose controller died before sending it (or before recording the send) and that its agent never claimed',
    );
  publishJobs(ctx, failed);
  // A capture's drill fails with it.
  await jobsEnded(ctx, failed);
  return failed;
}
