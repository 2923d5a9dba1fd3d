/**
 * AgentService.Connect: one long-lived bidi stream per agent. The agent says Hello (who it is,
 * which cluster, which jobs it still runs); the controller registers it, answers Welcome, then
 * dispatches jobs on the stream and records heartbeats, progress and results in the catalog.
 * When the stream ends the agent's unfinished jobs fail: the agent is the only one that could
 * finish them, and a job that silently stays "running" forever is worse than a clear failure.
 */
import { timestampFromMs } from '@bufbuild/protobuf/wkt';
import { ErrorCodes, PgfleetError, asPgfleetError } from '@pgfleet/core';
import { agentRefKey, isTerminalJobState, type AgentRef, type JobRecord } from '@pgfleet/catalog';
import type { BidiStream, CallContext, ServiceImpl } from '@pgfleet/rpc';
import {
  ConnectRequestSchema,
  JobState,
  type AgentService,
  type ConnectRequest,
  type ConnectResponseSchema,
  type Hello,
  type JobResult,
} from '@pgfleet/proto';
import { checkHelloIdentity, requireAgentIdentity } from '../security/access.js';
import { checkWireMessage } from '../security/wire-bounds.js';
import type { AgentSession } from './sessions.js';
import { ownJob } from './ownership.js';
import { agentReplayRecord, archiverJson, archiveSetupRecord, serverRoleFromProto, progressJson } from '../wire.js';
import { CONTROLLER_VERSION, eventsCommitted, publishJobs, type ControllerContext } from '../context.js';
import { outboxEvent } from '../jobs/events.js';
import { failedJobEvents, failedOutcome, jobEvents, jobsEnded, kindOf } from '../jobs/registry.js';
import { typedJob } from '../jobs/params.js';
import { walHealthRecord } from '../health/health.js';
import { clusterAgent } from '../jobs/dispatch.js';

type ConnectStream = BidiStream<ConnectRequest, typeof ConnectResponseSchema>;

export function createAgentService(ctx: ControllerContext): ServiceImpl<typeof AgentService> {
  return {
    connect: (stream: ConnectStream, call: CallContext) => {
      const running = handleConnect(ctx, stream, call);
      const tracked = running.then(
        () => undefined,
        () => undefined,
      );
      ctx.connections.add(tracked);
      void tracked.finally(() => ctx.connections.delete(tracked));
      return running;
    },
  };
}

function validateHello(hello: Hello): void {
  const missing = (['agentId', 'cluster', 'systemIdentifier'] as const).filter((k) => hello[k] === '');
  if (missing.length) throw new PgfleetError('InvalidArgument', `Hello is missing ${missing.join(', ')}`);
}

async function handleConnect(ctx: ControllerContext, stream: ConnectStream, call: CallContext): Promise<void> {
  const incoming = stream[Symbol.asyncIterator]();
  const hello = await readHello(incoming);
  if (!hello) return;
  if (ctx.agentCertificates) checkHelloIdentity(requireAgentIdentity(call), hello);
  const log = ctx.logger.child({ agentId: hello.agentId, cluster: hello.cluster, peer: call.peer });
  requireOneSystem(ctx, hello);
  await recordAgent(ctx, hello);
  const session = openSession(ctx, hello, stream, log);
  await reconcileJobs(ctx, hello, stream, log);
  try {
    for await (const req of { [Symbol.asyncIterator]: () => incoming }) {
      try {
        await handleMessage(ctx, session, req, log);
      } catch (err) {
        // One bad message (e.g. a result for an unknown job) must not cut the agent off.
        const pe = asPgfleetError(err);
        log.warn(
          { err: pe.errorName === 'Internal' ? err : undefined, code: pe.code, msg: req.msg.case },
          `agent message not applied: ${pe.message}`,
        );
      }
    }
    log.info('agent stream ended');
  } catch (err) {
    log.warn({ code: asPgfleetError(err).code }, `agent stream failed: ${asPgfleetError(err).message}`);
    // Undecodable bytes end the stream; the agent is told why (INVALID_ARGUMENT), not left guessing.
    if (PgfleetError.is(err, 'MalformedMessage')) throw err;
  } finally {
    await agentGone(ctx, session, log);
  }
}

/** The stream's first message, which must be a complete Hello; undefined when the stream ends first. */
async function readHello(incoming: AsyncIterator<ConnectRequest>): Promise<Hello | undefined> {
  const first = await incoming.next();
  if (first.done) return undefined;
  checkWireMessage(ConnectRequestSchema, first.value);
  if (first.value.msg.case !== 'hello') {
    throw new PgfleetError(
      'InvalidArgument',
      `the first message on AgentService.Connect must be Hello, got ${first.value.msg.case ?? 'an empty message'}`,
    );
  }
  const hello = first.value.msg.value;
  validateHello(hello);
  return hello;
}

/**
 * An HA cluster has one agent per host, all on one database system (a standby is a physical
 * copy of its primary and keeps its system identifier). An agent on another system under the
 * same cluster name would mix two clusters' WAL and backups: refused before anything is recorded.
 */
function requireOneSystem(ctx: ControllerContext, hello: Hello): void {
  const other = ctx.sessions
    .ofCluster(hello.cluster)
    .find((s) => s.agentId !== hello.agentId && s.systemIdentifier !== hello.systemIdentifier);
  if (other) {
    throw new PgfleetError(
      'HostSystemIdMismatch',
      `agent ${hello.agentId} (${hello.hostname}) reports system identifier ${hello.systemIdentifier} for cluster '${hello.cluster}', but its connected agent ${other.agentId} (${other.hostname}) runs on system ${other.systemIdentifier}`,
    );
  }
}

/**
 * The cluster, the agent and its stream held here in the catalog, with the agentConnected event,
 * in one transaction with the Hellos that arrive meanwhile (store.connectAgents through the
 * HelloBatcher). It throws SystemIdMismatch before anything of it is recorded:
 * a different cluster under a known name must not be able to take over its catalog entries or its
 * jobs. Its stream is held here from now on: jobs started on other controllers sharing the catalog
 * come through this one.
 */
async function recordAgent(ctx: ControllerContext, hello: Hello): Promise<void> {
  await ctx.hellos.record({
    agent: {
      id: hello.agentId,
      cluster: hello.cluster,
      hostname: hello.hostname,
      version: hello.agentVersion,
      systemIdentifier: hello.systemIdentifier,
      pgVersion: hello.pgVersion,
    },
    events: [
      outboxEvent(
        hello.cluster,
        {
          case: 'agentConnected',
          value: {
            agentId: hello.agentId,
            hostname: hello.hostname,
            agentVersion: hello.agentVersion,
            pgVersion: hello.pgVersion,
            systemIdentifier: hello.systemIdentifier,
          },
        },
        ctx.now(),
      ),
    ],
  });
  eventsCommitted(ctx);
}

/** Registers the agent's session (closing an older stream of the same agent) and answers Welcome. */
function openSession(
  ctx: ControllerContext,
  hello: Hello,
  stream: ConnectStream,
  log: ControllerContext['logger'],
): AgentSession {
  const session: AgentSession = {
    agentId: hello.agentId,
    cluster: hello.cluster,
    hostname: hello.hostname,
    systemIdentifier: hello.systemIdentifier,
    connectedAt: ctx.now(),
    repositories: hello.repositories,
    send: (msg) => stream.send(msg),
    close: () => stream.end(),
  };
  if (ctx.sessions.register(session))
    log.warn('agent reconnected while its previous stream was still open; the old stream is closed');
  // The cluster's key, only to an agent of that cluster whose Hello passed every check above: it
  // names archived WAL with a MAC under it (storage wal-auth.ts), also while no job runs.
  const clusterKey = ctx.manifestKeys.keyFor(hello.cluster);
  stream.send({
    msg: {
      case: 'welcome',
      value: {
        controllerVersion: CONTROLLER_VERSION,
        heartbeatIntervalSeconds: ctx.heartbeatIntervalSeconds,
        ...(clusterKey ? { clusterKey: new Uint8Array(clusterKey) } : {}),
      },
    },
  });
  log.info(
    {
      hostname: hello.hostname,
      agentVersion: hello.agentVersion,
      pgVersion: hello.pgVersion,
      runningJobs: hello.runningJobIds,
    },
    'agent connected',
  );
  return session;
}

/**
 * The catalog's jobs of this agent against what its Hello says it still runs. Jobs the catalog
 * thinks it runs but the agent does not know about died with its previous process and fail.
 * Queued ones the agent names were sent by a controller that died before recording it: the agent
 * has them, so they are dispatched now (and no longer a lost dispatch, schedule/lost-dispatches.ts).
 * Other queued ones stay: a drill waiting for its capture, a send in progress, or a lost send
 * the scheduler leader fails once its controller is dead.
 */
async function reconcileJobs(
  ctx: ControllerContext,
  hello: Hello,
  stream: ConnectStream,
  log: ControllerContext['logger'],
): Promise<void> {
  const agent = { cluster: hello.cluster, agentId: hello.agentId };
  const pendingReclaim = ctx.reclaimTimers.get(agentRefKey(agent));
  if (pendingReclaim) clearTimeout(pendingReclaim);
  ctx.reclaimTimers.delete(agentRefKey(agent));
  // Read after the Hello was recorded, shared with the Hellos reading at the same time.
  const active = (await ctx.activeJobs.get()).filter((j) => j.agentId === hello.agentId && j.cluster === hello.cluster);
  await claimQueuedJobs(
    ctx,
    active.filter((j) => j.state === 'queued' && hello.runningJobIds.includes(j.id)),
    log,
  );
  const keep = [...hello.runningJobIds, ...active.filter((j) => j.state === 'queued').map((j) => j.id)];
  const lostError = {
    code: ErrorCodes.AgentDisconnected.code,
    message: `agent ${hello.agentId} restarted and no longer runs the job`,
  };
  // Nothing the catalog holds for the agent beyond what it keeps (every Hello of a connect storm):
  // no write. A job created after the listing is a new one, sent on this stream, never lost.
  const lost = active.some((j) => !keep.includes(j.id))
    ? await ctx.store.failActiveJobsOfAgent(agent, lostError, ctx.now(), keep, failedJobEvents(lostError, ctx.now()))
    : [];
  // Jobs the agent still runs that were cancelled while it was away: tell it now.
  for (const id of hello.runningJobIds) {
    const j = await ctx.store.getJob(id);
    if (j?.state === 'cancelled' && j.agentId === hello.agentId && j.cluster === hello.cluster) {
      stream.send({ msg: { case: 'cancel', value: { jobId: id } } });
      log.info({ jobId: id }, 'the reconnected agent still runs a cancelled job: cancel sent');
    }
  }
  if (lost.length) eventsCommitted(ctx);
  if (lost.length) log.warn({ jobIds: lost.map((j) => j.id) }, 'failed jobs the restarted agent no longer runs');
  publishJobs(ctx, lost);
  await jobsEnded(ctx, lost);
}

/** Jobs still queued that their agent says it has (Hello): dispatched, with their kind's event for it. */
async function claimQueuedJobs(
  ctx: ControllerContext,
  jobs: readonly JobRecord[],
  log: ControllerContext['logger'],
): Promise<void> {
  for (const j of jobs) {
    try {
      const now = ctx.now();
      const { job, changed } = await ctx.store.transitionJob(
        j.id,
        'dispatched',
        { events: jobEvents(j, 'dispatched', {}, now) },
        now,
      );
      if (!changed) continue;
      eventsCommitted(ctx);
      publishJobs(ctx, [job]);
      log.warn(
        { jobId: j.id, kind: j.kind, dispatcher: j.dispatcher },
        'the agent has a job its sender never recorded as sent (that controller died): dispatched',
      );
    } catch (err) {
      // Moved on meanwhile (its progress, or the sender's own record): nothing to claim.
      if (!PgfleetError.is(err, 'JobStateConflict')) throw err;
    }
  }
}

async function agentGone(
  ctx: ControllerContext,
  session: AgentSession,
  log: ControllerContext['logger'],
): Promise<void> {
  // A newer stream of the same agent already reconciled its jobs in its Hello; leave them alone.
  if (!ctx.sessions.unregister(session)) return;
  try {
    // Moved to another controller sharing the catalog meanwhile: its connected flag and its jobs are that one's now.
    if (!(await ctx.store.releaseAgentStream(session, ctx.controllerId))) {
      log.info('agent stream ended here; the agent is held by another controller now');
      return;
    }
    const lastSeen = (await ctx.store.getAgent(session))?.lastSeen ?? null;
    await ctx.store.setAgentConnected(session, false, ctx.now(), [
      outboxEvent(
        session.cluster,
        {
          case: 'agentDisconnected',
          value: {
            agentId: session.agentId,
            reason: 'stream ended',
            ...(lastSeen !== null ? { lastHeartbeatTime: timestampFromMs(lastSeen) } : {}),
          },
        },
        ctx.now(),
      ),
    ]);
    eventsCommitted(ctx);
    // The agent keeps running its jobs and delivers their results when it is back; a shutdown
    // leaves them to the next controller run, which reclaims them the same way.
    if (ctx.closing) return;
    const goneError = {
      code: ErrorCodes.AgentDisconnected.code,
      message: `agent ${session.agentId} disconnected while the job was running and did not reconnect within ${ctx.jobReclaimGraceMs / 1000} s`,
    };
    reclaimJobsLater(ctx, session, goneError);
  } catch (err) {
    log.error({ err }, 'could not record the agent disconnect in the catalog');
  }
}

/**
 * After the reclaim grace, fails the unfinished jobs of agents (one agent, or any when `agent` is
 * undefined) that have not reconnected: an agent that did reconnect claimed what it still runs in
 * its Hello, and the rest of its jobs were failed then. Never leaves a job active for good.
 */
export function reclaimJobsLater(
  ctx: ControllerContext,
  agent: AgentRef | undefined,
  error: { code: string; message: string },
): void {
  // One pending check per agent (a second disconnect restarts its grace); '*' is the start-up check.
  const key = agent ? agentRefKey(agent) : '*';
  const previous = ctx.reclaimTimers.get(key);
  if (previous) clearTimeout(previous);
  const timer = setTimeout(() => {
    if (ctx.reclaimTimers.get(key) === timer) ctx.reclaimTimers.delete(key);
    if (ctx.closing) return;
    void (async () => {
      const active = await ctx.store.listActiveJobs();
      const candidates = new Map<string, AgentRef>();
      for (const j of active) {
        const a = { cluster: j.cluster, agentId: j.agentId };
        if (agent !== undefined && agentRefKey(a) !== key) continue;
        if (!ctx.sessions.get(j.cluster, j.agentId)) candidates.set(agentRefKey(a), a);
      }
      for (const a of candidates.values()) {
        // Connected to another controller sharing the catalog: that one reconciled its jobs in Hello.
        if ((await ctx.store.getAgent(a))?.connected) continue;
        // Queued jobs are their dispatcher's to send; a dead dispatcher's are failed by the
        // scheduler leader unless their agent claims them (schedule/lost-dispatches.ts).
        const keep = active
          .filter((j) => j.cluster === a.cluster && j.agentId === a.agentId && j.state === 'queued')
          .map((j) => j.id);
        const failed = await ctx.store.failActiveJobsOfAgent(
          a,
          error,
          ctx.now(),
          keep,
          failedJobEvents(error, ctx.now()),
        );
        if (failed.length === 0) continue;
        eventsCommitted(ctx);
        ctx.logger.warn(
          { cluster: a.cluster, agentId: a.agentId, jobIds: failed.map((j) => j.id), code: error.code },
          'failed the unfinished jobs no agent reclaimed',
        );
        publishJobs(ctx, failed);
        await jobsEnded(ctx, failed);
      }
    })().catch((err: unknown) => ctx.logger.error({ err }, 'could not fail unclaimed jobs'));
  }, ctx.jobReclaimGraceMs);
  timer.unref();
  ctx.reclaimTimers.set(key, timer);
}

async function handleMessage(
  ctx: ControllerContext,
  session: AgentSession,
  req: ConnectRequest,
  log: ControllerContext['logger'],
): Promise<void> {
  checkWireMessage(ConnectRequestSchema, req);
  const msg = req.msg;
  switch (msg.case) {
    case 'hello':
      throw new PgfleetError('InvalidArgument', 'Hello was sent twice on one stream');
    case 'heartbeat': {
      const role = serverRoleFromProto(msg.value.role);
      await ctx.heartbeats.record({
        agent: session,
        figures: {
          ...(msg.value.archiver ? { archiver: archiverJson(msg.value.archiver) } : {}),
          currentLsn: msg.value.currentLsn,
          ...(msg.value.wal ? { walHealth: walHealthRecord(msg.value.wal) } : {}),
          ...(msg.value.archiveSetup ? { archiveSetup: archiveSetupRecord(msg.value.archiveSetup) } : {}),
          role,
          replay: agentReplayRecord(role, msg.value.replay),
          // Only a primary says which timeline it writes; restores follow that lineage.
          ...(role === 'primary' && msg.value.timeline > 0 ? { timeline: msg.value.timeline } : {}),
        },
        at: ctx.now(),
      });
      // Not waited for: evaluations queue one after another (health.ts), and a stream that waited
      // for its cluster's turn read and recorded its next heartbeats late (10,000 agents on a
      // PostgreSQL catalog).
      ctx.health
        ?.onHeartbeat(session.agentId, session.cluster, {
          streamedLsn: msg.value.streamedLsn,
          currentLsn: msg.value.currentLsn,
        })
        .catch((err: unknown) =>
          log.warn({ code: asPgfleetError(err).code }, 'health evaluation on a heartbeat failed'),
        );
      return;
    }
    case 'walSwitch':
      await forwardWalSwitch(ctx, session, msg.value.jobId, msg.value.lsn, log);
      return;
    case 'progress': {
      await ownJob(ctx, session, msg.value.jobId);
      // Progress on a job still queued: its sender has not recorded the send yet, or died before
      // it did. The agent has it, so it moves on here, with the dispatched event its sender owed.
      const claim = { made: false };
      const { job, changed } = await ctx.store.updateJobProgress(
        msg.value.jobId,
        progressJson(msg.value),
        ctx.now(),
        (queued) => {
          claim.made = true;
          return jobEvents(queued, 'dispatched', {}, ctx.now());
        },
      );
      if (claim.made) {
        eventsCommitted(ctx);
        log.info({ jobId: job.id, dispatcher: job.dispatcher }, 'progress on a job still queued: the agent has it');
      }
      if (changed) ctx.watchers.publish(job);
      return;
    }
    case 'result':
      await handleResult(ctx, session, msg.value, log);
      return;
    default:
      throw new PgfleetError('InvalidArgument', 'empty ConnectRequest');
  }
}

/**
 * A backup running on a standby needs the segment holding its stop LSN archived, which only the
 * primary can bring about (agent.proto WalSwitch): forwarded to the cluster's primary agent. The
 * standby repeats the request while it waits, so a primary agent that is away now gets it later;
 * without one the backup ends with WalArchiveTimeout unless archive_timeout finishes the segment.
 */
async function forwardWalSwitch(
  ctx: ControllerContext,
  session: AgentSession,
  jobId: string,
  lsn: string,
  log: ControllerContext['logger'],
): Promise<void> {
  const job = await ownJob(ctx, session, jobId);
  if (job.kind !== 'backup')
    throw new PgfleetError('InvalidArgument', `job ${jobId} is a ${job.kind} job; only a backup asks for a WAL switch`);
  let primary: AgentSession;
  try {
    primary = await clusterAgent(ctx, session.cluster, 'primary');
  } catch (err) {
    log.warn(
      { jobId, lsn, code: asPgfleetError(err).code },
      `WAL switch for the standby backup not forwarded: ${asPgfleetError(err).message}`,
    );
    return;
  }
  if (primary.agentId === session.agentId) return; // promoted meanwhile: it switches WAL itself
  await primary.send({ msg: { case: 'walSwitch', value: { jobId, lsn } } });
  log.info({ jobId, lsn, primary: primary.agentId }, 'WAL switch asked of the primary for a standby backup');
}

/**
 * An agent's result for one of its jobs: the job moves to its final state with what its kind
 * records (jobs/<kind>.ts) and the events it publishes, in one catalog transaction; then what
 * follows from it. A repeated result changes nothing.
 */
async function handleResult(
  ctx: ControllerContext,
  session: AgentSession,
  result: JobResult,
  log: ControllerContext['logger'],
): Promise<void> {
  const job = typedJob(await ownJob(ctx, session, result.jobId));
  const kind = kindOf(job);
  const jlog = log.child({ jobId: job.id, kind: job.kind });
  const now = ctx.now();
  if (
    isTerminalJobState(job.state) &&
    result.state === JobState.SUCCEEDED &&
    (await kind.lateSuccess?.(ctx, job, result.result, jlog))
  )
    return;
  let outcome;
  switch (result.state) {
    case JobState.SUCCEEDED: {
      const refused = await kind.admit?.(ctx, job, result.result);
      if (refused) jlog.warn({ code: refused.code }, `result refused: ${refused.message}`);
      const out = refused ? { error: refused } : kind.succeeded(job, result.result);
      if ('error' in out) {
        const { error } = out;
        outcome = await ctx.store.transitionJob(
          job.id,
          'failed',
          { error, events: kind.events(job, 'failed', { error }, now) },
          now,
        );
        break;
      }
      outcome = await ctx.store.transitionJob(
        job.id,
        'succeeded',
        {
          result: out.result,
          ...(out.backup ? { backup: out.backup } : {}),
          ...(out.dump ? { dump: out.dump } : {}),
          events: kind.events(job, 'succeeded', out.details, now),
        },
        now,
      );
      if (outcome.changed) await kind.onSucceeded?.(ctx, job, result.result, jlog);
      break;
    }
    case JobState.FAILED: {
      const error = {
        code: result.error?.code || ErrorCodes.JobFailed.code,
        message: result.error?.message || 'the agent reported the job as failed without a reason',
      };
      // A drill that ran but did not pass reports its DrillResult (stage, reasons) with the failure, a check its items.
      const kept = failedOutcome(result.result);
      outcome = await ctx.store.transitionJob(
        job.id,
        'failed',
        {
          error,
          ...(kept.result ? { result: kept.result } : {}),
          events: kind.events(job, 'failed', { error, ...kept.details }, now),
        },
        now,
      );
      break;
    }
    case JobState.CANCELLED: {
      const error = { code: ErrorCodes.JobCancelled.code, message: result.error?.message || 'cancelled' };
      outcome = await ctx.store.transitionJob(
        job.id,
        'cancelled',
        { error, events: kind.events(job, 'cancelled', { error }, now) },
        now,
      );
      break;
    }
    default:
      throw new PgfleetError(
        'InvalidArgument',
        `JobResult for ${job.id} has the non-final state ${JobState[result.state] ?? result.state}`,
      );
  }
  if (outcome.changed) {
    eventsCommitted(ctx);
    jlog.info({ state: outcome.job.state, error: outcome.job.error ?? undefined }, 'job finished');
    ctx.watchers.publish(outcome.job);
    // A drill on another agent waits for this source capture.
    await kind.onFinished?.(ctx, typedJob(outcome.job), result.result);
  }
}
