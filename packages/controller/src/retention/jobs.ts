/**
 * Retention in the controller: load a cluster's effective policy and backups from the catalog,
 * compute the plan (retention.ts, pure), and turn it into an expire job for the cluster's agent.
 * The agent deletes; the controller removes the catalog rows of what the agent reports deleted,
 * once the job succeeded (a failed or half-done job leaves rows that the next plan lists again,
 * and deleting an already deleted backup is a no-op for the agent).
 */
import type { MessageInitShape } from '@bufbuild/protobuf';
import { newJobId } from '@pgfleet/core';
import type { BackupRecord, JobRecord } from '@pgfleet/catalog';
import type { ExpireResult, JobInfoSchema } from '@pgfleet/proto';
import type { ControllerContext } from '../context.js';
import { clusterAgent, dispatch, requireCluster } from '../jobs/dispatch.js';
import { loadClusterPolicy, type ClusterPolicy } from '../schedule/policy.js';
import { planRetention, type RetentionBackup, type RetentionPlan, type WalKeepRange } from './plan.js';

export interface ClusterRetention {
  cluster: string;
  now: number;
  policy: ClusterPolicy;
  backups: BackupRecord[];
  plan: RetentionPlan;
}

/** The catalog holds only succeeded backups (a failed job inserts none). */
function retentionBackup(b: BackupRecord): RetentionBackup {
  return {
    label: b.label,
    type: b.type,
    priorLabel: b.priorLabel,
    startTime: b.startTime,
    stopTime: b.stopTime,
    startLsn: b.startLsn,
    stopLsn: b.stopLsn,
    timeline: b.timeline,
    walStart: b.walStart,
    walStop: b.walStop,
    state: 'succeeded',
    pinned: b.pinned === true,
  };
}

export async function planClusterRetention(ctx: ControllerContext, cluster: string): Promise<ClusterRetention> {
  await requireCluster(ctx, cluster);
  const now = ctx.now();
  const [policy, backups] = await Promise.all([loadClusterPolicy(ctx.store, cluster), ctx.store.listBackups(cluster)]);
  const plan = planRetention(backups.map(retentionBackup), policy.effective.retention, now);
  return { cluster, now, policy, backups, plan };
}

/** What an expire job is told: the plan's deletions and the WAL rule (see ExpireJob in agent.proto). */
export interface ExpireParams {
  labels: string[];
  /** The anchor's first segment: WAL from its position on stays ('' = no WAL is expired). */
  walKeepFrom: string;
  keepRanges: WalKeepRange[];
  reason: string;
}

export function expireParams(plan: RetentionPlan, reason: string): ExpireParams {
  return {
    labels: plan.expire.map((e) => e.label),
    walKeepFrom: plan.anchor?.walStart ?? '',
    keepRanges: plan.walKeepRanges.map((r) => ({ ...r })),
    reason,
  };
}

/** Whether the plan can remove anything: a backup expires, or WAL before the anchor may. */
export function planRemovesSomething(plan: RetentionPlan): boolean {
  return plan.expire.length > 0 || plan.anchor !== undefined;
}

/** Dispatches an expire job for the plan to the cluster's connected agent. */
export async function startExpireJob(
  ctx: ControllerContext,
  r: ClusterRetention,
  reason: string,
): Promise<MessageInitShape<typeof JobInfoSchema>> {
  // Expiring only touches the repository: any host's agent can.
  const session = await clusterAgent(ctx, r.cluster, 'any');
  const params = expireParams(r.plan, reason);
  const job = await ctx.store.createJob(
    { id: newJobId(), cluster: r.cluster, kind: 'expire', agentId: session.agentId, params },
    ctx.now(),
  );
  return dispatch(ctx, session, job, {
    case: 'expire',
    value: {
      cluster: r.cluster,
      labels: params.labels,
      walKeepFrom: params.walKeepFrom,
      keepRanges: params.keepRanges.map((k) => ({
        label: k.label,
        timeline: k.timeline,
        walStart: k.walStart,
        walStop: k.walStop,
      })),
    },
  });
}

/**
 * After an expire job succeeded: the backups the agent deleted leave the catalog. Only those it
 * reports (it skips a backup a kept one still reads from), and only labels the job was asked to
 * delete, so a confused agent can never make the catalog forget a backup it was told to keep.
 */
export async function recordExpired(ctx: ControllerContext, job: JobRecord, result: ExpireResult): Promise<number> {
  const asked = new Set((job.params as Partial<ExpireParams> | null)?.labels ?? []);
  const labels = result.deletedLabels.filter((l) => asked.has(l));
  const n = labels.length ? await ctx.store.deleteBackups(job.cluster, labels) : 0;
  ctx.logger.info(
    {
      jobId: job.id,
      cluster: job.cluster,
      deleted: labels,
      skipped: result.skippedLabels,
      walFiles: result.walFilesDeleted,
    },
    'expired backups removed from the catalog',
  );
  return n;
}
