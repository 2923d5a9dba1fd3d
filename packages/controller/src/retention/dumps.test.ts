// Dump retention by the logical tiers. Expected sets are written from the calendar (2026-11-30 is a
// Monday; ISO week 49 of 2026 runs Mon 11-30 .. Sun 12-06), not computed with the code under test.
import { strict as assert } from 'node:assert';
import { describe, test } from 'node:test';
import { planDumpRetention, type RetentionDump } from './dumps.js';
import { DEFAULT_LOGICAL_RETENTION, effectivePolicy } from '../schedule/policy.js';

const HOUR = 3_600_000;
const at = (iso: string) => Date.parse(iso);
const label = (ms: number) => new Date(ms).toISOString().replace(/[-:]/g, '').replace('T', '-').slice(0, 15) + '-000L';

/** Two dumps a day (01:00 and 13:00) from 2026-10-01 to 2026-12-06 (67 days), now 2026-12-07 00:00. */
function history(): RetentionDump[] {
  const out: RetentionDump[] = [];
  for (let t = at('2026-10-01T01:00:00Z'); t < at('2026-12-07T00:00:00Z'); t += 12 * HOUR)
    out.push({ label: label(t), stopTime: t });
  return out;
}
const NOW = at('2026-12-07T00:00:00Z');

describe('dump retention: logical tiers', () => {
  test('daily 3, weekly 2, monthly 2, min 1: the newest of each period, counted over dumps', () => {
    const dumps = history();
    const plan = planDumpRetention(dumps, { daily: 3, weekly: 2, monthly: 2, yearly: 0, min: 1 }, NOW);
    const kept = plan.decisions.filter((d) => d.keep).map((d) => [d.label, d.reasons.join(',')]);
    assert.deepEqual(kept, [
      // weekly: the newest of ISO week 48 (Sun 11-29); monthly: the newest of November (Mon 11-30,
      // already in week 49 with the 12-06 one)
      ['20261129-130000-000L', 'logical-weekly'],
      ['20261130-130000-000L', 'logical-monthly'],
      // daily: 12-04, 12-05, 12-06 (the 13:00 dump of each)
      ['20261204-130000-000L', 'logical-daily'],
      ['20261205-130000-000L', 'logical-daily'],
      ['20261206-130000-000L', 'logical-daily,logical-weekly,logical-monthly,logical-min'],
    ]);
    assert.equal(plan.expire.length, dumps.length - 5);
    assert.deepEqual(plan.expire.slice(0, 2), ['20261001-010000-000L', '20261001-130000-000L']);
    // Oldest first, none kept among them.
    const keptLabels = new Set(kept.map(([l]) => l));
    assert.ok(plan.expire.every((l) => !keptLabels.has(l)));
  });

  test('no logical tier set: every dump stays; a future dump (clock skew) always stays', () => {
    const dumps = [...history(), { label: '20261208-010000-000L', stopTime: at('2026-12-08T01:00:00Z') }];
    const none = planDumpRetention(dumps, undefined, NOW);
    assert.deepEqual(none.expire, []);
    assert.ok(none.decisions.every((d) => d.reasons.join() === 'no-logical-retention'));
    const some = planDumpRetention(dumps, { daily: 0, weekly: 0, monthly: 0, yearly: 0, min: 1 }, NOW);
    assert.deepEqual(
      some.decisions.filter((d) => d.keep).map((d) => [d.label, d.reasons.join(',')]),
      [
        ['20261206-130000-000L', 'logical-min'],
        ['20261208-010000-000L', 'clock-skew'],
      ],
    );
  });

  test('the effective policy turns dump retention on with the first logical key, defaults filling the rest', () => {
    assert.equal(effectivePolicy(undefined, undefined).logicalRetention, undefined);
    const eff = effectivePolicy(
      { schedules: {}, retention: { logicalDaily: 2 } },
      { schedules: {}, retention: { logicalMin: 3 } },
    );
    assert.deepEqual(eff.logicalRetention, { ...DEFAULT_LOGICAL_RETENTION, daily: 2, min: 3 });
    assert.deepEqual(
      [eff.sources.logicalDaily, eff.sources.logicalMin, eff.sources.logicalWeekly],
      ['fleet', 'cluster', 'default'],
    );
    // Physical tiers are untouched by logical ones.
    assert.equal(eff.retention.daily, 7);
  });
});
