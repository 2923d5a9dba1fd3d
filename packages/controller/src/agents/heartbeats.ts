/**
 * Agents' heartbeats and Hellos into the catalog in batches. 10,000 agents beating every 5 s are
 * 2,000 beats a second; written one by one (on PostgreSQL a round trip and a commit, so a WAL
 * flush, per beat, through a pool of 10 connections) only 70% of the agents had a heartbeat
 * recorded in a 30 s window (bench/fleet-scale.mjs, docs/benchmarks.md). A connect storm is the
 * same for Hellos: a transaction of six round trips each, 10,000 at once, and those that waited
 * more than the pool's connect timeout for a connection lost their streams (1,180 of 10,000).
 * Here the items that arrive while a batch is being written wait for the next write, so batches
 * grow with the catalog's latency by themselves: no timer to tune, and an item waits for at most
 * the write before its own. Each item's promise settles with its batch's write (and that item's
 * own outcome in it), so a stream still goes on only once its Hello or last heartbeat is recorded.
 */
import type { AgentHeartbeat, CatalogStore, ConnectingHello } from '@pgfleet/catalog';

/** Beats per catalog write at most: one statement's parameters and one SQLite transaction stay small. */
export const MAX_HEARTBEATS_PER_WRITE = 1000;
/** Hellos per catalog write at most (a SQLite transaction of 500 Hellos holds the thread ~10 ms). */
export const MAX_HELLOS_PER_WRITE = 500;

interface Waiting<T> {
  item: T;
  resolve(): void;
  reject(err: unknown): void;
}

/**
 * Writes items in batches, one write at a time. `write` returns, per item of its batch, the error
 * that refused that item alone (or nothing for all accepted); a write that throws fails its batch.
 */
export class WriteBatcher<T> {
  private waiting: Array<Waiting<T>> = [];
  private writing = false;

  constructor(
    private readonly write: (items: T[]) => Promise<ReadonlyArray<Error | undefined> | void>,
    private readonly maxPerWrite: number,
  ) {}

  /** Resolves once the item is in the catalog; rejects with its own refusal or its batch's error. */
  record(item: T): Promise<void> {
    return new Promise((resolve, reject) => {
      this.waiting.push({ item, resolve, reject });
      if (!this.writing) {
        this.writing = true;
        void this.writeAll();
      }
    });
  }

  private async writeAll(): Promise<void> {
    // The items other streams deliver in this turn of the event loop join the first batch.
    await new Promise<void>((resolve) => setImmediate(resolve));
    while (this.waiting.length > 0) {
      const batch = this.waiting.splice(0, this.maxPerWrite);
      try {
        const refused = (await this.write(batch.map((w) => w.item))) ?? [];
        batch.forEach((w, i) => {
          const err = refused[i];
          if (err) w.reject(err);
          else w.resolve();
        });
      } catch (err) {
        for (const w of batch) w.reject(err);
      }
    }
    this.writing = false;
  }
}

export class HeartbeatBatcher extends WriteBatcher<AgentHeartbeat> {
  constructor(store: Pick<CatalogStore, 'recordHeartbeats'>) {
    super((beats) => store.recordHeartbeats(beats), MAX_HEARTBEATS_PER_WRITE);
  }
}

/** Hellos into the catalog (store.connectAgents) for one controller. */
export class HelloBatcher extends WriteBatcher<ConnectingHello> {
  constructor(store: Pick<CatalogStore, 'connectAgents'>, controllerId: string, now: () => number) {
    super((hellos) => store.connectAgents(hellos, controllerId, now()), MAX_HELLOS_PER_WRITE);
  }
}
