/**
 * Restore jobs on the controller: choosing the backup and the agent for a StartRestore request,
 * recording the RestoreResult, and the restore.completed/failed events.
 */
import { isAbsolute } from 'node:path/posix';
import type { MessageInitShape } from '@bufbuild/protobuf';
import { PgfleetError, newJobId } from '@pgfleet/core';
import type { JobRecord, JobStateName, OutboxEventInput } from '@pgfleet/catalog';
import {
  RestoreArchive,
  type JobInfoSchema,
  type RecoveredTable,
  type RecoveryTarget,
  type StartRestoreRequest,
} from '@pgfleet/proto';
import type { AgentSession } from '../agents/sessions.js';
import { agentSession } from '../agents/peers.js';
import type { ControllerContext } from '../context.js';
import { chooseBackup } from '../restore/pitr.js';
import { pitrTargetFromProto, recoveryTargetFromJson, recoveryTargetJson, resultJson } from '../wire.js';
import { clusterAgent, dispatch, liveTimeline, requireCluster, sentFromHere } from './dispatch.js';
import { errorDetail, jobDurationSeconds, outboxEvent, type JobOutcomeDetails } from './events.js';
import type { ControllerJobKind } from './job-kind.js';

import { jobOfKind, type NewTypedJob } from './params.js';

/**
 * restore.completed / restore.failed for a job that restores (a restore, a recover-table): what
 * ended, from which backup, into where; `completed` adds what the kind has to say on success.
 */
export function restoreOutcomeEvents(
  job: Pick<JobRecord, 'id' | 'cluster' | 'startedAt' | 'createdAt'>,
  to: JobStateName,
  d: {
    backupLabel: string;
    targetDir: string;
    error: JobOutcomeDetails['error'];
    /** What a finished job adds: bytes restored, and (recover-table) the target, the database and its tables. */
    completed: {
      restoredBytes: bigint;
      target?: RecoveryTarget;
      database?: string;
      recoveredTables?: RecoveredTable[];
    };
  },
  now: number,
): OutboxEventInput[] {
  const common = {
    jobId: job.id,
    backupLabel: d.backupLabel,
    targetDir: d.targetDir,
    durationSeconds: jobDurationSeconds(job, now),
  };
  if (to === 'succeeded')
    return [outboxEvent(job.cluster, { case: 'restoreCompleted', value: { ...common, ...d.completed } }, now)];
  if (to === 'failed' || to === 'cancelled')
    return [
      outboxEvent(job.cluster, { case: 'restoreFailed', value: { ...common, error: errorDetail(d.error) } }, now),
    ];
  return [];
}

export const restoreJob: ControllerJobKind<'restore'> = {
  events(job, to, details, now) {
    const p = job.params;
    const ok = to === 'succeeded';
    const target = recoveryTargetFromJson(p.target);
    return restoreOutcomeEvents(
      job,
      to,
      {
        // A failed restore names what it was asked for; a finished one what it did.
        backupLabel: (ok && details.restore?.backupLabel) || p.backupLabel,
        targetDir: (ok && details.restore?.targetDir) || p.targetDir,
        error: details.error,
        // The target too (--before-xid, --target-time, ...): a consumer sees to what the cluster went back.
        completed: { ...(target ? { target } : {}), restoredBytes: details.restore?.bytes ?? 0n },
      },
      now,
    );
  },

  succeeded(_job, result) {
    const restore = result.case === 'restore' ? result.value : undefined;
    return { result: resultJson({ restore }), details: restore ? { restore } : {} };
  },
};

export async function startRestoreJob(
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
    // Only the cluster's own agents: another cluster's agent holds none of its repository rights.
    const chosen = await agentSession(ctx, req.cluster, req.agentId);
    if (!chosen)
      throw new PgfleetError(
        'AgentNotConnected',
        `agent '${req.agentId}' of cluster '${req.cluster}' is not connected`,
      );
    session = chosen;
  } else {
    // A restore reads the repository and writes a new directory: any host's agent can (the primary's first).
    session = await clusterAgent(ctx, req.cluster, 'any');
  }
  const recoveryTarget = req.target!;
  const created: NewTypedJob<'restore'> = {
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
        ? { archive: req.archive === RestoreArchive.PRESERVE ? ('preserve' as const) : ('off' as const) }
        : {}),
    },
  };
  const job = jobOfKind('restore', await ctx.store.createJob(sentFromHere(ctx, created), ctx.now()));
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
  return dispatch(ctx, session, job, { case: 'restore', value }, restoreJob);
}
