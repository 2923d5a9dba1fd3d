/**
 * ApplyFleet (`pgfleet apply -f fleet.yaml`): a declarative fleet file makes its policies the
 * stored ones. The fleet default and every listed cluster's override are replaced as a whole (a
 * key the file leaves out is inherited again, unlike `policy set`, which merges); with prune the
 * overrides of clusters the file does not list are dropped. Dry run reports the changes only.
 *
 * The catalog has no transaction spanning several policies, so every scope is validated before
 * the first write: a bad value anywhere in the file changes nothing. Each scope is then written in
 * one statement, and only scopes that change are written, so applying the same file twice writes
 * nothing the second time.
 */
import type { MessageInitShape } from '@bufbuild/protobuf';
import { PgfleetError } from '@pgfleet/core';
import type { PolicyRecord } from '@pgfleet/catalog';
import type { ApplyFleetRequest, ApplyFleetResponseSchema, PolicyChangeSchema } from '@pgfleet/proto';
import { checkClusterName, settingsFromProto, settingsToProto } from './policy.js';
import type { ControllerContext } from '../context.js';
import {
  FLEET_POLICY_SCOPE,
  POLICY_KEYS,
  isEmptySettings,
  settingsOf,
  validatePolicySettings,
  type PolicySettings,
} from '../schedule/policy.js';

type PolicyChangeInit = MessageInitShape<typeof PolicyChangeSchema>;

/** A schedule stored as '' ("not scheduled", overriding an inherited one); PolicyChange uses '' for "not set". */
export const NOT_SCHEDULED = 'off';

function flat(s: PolicySettings | undefined): Record<string, string> {
  const out: Record<string, string> = {};
  for (const [k, v] of Object.entries(settingsToProto(s) as Record<string, string | number | undefined>)) {
    if (v !== undefined) out[k] = v === '' ? NOT_SCHEDULED : String(v);
  }
  return out;
}

/** Key by key (in `policy get` order), what changes from `before` to `after` in one scope. */
export function policyChanges(
  scope: string,
  before: PolicySettings | undefined,
  after: PolicySettings | undefined,
): PolicyChangeInit[] {
  const a = flat(before);
  const b = flat(after);
  return POLICY_KEYS.filter((k) => (a[k] ?? '') !== (b[k] ?? '')).map((key) => ({
    scope,
    key,
    oldValue: a[key] ?? '',
    newValue: b[key] ?? '',
  }));
}

/** Validates one scope's settings, naming it the way the fleet file does (fleet, clusters.<name>). */
function validated(where: string, settings: PolicySettings): PolicySettings {
  try {
    validatePolicySettings(settings);
  } catch (err) {
    if (PgfleetError.is(err, 'InvalidArgument'))
      throw new PgfleetError('InvalidArgument', `${where}: ${err.message}`, { cause: err });
    throw err;
  }
  return settings;
}

export async function applyFleet(
  ctx: ControllerContext,
  req: ApplyFleetRequest,
): Promise<MessageInitShape<typeof ApplyFleetResponseSchema>> {
  // Everything is checked before anything is written.
  // A file without a fleet section leaves the fleet default as it is (it would otherwise drop the
  // schedules and retention every cluster inherits).
  const desired = new Map<string, PolicySettings>(
    req.fleet ? [[FLEET_POLICY_SCOPE, validated('fleet', settingsFromProto(req.fleet))]] : [],
  );
  for (const name of Object.keys(req.clusters).sort()) {
    try {
      checkClusterName(name);
    } catch (err) {
      throw new PgfleetError('InvalidArgument', `clusters: '${name}' is not a cluster name`, { cause: err });
    }
    desired.set(name, validated(`clusters.${name}`, settingsFromProto(req.clusters[name])));
  }

  const [stored, known] = await Promise.all([ctx.store.listPolicies(), ctx.store.listClusters()]);
  const current = new Map<string, PolicyRecord>(stored.map((p) => [p.scope, p]));
  const writes: Array<{ scope: string; settings: PolicySettings | undefined }> = [];
  const changes: PolicyChangeInit[] = [];
  const consider = (scope: string, next: PolicySettings | undefined): void => {
    const before = current.get(scope);
    const diff = policyChanges(scope === FLEET_POLICY_SCOPE ? 'fleet' : scope, before && settingsOf(before), next);
    if (diff.length === 0) return;
    changes.push(...diff);
    writes.push({ scope, settings: next && !isEmptySettings(next) ? next : undefined });
  };
  for (const [scope, settings] of desired) consider(scope, settings);
  if (req.prune) {
    // listPolicies returns the fleet default first, then clusters by name: changes stay in that order.
    // Only cluster overrides are pruned: the fleet default changes only through a fleet section.
    for (const p of stored) if (p.scope !== FLEET_POLICY_SCOPE && !desired.has(p.scope)) consider(p.scope, undefined);
  }

  if (!req.dryRun) {
    const now = ctx.now();
    for (const w of writes) {
      if (w.settings) await ctx.store.putPolicy({ scope: w.scope, ...w.settings }, now);
      else await ctx.store.deletePolicy(w.scope);
    }
    if (writes.length) ctx.health?.policiesChanged?.();
    ctx.logger.info(
      { scopes: writes.map((w) => w.scope), changes: changes.length, prune: req.prune },
      'fleet policies applied',
    );
  }
  const knownNames = new Set(known.map((c) => c.name));
  return {
    changes,
    dryRun: req.dryRun,
    unknownClusters: [...desired.keys()].filter((n) => n !== FLEET_POLICY_SCOPE && !knownNames.has(n)),
  };
}
