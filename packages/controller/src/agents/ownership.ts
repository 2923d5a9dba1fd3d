/**
 * What an agent may touch, checked on every message it sends: an agent is its cluster and its id
 * together (sessions.ts, and the catalog's agents, keyed by both), and a job is the business of
 * the one agent of its cluster it was dispatched to. A host enrolled for one cluster that uses an
 * id another cluster's agent also has, or claims its job ids, changes nothing of that cluster:
 * not its sessions, not its jobs, not its catalog rows.
 */
import { PgfleetError } from '@pgfleet/core';
import type { JobRecord } from '@pgfleet/catalog';
import type { ControllerContext } from '../context.js';
import type { AgentKey } from './sessions.js';

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
