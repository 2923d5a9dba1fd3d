/**
 * AdminService: the controller's API for the `pgfleet` CLI. Reads come from the catalog; starting
 * a job is its kind's (jobs/<kind>.ts), which records it, sends it on the chosen agent's stream
 * and marks it dispatched, so a job is always in the catalog before any agent can report on it.
 * Policies, retention and pins are in policy.ts.
 */
import type { MessageInitShape } from '@bufbuild/protobuf';
import { timestampDate } from '@bufbuild/protobuf/wkt';
import { ErrorCodes, PgfleetError } from '@pgfleet/core';
import { isTerminalJobState, type BackupRecord, type JobRecord } from '@pgfleet/catalog';
import type { CallContext, ServiceImpl } from '@pgfleet/rpc';
import {
  backupResumeFromProto,
  BackupType,
  type AdminService,
  type BackupResumeName,
  type JobInfoSchema,
  type ListBackupsResponseSchema,
  type StartBackupRequest,
} from '@pgfleet/proto';
import { backupFromProto, backupInfoFromRecord, backupKindFromProto, jobInfoFromRecord } from '../wire.js';
import { eventsCommitted, publishJobs, type ControllerContext } from '../context.js';
import { jobEvents } from '../jobs/registry.js';
import { applyRetention, getPolicy, pinBackup, planRetention, setPolicy } from './policy.js';
import { requireCluster } from '../jobs/dispatch.js';
import { agentSession, listControllerInfo } from '../agents/peers.js';
import { startBackupJob } from '../jobs/backup.js';
import { startCheckJob } from '../jobs/check.js';
import { startBackupDeleteJob } from '../jobs/expire.js';
import { startInfoJob, startRestorePointsJob } from '../jobs/info.js';
import { startRotateKeyJob } from '../jobs/rotate-key.js';
import { startRecoverTableJob } from '../jobs/recover-table.js';
import { startWalSearchJob } from '../jobs/wal-search.js';
import { listDumps, startDumpJob, startRestoreDumpJob } from '../jobs/dump.js';
import { drillRequestFromProto, startDrillJob } from '../jobs/drill.js';
import { startRestoreJob } from '../jobs/restore.js';
import { startVerifyJob } from '../jobs/verify.js';
import { listEvents, watchEvents } from './events.js';
import { listDrills } from '../drill/drills.js';
import { listClusterStatusPage } from '../health/status.js';
import { decodePageToken, encodePageToken, pageSizeOf } from './paging.js';
import { clusterHistory } from '../health/history.js';
import { applyFleet } from './fleet-apply.js';
import { createEnrollmentTokenRpc, createTokenRpc, listTokensRpc, revokeTokenRpc } from './tokens.js';

const DEFAULT_JOB_LIMIT = 50;

export function createAdminService(ctx: ControllerContext): ServiceImpl<typeof AdminService> {
  return {
    listClusters: async (req) => listClusterStatusPage(ctx, req),
    listControllers: () => listControllerInfo(ctx),

    listBackups: async (req) => {
      await requireCluster(ctx, req.cluster);
      return listBackupsPage(await ctx.store.listBackups(req.cluster), req);
    },

    startBackup: async (req) => ({ job: await startBackup(ctx, req) }),

    startRestore: async (req) => ({ job: await startRestoreJob(ctx, req) }),

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
    getClusterHistory: async (req) => {
      await requireCluster(ctx, req.cluster);
      return clusterHistory(
        ctx.store,
        req.cluster,
        req.since ? timestampDate(req.since).getTime() : undefined,
        ctx.now(),
      );
    },
    startCheck: async (req) => ({ job: await startCheckJob(ctx, req.cluster, req.timeoutSeconds) }),
    deleteBackup: async (req) => startBackupDeleteJob(ctx, req.cluster, req.label, req.withDependents),
    startInfo: async (req) => ({ job: await startInfoJob(ctx, req.cluster) }),
    startRestorePoints: async (req) => ({
      job: await startRestorePointsJob(ctx, req.cluster, req.since ? timestampDate(req.since) : undefined),
    }),
    startRotateKey: async (req) => ({ job: await startRotateKeyJob(ctx, req.cluster) }),
    startRecoverTable: async (req) => ({ job: await startRecoverTableJob(ctx, req) }),
    startWalSearch: async (req) => ({ job: await startWalSearchJob(ctx, req.cluster, req.search) }),
    startDump: async (req) => ({ job: await startDumpJob(ctx, req.cluster, req.dump) }),
    listDumps: async (req) => ({ dumps: await listDumps(ctx, req.cluster) }),
    startRestoreDump: async (req) => ({ job: await startRestoreDumpJob(ctx, req) }),
    createEnrollmentToken: async (req) => createEnrollmentTokenRpc(ctx, req),
    createToken: async (req) => createTokenRpc(ctx, req),
    listTokens: async () => listTokensRpc(ctx),
    revokeToken: async (req) => revokeTokenRpc(ctx, req),
  };
}

/**
 * One page of a cluster's backups, oldest first (the catalog's order): the token names the last
 * backup returned and its stop time, so a listing goes on after it even when that backup was
 * deleted (expired) between two pages. Paged from the cluster's backup rows (one query, no status
 * computation behind it), so no snapshot is kept.
 */
export function listBackupsPage(
  backups: readonly BackupRecord[],
  req: { pageSize: number; pageToken: string },
): MessageInitShape<typeof ListBackupsResponseSchema> {
  const size = pageSizeOf(req.pageSize);
  const token = decodePageToken(req.pageToken);
  let start = 0;
  if (token) {
    const at = backups.findIndex((b) => b.label === token.after);
    start = at >= 0 ? at + 1 : backups.findIndex((b) => b.stopTime > (token.time ?? 0));
    if (start < 0) start = backups.length;
  }
  const page = backups.slice(start, start + size);
  const more = start + size < backups.length;
  return {
    backups: page.map(backupInfoFromRecord),
    nextPageToken: more ? encodePageToken({ after: page.at(-1)!.label, time: page.at(-1)!.stopTime }) : '',
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
  // The agent's stream may be held by another controller sharing the catalog: the cancel goes through it.
  const session = job.state === 'queued' ? undefined : await agentSession(ctx, job.cluster, job.agentId);
  if (session) {
    await session.send({ msg: { case: 'cancel', value: { jobId: id } } });
    ctx.logger.info(
      { jobId: id, agentId: job.agentId, ...(session.heldBy ? { via: session.heldBy } : {}) },
      'cancel sent to the agent',
    );
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

/** What a watcher sees of a job did not change (its state, progress and end). */
function sameJobView(a: JobRecord, b: JobRecord): boolean {
  return (
    a.state === b.state && a.finishedAt === b.finishedAt && JSON.stringify(a.progress) === JSON.stringify(b.progress)
  );
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
    resumeParams(backupResumeFromProto(req.resume)),
    backupFromProto(req.from),
  );
}

/** A job's params record the resume mode only when it is not the default. */
function resumeParams(resume: BackupResumeName | undefined): { resume?: BackupResumeName } {
  return resume ? { resume } : {};
}

/**
 * How often a watch reads the job from the catalog as well: the agent's stream may be held by
 * another controller sharing the catalog, whose changes this one's watchers never hear of.
 */
const WATCH_POLL_MS = 1_000;

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
      const next = await subscription.next(AbortSignal.any([call.signal, AbortSignal.timeout(WATCH_POLL_MS)]));
      if (call.signal.aborted) return;
      if (next) job = next;
      else {
        const read = await requireJob(ctx, id);
        if (sameJobView(read, job)) continue;
        job = read;
      }
      yield { job: jobInfoFromRecord(job) };
    }
  } finally {
    subscription.close();
  }
}
