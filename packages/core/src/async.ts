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
 * Time slices for a long loop on the event loop's thread: `await slice()` between items gives
 * timers and I/O a turn (setImmediate) once `budgetMs` have passed since the last turn. A loop
 * over 10,000 clusters whose catalog reads are synchronous (better-sqlite3) otherwise awaits only
 * resolved promises, which never let I/O in: every agent stream and admin call waits for the whole
 * round (bench/fleet-scale.mjs measured 2 s rounds and 6.6 s dispatch p99). Bounded by time, not
 * by a count of items, because an item's cost ranges from microseconds to milliseconds.
 */
export function timeSlicer(budgetMs = 10): () => Promise<void> {
  let since = performance.now();
  return async () => {
    if (performance.now() - since < budgetMs) return;
    await new Promise<void>((resolve) => setImmediate(resolve));
    since = performance.now();
  };
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
 * The first failure stops new calls and is thrown once the calls in flight have ended, so nothing
 * is left running behind the error. An abort of `signal` is thrown at once with its reason: the
 * caller was told to stop, and calls in flight that take the same signal stop on their own.
 */
export async function mapLimit<T, R>(
  items: readonly T[],
  limit: number,
  fn: (item: T, index: number) => Promise<R>,
  signal?: AbortSignal,
): Promise<R[]> {
  signal?.throwIfAborted();
  const results = new Array<R>(items.length);
  let next = 0;
  let failure: { readonly error: unknown } | undefined;
  const worker = async () => {
    while (failure === undefined && !signal?.aborted && next < items.length) {
      const i = next++;
      try {
        results[i] = await fn(items[i]!, i);
      } catch (error) {
        failure ??= { error };
      }
    }
  };
  // Listening before any call starts: a call may abort the signal before its first await.
  let onAbort: (() => void) | undefined;
  const aborted = new Promise<never>((_, reject) => {
    onAbort = () => reject(signal!.reason);
    signal?.addEventListener('abort', onAbort, { once: true });
  });
  aborted.catch(() => {}); // observed below only when a signal was given
  try {
    // Workers never reject: a failure is recorded and thrown below.
    const workers = Promise.all(Array.from({ length: Math.max(1, Math.min(limit, items.length)) }, worker));
    await (signal ? Promise.race([workers, aborted]) : workers);
  } finally {
    signal?.removeEventListener('abort', onAbort!);
  }
  if (failure !== undefined) throw failure.error;
  return results;
}

/**
 * Runs `fn` over `items` (an iterable or async iterable, read lazily) with at most `limit` calls
 * in flight, like mapLimit without results: only `limit` items are pulled ahead, so a list of a
 * million files costs `limit` calls' memory, not a promise per file (issue 16). The first failure
 * stops pulling and is thrown once the calls in flight have ended, nothing is left running
 * behind it; the iterator is closed (its `return`) either way.
 */
export async function forEachLimit<T>(
  items: Iterable<T> | AsyncIterable<T>,
  limit: number,
  fn: (item: T) => Promise<void>,
): Promise<void> {
  const it: Iterator<T> | AsyncIterator<T> =
    Symbol.asyncIterator in items ? items[Symbol.asyncIterator]() : items[Symbol.iterator]();
  let failure: { readonly error: unknown } | undefined;
  let done = false;
  // One pull at a time: an async iterator must not be called again before its last call settled.
  let pulling: Promise<unknown> = Promise.resolve();
  const pull = (): Promise<IteratorResult<T>> => {
    const next = pulling.then(() => it.next());
    pulling = next.catch(() => {});
    return next;
  };
  const worker = async () => {
    while (failure === undefined && !done) {
      let r: IteratorResult<T>;
      try {
        r = await pull();
      } catch (error) {
        failure ??= { error };
        return;
      }
      if (r.done) {
        done = true;
        return;
      }
      try {
        await fn(r.value);
      } catch (error) {
        failure ??= { error };
      }
    }
  };
  try {
    await Promise.all(Array.from({ length: Math.max(1, limit) }, worker));
  } finally {
    // Only after a failure: the caller's error is the one to see, not a cleanup's.
    if (!done) await pulling.then(() => it.return?.()).catch(() => {});
  }
  if (failure !== undefined) throw failure.error;
}
