/**
 * Retention in the controller: load a cluster's effective policy and backups from the catalog,
 * compute the plan (plan.ts, pure), and turn it into an expire job's params (sent by
 * jobs/expire.ts). The agent deletes; the controller removes the catalog rows of what the agent
 * reports deleted, once the job succeeded (a failed or half-done job leaves rows that the next
 * plan lists again, and deleting an already deleted backup is a no-op for the agent).
 */
import type { BackupRecord } from '@pgfleet/catalog';
import type { ControllerContext } from '../context.js';
import { requireCluster } from '../jobs/dispatch.js';
import type { ExpireJobParams } from '../jobs/params.js';
import { loadClusterPolicy, type ClusterPolicy } from '../schedule/policy.js';
import { planRetention, type RetentionBackup, type RetentionPlan } from './plan.js';

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

/**
 * The cluster's plan now. `keep` holds back backups as if pinned (the scheduler keeps every backup
 * a retention.planned event did not announce), so the plan, WAL rules included, stays whole.
 */
export async function planClusterRetention(
  ctx: ControllerContext,
  cluster: string,
  keep?: (label: string) => boolean,
): Promise<ClusterRetention> {
  await requireCluster(ctx, cluster);
  const now = ctx.now();
  const [policy, backups] = await Promise.all([loadClusterPolicy(ctx.store, cluster), ctx.store.listBackups(cluster)]);
  const inputs = backups.map(retentionBackup).map((b) => (keep?.(b.label) ? { ...b, pinned: true } : b));
  const plan = planRetention(inputs, policy.effective.retention, now);
  return { cluster, now, policy, backups, plan };
}

/** What an expire job is told: the plan's deletions and the WAL rule (see ExpireJob in agent.proto). */
export function expireParams(plan: RetentionPlan, reason: string): ExpireJobParams {
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
