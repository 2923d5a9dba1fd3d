/**
 * Retention in the controller: load a cluster's effective policy and backups from the catalog,
 * compute the plan (plan.ts, pure), and turn it into an expire job's params (sent by
 * jobs/expire.ts). The agent deletes; the controller removes the catalog rows of what the agent
 * reports deleted, once the job succeeded (a failed or half-done job leaves rows that the next
 * plan lists again, and deleting an already deleted backup is a no-op for the agent).
 */
import type { BackupRecord, DumpRecord } from '@pgfleet/catalog';
import type { ControllerContext } from '../context.js';
import { requireCluster } from '../jobs/dispatch.js';
import type { ExpireJobParams } from '../jobs/params.js';
import { loadClusterPolicy, type ClusterPolicy } from '../schedule/policy.js';
import { planRetention, type RetentionBackup, type RetentionPlan } from './plan.js';
import { planDumpRetention, type DumpRetentionPlan } from './dumps.js';

export interface ClusterRetention {
  cluster: string;
  now: number;
  policy: ClusterPolicy;
  backups: BackupRecord[];
  plan: RetentionPlan;
  /** The cluster's complete dumps (oldest first) and what the logical tiers do with them. */
  dumps: DumpRecord[];
  dumpPlan: DumpRetentionPlan;
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
  const [policy, backups, dumps] = await Promise.all([
    loadClusterPolicy(ctx.store, cluster),
    ctx.store.listBackups(cluster),
    ctx.store.listDumps(cluster),
  ]);
  const inputs = backups.map(retentionBackup).map((b) => (keep?.(b.label) ? { ...b, pinned: true } : b));
  const plan = planRetention(inputs, policy.effective.retention, now);
  const planned = planDumpRetention(dumps, policy.effective.logicalRetention, now);
  // A dump `keep` holds back stays, like a backup held back as if pinned.
  const dumpPlan = keep
    ? {
        decisions: planned.decisions.map((d) =>
          !d.keep && keep(d.label) ? { ...d, keep: true, reasons: ['not-announced'] } : d,
        ),
        expire: planned.expire.filter((l) => !keep(l)),
      }
    : planned;
  return { cluster, now, policy, backups, plan, dumps, dumpPlan };
}

/** What an expire job is told: the plan's deletions and the WAL rule (see ExpireJob in agent.proto). */
export function expireParams(plan: RetentionPlan, reason: string, dumpLabels: readonly string[] = []): ExpireJobParams {
  return {
    labels: plan.expire.map((e) => e.label),
    ...(dumpLabels.length ? { dumpLabels: [...dumpLabels] } : {}),
    walKeepFrom: plan.anchor?.walStart ?? '',
    keepRanges: plan.walKeepRanges.map((r) => ({ ...r })),
    reason,
  };
}

/** Whether the plan can remove anything: a backup or dump expires, or WAL before the anchor may. */
export function planRemovesSomething(plan: RetentionPlan, dumpPlan?: DumpRetentionPlan): boolean {
  return plan.expire.length > 0 || plan.anchor !== undefined || (dumpPlan?.expire.length ?? 0) > 0;
}

/** Everything the plan deletes by name: backups, then dumps. */
export function plannedLabels(r: Pick<ClusterRetention, 'plan' | 'dumpPlan'>): string[] {
  return [...r.plan.expire.map((e) => e.label), ...r.dumpPlan.expire];
}
