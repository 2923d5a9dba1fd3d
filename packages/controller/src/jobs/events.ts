/**
 * The controller's side of events (docs/events.md): building the events that report a state
 * change, in the form the catalog outbox stores (the encoded pgfleet.v1.Event), and the Outbox
 * view of the catalog the relay reads. The store writes the events in the same transaction as
 * the change, so an event exists exactly when its change does. Which events a job's moves
 * publish is its kind's (jobs/<kind>.ts, gathered in jobs/registry.ts).
 */
import { fromBinary, toBinary } from '@bufbuild/protobuf';
import { timestampDate, timestampFromMs } from '@bufbuild/protobuf/wkt';
import { PgfleetError, type Logger } from '@pgfleet/core';
import { tryLead } from '../leadership.js';
import type {
  BackupRecord,
  CatalogStore,
  DumpRecord,
  JobRecord,
  LeadershipFence,
  OutboxEventInput,
  OutboxEventRecord,
} from '@pgfleet/catalog';
import { newEvent, type EventPayloadInit, type Outbox, type OutboxEntry } from '@pgfleet/events';
import {
  EventSchema,
  type DrillResult,
  type RotateKeyResult,
  type RecoverTableResult,
  type Event,
  type ExpireResult,
  type RestoreResult,
  type VerifyResult,
} from '@pgfleet/proto';

/** One event as the outbox stores it. */
export function outboxEvent(cluster: string, payload: EventPayloadInit, time: number): OutboxEventInput {
  const event = newEvent(cluster, payload, { time: new Date(time) });
  return { id: event.id, cluster, kind: event.kind, time, payload: toBinary(EventSchema, event) };
}

export function decodeOutboxEvent(record: OutboxEventRecord): Event {
  try {
    return fromBinary(EventSchema, record.payload);
  } catch (err) {
    throw new PgfleetError(
      'EventInvalid',
      `outbox event ${record.seq} (${record.id}) does not decode: ${(err as Error).message}`,
      { cause: err },
    );
  }
}

/** The leadership whose holder publishes the outbox: one publisher per catalog keeps events in commit order. */
export const OUTBOX_LEADERSHIP = 'outbox';

/**
 * The catalog as the relay's Outbox. With several controllers on one catalog only the one
 * holding the outbox leadership publishes (the others see an empty outbox), and it marks
 * events sent under the fence of the batch's leadership: a paused ex-publisher's late mark is
 * refused (LeadershipLost; what it published twice JetStream dropped by Nats-Msg-Id).
 */
export function catalogOutbox(store: CatalogStore, now: () => number = Date.now, logger?: Logger): Outbox {
  let fence: LeadershipFence | undefined;
  return {
    async nextBatch(limit: number): Promise<OutboxEntry[]> {
      if (!(await tryLead(store, OUTBOX_LEADERSHIP, logger))) return [];
      fence = store.leadershipFence(OUTBOX_LEADERSHIP);
      return (await store.nextUnsentEvents(limit)).map((r) => ({ seq: r.seq, event: decodeOutboxEvent(r) }));
    },
    async markSent(seqs: readonly number[]): Promise<void> {
      await store.markEventsSent(seqs, now(), fence);
    },
  };
}

/** Seconds from the job's start (else its creation) to now: the duration its events report. */
export function jobDurationSeconds(job: Pick<JobRecord, 'startedAt' | 'createdAt'>, now: number): number {
  const from = job.startedAt ?? job.createdAt;
  return from === null ? 0 : Math.max(0, (now - from) / 1000);
}

/** A job's error as the events' ErrorDetail, with the registry's hint for its code. */
export function errorDetail(
  error: { code: string; message: string } | undefined,
): { code: string; message: string; hint: string } | undefined {
  if (!error) return undefined;
  return { code: error.code, message: error.message, hint: PgfleetError.fromCode(error.code, '').hint ?? '' };
}

/** What a job's outcome tells its kind's events. */
export interface JobOutcomeDetails {
  error?: { code: string; message: string };
  backup?: BackupRecord;
  restore?: RestoreResult;
  expire?: ExpireResult;
  /** Labels the expire job removed that the catalog forgets. */
  expiredLabels?: readonly string[];
  verify?: VerifyResult;
  /** A drill's result, present on failure too (stage and reasons). */
  drill?: DrillResult;
  rotateKey?: RotateKeyResult;
  recoverTable?: RecoverTableResult;
  dump?: DumpRecord;
  /** Dumps the expire job deleted (marked expired in the catalog). */
  expiredDumpLabels?: readonly string[];
}

export function timestampMs(ts: { seconds: bigint; nanos: number } | undefined): number | null {
  if (!ts) return null;
  const ms = timestampDate(ts as Parameters<typeof timestampDate>[0]).getTime();
  return ms > 0 ? ms : null;
}

export { timestampFromMs };
