// The controller's NATS credentials and TLS options against a real nats-server that requires
// both: the events reach the stream over verified TLS as the configured user, a wrong password
// is a clear EventPublishFailed, and no password is in the error or the log.
import assert from 'node:assert/strict';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Writable } from 'node:stream';
import { after, before, test } from 'node:test';
import { pino } from 'pino';
import { jetstreamManager } from '@nats-io/jetstream';
import { connect } from '@nats-io/transport-node';
import { PgfleetError, REDACT_PATHS, redactingSink } from '@pgfleet/core';
import { createCertificateAuthority, issueServerCertificate } from '@pgfleet/rpc/pki';
import { startNats, type NatsServer } from '@pgfleet/testkit';
import { EVENTS_STREAM, JetStreamPublisher, natsSecurityOptions } from './publisher.js';
import { sampleEvent } from './test-fakes.js';

const PASSWORD = 'n4ts-s3cret-pw';
let dir = '';
let nats: NatsServer;
let caFile = '';

before(async () => {
  dir = await mkdtemp(join(tmpdir(), 'pgfleet-nats-tls-'));
  const ca = await createCertificateAuthority();
  const server = await issueServerCertificate(ca, { hostnames: ['127.0.0.1', 'localhost'] });
  caFile = join(dir, 'ca.crt');
  await writeFile(caFile, ca.certPem);
  await writeFile(join(dir, 'server.crt'), server.certPem);
  await writeFile(join(dir, 'server.key'), server.keyPem, { mode: 0o600 });
  nats = await startNats({
    args: [
      '--user',
      'pgfleet',
      '--pass',
      PASSWORD,
      '--tls',
      '--tlscert',
      join(dir, 'server.crt'),
      '--tlskey',
      join(dir, 'server.key'),
    ],
  });
});

after(async () => {
  await nats?.stop();
  await rm(dir, { recursive: true, force: true });
});

test('with --nats-user/--nats-password and --nats-tls-ca the events reach the stream over verified TLS', async () => {
  const opts = natsSecurityOptions({ user: 'pgfleet', password: PASSWORD, tlsCa: caFile });
  const pub = new JetStreamPublisher({ url: nats.url, natsOptions: opts });
  try {
    await pub.publish(sampleEvent('rpo.breached'));
  } finally {
    await pub.close();
  }
  const nc = await connect({ servers: nats.url, timeout: 5000, ...opts });
  try {
    const info = await (await jetstreamManager(nc)).streams.info(EVENTS_STREAM);
    assert.equal(info.state.messages, 1);
  } finally {
    await nc.close();
  }
});

test('a wrong password, or no TLS trust, is EventPublishFailed; no password in the error or the log', async () => {
  const lines: string[] = [];
  const sink = new Writable({
    write(chunk: Buffer, _enc, done) {
      lines.push(chunk.toString());
      done();
    },
  });
  const logger = pino({ redact: { paths: REDACT_PATHS, censor: '[redacted]' } }, redactingSink(sink));
  // The password also in the URL, as an operator might paste it: redacted wherever it shows.
  const url = nats.url.replace('nats://', `nats://pgfleet:${PASSWORD}-url@`);
  for (const natsOptions of [
    natsSecurityOptions({ user: 'pgfleet', password: 'wrong', tlsCa: caFile }),
    natsSecurityOptions({ user: 'pgfleet', password: PASSWORD }),
  ]) {
    const pub = new JetStreamPublisher({ url, natsOptions, logger, connectTimeoutMs: 3000 });
    try {
      const err = await pub.publish(sampleEvent('rpo.breached')).then(
        () => undefined,
        (e: unknown) => e,
      );
      assert.ok(PgfleetError.is(err, 'EventPublishFailed'), String(err));
      logger.error({ err, url }, `publish to ${url} failed`);
      assert.ok(!err.message.includes(PASSWORD), err.message);
    } finally {
      await pub.close();
    }
  }
  const text = lines.join('');
  assert.ok(text.length > 0);
  assert.ok(!text.includes(PASSWORD), text);
});

test('a client certificate without its key is refused before connecting', () => {
  assert.throws(
    () => natsSecurityOptions({ tlsCert: join(dir, 'server.crt') }),
    (e: unknown) => PgfleetError.is(e, 'InvalidConfig') && /nats-tls-cert and nats-tls-key/.test(e.message),
  );
});
