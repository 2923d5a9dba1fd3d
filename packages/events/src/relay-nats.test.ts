// OutboxRelay + JetStreamPublisher against a real nats-server: a crash between publish and
// markSent is deduped by JetStream, and a NATS outage in the middle of relaying loses,
// duplicates and reorders nothing.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { jetstreamManager, type JetStreamManager } from '@nats-io/jetstream';
import { connect } from '@nats-io/transport-node';
import type { Event } from '@pgfleet/proto';
import { startNats, tail, type NatsServer } from '@pgfleet/testkit';
import { decodeEvent, ENCODING_HEADER } from './encoding.js';
import { newEvent } from './kinds.js';
import { EVENTS_STREAM, JetStreamPublisher } from './publisher.js';
import { OutboxRelay } from './relay.js';
import { CountingPublisher, MemoryOutbox } from './test-fakes.js';
import { sleep } from '@pgfleet/core';

function events(n: number, clusters: string[]): Event[] {
  return Array.from({ length: n }, (_, i) =>
    newEvent(clusters[i % clusters.length]!, {
      case: 'backupStarted',
      value: { jobId: `job-${i}`, label: `label-${i}` },
    }),
  );
}

/** Every event in the stream, in stream order, with its subject. */
async function streamContents(url: string): Promise<{ subject: string; event: Event }[]> {
  const nc = await connect({ servers: url, timeout: 5000 });
  try {
    const jsm: JetStreamManager = await jetstreamManager(nc);
    const { state } = await jsm.streams.info(EVENTS_STREAM);
    const out: { subject: string; event: Event }[] = [];
    for (let seq = state.first_seq; seq <= state.last_seq && state.messages > 0; seq++) {
      const m = await jsm.streams.getMessage(EVENTS_STREAM, { seq });
      if (m) out.push({ subject: m.subject, event: decodeEvent(m.data, m.header.get(ENCODING_HEADER)) });
    }
    return out;
  } finally {
    await nc.close();
  }
}

function idsByCluster(list: Event[]): Map<string, string[]> {
  const m = new Map<string, string[]>();
  for (const e of list) m.set(e.cluster, [...(m.get(e.cluster) ?? []), e.id]);
  return m;
}

async function until(what: string, cond: () => boolean, timeoutMs: number): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!cond()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await sleep(20);
  }
}

async function withLog<T>(nats: NatsServer, fn: () => Promise<T>): Promise<T> {
  try {
    return await fn();
  } catch (err) {
    throw new Error(`${(err as Error).message}\n--- nats-server log tail ---\n${tail(await nats.log())}`, {
      cause: err,
    });
  }
}

test(
  'crash after publish, before markSent: the next relay republishes the same ids and JetStream keeps one copy',
  { timeout: 180_000 },
  async (t) => {
    const nats = await startNats();
    t.after(() => nats.stop());
    await withLog(nats, async () => {
      const outbox = new MemoryOutbox();
      const all = events(10, ['a', 'b']);
      outbox.add(...all);
      outbox.failMarks = 1; // the "crash": published and acked, never marked

      const first = new CountingPublisher(new JetStreamPublisher({ url: nats.url }));
      const crashed = await new OutboxRelay({ outbox, publisher: first }).runOnce();
      await first.close();
      assert.match(crashed.error?.message ?? '', /crashed before markSent/);
      assert.equal(first.calls, 10);
      assert.equal(outbox.unsent().length, 10, 'nothing marked');

      // The controller comes back: a new publisher (new connection) and a new relay.
      const second = new CountingPublisher(new JetStreamPublisher({ url: nats.url }));
      t.after(() => second.close());
      const relay = new OutboxRelay({ outbox, publisher: second, initialBackoffMs: 10, maxBackoffMs: 50 });
      const idle = relay.whenIdle();
      relay.start();
      await idle;
      await relay.stop();
      assert.equal(second.calls, 10, 'all ten published again');
      assert.deepEqual(outbox.unsent(), []);

      const stored = await streamContents(nats.url);
      assert.equal(stored.length, 10, 'the republished copies were dropped as duplicates');
      assert.deepEqual(idsByCluster(stored.map((s) => s.event)), idsByCluster(all));
    });
  },
);

test(
  'NATS stops mid-relay and comes back on the same port and store: every event arrives once, in order per cluster',
  { timeout: 300_000 },
  async (t) => {
    const nats = await startNats();
    t.after(() => nats.stop());
    await withLog(nats, async () => {
      const outbox = new MemoryOutbox();
      const before = events(600, ['a', 'b', 'c']);
      outbox.add(...before);
      const publisher = new JetStreamPublisher({ url: nats.url, ackTimeoutMs: 500, connectTimeoutMs: 500 });
      t.after(() => publisher.close());
      const relay = new OutboxRelay({
        outbox,
        publisher,
        batchSize: 20,
        initialBackoffMs: 50,
        maxBackoffMs: 400,
        pollIntervalMs: 50,
      });
      t.after(() => relay.stop());
      relay.start();

      await until('some events published', () => relay.status.published >= 60, 120_000);
      await nats.kill(); // mid-relay: publishes are in flight
      const sentBeforeOutage = relay.status.published;
      assert.ok(sentBeforeOutage < 600, 'the outage hit before the outbox was drained');

      // Events keep being committed while NATS is down; they wait in the outbox.
      const during = events(30, ['a', 'b', 'c', 'd']);
      outbox.add(...during);
      relay.notify();
      await until('the relay to fail and back off a few times', () => relay.status.consecutiveFailures >= 3, 120_000);
      assert.equal(relay.status.lastError?.errorName, 'EventPublishFailed');
      const stuck = relay.status.published;

      await nats.restart();
      const idle = relay.whenIdle();
      await idle;
      assert.ok(relay.status.published > stuck, 'resumed after the restart');
      assert.equal(relay.status.consecutiveFailures, 0);
      assert.deepEqual(outbox.unsent(), []);

      const all = [...before, ...during];
      const stored = await streamContents(nats.url);
      const ids = stored.map((s) => s.event.id);
      assert.equal(new Set(ids).size, ids.length, 'no event stored twice');
      assert.equal(stored.length, all.length, 'no event lost');
      assert.deepEqual(idsByCluster(stored.map((s) => s.event)), idsByCluster(all), 'order per cluster kept');
      for (const s of stored) assert.equal(s.subject, `pgfleet.events.${s.event.cluster}.backup.started`);
    });
  },
);
