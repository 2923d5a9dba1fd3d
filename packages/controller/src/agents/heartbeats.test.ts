// Heartbeats reach the catalog in batches: what arrives while a write is under way goes in the
// next write, every beat's promise settles with its own write, and a failed write fails only the
// beats it carried. Against a real SQLite catalog, so what is checked is what the catalog holds.
import { strict as assert } from 'node:assert';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test } from 'node:test';
import { SqliteCatalogStore, type AgentHeartbeat, type CatalogStore } from '@pgfleet/catalog';
import { HeartbeatBatcher, MAX_HEARTBEATS_PER_WRITE } from './heartbeats.js';

test('beats arriving during a write go in the next one; each settles with its own write', async () => {
  const dir = await mkdtemp(join(tmpdir(), 'pgfleet-heartbeats-'));
  const store = SqliteCatalogStore.open(join(dir, 'catalog.db'));
  try {
    await store.upsertCluster({ name: 'main', systemIdentifier: '1', pgVersion: 170000 }, 0);
    const n = MAX_HEARTBEATS_PER_WRITE + 5;
    for (let i = 0; i < n; i++)
      await store.upsertAgent({ id: `a${i}`, cluster: 'main', hostname: 'h', version: '1' }, 0);
    const writes: number[] = [];
    let failNext = false;
    // The store's own write, seen from outside: how many beats each carried, and one made to fail.
    const watched: Pick<CatalogStore, 'recordHeartbeats'> = {
      recordHeartbeats: async (beats: readonly AgentHeartbeat[]) => {
        writes.push(beats.length);
        await new Promise((r) => setTimeout(r, 20));
        if (failNext) {
          failNext = false;
          throw new Error('catalog unreachable');
        }
        await store.recordHeartbeats(beats);
      },
    };
    const batcher = new HeartbeatBatcher(watched);
    const beat = (i: number, at: number) =>
      batcher.record({ agent: { cluster: 'main', agentId: `a${i}` }, figures: { currentLsn: `0/${at}` }, at });

    // One beat alone, then n beats while it is written: the next writes carry those, at most the bound each.
    const first = beat(0, 100);
    await new Promise((r) => setImmediate(r));
    const rest = Array.from({ length: n }, (_, i) => beat(i, 200));
    await first;
    assert.equal((await store.getAgent({ cluster: 'main', agentId: 'a0' }))?.lastSeen, 100, 'the first beat is in');
    await Promise.all(rest);
    assert.deepEqual(writes, [1, MAX_HEARTBEATS_PER_WRITE, 5]);
    const agents = await store.listAgents('main');
    assert.ok(agents.every((a) => a.lastSeen === 200 && a.currentLsn === '0/200'));

    // A write that fails rejects its own beats only; the next write goes on.
    writes.length = 0;
    failNext = true;
    const lost = beat(1, 300);
    await new Promise((r) => setImmediate(r));
    const kept = beat(2, 300);
    await assert.rejects(lost, /catalog unreachable/);
    await kept;
    assert.deepEqual(writes, [1, 1]);
    assert.equal((await store.getAgent({ cluster: 'main', agentId: 'a1' }))?.lastSeen, 200);
    assert.equal((await store.getAgent({ cluster: 'main', agentId: 'a2' }))?.lastSeen, 300);
  } finally {
    await store.close();
    await rm(dir, { recursive: true, force: true });
  }
});
