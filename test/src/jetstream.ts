/**
 * Reading the events JetStream stream in e2e tests: everything it holds, by sequence (what a
 * consumer would get, authoritative for "none lost, none twice").
 */
import { jetstreamManager } from '@nats-io/jetstream';
import { connect } from '@nats-io/transport-node';

export const STREAM = 'PGFLEET_EVENTS';

export interface Received {
  subject: string;
  body: { id: string; kind: string; cluster: string; time: string; [k: string]: unknown };
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
