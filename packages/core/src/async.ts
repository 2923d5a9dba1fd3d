/**
 * Promise helpers every package needs the same way: waiting, waiting for all, and bounded
 * parallelism. No dependencies (`@pgfleet/core/async`), so worker threads and the wal-push path
 * can load it without pino, zod or yaml.
 */

export interface SleepOptions {
  /** Aborting ends the sleep early (it resolves; the caller checks the signal). */
  readonly signal?: AbortSignal;
  /** Do not keep the process alive for this timer alone (a grace period at shutdown). */
  readonly unref?: boolean;
}

/** Resolves after `ms` milliseconds, or as soon as `options.signal` aborts. */
export function sleep(ms: number, options: SleepOptions = {}): Promise<void> {
  const { signal, unref } = options;
  if (signal?.aborted) return Promise.resolve();
  return new Promise<void>((resolve) => {
    const done = () => {
      clearTimeout(timer);
      signal?.removeEventListener('abort', done);
      resolve();
    };
    const timer = setTimeout(done, ms);
    if (unref) timer.unref();
    signal?.addEventListener('abort', done, { once: true });
  });
}

/**
 * Waits for every promise; throws the first rejection (in the order given) only after all have
 * settled, so nothing the caller started is still running when it handles the error.
 */
export async function settleAll<T>(promises: readonly Promise<T>[]): Promise<T[]> {
  const results = await Promise.allSettled(promises);
  const failed = results.find((r) => r.status === 'rejected');
  if (failed) throw (failed as PromiseRejectedResult).reason;
  return results.map((r) => (r as PromiseFulfilledResult<T>).value);
}

/**
 * Runs `fn` over `items` with at most `limit` calls in flight; results in the order of `items`.
 * The first failure (or an abort of `signal`) stops new calls and is thrown once the calls in
 * flight have ended, so nothing is left running behind the error.
 */
export async function mapLimit<T, R>(
  items: readonly T[],
  limit: number,
  fn: (item: T, index: number) => Promise<R>,
  signal?: AbortSignal,
): Promise<R[]> {
  const results = new Array<R>(items.length);
  let next = 0;
  let failure: { readonly error: unknown } | undefined;
  const worker = async () => {
    while (failure === undefined && next < items.length) {
      const i = next++;
      try {
        signal?.throwIfAborted();
        results[i] = await fn(items[i]!, i);
      } catch (error) {
        failure ??= { error };
      }
    }
  };
  await Promise.all(Array.from({ length: Math.max(1, Math.min(limit, items.length)) }, worker));
  if (failure !== undefined) throw failure.error;
  return results;
}
