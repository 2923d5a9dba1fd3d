/**
 * Backup jobs on the controller: starting one (one backup or expire per cluster at a time, on
 * the host backup_from picks), recording the BackupInfo the agent reports as the catalog's
 * backup row, and the backup.started/completed/failed events.
 *
 * A backup row comes from a manifest by one route whichever way it arrives: the agent reports
 * backupInfoFromManifest (proto) and the controller records backupRecordFromInfo; the catalog
 * rebuild reads the manifest and goes through both functions itself (backupRecordFromManifest).
 */
import { create, type MessageInitShape } from '@bufbuild/protobuf';
import { ErrorCodes, newJobId } from '@pgfleet/core';
import type { BackupFrom, BackupKind, BackupRecord, LeadershipFence, ScheduleRunRecord } from '@pgfleet/catalog';
import {
  BackupInfoSchema,
  backupInfoFromManifest,
  backupResumeToProto,
  backupTypeToProto,
  type BackupInfo,
  type BackupResumeName,
  type JobInfoSchema,
} from '@pgfleet/proto';
import type { BackupManifest, CountedManifestHead } from '@pgfleet/storage';
import type { ControllerContext } from '../context.js';
import { loadClusterPolicy } from '../schedule/policy.js';
import { backupInfoFromRecord, backupRecordFromInfo, resultJson } from '../wire.js';
import { clusterAgent, dispatch, requireCluster, sentFromHere } from './dispatch.js';
import { errorDetail, jobDurationSeconds, outboxEvent } from './events.js';
import type { ControllerJobKind } from './job-kind.js';
import { admitReportedBackup } from './backup-admission.js';
import { jobOfKind, type NewTypedJob } from './params.js';

/** The kinds that run one at a time per cluster: a backup and an expire never overlap (labels, WAL waits, expiry). */
export const ONE_AT_A_TIME_KINDS = ['backup', 'expire'] as const;

/** The catalog row a manifest stands for (a catalog row is a summary of its manifest). */
export function backupRecordFromManifest(m: BackupManifest | CountedManifestHead, jobId = ''): BackupRecord {
  return backupRecordFromInfo(create(BackupInfoSchema, backupInfoFromManifest(m, jobId)), m.cluster, jobId);
}

/** The catalog row an agent's BackupInfo claims, for the job's own cluster whatever the message says. */
function reportedRecord(job: { id: string; cluster: string }, info: BackupInfo): BackupRecord {
  // The job id too: a report may not attribute its backup to another job.
  return { ...backupRecordFromInfo(info, job.cluster, job.id), jobId: job.id };
}

export const backupJob: ControllerJobKind<'backup'> = {
  events(job, to, details, now) {
    const type = backupTypeToProto(job.params.type);
    const scheduled = job.params.scheduledAt !== undefined;
    const durationSeconds = jobDurationSeconds(job, now);
    if (to === 'dispatched')
      return [outboxEvent(job.cluster, { case: 'backupStarted', value: { jobId: job.id, type, scheduled } }, now)];
    if (to === 'succeeded' && details.backup) {
      return [
        outboxEvent(
          job.cluster,
          {
            case: 'backupCompleted',
            value: { jobId: job.id, backup: backupInfoFromRecord(details.backup), durationSeconds },
          },
          now,
        ),
      ];
    }
    if (to === 'failed' || to === 'cancelled') {
      return [
        outboxEvent(
          job.cluster,
          {
            case: 'backupFailed',
            value: { jobId: job.id, type, scheduled, durationSeconds, error: errorDetail(details.error) },
          },
          now,
        ),
      ];
    }
    return [];
  },

  succeeded(job, result) {
    if (result.case !== 'backup')
      return {
        error: { code: ErrorCodes.Internal.code, message: 'the agent reported success without the backup it made' },
      };
    const backup = reportedRecord(job, result.value);
    // The job's result repeats the catalog row (cluster and job id filled in), not the agent's raw message.
    return { result: resultJson({ backup: backupInfoFromRecord(backup) }), backup, details: { backup } };
  },

  async admit(ctx, job, result) {
    if (result.case !== 'backup') return undefined; // succeeded() fails it
    return admitReportedBackup(ctx, job, reportedRecord(job, result.value), backupRecordFromManifest);
  },

  onSucceeded(ctx, job) {
    // A new backup can make older ones expirable; the scheduler looks at the cluster next tick.
    ctx.retentionDue.add(job.cluster);
    return Promise.resolve();
  },

  async lateSuccess(ctx, job, result, log) {
    if (result.case !== 'backup') return false;
    // A backup that finished after its job was failed (its agent came back after the reclaim
    // grace): the job's outcome stands, but the repository holds the backup, so the catalog must
    // list it too (retention would otherwise never expire it).
    const backup = reportedRecord(job, result.value);
    const refused = await admitReportedBackup(ctx, job, backup, backupRecordFromManifest);
    if (refused) {
      log.warn({ code: refused.code, state: job.state }, `late result refused: ${refused.message}`);
      return true;
    }
    if (!(await ctx.store.getBackup(job.cluster, backup.label))) {
      await ctx.store.insertBackup(backup);
      log.warn(
        { label: backup.label, state: job.state },
        'late result: the backup is recorded, the job stays as it ended',
      );
    }
    return true;
  },
};

/**
 * Starts a backup of the cluster. `from` picks the host (primary, standby, prefer-standby);
 * without it the cluster's policy decides (backup_from, default primary). `scheduledAt` is the
 * fire time a scheduled backup stands for; `runs`, the schedule runs it records, created with the
 * job in one transaction (store.createJobIfIdle).
 */
export async function startBackupJob(
  ctx: ControllerContext,
  cluster: string,
  kind: BackupKind,
  params: { scheduledAt?: string; resume?: BackupResumeName } = {},
  from?: BackupFrom,
  fence?: LeadershipFence,
  runs?: readonly ScheduleRunRecord[],
): Promise<MessageInitShape<typeof JobInfoSchema>> {
  await requireCluster(ctx, cluster);
  const source = from ?? (await loadClusterPolicy(ctx.store, cluster)).effective.backupFrom;
  const session = await clusterAgent(ctx, cluster, source);
  // `from` is recorded when it is not the primary (jobs without it ran on the primary, as before HA clusters).
  const created: NewTypedJob<'backup'> = {
    id: newJobId(),
    cluster,
    kind: 'backup',
    agentId: session.agentId,
    params: { type: kind, ...(source !== 'primary' ? { from: source } : {}), ...params },
  };
  // One backup (or expire) per cluster at a time, checked and created in one catalog transaction;
  // a scheduled one only while its scheduler still leads (`fence`: a paused ex-leader fires nothing).
  const job = jobOfKind(
    'backup',
    await ctx.store.createJobIfIdle(cluster, ONE_AT_A_TIME_KINDS, sentFromHere(ctx, created), ctx.now(), fence, runs),
  );
  // The agent names the backup from its start time (see backupLabel in core).
  return dispatch(
    ctx,
    session,
    job,
    { case: 'backup', value: { type: backupTypeToProto(kind), label: '', resume: backupResumeToProto(params.resume) } },
    backupJob,
  );
}
