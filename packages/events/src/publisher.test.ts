// JetStreamPublisher against a real nats-server: stream creation, the wire format a plain
// JetStream consumer sees, dedupe by event id, and a NATS that is not there yet.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { equals } from '@bufbuild/protobuf';
import { AckPolicy, DeliverPolicy, jetstream, jetstreamManager, type JetStreamManager } from '@nats-io/jetstream';
import { connect, nanos, type NatsConnection } from '@nats-io/transport-node';
import { ErrorCodes, PgfleetError, sleep } from '@pgfleet/core';
import { EventSchema, type Event } from '@pgfleet/proto';
import { startNats, type NatsServer } from '@pgfleet/testkit';
import { decodeMessage, ENCODING_HEADER, MSG_ID_HEADER } from './encoding.js';
import { newEvent } from './kinds.js';
import { EVENTS_STREAM, JetStreamPublisher } from './publisher.js';
import { sampleEvent } from './test-fakes.js';

async function setup(
  t: import('node:test').TestContext,
): Promise<{ nats: NatsServer; nc: NatsConnection; jsm: JetStreamManager }> {
  const nats = await startNats();
  t.after(() => nats.stop());
  const nc = await connect({ servers: nats.url, timeout: 5000 });
  t.after(() => nc.close());
  return { nats, nc, jsm: await jetstreamManager(nc) };
}

/**
 * Publishes until NATS takes it: after a restart the client reconnects by itself, and the relay
 * retries likewise. The deadline only bounds a hang; how long a loaded machine takes is no test.
 */
async function publishOnceNatsIsUp(pub: JetStreamPublisher, e: Event): Promise<void> {
  const deadline = Date.now() + 120_000;
  for (;;) {
    try {
      await pub.publish(e);
      return;
    } catch (err) {
      if (Date.now() > deadline) throw err;
      await sleep(200);
    }
  }
}

test(
  'the stream is created if missing, with the configured retention and file storage',
  { timeout: 120_000 },
  async (t) => {
    const { nats, jsm } = await setup(t);
    const pub = new JetStreamPublisher({
      url: nats.url,
      stream: { maxAgeSeconds: 3600 * 24, maxBytes: 64 * 1024 * 1024, duplicateWindowSeconds: 600 },
    });
    t.after(() => pub.close());
    await pub.connect();
    const info = await jsm.streams.info(EVENTS_STREAM);
    assert.deepEqual(info.config.subjects, ['pgfleet.events.>']);
    assert.equal(info.config.storage, 'file');
    assert.equal(info.config.retention, 'limits');
    assert.equal(info.config.max_age, nanos(24 * 3600 * 1000));
    assert.equal(info.config.max_bytes, 64 * 1024 * 1024);
    assert.equal(info.config.duplicate_window, nanos(600 * 1000));
  },
);

test('an existing stream is left alone', { timeout: 120_000 }, async (t) => {
  const { nats, jsm } = await setup(t);
  await jsm.streams.add({
    name: EVENTS_STREAM,
    subjects: ['pgfleet.events.>'],
    max_age: nanos(60_000),
    max_msgs: 1000,
  });
  const pub = new JetStreamPublisher({ url: nats.url, stream: { maxAgeSeconds: 7 * 86400, maxBytes: 1 << 20 } });
  t.after(() => pub.close());
  await pub.publish(sampleEvent('rpo.breached'));
  const info = await jsm.streams.info(EVENTS_STREAM);
  assert.equal(info.config.max_age, nanos(60_000));
  assert.equal(info.config.max_msgs, 1000);
  assert.equal(info.config.max_bytes, -1);
  assert.equal(info.state.messages, 1);
});

test(
  'round trip: a plain JetStream consumer reads the JSON events as docs/events.md describes',
  { timeout: 120_000 },
  async (t) => {
    const { nats, nc, jsm } = await setup(t);
    const pub = new JetStreamPublisher({ url: nats.url });
    t.after(() => pub.close());
    const sent = [
      sampleEvent('backup.started', 'main', '00000000-0000-4000-8000-000000000001'),
      sampleEvent('backup.completed', 'main', '00000000-0000-4000-8000-000000000002'),
      sampleEvent('wal.archive_failed', 'eu.db 7', '00000000-0000-4000-8000-000000000003'),
      sampleEvent('rpo.breached', 'eu.db 7', '00000000-0000-4000-8000-000000000004'),
    ];
    for (const e of sent) await pub.publish(e);

    // What any consumer does: a durable pull consumer on the stream, JSON.parse of the body.
    await jsm.consumers.add(EVENTS_STREAM, {
      durable_name: 'reader',
      ack_policy: AckPolicy.Explicit,
      deliver_policy: DeliverPolicy.All,
    });
    const consumer = await jetstream(nc).consumers.get(EVENTS_STREAM, 'reader');
    const got: { subject: string; json: Record<string, unknown>; encoding: string; msgId: string }[] = [];
    for (let i = 0; i < sent.length; i++) {
      const m = await consumer.next({ expires: 5000 });
      assert.ok(m, `message ${i + 1} arrived`);
      got.push({
        subject: m.subject,
        json: m.json(),
        encoding: m.headers?.get(ENCODING_HEADER) ?? '',
        msgId: m.headers?.get(MSG_ID_HEADER) ?? '',
      });
      assert.ok(equals(EventSchema, decodeMessage(m), sent[i]!), 'decodeMessage gives back the event');
      m.ack();
    }
    assert.deepEqual(
      got.map((g) => g.subject),
      [
        'pgfleet.events.main.backup.started',
        'pgfleet.events.main.backup.completed',
        'pgfleet.events.eu_db_7.wal.archive_failed',
        'pgfleet.events.eu_db_7.rpo.breached',
      ],
    );
    for (const [i, g] of got.entries()) {
      assert.equal(g.encoding, 'json');
      assert.equal(g.msgId, sent[i]!.id, 'Nats-Msg-Id is the event id');
      assert.equal(g.json.id, sent[i]!.id);
      assert.equal(g.json.kind, sent[i]!.kind);
    }
    assert.equal(got[2]!.json.cluster, 'eu.db 7', 'the body keeps the real cluster name');
    assert.deepEqual(got[3]!.json.rpoBreached, {
      rpoSeconds: 930,
      thresholdSeconds: 900,
      lastArchivedWal: '000000010000000000000029',
      lastArchivedTime: '2026-11-24T15:14:42Z',
    });
    const completed = got[1]!.json.backupCompleted as { backup: { label: string; sizeBytes: string } };
    assert.equal(completed.backup.label, '20261124-153012F');
    assert.equal(completed.backup.sizeBytes, '52428800');
  },
);

test('binary encoding round trip', { timeout: 120_000 }, async (t) => {
  const { nats, nc } = await setup(t);
  const pub = new JetStreamPublisher({ url: nats.url, encoding: 'binary' });
  t.after(() => pub.close());
  const e = sampleEvent('drill.failed');
  await pub.publish(e);
  const m = await (await jetstream(nc).consumers.get(EVENTS_STREAM)).next({ expires: 5000 });
  assert.equal(m?.headers?.get(ENCODING_HEADER), 'binary');
  assert.ok(equals(EventSchema, decodeMessage(m!), e));
});

test('publishing the same event twice stores it once (Nats-Msg-Id dedupe)', { timeout: 120_000 }, async (t) => {
  const { nats, jsm } = await setup(t);
  const pub = new JetStreamPublisher({ url: nats.url });
  t.after(() => pub.close());
  const e = newEvent('main', { case: 'backupFailed', value: { jobId: 'j1' } });
  await pub.publish(e);
  await pub.publish(e); // resolves: a duplicate ack is success
  await pub.publish(newEvent('main', { case: 'backupFailed', value: { jobId: 'j1' } })); // another id
  const info = await jsm.streams.info(EVENTS_STREAM);
  assert.equal(info.state.messages, 2);
});

test(
  'NATS not there yet: publish fails with EventPublishFailed, then works once it is',
  { timeout: 180_000 },
  async (t) => {
    const { nats, nc } = await setup(t);
    await nc.close();
    await nats.kill();
    // A short connect timeout keeps the failure below quick (nothing listens); acks get time.
    const pub = new JetStreamPublisher({ url: nats.url, connectTimeoutMs: 1000, ackTimeoutMs: 15_000 });
    t.after(() => pub.close());
    const e = sampleEvent('agent.connected');
    await assert.rejects(
      pub.publish(e),
      (err: unknown) =>
        PgfleetError.is(err, 'EventPublishFailed') &&
        /cannot connect to NATS/.test(err.message) &&
        err.code === ErrorCodes.EventPublishFailed.code,
    );
    await nats.restart();
    await publishOnceNatsIsUp(pub, e);
    const nc2 = await connect({ servers: nats.url, timeout: 5000 });
    t.after(() => nc2.close());
    assert.equal((await (await jetstreamManager(nc2)).streams.info(EVENTS_STREAM)).state.messages, 1);
    await pub.close();
    await assert.rejects(
      pub.publish(e),
      (err: unknown) => PgfleetError.is(err, 'EventPublishFailed') && /closed/.test(err.message),
    );
  },
);

test('invalid events are refused before anything is sent', { timeout: 120_000 }, async (t) => {
  const { nats } = await setup(t);
  const pub = new JetStreamPublisher({ url: nats.url });
  t.after(() => pub.close());
  const e = sampleEvent('rpo.breached');
  e.kind = 'rpo.recovered';
  await assert.rejects(pub.publish(e), (err: unknown) => PgfleetError.is(err, 'EventInvalid'));
});

test(
  'dedupe survives a NATS restart: an event republished after the server came back is still stored once',
  { timeout: 180_000 },
  async (t) => {
    const { nats, nc } = await setup(t);
    await nc.close();
    const pub = new JetStreamPublisher({ url: nats.url, ackTimeoutMs: 15_000 });
    t.after(() => pub.close());
    const e = sampleEvent('wal.archive_failed');
    await pub.publish(e);
    await nats.kill();
    await assert.rejects(pub.publish(e), (err: unknown) => PgfleetError.is(err, 'EventPublishFailed'));
    await nats.restart();
    await publishOnceNatsIsUp(pub, e);
    const nc2 = await connect({ servers: nats.url, timeout: 5000 });
    t.after(() => nc2.close());
    assert.equal((await (await jetstreamManager(nc2)).streams.info(EVENTS_STREAM)).state.messages, 1);
  },
);
