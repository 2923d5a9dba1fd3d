/**
 * Starting jobs on agents, shared by the admin API (a user asks), the scheduler (a schedule
 * fires) and retention (an expire job): record the job as queued, send it on the agent's stream,
 * mark it dispatched, so a job is always in the catalog before any agent can report on it.
 */
import type { MessageInitShape } from '@bufbuild/protobuf';
import { ErrorCodes, PgfleetError, newJobId } from '@pgfleet/core';
import type { BackupKind, JobRecord } from '@pgfleet/catalog';
import type { JobInfoSchema, JobSchema } from '@pgfleet/proto';
import type { AgentSession } from './agent-sessions.js';
import { backupKindToProto, jobInfoFromRecord } from './convert.js';
import { eventsCommitted, publishJobs, type ControllerContext } from './context.js';
import { jobEvents } from './events.js';

export async function requireCluster(ctx: ControllerContext, name: string) {
  if (!name) throw new PgfleetError('InvalidArgument', 'a cluster name is required');
  const cluster = await ctx.store.getCluster(name);
  if (!cluster) throw new PgfleetError('UnknownCluster', `cluster '${name}' is not known to the controller`);
  return cluster;
}

export function clusterAgent(ctx: ControllerContext, cluster: string): AgentSession {
  const session = ctx.sessions.forCluster(cluster);
  if (!session) throw new PgfleetError('AgentNotConnected', `no agent of cluster '${cluster}' is connected`);
  return session;
}

/**
 * Records the job as queued, sends it, marks it dispatched. If the stream is already gone the
 * job fails at once (AgentDisconnected) instead of waiting for an agent that will not answer.
 */
/** What a job asks the agent to do: the `kind` oneof of the Job message. */
export type JobKindInit = NonNullable<MessageInitShape<typeof JobSchema>['kind']>;

/**
 * Sends the job to the agent and records it as dispatched. Every job carries the repositories
 * the controller is configured with (--repo, --repo2), set here once for all job kinds; without
 * any it carries none and the agent uses its own.
 */
export async function dispatch(ctx: ControllerContext, session: AgentSession, job: JobRecord, kind: JobKindInit): Promise<MessageInitShape<typeof JobInfoSchema>> {
  const message: Parameters<AgentSession['send']>[0] = {
    // A spec is the Repository oneof's value (repository-url.ts): `{ kind: spec }` is the message.
    msg: { case: 'job', value: { jobId: job.id, repositories: ctx.repositories.map((spec) => ({ kind: spec })), kind } },
  };
  const log = ctx.logger.child({ jobId: job.id, kind: job.kind, cluster: job.cluster, agentId: session.agentId });
  try {
    session.send(message);
  } catch (err) {
    const error = { code: ErrorCodes.AgentDisconnected.code, message: `agent ${session.agentId} went away before the job could be sent` };
    const { job: failed } = await ctx.store.transitionJob(job.id, 'failed', { error, events: jobEvents(job, 'failed', { error }, ctx.now()) }, ctx.now());
    eventsCommitted(ctx);
    publishJobs(ctx, [failed]);
    throw new PgfleetError('AgentDisconnected', `agent ${session.agentId} went away before job ${job.id} could be sent`, { cause: err });
  }
  const { job: dispatched } = await ctx.store.transitionJob(job.id, 'dispatched', { events: jobEvents(job, 'dispatched', {}, ctx.now()) }, ctx.now());
  eventsCommitted(ctx);
  publishJobs(ctx, [dispatched]);
  log.info({ params: job.params }, 'job dispatched');
  return jobInfoFromRecord(dispatched);
}

/**
 * Starts a backup of the cluster on its connected agent. `params` adds to what the job records
 * (the scheduler notes the fire time it stands for).
 */
export async function startBackupJob(ctx: ControllerContext, cluster: string, kind: BackupKind, params: Record<string, unknown> = {}): Promise<MessageInitShape<typeof JobInfoSchema>> {
  await requireCluster(ctx, cluster);
  const session = clusterAgent(ctx, cluster);
  // One backup (or expire) per cluster at a time, as the scheduler already does for its own starts.
  const running = (await ctx.store.listActiveJobs()).find((j) => j.cluster === cluster && (j.kind === 'backup' || j.kind === 'expire'));
  if (running) throw new PgfleetError('BackupInProgress', `cluster ${cluster} already has a ${running.kind} job running (${running.id}, ${running.state})`);
  const job = await ctx.store.createJob({ id: newJobId(), cluster, kind: 'backup', agentId: session.agentId, params: { type: kind, ...params } }, ctx.now());
  // The agent names the backup from its start time (see backupLabel in core).
  return dispatch(ctx, session, job, { case: 'backup', value: { type: backupKindToProto(kind), label: '' } });
}

/**
 * Starts a check of the cluster's WAL archiving on its connected agent (CheckJob). It switches a
 * WAL segment, so it is the cluster's own agent's job, never another's.
 */
export async function startCheckJob(ctx: ControllerContext, cluster: string, timeoutSeconds: number): Promise<MessageInitShape<typeof JobInfoSchema>> {
  await requireCluster(ctx, cluster);
  const session = clusterAgent(ctx, cluster);
  const job = await ctx.store.createJob({ id: newJobId(), cluster, kind: 'check', agentId: session.agentId, params: { timeoutSeconds } }, ctx.now());
  return dispatch(ctx, session, job, { case: 'check', value: { timeoutSeconds } });
}

/** Starts a verify job (read-only check of the cluster's repository) on the cluster's connected agent. */
export async function startVerifyJob(ctx: ControllerContext, cluster: string, full: boolean): Promise<MessageInitShape<typeof JobInfoSchema>> {
  await requireCluster(ctx, cluster);
  const session = clusterAgent(ctx, cluster);
  const job = await ctx.store.createJob({ id: newJobId(), cluster, kind: 'verify', agentId: session.agentId, params: { full } }, ctx.now());
  return dispatch(ctx, session, job, { case: 'verify', value: { full } });
}
