/**
 * Starting jobs on agents, shared by the admin API (a user asks), the scheduler (a schedule
 * fires) and retention (an expire job): record the job as queued, send it on the agent's stream,
 * mark it dispatched, so a job is always in the catalog before any agent can report on it.
 */
import type { MessageInitShape } from '@bufbuild/protobuf';
import { ErrorCodes, PgfleetError, newJobId } from '@pgfleet/core';
import type { BackupFrom, BackupKind, JobRecord } from '@pgfleet/catalog';
import type { JobInfoSchema, JobSchema } from '@pgfleet/proto';
import { chooseAgent, DEFAULT_STANDBY_MAX_LAG_BYTES, type AgentCandidate, type AgentNeed } from '../agents/choice.js';
import type { AgentSession } from '../agents/sessions.js';
import { backupKindToProto, jobInfoFromRecord } from '../wire.js';
import { eventsCommitted, publishJobs, type ControllerContext } from '../context.js';
import { jobEvents } from './events.js';
import { loadClusterPolicy } from '../schedule/policy.js';

export async function requireCluster(ctx: ControllerContext, name: string) {
  if (!name) throw new PgfleetError('InvalidArgument', 'a cluster name is required');
  const cluster = await ctx.store.getCluster(name);
  if (!cluster) throw new PgfleetError('UnknownCluster', `cluster '${name}' is not known to the controller`);
  return cluster;
}

/**
 * The connected agent of the cluster that runs a job with this need (agent-choice.ts): by the
 * role and lag each agent's last heartbeat reported (catalog), among this controller's streams.
 */
export async function clusterAgent(ctx: ControllerContext, cluster: string, need: AgentNeed): Promise<AgentSession> {
  const sessions = ctx.sessions.ofCluster(cluster);
  if (sessions.length === 0)
    throw new PgfleetError('AgentNotConnected', `no agent of cluster '${cluster}' is connected`);
  const records = new Map((await ctx.store.listAgents(cluster)).map((a) => [a.id, a]));
  const candidates: AgentCandidate[] = sessions.map((s) => {
    const r = records.get(s.agentId);
    return {
      agentId: s.agentId,
      hostname: s.hostname,
      connectedAt: s.connectedAt,
      role: r?.role ?? null,
      lastSeen: r?.lastSeen ?? null,
      currentLsn: r?.currentLsn ?? null,
      replay: r?.replay ?? null,
      timeline: r?.timeline ?? null,
    };
  });
  // A standby is judged by its heartbeats: a few missed ones (or 30 s) and its figures are stale.
  const limits = {
    now: ctx.now(),
    maxLagBytes: DEFAULT_STANDBY_MAX_LAG_BYTES,
    maxSilenceMs: Math.max(30_000, 5 * ctx.heartbeatIntervalSeconds * 1000),
  };
  const chosen = chooseAgent(cluster, candidates, need, limits);
  return sessions.find((s) => s.agentId === chosen.agentId)!;
}

/**
 * The timeline the cluster's primary writes now, from its agents' last heartbeats (0: unknown).
 * Restores and drills follow that lineage, so a fork another copy archived into the repository
 * is never taken for the cluster. With two agents claiming primary (a switchover in progress, a
 * split brain) the newer timeline wins: the promoted one.
 */
export async function liveTimeline(ctx: ControllerContext, cluster: string): Promise<number> {
  const agents = (await ctx.store.listAgents(cluster)).filter((a) => a.timeline !== null && a.timeline > 0);
  const primaries = agents.filter((a) => a.role === 'primary');
  const pool = primaries.length > 0 ? primaries : agents;
  return pool.reduce((best, a) => Math.max(best, a.timeline!), 0);
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
export async function dispatch(
  ctx: ControllerContext,
  session: AgentSession,
  job: JobRecord,
  kind: JobKindInit,
): Promise<MessageInitShape<typeof JobInfoSchema>> {
  const message: Parameters<AgentSession['send']>[0] = {
    // A spec is the Repository oneof's value (repository-url.ts): `{ kind: spec }` is the message.
    msg: {
      case: 'job',
      value: { jobId: job.id, repositories: ctx.repositories.map((spec) => ({ kind: spec })), kind },
    },
  };
  const log = ctx.logger.child({ jobId: job.id, kind: job.kind, cluster: job.cluster, agentId: session.agentId });
  try {
    session.send(message);
  } catch (err) {
    const error = {
      code: ErrorCodes.AgentDisconnected.code,
      message: `agent ${session.agentId} went away before the job could be sent`,
    };
    const { job: failed } = await ctx.store.transitionJob(
      job.id,
      'failed',
      { error, events: jobEvents(job, 'failed', { error }, ctx.now()) },
      ctx.now(),
    );
    eventsCommitted(ctx);
    publishJobs(ctx, [failed]);
    throw new PgfleetError(
      'AgentDisconnected',
      `agent ${session.agentId} went away before job ${job.id} could be sent`,
      { cause: err },
    );
  }
  const { job: dispatched } = await ctx.store.transitionJob(
    job.id,
    'dispatched',
    { events: jobEvents(job, 'dispatched', {}, ctx.now()) },
    ctx.now(),
  );
  eventsCommitted(ctx);
  publishJobs(ctx, [dispatched]);
  log.info({ params: job.params }, 'job dispatched');
  return jobInfoFromRecord(dispatched);
}

/**
 * Starts a backup of the cluster. `from` picks the host (primary, standby, prefer-standby);
 * without it the cluster's policy decides (backup_from, default primary). `params` adds to what
 * the job records (the scheduler notes the fire time it stands for).
 */
export async function startBackupJob(
  ctx: ControllerContext,
  cluster: string,
  kind: BackupKind,
  params: Record<string, unknown> = {},
  from?: BackupFrom,
): Promise<MessageInitShape<typeof JobInfoSchema>> {
  await requireCluster(ctx, cluster);
  const source = from ?? (await loadClusterPolicy(ctx.store, cluster)).effective.backupFrom;
  const session = await clusterAgent(ctx, cluster, source);
  // One backup (or expire) per cluster at a time, as the scheduler already does for its own starts.
  const running = (await ctx.store.listActiveJobs()).find(
    (j) => j.cluster === cluster && (j.kind === 'backup' || j.kind === 'expire'),
  );
  if (running)
    throw new PgfleetError(
      'BackupInProgress',
      `cluster ${cluster} already has a ${running.kind} job running (${running.id}, ${running.state})`,
    );
  // `from` is recorded when it is not the primary (jobs without it ran on the primary, as before HA clusters).
  const job = await ctx.store.createJob(
    {
      id: newJobId(),
      cluster,
      kind: 'backup',
      agentId: session.agentId,
      params: { type: kind, ...(source !== 'primary' ? { from: source } : {}), ...params },
    },
    ctx.now(),
  );
  // The agent names the backup from its start time (see backupLabel in core).
  return dispatch(ctx, session, job, { case: 'backup', value: { type: backupKindToProto(kind), label: '' } });
}

/**
 * Starts a check of the cluster's WAL archiving on its primary's agent (CheckJob). It switches a
 * WAL segment, so it is the cluster's own agent's job, never another's.
 */
export async function startCheckJob(
  ctx: ControllerContext,
  cluster: string,
  timeoutSeconds: number,
): Promise<MessageInitShape<typeof JobInfoSchema>> {
  await requireCluster(ctx, cluster);
  // pg_switch_wal() and the archiver: the primary's agent.
  const session = await clusterAgent(ctx, cluster, 'primary');
  const job = await ctx.store.createJob(
    { id: newJobId(), cluster, kind: 'check', agentId: session.agentId, params: { timeoutSeconds } },
    ctx.now(),
  );
  return dispatch(ctx, session, job, { case: 'check', value: { timeoutSeconds } });
}

/** Starts a verify job (read-only check of the cluster's repository) on the cluster's connected agent. */
export async function startVerifyJob(
  ctx: ControllerContext,
  cluster: string,
  full: boolean,
): Promise<MessageInitShape<typeof JobInfoSchema>> {
  await requireCluster(ctx, cluster);
  const session = await clusterAgent(ctx, cluster, 'any');
  const job = await ctx.store.createJob(
    { id: newJobId(), cluster, kind: 'verify', agentId: session.agentId, params: { full } },
    ctx.now(),
  );
  return dispatch(ctx, session, job, {
    case: 'verify',
    value: { full, currentTimeline: await liveTimeline(ctx, cluster) },
  });
}
