/**
 * AdminService: the controller's API for the `pgfleet` CLI. Reads come from the catalog; starting
 * a backup or restore records a job, sends it on the chosen agent's stream and marks it
 * dispatched (dispatch.ts), so a job is always in the catalog before any agent can report on it.
 * Policies, retention and pins are in admin-policy.ts.
 */
import { isAbsolute } from 'node:path/posix';
import type { MessageInitShape } from '@bufbuild/protobuf';
import { ErrorCodes, PgfleetError, newJobId } from '@pgfleet/core';
import { isTerminalJobState, type JobRecord } from '@pgfleet/catalog';
import type { CallContext, ServiceImpl } from '@pgfleet/rpc';
import {
  BackupType,
  RestoreArchive,
  type AdminService,
  type JobInfoSchema,
  type StartBackupRequest,
  type StartRestoreRequest,
} from '@pgfleet/proto';
import type { AgentSession } from '../agents/sessions.js';
import {
  backupFromProto,
  backupInfoFromRecord,
  backupKindFromProto,
  jobInfoFromRecord,
  pitrTargetFromProto,
  recoveryTargetJson,
} from '../wire.js';
import { eventsCommitted, publishJobs, type ControllerContext } from '../context.js';
import { jobEvents } from '../jobs/events.js';
import { chooseBackup } from '../restore/pitr.js';
import { applyRetention, getPolicy, pinBackup, planRetention, setPolicy } from './policy.js';
import {
  clusterAgent,
  dispatch,
  liveTimeline,
  requireCluster,
  startBackupJob,
  startCheckJob,
  startVerifyJob,
} from '../jobs/dispatch.js';
import { listEvents, watchEvents } from './events.js';
import { drillRequestFromProto, listDrills, startDrillJob } from '../drill/drills.js';
import { listClusterStatus } from '../health/status.js';
import { applyFleet } from './fleet-apply.js';
import { createEnrollmentTokenRpc, createTokenRpc, listTokensRpc, revokeTokenRpc } from './tokens.js';

const DEFAULT_JOB_LIMIT = 50;

export function createAdminService(ctx: ControllerContext): ServiceImpl<typeof AdminService> {
  return {
    listClusters: async () => ({ clusters: await listClusterStatus(ctx) }),

    listBackups: async (req) => {
      await requireCluster(ctx, req.cluster);
      return { backups: (await ctx.store.listBackups(req.cluster)).map(backupInfoFromRecord) };
    },

    startBackup: async (req) => ({ job: await startBackup(ctx, req) }),

    startRestore: async (req) => ({ job: await startRestore(ctx, req) }),

    getJob: async (req) => ({ job: jobInfoFromRecord(await requireJob(ctx, req.id)) }),

    listJobs: async (req) => {
      if (req.cluster) await requireCluster(ctx, req.cluster);
      const jobs = await ctx.store.listJobs({
        ...(req.cluster ? { cluster: req.cluster } : {}),
        limit: req.limit || DEFAULT_JOB_LIMIT,
      });
      return { jobs: jobs.map(jobInfoFromRecord) };
    },

    cancelJob: async (req) => ({ job: await cancelJob(ctx, req.id) }),

    watchJob: (req, call) => watchJob(ctx, req.id, call),

    getPolicy: async (req) => getPolicy(ctx, req.cluster),
    setPolicy: async (req) => setPolicy(ctx, req),
    planRetention: async (req) => planRetention(ctx, req.cluster),
    applyRetention: async (req) => applyRetention(ctx, req.cluster),
    pinBackup: async (req) => pinBackup(ctx, req.cluster, req.label, req.pinned),
    listEvents: async (req) => listEvents(ctx, req),
    watchEvents: (req, call) => watchEvents(ctx, req, call),
    startVerify: async (req) => ({ job: await startVerifyJob(ctx, req.cluster, req.full) }),
    applyFleet: async (req) => applyFleet(ctx, req),
    startDrill: async (req) => ({ job: await startDrillJob(ctx, drillRequestFromProto(req)) }),
    listDrills: async (req) => listDrills(ctx, req),
    startCheck: async (req) => ({ job: await startCheckJob(ctx, req.cluster, req.timeoutSeconds) }),
    createEnrollmentToken: async (req) => createEnrollmentTokenRpc(ctx, req),
    createToken: async (req) => createTokenRpc(ctx, req),
    listTokens: async () => listTokensRpc(ctx),
    revokeToken: async (req) => revokeTokenRpc(ctx, req),
  };
}

/**
 * A queued job is cancelled here; a dispatched or running one is cancelled by its agent (which
 * removes what it wrote and reports CANCELLED). An agent that is not connected cannot be told: the
 * job is cancelled in the catalog, and the agent's late result for it changes nothing.
 */
async function cancelJob(ctx: ControllerContext, id: string): Promise<MessageInitShape<typeof JobInfoSchema>> {
  const job = await requireJob(ctx, id);
  if (isTerminalJobState(job.state)) {
    throw new PgfleetError('JobStateConflict', `job ${id} already ended (${job.state}); there is nothing to cancel`);
  }
  const session = ctx.sessions.get(job.agentId);
  if (job.state !== 'queued' && session) {
    session.send({ msg: { case: 'cancel', value: { jobId: id } } });
    ctx.logger.info({ jobId: id, agentId: job.agentId }, 'cancel sent to the agent');
    return jobInfoFromRecord(job);
  }
  const error = {
    code: ErrorCodes.JobCancelled.code,
    message:
      job.state === 'queued'
        ? 'cancelled before it was sent'
        : `cancelled while agent ${job.agentId} was not connected`,
  };
  const now = ctx.now();
  const { job: cancelled } = await ctx.store.transitionJob(
    id,
    'cancelled',
    { error, events: jobEvents(job, 'cancelled', { error }, now) },
    now,
  );
  eventsCommitted(ctx);
  publishJobs(ctx, [cancelled]);
  return jobInfoFromRecord(cancelled);
}

async function requireJob(ctx: ControllerContext, id: string): Promise<JobRecord> {
  if (!id) throw new PgfleetError('InvalidArgument', 'a job id is required');
  const job = await ctx.store.getJob(id);
  if (!job) throw new PgfleetError('UnknownJob', `job '${id}' does not exist`);
  return job;
}

async function startBackup(
  ctx: ControllerContext,
  req: StartBackupRequest,
): Promise<MessageInitShape<typeof JobInfoSchema>> {
  return startBackupJob(
    ctx,
    req.cluster,
    backupKindFromProto(req.type === BackupType.UNSPECIFIED ? BackupType.FULL : req.type),
    {},
    backupFromProto(req.from),
  );
}

async function startRestore(
  ctx: ControllerContext,
  req: StartRestoreRequest,
): Promise<MessageInitShape<typeof JobInfoSchema>> {
  await requireCluster(ctx, req.cluster);
  if (!req.targetDir)
    throw new PgfleetError('InvalidArgument', 'target_dir is required: the directory the agent restores into');
  if (!isAbsolute(req.targetDir))
    throw new PgfleetError('InvalidArgument', `target_dir '${req.targetDir}' is not an absolute path`);
  if (req.tablespaceDir && !isAbsolute(req.tablespaceDir))
    throw new PgfleetError('InvalidArgument', `tablespace_dir '${req.tablespaceDir}' is not an absolute path`);
  const target = pitrTargetFromProto(req.target);
  const backupLabel = chooseBackup(await ctx.store.listBackups(req.cluster), target, ctx.now(), req.backupLabel);

  let session: AgentSession;
  if (req.agentId) {
    const chosen = ctx.sessions.get(req.agentId);
    if (!chosen) throw new PgfleetError('AgentNotConnected', `agent '${req.agentId}' is not connected`);
    session = chosen;
  } else {
    // A restore reads the repository and writes a new directory: any host's agent can (the primary's first).
    session = await clusterAgent(ctx, req.cluster, 'any');
  }
  const recoveryTarget = req.target!;
  const job = await ctx.store.createJob(
    {
      id: newJobId(),
      cluster: req.cluster,
      kind: 'restore',
      agentId: session.agentId,
      params: {
        targetDir: req.targetDir,
        backupLabel,
        target: recoveryTargetJson(recoveryTarget),
        ...(req.delta ? { delta: true } : {}),
        ...(req.tablespaceDir ? { tablespaceDir: req.tablespaceDir } : {}),
        ...(req.targetTimeline ? { targetTimeline: req.targetTimeline } : {}),
        ...(req.archive !== RestoreArchive.UNSPECIFIED
          ? { archive: req.archive === RestoreArchive.PRESERVE ? 'preserve' : 'off' }
          : {}),
      },
    },
    ctx.now(),
  );
  // The agent checks the directory: empty or new, or (delta) a stopped data directory of the cluster.
  // The catalog knows no timeline histories: a label it picked is a hint the agent may replace with a backup of the target timeline's lineage.
  const value = {
    cluster: req.cluster,
    backupLabel,
    backupLabelIsHint: req.backupLabel === '',
    targetDir: req.targetDir,
    target: recoveryTarget,
    delta: req.delta,
    tablespaceDir: req.tablespaceDir,
    targetTimeline: req.targetTimeline,
    archive: req.archive,
    currentTimeline: await liveTimeline(ctx, req.cluster),
  };
  return dispatch(ctx, session, job, { case: 'restore', value });
}

/** Streams the job on every change until it is final: the final state is always sent, then the stream ends. */
async function* watchJob(
  ctx: ControllerContext,
  id: string,
  call: CallContext,
): AsyncGenerator<{ job: MessageInitShape<typeof JobInfoSchema> }> {
  if (!id) throw new PgfleetError('InvalidArgument', 'a job id is required');
  // Subscribe before reading, so a change between the read and the subscription is not missed.
  const subscription = ctx.watchers.subscribe(id);
  try {
    let job = await requireJob(ctx, id);
    yield { job: jobInfoFromRecord(job) };
    while (!isTerminalJobState(job.state)) {
      const next = await subscription.next(call.signal);
      if (!next) return;
      job = next;
      yield { job: jobInfoFromRecord(job) };
    }
  } finally {
    subscription.close();
  }
}
