// The console's RPO history: samples recorded by the health monitor's recorder, pruned per
// resolution, answered in minute buckets for recent spans and hour buckets beyond (real SQLite).
import { strict as assert } from 'node:assert';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, test } from 'node:test';
import { SqliteCatalogStore } from '@pgfleet/catalog';
import { clusterHistory, HISTORY_KEEP_MS, HistoryRecorder, MIN_SAMPLE_GAP_MS } from './history.js';

const dir = mkdtempSync(join(tmpdir(), 'pgfleet-history-'));
after(() => rmSync(dir, { recursive: true, force: true }));

const HOUR = 3_600_000;

test('recent spans come per minute, older ones per hour; old buckets are pruned', async () => {
  const store = await SqliteCatalogStore.open(join(dir, 'a.db'));
  const recorder = new HistoryRecorder(store);
  const now = 500_000 * HOUR;
  // Three days of one sample an hour, then two samples in the last minute.
  for (let t = now - 72 * HOUR; t <= now - HOUR; t += HOUR) await recorder.record('shop', t, 30);
  await recorder.record('shop', now - 50_000, 10);
  await recorder.record('shop', now - 40_000, 20);
  // Heartbeats closer together than MIN_SAMPLE_GAP_MS add nothing.
  await recorder.record('shop', now - 40_000 + MIN_SAMPLE_GAP_MS - 1, 99);

  const recent = await clusterHistory(store, 'shop', now - 2 * HOUR, now);
  assert.deepEqual(
    recent.rpo!.map((b) => [b.resolutionSeconds, b.rpoMaxSeconds, b.rpoAvgSeconds, b.samples]),
    [
      [60, 30, 30, 1],
      [60, 30, 30, 1],
      [60, 20, 15, 2],
    ],
  );
  const week = await clusterHistory(store, 'shop', now - 7 * 24 * HOUR, now);
  assert.ok(week.rpo!.every((b) => b.resolutionSeconds === 3600));
  // The first sample pruned the minute buckets older than they are kept (none then); the hour
  // ones all stay. A recorder that prunes an hour later drops the minutes past their keep.
  assert.equal(week.rpo!.length, 72);
  await new HistoryRecorder(store).record('shop', now + HISTORY_KEEP_MS[60] - 70 * HOUR, 1);
  const minutes = await store.listClusterHistory('shop', 60, 0);
  assert.ok(
    minutes.every((b) => b.start >= now - 70 * HOUR - 60_000),
    'minutes older than 48 h are gone',
  );
  assert.equal((await store.listClusterHistory('shop', 3600, 0)).length, 72, 'hours are kept');
  assert.ok(
    minutes.every((b) => b.start % 60_000 === 0),
    'buckets start on the minute',
  );
  await store.close();
});
