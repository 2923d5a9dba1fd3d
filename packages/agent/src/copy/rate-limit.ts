/**
 * --max-rate: one token bucket for all the copying an agent does for backups and restores, so a
 * backup cannot saturate the disk or the link of a busy database host. It meters content bytes:
 * what a backup reads from PGDATA and what a restore writes into it (the repository sees fewer
 * when compression works), so `--max-rate 20MB` bounds the I/O the cluster's host feels. WAL
 * archiving and wal-fetch are exempt: throttling archive_command would hold WAL in pg_wal and
 * stretch the RPO, the opposite of what the limit is for.
 *
 * Copy tasks run on the main thread and on worker threads (copy/pool.ts), so the bucket lives in
 * a SharedArrayBuffer every thread maps, kept as GCRA (the "theoretical arrival time" form of a
 * token bucket): one 64-bit time that every admission advances by bytes / rate with one
 * compare-and-swap, and that a caller sleeps against. No thread hands tokens to another, no lock
 * is held while anyone sleeps, and the limit holds across threads because they all advance the
 * same time. A second slot counts every byte admitted (the accounting tests and the job's log
 * line read it).
 *
 * The bucket holds BURST_BYTES (one 1 MiB copy block): an idle agent's first block goes at once,
 * and over any interval T at most rate * T + BURST_BYTES pass.
 */
import { setTimeout as sleepFor } from 'node:timers/promises';

/** One copy block (storage BLOCK_BYTES): what a caller asks for at a time. */
export const BURST_BYTES = 1 << 20;

/** What a worker thread needs to join the agent's bucket (CopyWorkerData.rate). */
export interface SharedRate {
  buffer: SharedArrayBuffer;
  bytesPerSecond: number;
  burstBytes: number;
}

/** Nanoseconds on a clock every thread of the process shares (CLOCK_MONOTONIC). */
export type Clock = () => bigint;

const SLOT_TAT = 0;
const SLOT_ADMITTED = 1;

export class RateLimiter {
  private readonly slots: BigInt64Array;
  private readonly burstNs: bigint;

  constructor(
    readonly shared: SharedRate,
    private readonly clock: Clock = process.hrtime.bigint,
    private readonly sleep: (ms: number) => Promise<unknown> = sleepFor,
  ) {
    if (!(shared.bytesPerSecond > 0)) throw new RangeError(`rate must be positive, got ${shared.bytesPerSecond}`);
    this.slots = new BigInt64Array(shared.buffer);
    this.burstNs = this.costNs(shared.burstBytes);
  }

  /** A new bucket of `bytesPerSecond`, full. */
  static create(bytesPerSecond: number, clock?: Clock, sleep?: (ms: number) => Promise<unknown>): RateLimiter {
    const buffer = new SharedArrayBuffer(2 * BigInt64Array.BYTES_PER_ELEMENT);
    return new RateLimiter({ buffer, bytesPerSecond, burstBytes: BURST_BYTES }, clock, sleep);
  }

  get bytesPerSecond(): number {
    return this.shared.bytesPerSecond;
  }

  /**
   * Waits until `bytes` may pass. The reservation is taken at once (so callers on other threads
   * queue behind it), then the caller sleeps until the bucket would have held them.
   */
  async admit(bytes: number): Promise<void> {
    if (bytes <= 0) return;
    const cost = this.costNs(bytes);
    let now: bigint;
    let next: bigint;
    for (;;) {
      const old = Atomics.load(this.slots, SLOT_TAT);
      now = this.clock();
      next = (old > now ? old : now) + cost;
      if (Atomics.compareExchange(this.slots, SLOT_TAT, old, next) === old) break;
    }
    Atomics.add(this.slots, SLOT_ADMITTED, BigInt(bytes));
    const waitNs = next - now - this.burstNs;
    if (waitNs > 0n) await this.sleep(Math.ceil(Number(waitNs) / 1e6));
  }

  /** Bytes admitted by every thread since the bucket was made. */
  admittedBytes(): number {
    return Number(Atomics.load(this.slots, SLOT_ADMITTED));
  }

  /** The bucket's theoretical arrival time (ns): tests check that every admission advanced it. */
  reservedUntilNs(): bigint {
    return Atomics.load(this.slots, SLOT_TAT);
  }

  private costNs(bytes: number): bigint {
    return BigInt(Math.ceil((bytes * 1e9) / this.shared.bytesPerSecond));
  }
}

/**
 * A pace function for one copy task: admits through `limiter` (none: no limit) and counts what it
 * admitted, which the task reports so a job can show that every byte it copied was metered.
 */
export function taskPace(limiter: RateLimiter | undefined): {
  pace: ((bytes: number) => Promise<void>) | undefined;
  paced: () => number;
} {
  let n = 0;
  if (!limiter) return { pace: undefined, paced: () => 0 };
  return {
    pace: (bytes) => {
      n += bytes;
      return limiter.admit(bytes);
    },
    paced: () => n,
  };
}
