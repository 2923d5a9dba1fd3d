// Progress figures the CLI's bar shows: smoothed rate per phase and the ETA it gives.
import { strict as assert } from 'node:assert';
import { test } from 'node:test';
import { ProgressTracker, type Progress } from './progress.js';

test('rate and ETA follow the bytes over time; a new phase starts over; throttled to the interval', () => {
  let now = 1_000_000;
  const seen: Progress[] = [];
  const t = new ProgressTracker(
    (p) => seen.push(p),
    'copy',
    500,
    () => now,
  );
  t.state.bytesTotal = 10_000_000;
  t.flush();
  assert.deepEqual([seen[0]!.bytesPerSecond, seen[0]!.etaSeconds], [0, 0], 'nothing moved yet: unknown');
  now += 1000;
  t.add(1_000_000);
  assert.equal(seen.at(-1)!.bytesPerSecond, 1_000_000);
  assert.equal(seen.at(-1)!.etaSeconds, 9);
  // Within the interval: no report.
  now += 100;
  t.add(10);
  assert.equal(seen.length, 2);
  // Slower now: the rate moves towards it, not all the way (smoothing).
  now += 900;
  t.add(250_000 - 10);
  const r = seen.at(-1)!.bytesPerSecond!;
  assert.ok(r < 1_000_000 && r > 250_000, String(r));
  assert.ok(Math.abs(seen.at(-1)!.etaSeconds! - (10_000_000 - 1_250_000) / r) < 1e-6);
  t.phase('wait-wal');
  assert.deepEqual([seen.at(-1)!.bytesPerSecond, seen.at(-1)!.etaSeconds], [0, 0]);
});
