/**
 * Runs copy tasks (copy/tasks.ts) on `threads` threads, the main thread and worker threads, a few
 * tasks in flight per thread (so one file's fsync overlaps another's compression), in the order
 * they are submitted: callers submit the largest first so the cores finish together. Each worker
 * opens the repository again from its specs (Repository.threadSpecs); for repositories that have
 * none (S3, mirrors) every task runs on the main thread with the same concurrency.
 *
 * cancel() rejects everything not yet started; tasks already running finish (they are bounded:
 * one file or one chunk), so after `settle()` nothing writes into the repository any more.
 */
import { Worker } from 'node:worker_threads';
import type { Repository } from '@pgfleet/storage';
import { releasePooledMemory } from '@pgfleet/storage/object-io';
import type { RateLimiter } from './rate-limit.js';
import {
  reviveError,
  runCopyTask,
  type CopyTask,
  type CopyWorkerData,
  type SerialisedError,
  type TaskResult,
} from './tasks.js';

interface Pending {
  id: number;
  task: CopyTask;
  resolve: (v: unknown) => void;
  reject: (e: unknown) => void;
}

interface Slot {
  worker: Worker | undefined;
  inflight: Map<number, Pending>;
}

export interface CopyPoolOptions {
  /** Worker threads (>= 1). */
  threads: number;
  /** Tasks in flight per thread. */
  perThread?: number;
  signal?: AbortSignal;
  /** The agent's --max-rate bucket: every thread's backup and restore tasks go through it. */
  rateLimit?: RateLimiter;
  /**
   * Every thread a worker, the main thread none (when the repository has thread specs): for a
   * caller whose own work on the main thread is the bottleneck (`wal search` decoding).
   */
  workersOnly?: boolean;
}

export class CopyPool {
  private readonly slots: Slot[] = [];
  private readonly queue: Pending[] = [];
  private head = 0;
  private nextId = 1;
  /** Content bytes this pool's tasks put through the rate limit (--max-rate accounting). */
  pacedBytes = 0;
  private readonly perThread: number;
  private cancelled: unknown;
  private readonly idleWaiters: (() => void)[] = [];
  private readonly onAbort = () => this.cancel(this.opts.signal!.reason);

  constructor(
    private readonly repo: Repository,
    private readonly opts: CopyPoolOptions,
  ) {
    this.perThread = Math.max(1, opts.perThread ?? 2);
    const threads = Math.max(1, opts.threads);
    const specs = repo.threadSpecs();
    for (let i = 0; i < threads; i++) {
      const slot: Slot = { worker: undefined, inflight: new Map() };
      // The main thread is one of the threads: it is idle while a job copies, and every worker
      // thread costs ~25 MB of RSS (its own V8 heap and modules). Its tasks run the same code; a
      // task yields at every I/O, so the event loop (gRPC, the WAL socket) waits a few ms at most.
      if (specs !== undefined && (i > 0 || opts.workersOnly)) {
        // A small young generation: the workers' garbage is almost all outside the V8 heap (buffers,
        // zstd contexts), and every MiB of semi-space is RSS the agent keeps.
        const worker = new Worker(new URL('./worker.js', import.meta.url), {
          workerData: {
            specs,
            keys: repo.threadKeys(),
            ...(opts.rateLimit ? { rate: opts.rateLimit.shared } : {}),
          } satisfies CopyWorkerData,
          resourceLimits: { maxYoungGenerationSizeMb: 4 },
        });
        worker.on('message', (m: { id: number; result?: unknown; error?: SerialisedError }) => {
          const p = slot.inflight.get(m.id);
          if (!p) return;
          slot.inflight.delete(m.id);
          if (m.error) p.reject(reviveError(m.error));
          else p.resolve(this.counted(m.result));
          this.settled();
        });
        worker.on('error', (err) => this.workerFailed(slot, err));
        worker.on('exit', (code) => {
          if (slot.worker) this.workerFailed(slot, new Error(`copy worker exited with code ${code}`));
        });
        slot.worker = worker;
      }
      this.slots.push(slot);
    }
    opts.signal?.addEventListener('abort', this.onAbort, { once: true });
  }

  run<T extends CopyTask>(task: T): Promise<TaskResult<T>> {
    return new Promise((resolve, reject) => {
      if (this.cancelled !== undefined) return reject(this.cancelled);
      this.queue.push({ id: this.nextId++, task, resolve: resolve as (v: unknown) => void, reject });
      this.pump();
    });
  }

  /** Rejects every queued task with `reason` (the first cancel wins). */
  cancel(reason: unknown = new Error('cancelled')): void {
    this.cancelled ??= reason;
    while (this.head < this.queue.length) this.queue[this.head++]!.reject(this.cancelled);
    this.compact();
  }

  /**
   * Waits until no task runs any more, then stops the threads and frees what the main thread's
   * tasks pooled (the workers' pools go with them): the job is over, and what it pooled would
   * otherwise stay resident under the agent's next job (issue 19).
   */
  async close(): Promise<void> {
    this.cancel(new Error('copy pool closed'));
    if (this.busy()) await new Promise<void>((r) => this.idleWaiters.push(r));
    this.opts.signal?.removeEventListener('abort', this.onAbort);
    await Promise.all(
      this.slots.map(async (s) => {
        const w = s.worker;
        s.worker = undefined;
        if (w) await w.terminate();
      }),
    );
    releasePooledMemory();
  }

  private counted(result: unknown): unknown {
    const paced = (result as { paced?: unknown } | undefined)?.paced;
    if (typeof paced === 'number') this.pacedBytes += paced;
    return result;
  }

  private busy(): boolean {
    return this.slots.some((s) => s.inflight.size > 0);
  }

  private settled(): void {
    if (!this.busy()) for (const w of this.idleWaiters.splice(0)) w();
    this.pump();
  }

  private pump(): void {
    while (this.head < this.queue.length) {
      let best: Slot | undefined;
      for (const s of this.slots)
        if (s.inflight.size < this.perThread && (!best || s.inflight.size < best.inflight.size)) best = s;
      if (!best) break;
      const p = this.queue[this.head++]!;
      best.inflight.set(p.id, p);
      if (best.worker) {
        best.worker.postMessage({ id: p.id, task: p.task });
      } else {
        const slot = best;
        runCopyTask(this.repo, p.task, this.opts.rateLimit).then(
          (v) => {
            slot.inflight.delete(p.id);
            p.resolve(this.counted(v));
            this.settled();
          },
          (e: unknown) => {
            slot.inflight.delete(p.id);
            p.reject(e);
            this.settled();
          },
        );
      }
    }
    this.compact();
  }

  private compact(): void {
    if (this.head > 1024 && this.head * 2 > this.queue.length) {
      this.queue.splice(0, this.head);
      this.head = 0;
    }
  }

  private workerFailed(slot: Slot, err: unknown): void {
    slot.worker = undefined;
    for (const p of slot.inflight.values()) p.reject(err);
    slot.inflight.clear();
    this.cancel(err);
    this.settled();
  }
}
