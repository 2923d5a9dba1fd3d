#!/usr/bin/env node
// Example pgfleet event consumer: posts every backup.failed event to a webhook.
//
// It uses nothing from pgfleet, only the NATS client (npm i @nats-io/transport-node
// @nats-io/jetstream), and reads events as the canonical protobuf JSON docs/events.md describes.
//
//   NATS_URL=nats://nats.example.com:4222 \
//   WEBHOOK_URL=https://hooks.slack.com/services/... \
//   node webhook-consumer.mjs
//
// Optional: CLUSTER (one cluster's subject token; default every cluster), DURABLE (consumer name,
// default pgfleet-webhook-backup-failed), RETRY_SECONDS (delay before a failed POST is retried,
// default 30).
//
// The consumer is durable: NATS remembers which events were acknowledged, so a restart of this
// script resumes where it stopped. Delivery to the webhook is at least once (a POST whose ack to
// NATS is lost is repeated); the Idempotency-Key header carries the event id for the receiver.
import { AckPolicy, DeliverPolicy, jetstream, jetstreamManager } from '@nats-io/jetstream';
import { connect, nanos } from '@nats-io/transport-node';

const natsUrl = process.env.NATS_URL ?? 'nats://127.0.0.1:4222';
const webhookUrl = process.env.WEBHOOK_URL;
const cluster = process.env.CLUSTER || '*';
const durable = process.env.DURABLE || 'pgfleet-webhook-backup-failed';
const retryMs = Number(process.env.RETRY_SECONDS ?? 30) * 1000;
if (!webhookUrl) {
  console.error('set WEBHOOK_URL to the URL to POST backup.failed events to');
  process.exit(2);
}

const stream = 'PGFLEET_EVENTS'; // created by the pgfleet controller
const subject = `pgfleet.events.${cluster}.backup.failed`;

const nc = await connect({ servers: natsUrl, maxReconnectAttempts: -1, name: 'pgfleet-webhook-example' });
const jsm = await jetstreamManager(nc);
// New events only: a webhook set up today should not hear about last month's failures.
await jsm.consumers.add(stream, {
  durable_name: durable,
  filter_subject: subject,
  ack_policy: AckPolicy.Explicit,
  deliver_policy: DeliverPolicy.New,
  ack_wait: nanos(60_000),
});
const consumer = await jetstream(nc).consumers.get(stream, durable);
const messages = await consumer.consume();

for (const sig of ['SIGINT', 'SIGTERM']) {
  process.once(sig, () => {
    messages.stop(); // ends the loop below
  });
}
console.log(`forwarding ${subject} from ${natsUrl} to ${webhookUrl}`);

for await (const m of messages) {
  // Events are JSON unless the publisher was configured for binary.
  if ((m.headers?.get('pgfleet-encoding') || 'json') !== 'json') {
    console.error(`skipping ${m.subject}: not JSON-encoded`);
    m.term();
    continue;
  }
  let event;
  try {
    event = m.json();
  } catch (err) {
    console.error(`skipping ${m.subject}: ${err.message}`);
    m.term();
    continue;
  }
  // { id, time, cluster, kind: "backup.failed", backupFailed: { jobId, label, type, error: { code, message, hint }, ... } }
  const failed = event.backupFailed ?? {};
  const error = failed.error ?? {};
  const text = `pgfleet: backup ${failed.label ?? ''} of cluster ${event.cluster} failed at ${event.time}: ${error.code ?? ''} ${error.message ?? ''}`.replace(/ +/g, ' ');
  try {
    const res = await fetch(webhookUrl, {
      method: 'POST',
      headers: { 'content-type': 'application/json', 'idempotency-key': event.id },
      body: JSON.stringify({ text, event }),
      signal: AbortSignal.timeout(10_000),
    });
    if (!res.ok) throw new Error(`HTTP ${res.status}`);
    m.ack();
    console.log(`posted event ${event.id} (${event.cluster})`);
  } catch (err) {
    console.error(`webhook failed for event ${event.id}: ${err.message}; retrying in ${retryMs / 1000} s`);
    m.nak(retryMs);
  }
}
await nc.drain();
