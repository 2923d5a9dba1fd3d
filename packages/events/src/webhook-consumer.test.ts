// Runs examples/webhook-consumer.mjs (the consumer docs/events.md shows) against a real
// nats-server and a local HTTP server standing in for the webhook.
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { once } from 'node:events';
import { createServer, type IncomingHttpHeaders } from 'node:http';
import type { AddressInfo } from 'node:net';
import { test } from 'node:test';
import { fileURLToPath } from 'node:url';
import { ErrorCodes } from '@pgfleet/core';
import { startNats, tail } from '@pgfleet/testkit';
import { newEvent } from './kinds.js';
import { JetStreamPublisher } from './publisher.js';
import { sampleEvent } from './test-fakes.js';
import { sleep } from '@pgfleet/core';

const script = fileURLToPath(new URL('../examples/webhook-consumer.mjs', import.meta.url));

test(
  'example webhook consumer posts backup.failed events (and only those) to the webhook, retrying a failed POST',
  { timeout: 180_000 },
  async (t) => {
    const nats = await startNats();
    t.after(() => nats.stop());
    const pub = new JetStreamPublisher({ url: nats.url });
    t.after(() => pub.close());
    await pub.connect(); // the controller creates the stream; the consumer expects it

    const posts: {
      status: number;
      headers: IncomingHttpHeaders;
      body: { text: string; event: Record<string, unknown> };
    }[] = [];
    let refuseNext = 1; // the first POST fails: the consumer must retry it
    const http = createServer((req, res) => {
      let body = '';
      req.setEncoding('utf8');
      req.on('data', (c: string) => (body += c));
      req.on('end', () => {
        const status = refuseNext-- > 0 ? 503 : 200;
        posts.push({ status, headers: req.headers, body: JSON.parse(body) });
        res.writeHead(status).end();
      });
    });
    http.listen(0, '127.0.0.1');
    await once(http, 'listening');
    t.after(() => new Promise<void>((r) => http.close(() => r())));
    const webhook = `http://127.0.0.1:${(http.address() as AddressInfo).port}/hook`;

    const child = spawn(process.execPath, [script], {
      env: { ...process.env, NATS_URL: nats.url, WEBHOOK_URL: webhook, RETRY_SECONDS: '0.5' },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let out = '';
    child.stdout.setEncoding('utf8').on('data', (c: string) => (out += c));
    child.stderr.setEncoding('utf8').on('data', (c: string) => (out += c));
    const exited = once(child, 'exit');
    t.after(() => {
      if (child.exitCode === null) child.kill('SIGKILL');
    });
    const until = async (what: string, cond: () => boolean) => {
      const deadline = Date.now() + 120_000;
      while (!cond()) {
        if (Date.now() > deadline || child.exitCode !== null) {
          throw new Error(
            `${what}: not reached\n--- consumer output ---\n${out}\n--- nats-server log ---\n${tail(await nats.log())}`,
          );
        }
        await sleep(20);
      }
    };
    await until('consumer ready', () => out.includes('forwarding pgfleet.events.*.backup.failed'));

    const failedMain = sampleEvent('backup.failed', 'main', '11111111-1111-4111-8111-111111111111');
    await pub.publish(sampleEvent('backup.completed', 'main', '22222222-2222-4222-8222-222222222222'));
    await pub.publish(failedMain);
    const failedOther = newEvent('eu.db 2', {
      case: 'backupFailed',
      value: {
        jobId: 'j2',
        label: '20261124-170000F',
        error: { code: ErrorCodes.PgConnectFailed.code, message: 'cannot connect to PostgreSQL' },
      },
    });
    await pub.publish(failedOther);
    await pub.publish(sampleEvent('rpo.breached', 'main', '33333333-3333-4333-8333-333333333333'));

    await until('both failures posted', () => posts.filter((p) => p.status === 200).length === 2);
    const ok = posts.filter((p) => p.status === 200);
    // A refused event is retried after RETRY_SECONDS, so the next one may overtake it.
    assert.deepEqual(
      ok.map((p) => p.body.event.id).sort(),
      [failedMain.id, failedOther.id].sort(),
      'backup.failed only, each delivered once',
    );
    assert.equal(posts[0]!.status, 503);
    assert.equal(posts[0]!.body.event.id, failedMain.id, 'the refused POST was retried');
    const main = ok.find((p) => p.body.event.id === failedMain.id)!;
    const other = ok.find((p) => p.body.event.id === failedOther.id)!;
    assert.equal(main.headers['idempotency-key'], failedMain.id);
    assert.equal(
      main.body.text,
      'pgfleet: backup 20261124-160000I of cluster main failed at 2026-11-24T15:30:12Z: PGF-5004 cannot write /backup/main/backup/20261124-160000I: EACCES',
    );
    assert.equal(other.body.event.cluster, 'eu.db 2');
    assert.equal(
      (other.body.event.backupFailed as { error: { code: string } }).error.code,
      ErrorCodes.PgConnectFailed.code,
    );

    child.kill('SIGTERM');
    const [code] = await exited;
    assert.equal(code, 0, out);
    assert.equal(posts.length, 3);
  },
);
