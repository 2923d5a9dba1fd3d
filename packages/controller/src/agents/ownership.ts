/**
 * What an agent may touch, checked on every message it sends: an agent is its cluster and its id
 * together (sessions.ts), an id belongs to the first cluster it connected for (the catalog's
 * upsertAgent), and a job is the business of the one agent of its cluster it was dispatched to.
 * A host enrolled for one cluster that claims another cluster's agent id or job ids changes
 * nothing of that cluster: not its sessions, not its jobs, not its catalog.
 */
import { PgfleetError } from '@pgfleet/core';
import type { JobRecord } from '@pgfleet/catalog';
import type { Hello } from '@pgfleet/proto';
import type { ControllerContext } from '../context.js';
import type { AgentKey } from './sessions.js';

/**
 * Refuses a Hello whose agent id the catalog holds under another cluster, before anything is
 * recorded. upsertAgent refuses the same atomically (two first connections racing); this check
 * is here to log the owner, which the refusal sent to the claimant does not name.
 */
export async function requireOwnAgentId(
  ctx: ControllerContext,
  hello: Pick<Hello, 'agentId' | 'cluster'>,
  log: ControllerContext['logger'],
): Promise<void> {
  const bound = await ctx.store.getAgent(hello.agentId);
  if (!bound || bound.cluster === hello.cluster) return;
  log.warn(
    { boundCluster: bound.cluster },
    'agent refused: its agent id belongs to another cluster (a misconfigured or compromised host)',
  );
  throw new PgfleetError(
    'AgentIdBound',
    `agent id '${hello.agentId}' belongs to another cluster; it may not be used for cluster '${hello.cluster}'`,
  );
}

/**
 * The job an agent reports on (result, progress, cancellation, WAL switch): only one of its own
 * cluster that was dispatched to it. Anything else is refused (JobNotOwned) and the caller logs it;
 * the refusal names neither the job's cluster nor its agent, which the sender has no business knowing.
 */
export async function ownJob(ctx: ControllerContext, agent: AgentKey, jobId: string): Promise<JobRecord> {
  const job = await ctx.store.getJob(jobId);
  if (!job) throw new PgfleetError('UnknownJob', `job ${jobId} does not exist`);
  if (job.cluster !== agent.cluster || job.agentId !== agent.agentId) {
    ctx.logger.warn(
      { jobId, jobCluster: job.cluster, jobAgent: job.agentId, cluster: agent.cluster, agentId: agent.agentId },
      'an agent reported on a job that is not its own: refused, nothing changed',
    );
    throw new PgfleetError(
      'JobNotOwned',
      `job ${jobId} was not dispatched to agent '${agent.agentId}' of cluster '${agent.cluster}'`,
    );
  }
  return job;
}
