/**
 * Retention of logical dumps (docs/logical.md): which complete dumps the policy's logical tiers
 * keep, counted over dumps only (a dump never keeps a physical backup nor the other way round),
 * with the physical tiers' GFS rule (plan.ts keepByTiers). Pure, like plan.ts.
 *
 * - No logical tier set anywhere (EffectivePolicy.logicalRetention undefined): every dump stays
 *   ('no-logical-retention'); nothing built in deletes a dump nobody asked to expire.
 * - A dump stopped after `now` (clock skew) stays.
 * - logical-daily/-weekly/-monthly/-yearly: the newest dump of each of the N newest days / ISO
 *   weeks / months / years (UTC) holding one; logical-min: the N newest dumps whatever their age.
 * - Everything else expires ('outside-retention').
 */
import type { LogicalRetention } from '../schedule/policy.js';
import { keepByTiers } from './plan.js';

export interface RetentionDump {
  label: string;
  stopTime: number;
}

export interface DumpDecision {
  label: string;
  keep: boolean;
  /** Why it stays (logical-daily, ..., logical-min, clock-skew, no-logical-retention) or 'outside-retention'. */
  reasons: string[];
}

export interface DumpRetentionPlan {
  /** One per dump, in the order given. */
  decisions: DumpDecision[];
  /** Labels to delete, oldest first. */
  expire: string[];
}

export function planDumpRetention(
  dumps: readonly RetentionDump[],
  policy: LogicalRetention | undefined,
  now: number,
): DumpRetentionPlan {
  const reasons = new Map<string, string[]>(dumps.map((d) => [d.label, []]));
  const add = (label: string, reason: string) => reasons.get(label)!.push(reason);
  if (!policy) for (const d of dumps) add(d.label, 'no-logical-retention');
  else {
    const present = dumps.filter((d) => d.stopTime <= now);
    for (const d of dumps) if (d.stopTime > now) add(d.label, 'clock-skew');
    const newestFirst = [...present].sort((a, b) => b.stopTime - a.stopTime || (a.label < b.label ? 1 : -1));
    keepByTiers(newestFirst, policy, (label, tier) => add(label, `logical-${tier}`));
    for (const d of newestFirst.slice(0, policy.min)) add(d.label, 'logical-min');
  }
  const decisions = dumps.map((d) => {
    const r = reasons.get(d.label)!;
    return { label: d.label, keep: r.length > 0, reasons: r.length > 0 ? r : ['outside-retention'] };
  });
  const expire = dumps
    .filter((d) => reasons.get(d.label)!.length === 0)
    .sort((a, b) => a.stopTime - b.stopTime)
    .map((d) => d.label);
  return { decisions, expire };
}
