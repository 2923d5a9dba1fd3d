/**
 * Starting jobs on agents, shared by every kind's start (jobs/<kind>.ts), whoever asks (the admin
 * API, the scheduler, retention): record the job as queued, send it on the agent's stream, mark
 * it dispatched, so a job is always in the catalog before any agent can report on it.
 *
 * The queued row names the controller that sends it (its dispatcher, from the insert on): a
 * controller killed between creating a job and recording its send leaves a job that says whose
 * send was lost, and the scheduler leader fails it once that controller is dead and the agent has
 * not claimed it (schedule/lost-dispatches.ts).
 */
import type { MessageInitShape } from '@bufbuild/protobuf';
import { ErrorCodes, PgfleetError, parseClusterName } from '@pgfleet/core';
import type { JobKind, NewJob } from '@pgfleet/catalog';
import { repositoryMessage, type JobInfoSchema, type JobSchema } from '@pgfleet/proto';
import { chooseAgent, DEFAULT_STANDBY_MAX_LAG_BYTES, type AgentCandidate, type AgentNeed } from '../agents/choice.js';
import type { AgentSession } from '../agents/sessions.js';
import { remoteSessions } from '../agents/peers.js';
import { jobInfoFromRecord } from '../wire.js';
import { eventsCommitted, publishJobs, type ControllerContext } from '../context.js';
import type { ControllerJobKind } from './job-kind.js';
import type { TypedJob } from './params.js';
import { killPoint } from './kill-points.js';

export async function requireCluster(ctx: ControllerContext, name: string) {
  if (!name) throw new PgfleetError('InvalidArgument', 'a cluster name is required');
  parseClusterName(name, 'cluster');
  const cluster = await ctx.store.getCluster(name);
  if (!cluster) throw new PgfleetError('UnknownCluster', `cluster '${name}' is not known to the controller`);
  return cluster;
}

/**
 * The connected agent of the cluster that runs a job with this need (agents/choice.ts): by the
 * role and lag each agent's last heartbeat reported (catalog), among this controller's streams
 * and those other controllers sharing the catalog hold (agents/peers.ts).
 */
export async function clusterAgent(ctx: ControllerContext, cluster: string, need: AgentNeed): Promise<AgentSession> {
  const sessions = [...ctx.sessions.ofCluster(cluster), ...(await remoteSessions(ctx, cluster))];
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
 * A job this controller creates and sends next: its row names this controller as dispatcher from
 * the insert on, so if this process dies before the send is recorded the others know whose send
 * was lost (store.failLostDispatches).
 */
export function sentFromHere<J extends Omit<NewJob, 'kind' | 'params'>>(
  ctx: ControllerContext,
  job: J,
): J & { dispatcher: string } {
  return { ...job, dispatcher: ctx.controllerId };
}

/** What a job asks the agent to do: the `kind` oneof of the Job message. */
export type JobKindInit = NonNullable<MessageInitShape<typeof JobSchema>['kind']>;

/**
 * Sends the (queued) job to the agent and records it as dispatched, with the events its kind
 * publishes for those moves. If the stream is already gone the job fails at once
 * (AgentDisconnected) instead of waiting for an agent that will not answer. Every job carries
 * the repositories the controller is configured with (--repo, --repo2), set here once for all
 * job kinds; without any it carries none and the agent uses its own.
 */
export async function dispatch<K extends JobKind>(
  ctx: ControllerContext,
  session: AgentSession,
  job: TypedJob<K>,
  kind: JobKindInit,
  jobKind: Pick<ControllerJobKind<K>, 'events'>,
): Promise<MessageInitShape<typeof JobInfoSchema>> {
  const message: Parameters<AgentSession['send']>[0] = {
    msg: {
      case: 'job',
      value: {
        jobId: job.id,
        repositories: ctx.repositories.map(repositoryMessage),
        // The key of the cluster whose backups the job writes or reads, and no other.
        ...jobManifestKey(ctx, job.cluster),
        kind,
      },
    },
  };
  const log = ctx.logger.child({ jobId: job.id, kind: job.kind, cluster: job.cluster, agentId: session.agentId });
  // Still queued, and this controller its dispatcher (a drill after its capture is claimed here):
  // a job the scheduler leader failed as lost while this one paused, or one cancelled meanwhile,
  // is not sent.
  const claimed = await ctx.store.claimJobDispatch(job.id, ctx.controllerId);
  if (claimed.state !== 'queued') {
    log.warn({ state: claimed.state, code: claimed.error?.code }, 'job not sent: it is no longer queued');
    return jobInfoFromRecord(claimed);
  }
  killPoint('dispatch-before-send', job.kind);
  try {
    await session.send(message);
  } catch (err) {
    const error = {
      code: ErrorCodes.AgentDisconnected.code,
      message: `agent ${session.agentId} went away before the job could be sent`,
    };
    const { job: failed } = await ctx.store.transitionJob(
      job.id,
      'failed',
      { error, events: jobKind.events(job, 'failed', { error }, ctx.now()) },
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
  killPoint('dispatch-after-send', job.kind);
  const dispatched = await recordSent(ctx, job, jobKind);
  eventsCommitted(ctx);
  publishJobs(ctx, [dispatched]);
  log.info({ params: job.params, ...(session.heldBy ? { via: session.heldBy } : {}) }, 'job dispatched');
  return jobInfoFromRecord(dispatched);
}

/**
 * The job moves to dispatched once sent. Its agent may have been quicker (progress or a result
 * through another controller moved it on): then it stays as the agent left it.
 */
async function recordSent<K extends JobKind>(
  ctx: ControllerContext,
  job: TypedJob<K>,
  jobKind: Pick<ControllerJobKind<K>, 'events'>,
) {
  try {
    return (
      await ctx.store.transitionJob(
        job.id,
        'dispatched',
        { events: jobKind.events(job, 'dispatched', {}, ctx.now()) },
        ctx.now(),
      )
    ).job;
  } catch (err) {
    if (!PgfleetError.is(err, 'JobStateConflict')) throw err;
    const current = await ctx.store.getJob(job.id);
    if (!current) throw err;
    return current;
  }
}

/** Job.manifest_key and manifest_cluster for a job of `cluster` (storage manifest-auth.ts). */
function jobManifestKey(ctx: ControllerContext, cluster: string): { manifestKey: Uint8Array; manifestCluster: string } {
  const key = ctx.manifestKeys.keyFor(cluster);
  return key
    ? { manifestKey: new Uint8Array(key), manifestCluster: cluster }
    : { manifestKey: new Uint8Array(), manifestCluster: '' };
}
