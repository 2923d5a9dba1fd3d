#!/usr/bin/env node
/**
 * --max-rate measured on the wall clock: a PGDATA-like file set (default 200 MiB, 1 GiB relation
 * segments cut into 8 files plus small ones) backed up and restored through the agent's real
 * copy path (CopyPool with worker threads, storage's block I/O, zstd) into a posix repository,
 * with and without one shared RateLimiter. Prints, per run, the content bytes, the seconds and
 * the achieved rate against the limit. The e2e tests assert the limiter's accounting, never
 * time; this is where the figure comes from (docs/benchmarks.md).
 *
 *   node bench/max-rate.mjs [--mb 200] [--rate 20MB] [--workers 2] [--runs 2]
 */
import { randomBytes } from 'node:crypto';
import { mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { loadavg, tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { parseSize } from '../packages/core/dist/index.js';
import { PosixDriver, Repository } from '../packages/storage/dist/index.js';
import { CopyPool } from '../packages/agent/dist/copy/pool.js';
import { RateLimiter } from '../packages/agent/dist/copy/rate-limit.js';

const { values } = parseArgs({
  options: {
    mb: { type: 'string', default: '200' },
    rate: { type: 'string', default: '20MB' },
    workers: { type: 'string', default: '2' },
    runs: { type: 'string', default: '2' },
  },
});
const totalBytes = Number(values.mb) << 20;
const rate = parseSize(values.rate, 'rate');
const workers = Number(values.workers);
const work = await mkdtemp(join(tmpdir(), 'pgfleet-bench-rate-'));
const fmt = (n) => `${(n / (1 << 20)).toFixed(1)} MiB`;

try {
  // ~3x compressible content: text-ish rows, like real tables.
  const words = Array.from({ length: 4096 }, () => randomBytes(6).toString('base64'));
  const pgdata = join(work, 'pgdata');
  await mkdir(join(pgdata, 'base/5'), { recursive: true });
  const files = [];
  let made = 0;
  for (let i = 0; made < totalBytes; i++) {
    // Mostly 24 MiB files (several tasks in flight on every thread), and some small ones.
    const size = Math.min(totalBytes - made, i % 4 === 3 ? 256 << 10 : 24 << 20);
    const parts = [];
    let n = 0;
    while (n < size) {
      const row = `${i}|${n}|${words[(n * 7 + i) % words.length]} ${words[(n * 13) % words.length]}\n`;
      parts.push(row);
      n += row.length;
    }
    const path = join(pgdata, 'base/5', String(16384 + i));
    await writeFile(path, Buffer.from(parts.join('')).subarray(0, size));
    files.push({ path, size, name: String(16384 + i) });
    made += size;
  }
  console.log(
    `${files.length} files, ${fmt(made)}; --max-rate ${values.rate} = ${fmt(rate)}/s; ${workers} worker thread(s); load ${loadavg()[0].toFixed(2)}`,
  );
  const rows = [];
  for (let run = 0; run < Number(values.runs); run++) {
    for (const limited of [true, false]) {
      const repo = new Repository(new PosixDriver(join(work, `repo-${run}-${limited}`)));
      await repo.init();
      const limiter = limited ? RateLimiter.create(rate) : undefined;
      const pool = () => new CopyPool(repo, { threads: workers, ...(limiter ? { rateLimit: limiter } : {}) });
      // Backup: largest first, as runBackup submits them.
      let p = pool();
      let t = performance.now();
      const stored = await Promise.all(
        [...files]
          .sort((a, b) => b.size - a.size)
          .map(async (f) => ({
            f,
            r: await p.run({ kind: 'backup', src: f.path, key: `c/b/${f.name}.zst`, codec: 'zstd', offset: 0 }),
          })),
      );
      const backupS = (performance.now() - t) / 1000;
      const backupPaced = p.pacedBytes;
      await p.close();
      // Restore into a fresh directory.
      const dest = join(work, `restore-${run}-${limited}`);
      await mkdir(dest, { recursive: true });
      p = pool();
      t = performance.now();
      await Promise.all(
        stored.map(({ f, r }) =>
          p.run({
            kind: 'restore',
            key: `c/b/${f.name}.zst`,
            codec: 'zstd',
            sha256: r.sha256,
            size: r.size,
            dest: join(dest, f.name),
            mode: 0o600,
            exclusive: true,
          }),
        ),
      );
      const restoreS = (performance.now() - t) / 1000;
      const restorePaced = p.pacedBytes;
      await p.close();
      for (const [op, s, paced] of [
        ['backup', backupS, backupPaced],
        ['restore', restoreS, restorePaced],
      ]) {
        const achieved = made / s;
        rows.push({
          run,
          op,
          limit: limited ? fmt(rate) + '/s' : 'none',
          seconds: s.toFixed(2),
          rate: `${fmt(achieved)}/s`,
          'vs limit': limited ? `${((achieved / rate - 1) * 100).toFixed(1)}%` : '',
          paced: limited ? fmt(paced) : '',
        });
      }
    }
  }
  console.table(rows);
} finally {
  await rm(work, { recursive: true, force: true });
}
