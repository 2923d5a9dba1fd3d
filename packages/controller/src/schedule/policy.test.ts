// effectiveSchedules is the part of effectivePolicy a status row reads, computed alone: it must
// give the same values as the whole policy, whichever scope sets what.
import { strict as assert } from 'node:assert';
import { test } from 'node:test';
import { effectivePolicy, effectiveSchedules, type PolicySettings } from './policy.js';

test('effectiveSchedules: the same schedules, drill, logical, dump drill and spread as effectivePolicy', () => {
  const fleet: PolicySettings = {
    schedules: { full: ' 0 1 * * 0 ', incr: '0 6 * * 1-6', drill: '0 3 1 * *', spreadMinutes: 45 },
    retention: { daily: 7 },
  };
  const cluster: PolicySettings = {
    schedules: { incr: '', diff: '0 2 * * *', logical: '30 4 * * *', dumpDrill: '   ', spreadMinutes: 0 },
    retention: {},
    health: { rpoSeconds: 60 },
  };
  const cases: Array<[PolicySettings | undefined, PolicySettings | undefined]> = [
    [undefined, undefined],
    [fleet, undefined],
    [undefined, cluster],
    [fleet, cluster],
    [cluster, fleet],
  ];
  for (const [f, c] of cases) {
    const whole = effectivePolicy(f, c);
    const expected = {
      schedules: whole.schedules,
      ...(whole.drill !== undefined ? { drill: whole.drill } : {}),
      ...(whole.logical !== undefined ? { logical: whole.logical } : {}),
      ...(whole.dumpDrill !== undefined ? { dumpDrill: whole.dumpDrill } : {}),
      spreadMinutes: whole.spreadMinutes,
    };
    assert.deepEqual(effectiveSchedules(f, c), expected);
  }
  // The cluster's blank incr hides the fleet's (as effectivePolicy: set, so not inherited).
  assert.deepEqual(effectiveSchedules(fleet, cluster).schedules, { full: '0 1 * * 0', diff: '0 2 * * *' });
});
