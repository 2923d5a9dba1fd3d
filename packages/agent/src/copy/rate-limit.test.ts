/**
 * The --max-rate bucket's accounting, on a fake clock (no test here waits on wall-clock luck):
 * what it admits per window from several concurrent copiers, that it does not throttle below the
 * rate, and that copy worker threads share one bucket through its shared memory.
 */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { Worker } from 'node:worker_threads';
import { BURST_BYTES, RateLimiter, taskPace } from './rate-limit.js';

/** A clock that moves only when every copier sleeps: the earliest sleeper wakes and time jumps to it. */
class FakeClock {
  nowNs = 1_000_000_000n;
  private timers: { at: bigint; wake: () => void }[] = [];
  readonly clock = () => this.nowNs;
  readonly sleep = (ms: number) =>
    new Promise<void>((wake) => this.timers.push({ at: this.nowNs + BigInt(ms) * 1_000_000n, wake }));

  /** Runs until `done` settles: lets the copiers run, then advances to the next wake-up. */
  async run(done: Promise<unknown>): Promise<void> {
    let finished = false;
    void done.finally(() => (finished = true));
    while (!finished) {
      await new Promise((r) => setImmediate(r));
      if (finished) break;
      this.timers.sort((a, b) => (a.at < b.at ? -1 : a.at > b.at ? 1 : 0));
      const next = this.timers.shift();
      if (!next) continue;
      if (next.at > this.nowNs) this.nowNs = next.at;
      next.wake();
    }
  }
}

const MiB = 1 << 20;

test('max-rate: four copiers of 1 MiB blocks at 20 MiB/s: no window of a second admits more than the rate plus the burst, and 200 MiB take 10 s of the clock', async () => {
  const fake = new FakeClock();
  const rate = 20 * MiB;
  const limiter = RateLimiter.create(rate, fake.clock, fake.sleep);
  const admitted: { atNs: bigint; bytes: number }[] = [];
  const copier = async (blocks: number, size: number) => {
    for (let i = 0; i < blocks; i++) {
      await limiter.admit(size);
      admitted.push({ atNs: fake.nowNs, bytes: size });
    }
  };
  const start = fake.nowNs;
  // 200 MiB in all: three copiers of whole blocks, one of odd-sized ones (a file's tail).
  const done = Promise.all([copier(50, MiB), copier(50, MiB), copier(50, MiB), copier(100, MiB / 2)]);
  await fake.run(done);
  await done;

  const total = admitted.reduce((n, a) => n + a.bytes, 0);
  assert.equal(total, 200 * MiB);
  assert.equal(limiter.admittedBytes(), 200 * MiB, 'the bucket counted every byte');
  // Per one-second window of the clock: at most the rate, plus what the full bucket lets through at once.
  const windows = new Map<bigint, number>();
  for (const a of admitted) {
    const w = (a.atNs - start) / 1_000_000_000n;
    windows.set(w, (windows.get(w) ?? 0) + a.bytes);
  }
  for (const [w, bytes] of windows)
    assert.ok(bytes <= rate + BURST_BYTES, `window ${w}: ${bytes} bytes admitted at ${rate} bytes/s`);
  // Cumulatively too: by any admission, at most rate x elapsed + the burst.
  let sum = 0;
  for (const a of admitted) {
    sum += a.bytes;
    const allowed = (rate * Number(a.atNs - start)) / 1e9 + BURST_BYTES;
    assert.ok(sum <= allowed + 1, `${sum} bytes admitted by ${Number(a.atNs - start) / 1e9} s`);
  }
  // And no slower than the rate: the last byte passes when (total - burst) / rate has elapsed (+1 ms rounding per sleep).
  const elapsedS = Number(fake.nowNs - start) / 1e9;
  const expectedS = (total - BURST_BYTES) / rate;
  assert.ok(
    elapsedS >= expectedS && elapsedS <= expectedS * 1.01,
    `200 MiB at 20 MiB/s took ${elapsedS} s of the clock, expected ${expectedS}`,
  );
});

test('max-rate: an idle bucket lets one burst through at once, then paces; a task counts what it put through', async () => {
  const fake = new FakeClock();
  const limiter = RateLimiter.create(MiB, fake.clock, fake.sleep);
  const { pace, paced } = taskPace(limiter);
  const start = fake.nowNs;
  const first = pace!(MiB);
  await fake.run(first);
  assert.equal(fake.nowNs, start, 'the first MiB of an idle bucket waits for nothing');
  const second = pace!(MiB / 2);
  await fake.run(second);
  assert.equal(Number(fake.nowNs - start) / 1e6, 500, 'half a MiB more at 1 MiB/s waits 0.5 s');
  assert.equal(paced(), MiB + MiB / 2);
  assert.deepEqual(taskPace(undefined).pace, undefined, 'no limit: no pace at all');
});

test('max-rate: worker threads share the one bucket: every byte any thread admits advances the same reservation', async () => {
  // A high rate so the threads barely sleep; what is asserted is accounting, not time.
  const rate = 4096 * MiB;
  const limiter = RateLimiter.create(rate);
  const before = process.hrtime.bigint();
  const url = new URL('./rate-limit.js', import.meta.url).href;
  const source = `
    const { workerData, parentPort } = require('node:worker_threads');
    import(${JSON.stringify(url)}).then(async ({ RateLimiter }) => {
      const limiter = new RateLimiter(workerData.rate);
      for (let i = 0; i < 64; i++) await limiter.admit(${MiB});
      parentPort.postMessage('done');
    });`;
  const threads = [0, 1, 2].map(
    () =>
      new Promise<void>((resolve, reject) => {
        const w = new Worker(source, { eval: true, workerData: { rate: limiter.shared } });
        w.once('message', () => void w.terminate().then(() => resolve()));
        w.once('error', reject);
      }),
  );
  for (let i = 0; i < 64; i++) await limiter.admit(MiB); // the main thread copies too
  await Promise.all(threads);
  const total = 4 * 64 * MiB;
  assert.equal(limiter.admittedBytes(), total, 'every thread counted in the one bucket');
  // Each admission moved the shared reservation on by its cost, so together by at least total / rate.
  const reservedNs = limiter.reservedUntilNs() - before;
  assert.ok(
    reservedNs >= BigInt(Math.floor((total * 1e9) / rate)),
    `reservation advanced ${reservedNs} ns for ${total} bytes at ${rate} bytes/s`,
  );
});
