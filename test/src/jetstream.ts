/**
 * Reading the events JetStream stream in e2e tests: everything it holds, by sequence (what a
 * consumer would get, authoritative for "none lost, none twice").
 */
import { jetstream, jetstreamManager } from '@nats-io/jetstream';
import { connect, type NatsConnection } from '@nats-io/transport-node';
import { waitFor } from './harness.js';

export const STREAM = 'PGFLEET_EVENTS';

export interface Received {
  subject: string;
  body: { id: string; kind: string; cluster: string; time: string; [k: string]: unknown };
}

/**
 * Once the relay created the stream (its first event published), a JetStream consumer (ordered,
 * ephemeral) of one cluster's events that pushes each one into `into` as it comes.
 */
export async function consumeClusterEvents(nc: NatsConnection, cluster: string, into: Received[]): Promise<void> {
  const jsm = await jetstreamManager(nc);
  await waitFor(
    'stream PGFLEET_EVENTS',
    async () => ((await jsm.streams.info(STREAM).catch(() => undefined))?.state.messages ?? 0) > 0,
    120_000,
  );
  const consumer = await jetstream(nc).consumers.get(STREAM, { filter_subjects: `pgfleet.events.${cluster}.>` });
  const messages = await consumer.consume();
  void (async () => {
    for await (const m of messages) into.push({ subject: m.subject, body: m.json() });
  })().catch(() => undefined);
}

/** Everything in the stream, in stream order (read by sequence). */
export async function streamContents(url: string): Promise<Received[]> {
  const nc = await connect({ servers: url, timeout: 30_000 });
  try {
    const jsm = await jetstreamManager(nc);
    const { state } = await jsm.streams.info(STREAM);
    const out: Received[] = [];
    for (let seq = state.first_seq; seq <= state.last_seq && state.messages > 0; seq++) {
      const m = await jsm.streams.getMessage(STREAM, { seq });
      if (m) out.push({ subject: m.subject, body: m.json() });
    }
    return out;
  } finally {
    await nc.close();
  }
}
