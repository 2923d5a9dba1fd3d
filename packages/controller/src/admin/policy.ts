/**
 * The policy and retention part of AdminService: policy get/set (cluster override over fleet
 * default, every value with its source), retention plan (what would go and why, nothing deleted),
 * retention apply (an expire job now) and backup pins.
 */
import type { MessageInitShape } from '@bufbuild/protobuf';
import { timestampFromMs } from '@bufbuild/protobuf/wkt';
import { PgfleetError, parseClusterName } from '@pgfleet/core';
import type { BackupFrom, PolicyRecord } from '@pgfleet/catalog';
import type {
  GetPolicyResponseSchema,
  PlanRetentionResponseSchema,
  PolicySettings as ProtoPolicySettings,
  PolicySettingsSchema,
  SetPolicyRequest,
} from '@pgfleet/proto';
import { backupTypeToProto } from '@pgfleet/proto';
import { backupInfoFromRecord } from '../wire.js';
import type { ControllerContext } from '../context.js';
import { requireCluster } from '../jobs/dispatch.js';
import {
  FLEET_POLICY_SCOPE,
  HEALTH_FIELDS,
  HEALTH_KEYS,
  LOGICAL_RETENTION_KEYS,
  POLICY_KEYS,
  effectivePolicy,
  isEmptySettings,
  formatPolicyValue,
  loadClusterPolicy,
  mergeSettings,
  settingsOf,
  validatePolicySettings,
  type PolicySettings,
} from '../schedule/policy.js';
import { planClusterRetention, planRemovesSomething, type ClusterRetention } from '../retention/jobs.js';
import { startExpireJob } from '../jobs/expire.js';

type GetPolicyResponseInit = MessageInitShape<typeof GetPolicyResponseSchema>;
type PlanInit = MessageInitShape<typeof PlanRetentionResponseSchema>;

export function settingsToProto(s: PolicySettings | undefined): MessageInitShape<typeof PolicySettingsSchema> {
  if (!s) return {};
  const health: MessageInitShape<typeof PolicySettingsSchema> = {};
  for (const key of HEALTH_KEYS) {
    const v = s.health?.[HEALTH_FIELDS[key]];
    if (v !== undefined) health[key] = v;
  }
  return { ...s.schedules, ...s.retention, ...health };
}

export function settingsFromProto(p: ProtoPolicySettings | undefined): PolicySettings {
  const s: PolicySettings = { schedules: {}, retention: {}, health: {} };
  if (!p) return s;
  for (const k of ['full', 'diff', 'incr', 'drill', 'logical', 'dumpDrill'] as const)
    if (p[k] !== undefined) s.schedules[k] = p[k].trim();
  for (const k of HEALTH_KEYS) if (p[k] !== undefined) s.health![HEALTH_FIELDS[k]] = p[k];
  if (p.spreadMinutes !== undefined) s.schedules.spreadMinutes = p.spreadMinutes;
  // Checked by validatePolicySettings, which names the flag and the allowed values.
  if (p.backupFrom !== undefined) s.schedules.backupFrom = p.backupFrom.trim() as BackupFrom;
  for (const k of [
    'pitrWindowDays',
    'daily',
    'weekly',
    'monthly',
    'yearly',
    'minFull',
    ...LOGICAL_RETENTION_KEYS,
  ] as const)
    if (p[k] !== undefined) s.retention[k] = p[k];
  if (p.autoExpire !== undefined) s.retention.autoExpire = p.autoExpire;
  if (p.expireGraceSeconds !== undefined) s.retention.expireGraceSeconds = p.expireGraceSeconds;
  if (p.catchUp !== undefined) s.schedules.catchUp = p.catchUp;
  return s;
}

export function checkClusterName(name: string): void {
  if (!name) throw new PgfleetError('InvalidArgument', 'a cluster name is required (or --fleet for the fleet default)');
  if (name === FLEET_POLICY_SCOPE)
    throw new PgfleetError(
      'InvalidArgument',
      `'${FLEET_POLICY_SCOPE}' is not a cluster name; use --fleet for the fleet default`,
    );
  parseClusterName(name, 'cluster');
}

function policyResponse(
  ctx: ControllerContext,
  cluster: string,
  fleet: PolicyRecord | undefined,
  own: PolicyRecord | undefined,
): GetPolicyResponseInit {
  const eff = effectivePolicy(fleet && settingsOf(fleet), own && settingsOf(own));
  return {
    cluster,
    values: POLICY_KEYS.map((key) => ({
      key,
      value: formatPolicyValue(key, eff, ctx.healthDefaults),
      source: eff.sources[key],
    })),
    fleet: settingsToProto(fleet && settingsOf(fleet)),
    clusterOverride: settingsToProto(own && settingsOf(own)),
    retentionConfigured: eff.autoExpire,
  };
}

export async function getPolicy(ctx: ControllerContext, cluster: string): Promise<GetPolicyResponseInit> {
  if (cluster === '') return policyResponse(ctx, '', await ctx.store.getPolicy(FLEET_POLICY_SCOPE), undefined);
  checkClusterName(cluster);
  const p = await loadClusterPolicy(ctx.store, cluster);
  return policyResponse(ctx, cluster, p.fleet, p.cluster);
}

/**
 * Merges the request's settings into the scope's stored policy (after `reset`, into an empty
 * one). A cluster need not be known yet: policies can be declared before its agent first connects.
 */
export async function setPolicy(
  ctx: ControllerContext,
  req: SetPolicyRequest,
): Promise<{ policy: GetPolicyResponseInit }> {
  if (req.fleet && req.cluster) throw new PgfleetError('InvalidArgument', 'give either a cluster or --fleet, not both');
  if (!req.fleet) checkClusterName(req.cluster);
  const scope = req.fleet ? FLEET_POLICY_SCOPE : req.cluster;
  const patch = settingsFromProto(req.settings);
  validatePolicySettings(patch);
  const existing = req.reset ? undefined : await ctx.store.getPolicy(scope);
  const merged = mergeSettings(settingsOf(existing), patch);
  validatePolicySettings(merged);
  if (isEmptySettings(merged)) await ctx.store.deletePolicy(scope);
  else await ctx.store.putPolicy({ scope, ...merged }, ctx.now());
  ctx.health?.policiesChanged?.();
  ctx.logger.info(
    { scope, schedules: merged.schedules, retention: merged.retention, health: merged.health },
    'policy set',
  );
  return { policy: await getPolicy(ctx, req.fleet ? '' : req.cluster) };
}

export function planResponse(r: ClusterRetention): PlanInit {
  const expireReason = new Map(r.plan.expire.map((e) => [e.label, e.reason]));
  const eff = r.policy.effective;
  return {
    cluster: r.cluster,
    now: timestampFromMs(r.now),
    windowStart: timestampFromMs(r.plan.windowStart),
    anchorLabel: r.plan.anchor?.label ?? '',
    walKeepFrom: r.plan.anchor?.walStart ?? '',
    walKeepRanges: r.plan.walKeepRanges.map((k) => ({
      label: k.label,
      timeline: k.timeline,
      walStart: k.walStart,
      walStop: k.walStop,
    })),
    backups: r.backups.map((b) => {
      const keep = r.plan.keep.get(b.label);
      return {
        label: b.label,
        type: backupTypeToProto(b.type),
        stopTime: timestampFromMs(b.stopTime),
        keep: keep !== undefined,
        reasons: keep ? [...keep] : [expireReason.get(b.label) ?? 'outside-retention'],
        pinned: b.pinned === true,
        walStart: b.walStart,
        walStop: b.walStop,
      };
    }),
    policy: {
      ...eff.schedules,
      spreadMinutes: eff.spreadMinutes,
      ...eff.retention,
      ...(eff.logical ? { logical: eff.logical } : {}),
      ...(eff.logicalRetention
        ? {
            logicalDaily: eff.logicalRetention.daily,
            logicalWeekly: eff.logicalRetention.weekly,
            logicalMonthly: eff.logicalRetention.monthly,
            logicalYearly: eff.logicalRetention.yearly,
            logicalMin: eff.logicalRetention.min,
          }
        : {}),
    },
    dumps: r.dumps.map((d, i) => {
      const decision = r.dumpPlan.decisions[i]!;
      return {
        label: d.label,
        stopTime: timestampFromMs(d.stopTime),
        keep: decision.keep,
        reasons: decision.reasons,
        storedSize: BigInt(d.storedBytes),
      };
    }),
  };
}

export async function planRetention(ctx: ControllerContext, cluster: string): Promise<PlanInit> {
  return planResponse(await planClusterRetention(ctx, cluster));
}

export async function applyRetention(ctx: ControllerContext, cluster: string) {
  const r = await planClusterRetention(ctx, cluster);
  const plan = planResponse(r);
  if (!planRemovesSomething(r.plan, r.dumpPlan)) return { plan };
  try {
    // Refused with BackupInProgress while the cluster has a backup or expire running (one catalog transaction decides).
    return { plan, job: await startExpireJob(ctx, r, 'requested') };
  } catch (err) {
    if (!PgfleetError.is(err, 'BackupInProgress')) throw err;
    throw new PgfleetError('BackupInProgress', `${err.message}; retention waits until it ends`, {
      hint: err.hint,
      cause: err,
    });
  }
}

export async function pinBackup(ctx: ControllerContext, cluster: string, label: string, pinned: boolean) {
  await requireCluster(ctx, cluster);
  if (!label) throw new PgfleetError('InvalidArgument', 'a backup label is required');
  const b = await ctx.store.setBackupPinned(cluster, label, pinned);
  ctx.logger.info({ cluster, label, pinned }, pinned ? 'backup pinned' : 'backup unpinned');
  return { backup: backupInfoFromRecord(b) };
}
