// Credentials in URLs never reach a log line or an error a user sees.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { Writable } from 'node:stream';
import { pino } from 'pino';
import { redactCredentials } from './redact.js';
import { REDACT_PATHS, redactingSink } from './logger.js';
import { PgfleetError } from './errors.js';

test('redactCredentials hides passwords and lone user-info of URLs and secret query values', () => {
  const cases: [string, string][] = [
    [
      'nats://alice:s3cret@nats1:4222,nats://bob:pw@nats2',
      'nats://alice:[redacted]@nats1:4222,nats://bob:[redacted]@nats2',
    ],
    ['tls://TOKEN123@nats:4222', 'tls://[redacted]@nats:4222'],
    ['postgres://pgfleet:hunter2@db/catalog', 'postgres://pgfleet:[redacted]@db/catalog'],
    [
      'postgresql://db/catalog?sslmode=require&password=hunter2',
      'postgresql://db/catalog?sslmode=require&password=[redacted]',
    ],
    ['s3 endpoint http://AKID:SECRET@minio:9000 failed', 's3 endpoint http://AKID:[redacted]@minio:9000 failed'],
    ['no url here, user@example.com stays', 'no url here, user@example.com stays'],
    // In a JSON line a match never spans two strings.
    ['{"url":"http://host","mail":"a@b"}', '{"url":"http://host","mail":"a@b"}'],
    ['s3://bucket/prefix?endpoint=http://s3:9000&region=r', 's3://bucket/prefix?endpoint=http://s3:9000&region=r'],
  ];
  for (const [input, want] of cases) assert.equal(redactCredentials(input), want, input);
});

test('log lines carry no URL password: in the message, in fields, in bindings and in errors', () => {
  const lines: string[] = [];
  const sink = new Writable({
    write(chunk: Buffer, _enc, done) {
      lines.push(chunk.toString());
      done();
    },
  });
  const log = pino({ redact: { paths: REDACT_PATHS, censor: '[redacted]' } }, redactingSink(sink)).child({
    component: 'events',
    url: 'nats://u:bindpw@h',
  });
  log.info(
    { servers: ['nats://u:fieldpw@h:4222'], nested: { dsn: 'postgres://x:nestedpw@db/c' } },
    'connecting to nats://u:msgpw@h',
  );
  log.error({ err: new Error('connect to nats://u:errpw@h failed') }, 'failed');
  log.warn({ password: 'keypw', creds: 'credspw' }, 'keys');
  const text = lines.join('');
  for (const secret of ['bindpw', 'fieldpw', 'nestedpw', 'msgpw', 'errpw', 'keypw', 'credspw'])
    assert.ok(!text.includes(secret), `${secret} in ${text}`);
  assert.match(text, /nats:\/\/u:\[redacted\]@h:4222/);
  assert.match(text, /connecting to nats:\/\/u:\[redacted\]@h/);
});

test('an error shown to a user has its URL passwords redacted', () => {
  const e = new PgfleetError('InvalidConfig', 'cannot open postgres://pgfleet:hunter2@db/catalog');
  assert.equal(redactCredentials(e.format()).includes('hunter2'), false);
});
