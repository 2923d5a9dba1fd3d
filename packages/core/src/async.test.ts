import { test } from 'node:test';
import assert from 'node:assert/strict';
import { forEachLimit, mapLimit, settleAll, sleep, timeSlicer } from './async.js';

test('sleep resolves after the time, or at once when its signal aborts', async () => {
  const start = performance.now();
  await sleep(20);
  assert.ok(performance.now() - start >= 15);

  const ac = new AbortController();
  const long = sleep(60_000, { signal: ac.signal });
  ac.abort();
  await long; // a 60 s timer still pending would also keep the test process alive
  await sleep(60_000, { signal: ac.signal }); // already aborted: no timer at all
});

test('an unref sleep does not keep the process alive', async () => {
  const { spawnSync } = await import('node:child_process');
  const url = new URL('./async.js', import.meta.url).href;
  const started = Date.now();
  const r = spawnSync(
    process.execPath,
    ['--input-type=module', '-e', `import { sleep } from '${url}'; void sleep(60_000, { unref: true });`],
    { timeout: 30_000 },
  );
  assert.equal(r.status, 0);
  assert.ok(Date.now() - started < 30_000);
});

test('settleAll returns every value in order and throws the first rejection after all settled', async () => {
  assert.deepEqual(await settleAll([Promise.resolve(1), sleep(5).then(() => 2)]), [1, 2]);
  let lateDone = false;
  const late = sleep(20).then(() => {
    lateDone = true;
  });
  await assert.rejects(
    settleAll([late, Promise.reject(new Error('first')), Promise.reject(new Error('second'))]),
    /first/,
  );
  assert.equal(lateDone, true, 'the slow promise settled before the error was thrown');
});

test('mapLimit keeps at most `limit` calls in flight and returns results in item order', async () => {
  let running = 0;
  let peak = 0;
  const got = await mapLimit([5, 1, 4, 2, 3, 0], 2, async (n, i) => {
    running++;
    peak = Math.max(peak, running);
    await sleep(n);
    running--;
    return `${i}:${n * 10}`;
  });
  assert.deepEqual(got, ['0:50', '1:10', '2:40', '3:20', '4:30', '5:0']);
  assert.equal(peak, 2);
  assert.deepEqual(await mapLimit([], 4, async () => 1), []);
});

test('mapLimit stops taking items after the first failure and throws it once in-flight calls ended', async () => {
  const started: number[] = [];
  let inFlight = 0;
  await assert.rejects(
    mapLimit([1, 2, 3, 4, 5, 6], 2, async (n) => {
      started.push(n);
      inFlight++;
      try {
        await sleep(n === 2 ? 1 : 10);
        if (n === 2) throw new Error('two failed');
      } finally {
        inFlight--;
      }
    }),
    /two failed/,
  );
  assert.equal(inFlight, 0, 'nothing left running');
  assert.deepEqual(started, [1, 2], 'no new item after the failure');
});

test('mapLimit throws an abort at once with its reason and starts nothing after it', async () => {
  const ac = new AbortController();
  const seen: number[] = [];
  let slowEnded = false;
  await assert.rejects(
    mapLimit(
      [1, 2, 3, 4],
      2,
      async (n) => {
        seen.push(n);
        if (n === 1) {
          await sleep(200);
          slowEnded = true;
        }
        if (n === 2) ac.abort(new Error('stop now'));
      },
      ac.signal,
    ),
    /stop now/,
  );
  assert.equal(slowEnded, false, 'the abort did not wait for the call in flight');
  assert.deepEqual(seen, [1, 2]);
  await assert.rejects(
    mapLimit([1], 1, async () => 1, ac.signal),
    /stop now/,
    'an aborted signal refuses to start',
  );
});

test('mapLimit runs everything with bounded parallelism and reports the first failure (the agent pools)', async () => {
  let inFlight = 0;
  let peak = 0;
  const done: number[] = [];
  await mapLimit([1, 2, 3, 4, 5, 6], 2, async (n) => {
    inFlight++;
    peak = Math.max(peak, inFlight);
    await sleep(5);
    done.push(n);
    inFlight--;
  });
  assert.equal(peak, 2);
  assert.deepEqual(done.sort(), [1, 2, 3, 4, 5, 6]);
  await assert.rejects(
    mapLimit([1, 2, 3], 2, async (n) => {
      if (n === 2) throw new Error('two');
    }),
    /two/,
  );
});

test('forEachLimit pulls items only as calls finish, and stops at the first failure', async () => {
  let pulled = 0;
  let inFlight = 0;
  let most = 0;
  let closes = 0;
  function* items() {
    try {
      for (let i = 0; i < 1000; i++) {
        pulled++;
        yield i;
      }
    } finally {
      closes++;
    }
  }
  const seen: number[] = [];
  await forEachLimit(items(), 3, async (i) => {
    inFlight++;
    most = Math.max(most, inFlight);
    // Never more pulled than done + in flight: nothing is queued up front.
    assert.ok(pulled <= seen.length + 3);
    await new Promise((r) => setImmediate(r));
    seen.push(i);
    inFlight--;
  });
  assert.equal(seen.length, 1000);
  assert.equal(most, 3);

  pulled = 0;
  seen.length = 0;
  await assert.rejects(
    forEachLimit(items(), 2, async (i) => {
      await new Promise((r) => setImmediate(r));
      if (i === 10) throw new Error('boom');
      seen.push(i);
    }),
    /boom/,
  );
  assert.ok(pulled < 20, `pulled ${pulled} after the failure`);
  assert.equal(closes, 2, 'the iterator was closed after the failure too');
});

test('timeSlicer lets I/O and timers in between the items of a loop once its budget is spent', async () => {
  // The loop's items are resolved awaits only, as with a synchronous catalog: without a turn of
  // the event loop an immediate queued before the loop runs after it.
  const run = async (budgetMs: number) => {
    let ranAt: number | undefined;
    setImmediate(() => (ranAt = i));
    const slice = timeSlicer(budgetMs);
    let i = 0;
    for (; i < 100; i++) {
      await Promise.resolve();
      await slice();
    }
    await new Promise<void>((r) => setImmediate(r));
    return ranAt;
  };
  assert.equal(await run(1e9), 100, 'a budget never spent: the immediate waits for the whole loop');
  assert.ok((await run(0))! < 100, 'every call past the budget yields: the immediate ran inside the loop');
});
