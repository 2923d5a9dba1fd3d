// OutboxRelay against an in-memory outbox and a fake publisher: retries, order per cluster,
// marking only after the ack, stopping. The real-NATS half is in relay-nats.test.ts.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { PgfleetError, sleep } from '@pgfleet/core';
import type { Event } from '@pgfleet/proto';
import { newEvent } from './kinds.js';
import { OutboxRelay, backoffDelay } from './relay.js';
import { FakePublisher, MemoryOutbox } from './test-fakes.js';

/** n events round-robin over the clusters, each numbered in its payload (agentSilent.silentSeconds). */
function events(n: number, clusters = ['a', 'b', 'c']): Event[] {
  return Array.from({ length: n }, (_, i) =>
    newEvent(clusters[i % clusters.length]!, { case: 'agentSilent', value: { silentSeconds: i } }),
  );
}

function byCluster(list: Event[]): Map<string, string[]> {
  const m = new Map<string, string[]>();
  for (const e of list) m.set(e.cluster, [...(m.get(e.cluster) ?? []), e.id]);
  return m;
}

function withTimeout<T>(p: Promise<T>, ms: number, what: string): Promise<T> {
  let t: NodeJS.Timeout | undefined;
  return Promise.race([
    p,
    new Promise<never>((_, reject) => (t = setTimeout(() => reject(new Error(`timed out: ${what}`)), ms))),
  ]).finally(() => clearTimeout(t));
}

const fast = { initialBackoffMs: 1, maxBackoffMs: 5, pollIntervalMs: 10 };

/** Only bounds a test that hangs; generous so a loaded CI machine never trips it (no speed is asserted). */
const PATIENCE_MS = 120_000;
/** Longer than PATIENCE_MS by far: a relay that waited for it would time the test out, not pass late. */
const HOUR_MS = 3_600_000;

test('backoffDelay doubles from the initial delay up to the cap, with jitter in [cap/2, cap]', () => {
  assert.deepEqual(
    [1, 2, 3, 4, 5, 6, 7, 8].map((n) => backoffDelay(n, 250, 30_000, () => 0.999999)),
    [250, 500, 1000, 2000, 4000, 8000, 16000, 30000],
  );
  assert.deepEqual(
    [1, 2, 3].map((n) => backoffDelay(n, 250, 30_000, () => 0)),
    [125, 250, 500],
  );
  assert.equal(
    backoffDelay(1000, 250, 30_000, () => 0.5),
    22_500,
    'huge attempt counts stay capped',
  );
  for (let i = 0; i < 100; i++) {
    const d = backoffDelay(3, 100, 10_000);
    assert.ok(d >= 200 && d <= 400);
  }
});

test('NATS down for N attempts, then up: every event published once, in order per cluster, all marked sent', async () => {
  const outbox = new MemoryOutbox();
  const all = events(30);
  outbox.add(...all);
  const publisher = new FakePublisher();
  publisher.failNext = 7;
  const relay = new OutboxRelay({ outbox, publisher, ...fast, batchSize: 8 });
  const idle = relay.whenIdle();
  relay.start();
  await withTimeout(idle, PATIENCE_MS, 'relay to drain the outbox');
  await relay.stop();

  assert.equal(publisher.published.length, 30);
  assert.equal(new Set(publisher.published.map((e) => e.id)).size, 30, 'each event once');
  assert.deepEqual(byCluster(publisher.published), byCluster(all), 'per-cluster order kept');
  assert.equal(publisher.attempts.length, 30 + 7);
  assert.deepEqual(outbox.unsent(), []);
  const st = relay.status;
  assert.equal(st.published, 30);
  assert.equal(st.consecutiveFailures, 0);
  assert.equal(st.lastError?.errorName, 'EventPublishFailed');
  assert.equal(st.state, 'stopped');
});

test('a failing cluster never publishes past its failed event; other clusters go on', async () => {
  const outbox = new MemoryOutbox();
  const all = events(12, ['a', 'b']);
  outbox.add(...all);
  const publisher = new FakePublisher();
  // a's second event fails on its first attempt
  const aSecond = all.filter((e) => e.cluster === 'a')[1]!;
  publisher.failOnceIds.add(aSecond.id);
  const relay = new OutboxRelay({ outbox, publisher, ...fast });

  const round1 = await relay.runOnce();
  assert.equal(round1.read, 12);
  assert.equal(round1.sent, 7, 'a: 1 before the failure, b: all 6');
  assert.equal(round1.error?.errorName, 'EventPublishFailed');
  assert.deepEqual(
    outbox.unsent().map((e) => e.id),
    all
      .filter((e) => e.cluster === 'a')
      .slice(1)
      .map((e) => e.id),
    'a stopped at its failed event; nothing after it was attempted',
  );
  assert.equal(publisher.attempts.filter((e) => e.cluster === 'a').length, 2);

  const round2 = await relay.runOnce();
  assert.deepEqual(round2, { read: 5, sent: 5 });
  assert.deepEqual(byCluster(publisher.published), byCluster(all));
});

test('marked sent only after the ack: a failed markSent republishes the same events (same ids) next round', async () => {
  const outbox = new MemoryOutbox();
  const all = events(4);
  outbox.add(...all);
  outbox.failMarks = 1;
  const publisher = new FakePublisher();
  const relay = new OutboxRelay({ outbox, publisher, ...fast });

  const r1 = await relay.runOnce();
  assert.equal(r1.sent, 0);
  assert.match(r1.error?.message ?? '', /marking 4 published events sent failed: crashed before markSent/);
  assert.equal(outbox.unsent().length, 4);

  const r2 = await relay.runOnce();
  assert.deepEqual(r2, { read: 4, sent: 4 });
  const times = new Map<string, number>();
  for (const e of publisher.published) times.set(e.id, (times.get(e.id) ?? 0) + 1);
  assert.deepEqual([...times.keys()].sort(), all.map((e) => e.id).sort());
  assert.deepEqual(
    [...times.values()],
    [2, 2, 2, 2],
    'each published twice under the same id (JetStream drops the copy)',
  );
  assert.deepEqual(outbox.markCalls, [[1, 2, 3, 4]]);
});

test('an outbox read failure is retried with backoff like a publish failure', async () => {
  const outbox = new MemoryOutbox();
  outbox.add(...events(3));
  outbox.failReads = 3;
  const publisher = new FakePublisher();
  const relay = new OutboxRelay({ outbox, publisher, ...fast });
  const idle = relay.whenIdle();
  relay.start();
  await withTimeout(idle, PATIENCE_MS, 'relay to drain');
  await relay.stop();
  assert.equal(publisher.published.length, 3);
  assert.match(relay.status.lastError?.message ?? '', /reading the event outbox failed: catalog unavailable/);
});

test('stop() during a long backoff returns promptly and leaves unsent events for the next relay', async () => {
  const outbox = new MemoryOutbox();
  const all = events(3, ['a']);
  outbox.add(...all);
  const publisher = new FakePublisher();
  publisher.failNext = 1;
  // The backoff (>= 30 min with jitter) outlasts PATIENCE_MS: stop() returning at all shows it did not wait.
  const relay = new OutboxRelay({ outbox, publisher, initialBackoffMs: HOUR_MS, maxBackoffMs: HOUR_MS });
  relay.start();
  while (relay.status.state !== 'backoff') await sleep(5);
  await withTimeout(relay.stop(), PATIENCE_MS, 'stop() waited for the backoff');
  assert.equal(outbox.unsent().length, 3);

  const next = new OutboxRelay({ outbox, publisher, ...fast });
  const idle = next.whenIdle();
  next.start();
  await withTimeout(idle, PATIENCE_MS, 'second relay to drain');
  await next.stop();
  assert.deepEqual(byCluster(publisher.published), byCluster(all));
});

test('stop() waits for the publish in flight, marks it sent, and publishes nothing after it', async () => {
  const outbox = new MemoryOutbox();
  const all = events(3, ['a']);
  outbox.add(...all);
  const publisher = new FakePublisher();
  let open!: () => void;
  publisher.gate = new Promise((r) => (open = r));
  const relay = new OutboxRelay({ outbox, publisher, ...fast });
  relay.start();
  while (publisher.attempts.length === 0) await sleep(5);
  const stopped = relay.stop();
  open();
  await stopped;
  assert.deepEqual(
    publisher.published.map((e) => e.id),
    [all[0]!.id],
  );
  assert.deepEqual(
    outbox.unsent().map((e) => e.id),
    [all[1]!.id, all[2]!.id],
  );
});

test('notify() wakes an idle relay before its poll interval', async () => {
  const outbox = new MemoryOutbox();
  const publisher = new FakePublisher();
  // The poll interval outlasts PATIENCE_MS: only notify() can wake the relay in time.
  const relay = new OutboxRelay({ outbox, publisher, pollIntervalMs: HOUR_MS });
  const firstIdle = relay.whenIdle();
  relay.start();
  await withTimeout(firstIdle, PATIENCE_MS, 'first idle');
  while (relay.status.state !== 'idle') await sleep(5);
  const e = events(1)[0]!;
  outbox.add(e);
  const idle = relay.whenIdle();
  relay.notify();
  await withTimeout(idle, PATIENCE_MS, 'notify to wake the relay');
  await relay.stop();
  assert.deepEqual(
    publisher.published.map((x) => x.id),
    [e.id],
  );
});

test('an invalid event is an error like any other: its cluster waits, nothing is skipped', async () => {
  const outbox = new MemoryOutbox();
  const bad = newEvent('a', { case: 'agentSilent', value: {} });
  bad.kind = 'agent.connected';
  const good = newEvent('a', { case: 'agentSilent', value: {} });
  outbox.add(bad, good);
  const publisher = {
    async publish(e: Event) {
      if (e.kind !== 'agent.silent') throw new PgfleetError('EventInvalid', 'kind does not match');
    },
    async close() {},
  };
  const relay = new OutboxRelay({ outbox, publisher, ...fast });
  const r = await relay.runOnce();
  assert.equal(r.error?.errorName, 'EventInvalid');
  assert.equal(outbox.unsent().length, 2);
});
