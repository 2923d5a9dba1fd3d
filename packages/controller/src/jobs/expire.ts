/**
 * Expire jobs on the controller: sending a retention plan to the cluster's agent (one backup or
 * expire per cluster at a time), removing the catalog rows of what the agent reports deleted,
 * and the retention.expired event. The plan itself is retention/'s.
 */
import type { MessageInitShape } from '@bufbuild/protobuf';
import { newJobId, parseBackupLabel, PgfleetError } from '@pgfleet/core';
import type { BackupRecord, LeadershipFence } from '@pgfleet/catalog';
import type { ExpireResult, JobInfoSchema } from '@pgfleet/proto';
import type { ControllerContext } from '../context.js';
import { expireParams, type ClusterRetention } from '../retention/jobs.js';
import { resultJson } from '../wire.js';
import { ONE_AT_A_TIME_KINDS } from './backup.js';
import { clusterAgent, dispatch, requireCluster, sentFromHere } from './dispatch.js';
import { outboxEvent } from './events.js';
import type { ControllerJobKind } from './job-kind.js';
import { jobOfKind, type NewTypedJob, type TypedJob } from './params.js';

/** Of the labels the agent deleted, those the job asked for: a confused agent can never make the catalog forget a backup it was told to keep. */
function askedAndDeleted(job: TypedJob<'expire'>, result: ExpireResult): string[] {
  const asked = new Set(job.params.labels);
  return result.deletedLabels.filter((l) => asked.has(l));
}

/** The same for dumps (ExpireJob.dump_labels). */
function dumpsAskedAndDeleted(job: TypedJob<'expire'>, result: ExpireResult): string[] {
  const asked = new Set(job.params.dumpLabels ?? []);
  return result.deletedDumpLabels.filter((l) => asked.has(l));
}

/**
 * After an expire job succeeded: the backups the agent deleted leave the catalog. Only those it
 * reports (it skips a backup a kept one still reads from), and only labels the job was asked to
 * delete.
 */
export async function recordExpired(
  ctx: ControllerContext,
  job: TypedJob<'expire'>,
  result: ExpireResult,
): Promise<number> {
  const labels = askedAndDeleted(job, result);
  const n = labels.length ? await ctx.store.deleteBackups(job.cluster, labels) : 0;
  // Dumps stay as rows marked expired: `pgfleet dumps` and restore-dump no longer see them.
  const dumps = dumpsAskedAndDeleted(job, result);
  if (dumps.length) await ctx.store.markDumpsExpired(job.cluster, dumps, ctx.now());
  ctx.logger.info(
    {
      jobId: job.id,
      cluster: job.cluster,
      deleted: labels,
      skipped: result.skippedLabels,
      dumps,
      walFiles: result.walFilesDeleted,
    },
    'expired backups removed from the catalog',
  );
  return n;
}

export const expireJob: ControllerJobKind<'expire'> = {
  events(job, to, details, now) {
    if (to !== 'succeeded' || !details.expire) return [];
    const e = details.expire;
    return [
      outboxEvent(
        job.cluster,
        {
          case: 'retentionExpired',
          value: {
            jobId: job.id,
            expiredBackupLabels: [...(details.expiredLabels ?? e.deletedLabels)],
            expiredDumpLabels: [...(details.expiredDumpLabels ?? e.deletedDumpLabels)],
            walSegmentsRemoved: BigInt(e.walFilesDeleted),
            freedBytes: e.backupBytesDeleted + e.walBytesDeleted,
            ...(e.walLastDeleted ? { walExpiredBefore: e.walLastDeleted } : {}),
          },
        },
        now,
      ),
    ];
  },

  succeeded(job, result) {
    const expire = result.case === 'expire' ? result.value : undefined;
    return {
      result: resultJson({ expire }),
      details: expire
        ? { expire, expiredLabels: askedAndDeleted(job, expire), expiredDumpLabels: dumpsAskedAndDeleted(job, expire) }
        : {},
    };
  },

  async onSucceeded(ctx, job, result) {
    if (result.case === 'expire') await recordExpired(ctx, job, result.value);
  },

  async lateSuccess(ctx, job, result, log) {
    if (result.case !== 'expire' || job.state === 'succeeded') return false;
    // An expire that went through after its job was failed: those backups are gone from the
    // repository, so they must leave the catalog (a restore must never pick them).
    const n = await recordExpired(ctx, job, result.value);
    log.warn(
      { state: job.state, removed: n },
      'late result: expired backups removed from the catalog, the job stays as it ended',
    );
    return true;
  },
};

/**
 * Dispatches an expire job for the plan to the cluster's connected agent; BackupInProgress when
 * the cluster has a backup or expire running (checked and created in one catalog transaction).
 */
export async function startExpireJob(
  ctx: ControllerContext,
  r: ClusterRetention,
  reason: string,
  fence?: LeadershipFence,
): Promise<MessageInitShape<typeof JobInfoSchema>> {
  // Expiring only touches the repository: any host's agent can.
  const session = await clusterAgent(ctx, r.cluster, 'any');
  const params = expireParams(r.plan, reason, r.dumpPlan.expire);
  const created: NewTypedJob<'expire'> = {
    id: newJobId(),
    cluster: r.cluster,
    kind: 'expire',
    agentId: session.agentId,
    params,
  };
  // A scheduled expire only while its scheduler still leads (`fence`: a paused ex-leader starts none).
  const job = jobOfKind(
    'expire',
    await ctx.store.createJobIfIdle(r.cluster, ONE_AT_A_TIME_KINDS, sentFromHere(ctx, created), ctx.now(), fence),
  );
  return dispatch(
    ctx,
    session,
    job,
    {
      case: 'expire',
      value: {
        cluster: r.cluster,
        labels: params.labels,
        dumpLabels: params.dumpLabels ?? [],
        walKeepFrom: params.walKeepFrom,
        keepRanges: params.keepRanges.map((k) => ({
          label: k.label,
          timeline: k.timeline,
          walStart: k.walStart,
          walStop: k.walStop,
        })),
      },
    },
    expireJob,
  );
}

/**
 * The backups that depend on `label`: every diff/incr built on it, directly or through another
 * (the catalog's prior labels; the agent checks again against the manifests before deleting).
 */
function dependentsOf(label: string, backups: readonly BackupRecord[]): BackupRecord[] {
  const children = new Map<string, BackupRecord[]>();
  for (const b of backups) if (b.priorLabel) children.set(b.priorLabel, [...(children.get(b.priorLabel) ?? []), b]);
  const out: BackupRecord[] = [];
  const seen = new Set([label]);
  for (let next = 0, at: string | undefined = label; at !== undefined; at = out[next++]?.label) {
    for (const c of children.get(at) ?? []) {
      if (seen.has(c.label)) continue;
      seen.add(c.label);
      out.push(c);
    }
  }
  return out;
}

/**
 * `pgfleet backup delete <cluster> <label> [--with-dependents]`: an expire job deleting exactly
 * that backup (and its dependents with `withDependents`), newest first, WAL untouched. Refused
 * here for a backup others depend on (BackupHasDependents, without `withDependents`) and for
 * pinned ones (BackupPinned); the agent refuses what the repository says others depend on or a
 * backup in progress references (ExpireJob.exact). One backup or expire per cluster at a time.
 */
export async function startBackupDeleteJob(
  ctx: ControllerContext,
  cluster: string,
  label: string,
  withDependents: boolean,
): Promise<{ job: MessageInitShape<typeof JobInfoSchema>; labels: string[] }> {
  await requireCluster(ctx, cluster);
  parseBackupLabel(label, 'backup label');
  const backups = await ctx.store.listBackups(cluster);
  const backup = backups.find((b) => b.label === label);
  if (!backup)
    throw new PgfleetError(
      'UnknownBackup',
      `cluster ${cluster} has no backup ${label} (see pgfleet backups ${cluster})`,
    );
  const dependents = dependentsOf(label, backups);
  if (dependents.length > 0 && !withDependents)
    throw new PgfleetError(
      'BackupHasDependents',
      `backup ${label} of cluster ${cluster} has ${dependents.length} dependent backup(s) that read files from it: ${dependents.map((d) => d.label).join(', ')}; nothing was deleted`,
    );
  const doomed = [backup, ...dependents].sort((a, b) => b.stopTime - a.stopTime);
  const pinned = doomed.filter((b) => b.pinned === true);
  if (pinned.length > 0)
    throw new PgfleetError(
      'BackupPinned',
      `backup ${pinned.map((b) => b.label).join(', ')} of cluster ${cluster} is pinned${pinned[0]!.label === label ? '' : ` and depends on ${label}`}; nothing was deleted`,
    );
  const labels = doomed.map((b) => b.label);
  const session = await clusterAgent(ctx, cluster, 'any');
  const params = { labels, walKeepFrom: '', keepRanges: [], reason: 'backup delete', exact: true };
  const created: NewTypedJob<'expire'> = { id: newJobId(), cluster, kind: 'expire', agentId: session.agentId, params };
  const job = jobOfKind(
    'expire',
    await ctx.store.createJobIfIdle(cluster, ONE_AT_A_TIME_KINDS, sentFromHere(ctx, created), ctx.now()),
  );
  ctx.logger.info({ jobId: job.id, cluster, labels }, 'backup delete requested');
  return {
    job: await dispatch(ctx, session, job, { case: 'expire', value: { cluster, labels, exact: true } }, expireJob),
    labels,
  };
}
