#!/usr/bin/env node
/**
 * The cost of encryption at rest in the object layer alone: one PGDATA-like file set stored
 * (storeFile, as a backup's copy does) and restored (restoreFile, as a restore does) through a
 * posix repository, plaintext and encrypted, alternating runs. Not a whole backup: no
 * PostgreSQL, no WAL wait, no manifest; bench/run.mjs measures those. Besides wall time it
 * prints the CPU time this process used (threadpool included): on a shared machine the wall
 * time mostly measures the neighbours, the CPU time what the work costs.
 *
 * `--small N` adds N small files (8 KiB to 128 KiB, as most of a PGDATA's files are): their
 * cost is per object (key derivation, cipher set-up), not per byte. `--mb 0 --small 2000`
 * measures that alone.
 *
 *   node bench/encryption.mjs [--mb 512] [--small 0] [--runs 3] [--codec zstd]
 */
import { randomBytes } from 'node:crypto';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { fixedKeys, PosixDriver, Repository } from '../packages/storage/dist/index.js';

const { values } = parseArgs({
  options: {
    mb: { type: 'string', default: '512' },
    small: { type: 'string', default: '0' },
    runs: { type: 'string', default: '3' },
    codec: { type: 'string', default: 'zstd' },
  },
});
const FILE_MB = 64;
const large = Math.max(0, Math.round(Number(values.mb) / FILE_MB));
const small = Math.max(0, Math.round(Number(values.small)));
const codec = values.codec;
const work = await mkdtemp(join(tmpdir(), 'pgfleet-bench-enc-'));
try {
  // ~3x compressible content, like the bench's tables: random text-ish rows.
  const hex = randomBytes(1 << 20).toString('hex');
  const words = Array.from({ length: 4096 }, () => randomBytes(6).toString('base64'));
  const src = [];
  for (let i = 0; i < large; i++) {
    const parts = [];
    let n = 0;
    while (n < FILE_MB << 20) {
      const row = `${i}|${n}|${words[(n * 7 + i) % words.length]} ${words[(n * 13) % words.length]} ${hex.substr((n * 31 + i * 7) % (hex.length - 8), 8)}\n`;
      parts.push(row);
      n += row.length;
    }
    const path = join(work, `src-${i}`);
    await writeFile(path, Buffer.from(parts.join('')).subarray(0, FILE_MB << 20));
    src.push(path);
  }
  for (let i = 0; i < small; i++) {
    const path = join(work, `small-${i}`);
    // Sizes of a PGDATA's small files: mostly one or two pages, some catalogs up to 128 KiB.
    const pages = i % 10 === 0 ? 1 + (i % 16) : 1 + (i % 2);
    await writeFile(path, Buffer.from(hex.slice(0, pages * 8192)));
    src.push(path);
  }
  const files = src.length;
  const what = `${large * FILE_MB} MiB in ${large} files + ${small} small files`;
  const kek = randomBytes(32);
  const results = { plain: { store: [], restore: [] }, encrypted: { store: [], restore: [] } };
  const cpu = { plain: { store: [], restore: [] }, encrypted: { store: [], restore: [] } };
  const cpuSeconds = (since) => {
    const u = process.cpuUsage(since);
    return (u.user + u.system) / 1e6;
  };
  for (let run = 0; run < Number(values.runs); run++) {
    for (const mode of ['plain', 'encrypted']) {
      const dir = join(work, `repo-${mode}-${run}`);
      // No manifest keys (only objects are stored here); the key resolver is the third argument.
      const repo = new Repository(
        new PosixDriver(dir),
        undefined,
        mode === 'encrypted' ? fixedKeys({ c: kek }) : undefined,
      );
      let t = performance.now();
      let c = process.cpuUsage();
      const stored = [];
      for (let i = 0; i < files; i++) {
        const key = repo.backupFileKey('c', 'L', `base/1/${i}`, codec);
        stored.push({ key, ...(await repo.objects.storeFile(key, { path: src[i], offset: 0 }, codec)) });
      }
      results[mode].store.push((performance.now() - t) / 1000);
      cpu[mode].store.push(cpuSeconds(c));
      t = performance.now();
      c = process.cpuUsage();
      for (let i = 0; i < files; i++) {
        const s = stored[i];
        await repo.objects.restoreFile(
          s.key,
          codec,
          { sha256: s.sha256, size: s.size },
          { path: join(work, `out-${i}`), mode: 0o600 },
        );
      }
      results[mode].restore.push((performance.now() - t) / 1000);
      cpu[mode].restore.push(cpuSeconds(c));
      await rm(dir, { recursive: true, force: true });
    }
  }
  const median = (a) => [...a].sort((x, y) => x - y)[a.length >> 1];
  for (const op of ['store', 'restore']) {
    const p = median(results.plain[op]);
    const e = median(results.encrypted[op]);
    const pc = median(cpu.plain[op]);
    const ec = median(cpu.encrypted[op]);
    console.log(
      `${op} ${what}, ${codec}: wall plaintext ${p.toFixed(2)} s, encrypted ${e.toFixed(2)} s, overhead ${(((e - p) / p) * 100).toFixed(1)}%; ` +
        `CPU plaintext ${pc.toFixed(2)} s, encrypted ${ec.toFixed(2)} s, overhead ${(((ec - pc) / pc) * 100).toFixed(1)}% (medians of ${values.runs})`,
    );
  }
} finally {
  await rm(work, { recursive: true, force: true });
}
