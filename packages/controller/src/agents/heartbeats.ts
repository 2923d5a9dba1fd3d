/**
 * Agents' heartbeats into the catalog in batches. 10,000 agents beating every 5 s are 2,000 beats
 * a second; written one by one (on PostgreSQL a round trip and a commit, so a WAL flush, per beat,
 * through a pool of 10 connections) only 70% of the agents had a heartbeat recorded in a 30 s
 * window (bench/fleet-scale.mjs, docs/benchmarks.md). Here the beats that arrive while a batch is
 * being written wait for the next write, so batches grow with the catalog's latency by themselves:
 * no timer to tune, and a beat waits for at most the write before its own. Each beat's promise
 * settles with its batch's write, so a stream still reads its next message only once its last
 * heartbeat is recorded (or its failure logged), as with one write per beat.
 */
import type { AgentHeartbeat, CatalogStore } from '@pgfleet/catalog';

/** Beats per catalog write at most: one statement's parameters and one SQLite transaction stay small. */
export const MAX_HEARTBEATS_PER_WRITE = 1000;

interface Waiting {
  beat: AgentHeartbeat;
  resolve(): void;
  reject(err: unknown): void;
}

export class HeartbeatBatcher {
  private waiting: Waiting[] = [];
  private writing = false;

  constructor(private readonly store: Pick<CatalogStore, 'recordHeartbeats'>) {}

  /** Resolves once the beat is in the catalog; rejects with its batch's error. */
  record(beat: AgentHeartbeat): Promise<void> {
    return new Promise((resolve, reject) => {
      this.waiting.push({ beat, resolve, reject });
      if (!this.writing) {
        this.writing = true;
        void this.writeAll();
      }
    });
  }

  private async writeAll(): Promise<void> {
    // The beats other streams deliver in this turn of the event loop join the first batch.
    await new Promise<void>((resolve) => setImmediate(resolve));
    while (this.waiting.length > 0) {
      const batch = this.waiting.splice(0, MAX_HEARTBEATS_PER_WRITE);
      try {
        await this.store.recordHeartbeats(batch.map((w) => w.beat));
        for (const w of batch) w.resolve();
      } catch (err) {
        for (const w of batch) w.reject(err);
      }
    }
    this.writing = false;
  }
}
