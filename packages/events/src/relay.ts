/**
 * The outbox relay: moves events from the catalog's outbox to the event bus.
 *
 * The catalog writes an event in the same transaction as the state change it reports, so an
 * event exists exactly when its change does. This relay reads unsent events oldest first,
 * publishes them, and marks them sent only after the bus acknowledged them. When NATS is down
 * it waits with capped exponential backoff and tries the same event again: nothing is skipped,
 * and within a cluster nothing is published before the event ahead of it was acknowledged.
 * A crash between publish and markSent republishes the event with the same id, which JetStream
 * drops as a duplicate (at-least-once from here, effectively once on the stream).
 */
import { PgfleetError, asPgfleetError, silentLogger, type Logger } from '@pgfleet/core';
import type { Event } from '@pgfleet/proto';
import type { EventPublisher } from './publisher.js';

export interface OutboxEntry {
  /** The outbox's own sequence: increasing in the order the events were committed. */
  seq: number;
  event: Event;
}

/** The relay's view of the catalog outbox table. */
export interface Outbox {
  /** Up to `limit` unsent entries in ascending seq order (the oldest first). */
  nextBatch(limit: number): Promise<OutboxEntry[]>;
  /** Marks entries sent so nextBatch no longer returns them; marking one twice is harmless. */
  markSent(seqs: readonly number[]): Promise<void>;
}

export interface OutboxRelayOptions {
  outbox: Outbox;
  publisher: EventPublisher;
  logger?: Logger;
  /** Entries read per round; default 100. */
  batchSize?: number;
  /** How often an idle relay looks for new entries (notify() wakes it earlier); default 1 s. */
  pollIntervalMs?: number;
  /** First retry delay after a failure; default 250 ms. */
  initialBackoffMs?: number;
  /** Longest retry delay; default 30 s. */
  maxBackoffMs?: number;
  /** Source of jitter in [0, 1); tests pin it. Default Math.random. */
  random?: () => number;
}

export type RelayState = 'idle' | 'publishing' | 'backoff' | 'stopped';

export interface RelayStatus {
  state: RelayState;
  /** Events acknowledged by the bus and marked sent since start. */
  published: number;
  /** Failed rounds in a row (0 once a round succeeds). */
  consecutiveFailures: number;
  lastError?: PgfleetError;
  lastSentAt?: Date;
}

/** Result of one round. */
export interface RelayRound {
  /** Entries the outbox returned. */
  read: number;
  /** Entries published and marked sent. */
  sent: number;
  /** The first failure of the round (publishing or marking), if any. */
  error?: PgfleetError;
}

/**
 * Delay before retry number `attempt` (1-based): the cap doubles from `initialMs` up to `maxMs`,
 * and the delay is drawn from [cap/2, cap) so relays that failed together do not retry together.
 */
export function backoffDelay(
  attempt: number,
  initialMs: number,
  maxMs: number,
  random: () => number = Math.random,
): number {
  const cap = Math.min(maxMs, initialMs * 2 ** Math.max(0, Math.min(attempt - 1, 30)));
  return Math.round(cap / 2 + random() * (cap / 2));
}

export class OutboxRelay {
  private readonly outbox: Outbox;
  private readonly publisher: EventPublisher;
  private readonly log: Logger;
  private readonly batchSize: number;
  private readonly pollIntervalMs: number;
  private readonly initialBackoffMs: number;
  private readonly maxBackoffMs: number;
  private readonly random: () => number;

  private readonly st: RelayStatus = { state: 'stopped', published: 0, consecutiveFailures: 0 };
  private loop: Promise<void> | undefined;
  private stopping = false;
  /** notify() arrived while a round was running: look again before sleeping. */
  private notified = false;
  private wake: (() => void) | undefined;
  private idleWaiters: (() => void)[] = [];

  constructor(opts: OutboxRelayOptions) {
    this.outbox = opts.outbox;
    this.publisher = opts.publisher;
    this.log = (opts.logger ?? silentLogger()).child({ component: 'event-relay' });
    this.batchSize = opts.batchSize ?? 100;
    this.pollIntervalMs = opts.pollIntervalMs ?? 1000;
    this.initialBackoffMs = opts.initialBackoffMs ?? 250;
    this.maxBackoffMs = opts.maxBackoffMs ?? 30_000;
    this.random = opts.random ?? Math.random;
    if (!(this.batchSize >= 1))
      throw new PgfleetError('InvalidArgument', `relay batchSize must be >= 1, got ${this.batchSize}`);
  }

  get status(): Readonly<RelayStatus> {
    return { ...this.st };
  }

  /** Starts relaying in the background until stop(). Calling it again does nothing. */
  start(): void {
    if (this.loop) return;
    this.stopping = false;
    this.st.state = 'idle';
    this.loop = this.run();
  }

  /** New entries were committed: look now instead of at the next poll. */
  notify(): void {
    this.notified = true;
    const w = this.wake;
    if (w && this.st.state === 'idle') w();
  }

  /**
   * Stops after the publish in flight (if any) was answered and what was acknowledged is marked
   * sent. Unsent entries stay in the outbox for the next start. Does not close the publisher.
   */
  async stop(): Promise<void> {
    this.stopping = true;
    this.wake?.();
    await this.loop;
    this.loop = undefined;
    this.st.state = 'stopped';
    this.resolveIdle();
  }

  /** Resolves the next time the relay finds the outbox empty (or stops). */
  whenIdle(): Promise<void> {
    return new Promise((resolve) => this.idleWaiters.push(resolve));
  }

  /**
   * One round: read a batch, publish it, mark what was acknowledged. Clusters are published
   * side by side, each cluster's events one after the other; a cluster whose publish fails stops
   * there for this round (its later events wait), the others go on. Never throws: the first
   * failure is in the result.
   */
  async runOnce(): Promise<RelayRound> {
    let entries: OutboxEntry[];
    try {
      entries = await this.outbox.nextBatch(this.batchSize);
    } catch (err) {
      return { read: 0, sent: 0, error: wrap(err, 'reading the event outbox failed') };
    }
    if (entries.length === 0) return { read: 0, sent: 0 };

    const lanes = new Map<string, OutboxEntry[]>();
    for (const e of [...entries].sort((a, b) => a.seq - b.seq)) {
      const lane = lanes.get(e.event.cluster);
      if (lane) lane.push(e);
      else lanes.set(e.event.cluster, [e]);
    }
    const acked: number[] = [];
    let error: PgfleetError | undefined;
    await Promise.all(
      [...lanes.values()].map(async (lane) => {
        for (const entry of lane) {
          if (this.stopping) return;
          try {
            await this.publisher.publish(entry.event);
          } catch (err) {
            error ??= asPgfleetError(err);
            return;
          }
          acked.push(entry.seq);
        }
      }),
    );
    if (acked.length > 0) {
      acked.sort((a, b) => a - b);
      try {
        await this.outbox.markSent(acked);
      } catch (err) {
        // Published but not marked: the next round publishes them again under the same ids and
        // JetStream drops the copies.
        return {
          read: entries.length,
          sent: 0,
          error: wrap(err, `marking ${acked.length} published events sent failed`),
        };
      }
      this.st.published += acked.length;
      this.st.lastSentAt = new Date();
    }
    return error ? { read: entries.length, sent: acked.length, error } : { read: entries.length, sent: acked.length };
  }

  private async run(): Promise<void> {
    while (!this.stopping) {
      this.st.state = 'publishing';
      this.notified = false;
      const round = await this.runOnce();
      if (this.stopping) break;
      if (round.error) {
        this.st.consecutiveFailures++;
        this.st.lastError = round.error;
        const delay = backoffDelay(this.st.consecutiveFailures, this.initialBackoffMs, this.maxBackoffMs, this.random);
        this.log.warn(
          {
            err: round.error,
            code: round.error.code,
            attempt: this.st.consecutiveFailures,
            retryInMs: delay,
            sent: round.sent,
          },
          `event relay: ${round.error.message}; retrying`,
        );
        this.st.state = 'backoff';
        await this.sleep(delay);
        continue;
      }
      if (this.st.consecutiveFailures > 0) {
        this.log.info({ attempts: this.st.consecutiveFailures + 1 }, 'event relay: publishing again');
        this.st.consecutiveFailures = 0;
      }
      if (round.read > 0) continue; // read until a round comes back empty, then rest
      this.resolveIdle();
      this.st.state = 'idle';
      if (this.notified) continue;
      await this.sleep(this.pollIntervalMs);
    }
  }

  private sleep(ms: number): Promise<void> {
    return new Promise((resolve) => {
      const done = () => {
        clearTimeout(timer);
        this.wake = undefined;
        resolve();
      };
      const timer = setTimeout(done, ms);
      this.wake = done;
      if (this.stopping) done();
    });
  }

  private resolveIdle(): void {
    const waiters = this.idleWaiters;
    this.idleWaiters = [];
    for (const w of waiters) w();
  }
}

function wrap(err: unknown, what: string): PgfleetError {
  if (err instanceof PgfleetError) return err;
  return new PgfleetError('Internal', `${what}: ${err instanceof Error ? err.message : String(err)}`, { cause: err });
}
