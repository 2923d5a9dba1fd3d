// Real-server test of startNats: JetStream publish/read-back through the official client, cleanup.
import assert from 'node:assert/strict';
import { existsSync } from 'node:fs';
import { test } from 'node:test';
import { jetstream, jetstreamManager } from '@nats-io/jetstream';
import { connect } from '@nats-io/transport-node';
import { isPortListening, startNats } from './index.js';
import { tail } from './os-user.js';

test('startNats: JetStream stream publish and read back, stop removes the store', { timeout: 120_000 }, async (t) => {
  const nats = await startNats();
  t.after(() => nats.stop());
  assert.notEqual(nats.port, 4222);
  assert.equal(nats.url, `nats://127.0.0.1:${nats.port}`);

  const nc = await connect({ servers: nats.url, timeout: 5000 });
  t.after(() => nc.close());
  try {
    const jsm = await jetstreamManager(nc);
    await jsm.streams.add({ name: 'TESTKIT', subjects: ['testkit.>'] });
    const js = jetstream(nc);
    const ack = await js.publish('testkit.hello', 'hello jetstream');
    assert.equal(ack.stream, 'TESTKIT');
    assert.equal(ack.seq, 1);

    const stored = await jsm.streams.getMessage('TESTKIT', { seq: 1 });
    assert.equal(stored?.string(), 'hello jetstream');

    const consumer = await js.consumers.get('TESTKIT');
    const m = await consumer.next({ expires: 5000 });
    assert.equal(m?.subject, 'testkit.hello');
    assert.equal(m?.string(), 'hello jetstream');
  } catch (err) {
    throw new Error(`${(err as Error).message}\n--- nats-server log tail ---\n${tail(await nats.log())}`, {
      cause: err,
    });
  } finally {
    await nc.close();
  }

  await nats.stop();
  await nats.stop(); // idempotent
  assert.equal(existsSync(nats.storeDir), false, 'store dir removed');
  assert.equal(await isPortListening(nats.port), false, 'server gone');
});

test('startNats: kill() and restart() keep the port and the JetStream store', { timeout: 180_000 }, async (t) => {
  const nats = await startNats();
  t.after(() => nats.stop());
  const nc1 = await connect({ servers: nats.url, timeout: 5000 });
  const jsm1 = await jetstreamManager(nc1);
  await jsm1.streams.add({ name: 'KEEP', subjects: ['keep.>'] });
  await jetstream(nc1).publish('keep.one', 'survives a restart');
  await nc1.close();

  await nats.kill();
  await nats.kill(); // idempotent
  assert.equal(nats.running, false);
  assert.equal(await isPortListening(nats.port), false, 'server gone');
  assert.equal(existsSync(nats.storeDir), true, 'store kept');

  await nats.restart();
  assert.equal(nats.running, true);
  const nc2 = await connect({ servers: nats.url, timeout: 5000 });
  t.after(() => nc2.close());
  const stored = await (await jetstreamManager(nc2)).streams.getMessage('KEEP', { seq: 1 });
  assert.equal(stored?.string(), 'survives a restart');
  await nc2.close();

  await nats.stop();
  assert.equal(existsSync(nats.storeDir), false, 'store dir removed');
});
