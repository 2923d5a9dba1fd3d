/**
 * `pgfleet events [--cluster X] [--follow] [--output json] [--limit N]`: the events in the
 * controller's catalog outbox (docs/events.md), whether or not NATS is configured. The newest
 * `limit` first, oldest first; --follow then prints new ones as they are committed until Ctrl-C.
 * JSON output is one canonical protobuf JSON Event per line (as on NATS), so it pipes into jq.
 */
import { toJson } from '@bufbuild/protobuf';
import { timestampMs } from '@bufbuild/protobuf/wkt';
import type { OptionValues } from '@pgfleet/core';
import { EventSchema, type EventEntry } from '@pgfleet/proto';
import { formatTime } from './format.js';
import { out, type Admin } from './output.js';
import { cliSettings } from './program.js';

function summary(e: EventEntry): string {
  const ev = e.event!;
  const body = toJson(EventSchema, ev) as Record<string, unknown> | null;
  const details = body && ev.payload.case ? JSON.stringify(body[ev.payload.case] ?? {}) : '';
  return [
    String(e.seq).padStart(6),
    formatTime(ev.time ? timestampMs(ev.time) : undefined),
    ev.cluster,
    ev.kind.padEnd(22),
    e.sentAt ? 'sent' : 'unsent',
    details,
  ].join('  ');
}

function print(e: EventEntry, json: boolean): void {
  if (!e.event) return;
  if (json) out(JSON.stringify(toJson(EventSchema, e.event)));
  else out(summary(e));
}

export async function eventsCommand(admin: Admin, options: OptionValues, json: boolean): Promise<number> {
  const settings = cliSettings('events', options);
  const cluster = settings.cluster ?? '';
  const { events } = await admin.listEvents({ cluster, latest: true, limit: settings.limit });
  for (const e of events) print(e, json);
  if (!settings.follow) return 0;
  const stop = new AbortController();
  const onSigint = (): void => stop.abort();
  process.once('SIGINT', onSigint);
  // From the newest shown, or (nothing shown) from the newest in the outbox at all.
  let after = events.at(-1)?.seq ?? 0n;
  if (after === 0n) after = (await admin.listEvents({ latest: true, limit: 1 })).events.at(-1)?.seq ?? 0n;
  try {
    for await (const { entry } of admin.watchEvents({ cluster, afterSeq: after }, { signal: stop.signal })) {
      if (entry) print(entry, json);
    }
  } catch (err) {
    if (!stop.signal.aborted) throw err;
  } finally {
    process.off('SIGINT', onSigint);
  }
  return 0;
}
