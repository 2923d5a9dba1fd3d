/**
 * In-process fan-out of job changes to WatchJob streams. Every change publishes the job's full
 * record, so a watcher only needs the newest one: each subscription holds a single slot that a
 * newer record overwrites. A slow CLI therefore never makes the controller buffer a backlog of
 * progress messages, and the terminal state, being the last record, is never lost.
 */
import type { JobRecord } from '@pgfleet/catalog';

export interface JobSubscription {
  /** The next unseen record, or undefined once the signal aborts or the subscription is closed. */
  next(signal?: AbortSignal): Promise<JobRecord | undefined>;
  close(): void;
}

interface Slot {
  latest: JobRecord | undefined;
  wake: (() => void) | undefined;
  closed: boolean;
}

export class JobWatchers {
  private readonly byJob = new Map<string, Set<Slot>>();

  publish(job: JobRecord): void {
    for (const slot of this.byJob.get(job.id) ?? []) {
      slot.latest = job;
      slot.wake?.();
    }
  }

  /** Number of open subscriptions (for tests and metrics). */
  get size(): number {
    let n = 0;
    for (const set of this.byJob.values()) n += set.size;
    return n;
  }

  subscribe(jobId: string): JobSubscription {
    const slot: Slot = { latest: undefined, wake: undefined, closed: false };
    let set = this.byJob.get(jobId);
    if (!set) this.byJob.set(jobId, (set = new Set()));
    set.add(slot);
    const close = (): void => {
      slot.closed = true;
      slot.wake?.();
      set.delete(slot);
      if (set.size === 0 && this.byJob.get(jobId) === set) this.byJob.delete(jobId);
    };
    return {
      close,
      next: async (signal?: AbortSignal) => {
        while (!slot.closed && !signal?.aborted) {
          if (slot.latest) {
            const job = slot.latest;
            slot.latest = undefined;
            return job;
          }
          await new Promise<void>((resolve) => {
            const onAbort = (): void => resolve();
            signal?.addEventListener('abort', onAbort, { once: true });
            slot.wake = () => {
              signal?.removeEventListener('abort', onAbort);
              resolve();
            };
          });
          slot.wake = undefined;
        }
        return undefined;
      },
    };
  }
}
