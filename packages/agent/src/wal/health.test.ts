// Heartbeat WAL health figures that need no database: the stream lag at heartbeat resolution
// (0 for a stream that keeps up, growing from the first heartbeat that saw WAL it lacks) and the
// archived counters (segments only, each counted where it was stored).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { StreamLag, WalArchivedCounter } from './health.js';

const MiB = 1024n * 1024n;

test('stream lag: caught up or keeping up is 0 s; a stalled stream lags from the first heartbeat that saw the missing WAL', () => {
  const lag = new StreamLag();
  // Not streaming: nothing measured.
  assert.deepEqual(lag.observe(0, 100n * MiB, undefined), { bytes: 0n, seconds: 0 });
  // Caught up.
  assert.deepEqual(lag.observe(1000, 100n * MiB, 100n * MiB), { bytes: 0n, seconds: 0 });
  // Constant writes, the stream a fraction of a second behind at each heartbeat: bytes behind, but
  // it reached every earlier heartbeat's position, so no time lag.
  assert.deepEqual(lag.observe(11_000, 110n * MiB, 110n * MiB - 4096n), { bytes: 4096n, seconds: 0 });
  assert.deepEqual(lag.observe(21_000, 120n * MiB, 120n * MiB - 8192n), { bytes: 8192n, seconds: 0 });
  // The stream stalls at 120 MiB - 8 KiB while PostgreSQL writes on.
  const stalled = 120n * MiB - 8192n;
  assert.deepEqual(lag.observe(31_000, 130n * MiB, stalled), { bytes: 10n * MiB + 8192n, seconds: 10 });
  assert.deepEqual(lag.observe(41_000, 140n * MiB, stalled), { bytes: 20n * MiB + 8192n, seconds: 20 });
  // It catches up partly: past the 21 s and 31 s heartbeats' positions, not the 41 s one.
  assert.deepEqual(lag.observe(51_000, 140n * MiB, 135n * MiB), { bytes: 5n * MiB, seconds: 10 });
  // Fully.
  assert.deepEqual(lag.observe(61_000, 140n * MiB, 140n * MiB), { bytes: 0n, seconds: 0 });
  // An idle hour and then a write with a broken stream: the lag counts from the heartbeat that saw the write, not from an hour ago.
  assert.deepEqual(lag.observe(3_661_000, 141n * MiB, 140n * MiB), { bytes: MiB, seconds: 0 });
  assert.deepEqual(lag.observe(3_671_000, 141n * MiB, 140n * MiB), { bytes: MiB, seconds: 10 });
});

test('archived counters count WAL segments and their bytes, not history or backup files', () => {
  const c = new WalArchivedCounter();
  const hook = c.stored; // handed to the archive socket and the stream as a plain function
  hook('000000010000000000000003', 16 * 1024 * 1024);
  hook('000000010000000000000004', 16 * 1024 * 1024);
  hook('00000002.history', 42);
  hook('000000010000000000000004.00000028.backup', 300);
  assert.deepEqual([c.segments, c.bytes], [2, 32 * 1024 * 1024]);
});
