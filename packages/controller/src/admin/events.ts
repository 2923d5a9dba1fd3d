/**
 * AdminService.ListEvents / WatchEvents: the catalog outbox as the CLI sees it (`pgfleet events
 * [--follow] [--cluster X]`), whether or not NATS is configured. Watching polls the outbox: the
 * events may be committed by another controller sharing the catalog.
 */
import type { MessageInitShape } from '@bufbuild/protobuf';
import { timestampFromMs } from '@bufbuild/protobuf/wkt';
import type { OutboxEventRecord } from '@pgfleet/catalog';
import type { CallContext } from '@pgfleet/rpc';
import type { EventEntrySchema, ListEventsRequest, WatchEventsRequest } from '@pgfleet/proto';
import type { ControllerContext } from '../context.js';
import { decodeOutboxEvent } from '../jobs/events.js';
import { sleep } from '@pgfleet/core';

const DEFAULT_LIMIT = 100;
const MAX_LIMIT = 10_000;
/** How often a watch looks for new events. */
export const WATCH_POLL_MS = 250;

function entry(r: OutboxEventRecord): MessageInitShape<typeof EventEntrySchema> {
  return {
    seq: BigInt(r.seq),
    event: decodeOutboxEvent(r),
    ...(r.sentAt !== null ? { sentAt: timestampFromMs(r.sentAt) } : {}),
  };
}

export async function listEvents(
  ctx: ControllerContext,
  req: ListEventsRequest,
): Promise<{ events: MessageInitShape<typeof EventEntrySchema>[] }> {
  const limit = Math.min(req.limit || DEFAULT_LIMIT, MAX_LIMIT);
  const cluster = req.cluster ? { cluster: req.cluster } : {};
  const rows = req.latest
    ? await ctx.store.listLatestEvents({ ...cluster, limit })
    : await ctx.store.listEvents({ ...cluster, afterSeq: Number(req.afterSeq), limit });
  return { events: rows.map(entry) };
}

export async function* watchEvents(
  ctx: ControllerContext,
  req: WatchEventsRequest,
  call: CallContext,
): AsyncGenerator<{ entry: MessageInitShape<typeof EventEntrySchema> }> {
  const cluster = req.cluster ? { cluster: req.cluster } : {};
  let after = Number(req.afterSeq);
  if (after === 0) after = (await ctx.store.listLatestEvents({ limit: 1 })).at(-1)?.seq ?? 0;
  while (!call.signal.aborted) {
    const rows = await ctx.store.listEvents({ ...cluster, afterSeq: after, limit: DEFAULT_LIMIT });
    for (const r of rows) {
      after = r.seq;
      yield { entry: entry(r) };
    }
    if (rows.length === DEFAULT_LIMIT) continue;
    await sleep(WATCH_POLL_MS, { signal: call.signal });
  }
}
