#!/usr/bin/env node
/**
 * Agent memory against the size of the cluster (issue 16, part 3): a real PostgreSQL 15 cluster
 * with a synthetic PGDATA of many small files (`--files`, default 100,000, under
 * `pgfleet_bench_files/` in its data directory), a real controller and agent daemon (the e2e
 * harness, test/src/harness.ts), then:
 *
 *   backup     `pgfleet backup --wait` (full); peak RSS of the agent daemon
 *   restore    `pgfleet restore --target immediate --wait` into a new directory, on a freshly
 *              started agent (so its peak is the restore's own); every synthetic file is then
 *              compared with its source byte for byte, and the file count must match
 *
 * Peak RSS is the agent process's own high-water mark (VmHWM in /proc/<pid>/status, read just
 * before the daemon is stopped: the kernel's figure for every thread, heap or not), not a heap
 * figure. The target is < 150 MB.
 *
 *   node bench/memory.mjs [--files 100000] [--size 600]
 *
 * Needs the build (test/dist included) and runs as root like the e2e tests (the agent runs as
 * the postgres OS user).
 */
import { createHash } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { mkdir, readdir, readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { parseArgs } from 'node:util';

const { values } = parseArgs({
  options: {
    files: { type: 'string', default: '100000' },
    size: { type: 'string', default: '600' },
  },
});
const FILES = Number(values.files);
const SIZE = Number(values.size);
const PER_DIR = 1000;
const { startFleet, runNode, CLI_BIN, INSECURE_ENV } = await import('../test/dist/harness.js');
const { chownToPostgres } = await import('../packages/testkit/dist/index.js');

const log = (msg) => console.error(`[${new Date().toISOString().slice(11, 19)}] ${msg}`);
const kb = (pid, field) => {
  const m = readFileSync(`/proc/${pid}/status`, 'utf8').match(new RegExp(`^${field}:\\s+(\\d+) kB`, 'm'));
  return m ? Number(m[1]) : NaN;
};
const mb = (k) => (k / 1024).toFixed(1);

/** The content of synthetic file `i`: deterministic, not compressible to nothing, 1..2*SIZE bytes. */
function content(i) {
  const len = 1 + ((i * 7919) % (2 * SIZE));
  const out = Buffer.alloc(len);
  let seed = createHash('sha256').update(String(i)).digest();
  for (let off = 0; off < len; off += seed.length) {
    seed.copy(out, off);
    seed = createHash('sha256').update(seed).digest();
  }
  return out;
}
const relPath = (i) => `pgfleet_bench_files/${String(Math.floor(i / PER_DIR)).padStart(4, '0')}/f${i}`;

const fleet = await startFleet({ cluster: 'memory' });
// The harness's fleet.cli kills a command after 180 s: a 100k-file job on a loaded machine takes longer.
const cli = (...args) =>
  runNode(CLI_BIN, args, {
    env: { PGFLEET_CONTROLLER: fleet.controllerAddress, ...INSECURE_ENV },
    timeoutMs: 3_600_000,
  });
const results = [];
try {
  const pgdata = fleet.pg.dataDir;
  log(`writing ${FILES} files (~${SIZE} bytes on average) under ${pgdata}/pgfleet_bench_files`);
  for (let d = 0; d * PER_DIR < FILES; d++) {
    const dir = join(pgdata, 'pgfleet_bench_files', String(d).padStart(4, '0'));
    await mkdir(dir, { recursive: true });
    const writes = [];
    for (let i = d * PER_DIR; i < Math.min(FILES, (d + 1) * PER_DIR); i++)
      writes.push(writeFile(join(pgdata, relPath(i)), content(i)));
    await Promise.all(writes);
  }
  await chownToPostgres(join(pgdata, 'pgfleet_bench_files'), { recursive: true });

  const measure = async (what, fn) => {
    // A fresh agent daemon per step: VmHWM is the peak of this step alone.
    await fleet.agent?.stop();
    // A long WAL wait: on a loaded machine the harness's 60 s is not always enough for the last segment.
    const agent = await fleet.startAgent(['--archive-timeout', '600']);
    const pid = agent.child.pid;
    const base = kb(pid, 'VmRSS');
    const t = performance.now();
    const note = await fn();
    const seconds = (performance.now() - t) / 1000;
    const peak = kb(pid, 'VmHWM');
    results.push({ what, seconds, base, peak, note });
    log(`${what}: ${seconds.toFixed(1)} s, agent RSS at start ${mb(base)} MB, peak ${mb(peak)} MB ${note}`);
  };

  await measure('backup', async () => {
    const r = await cli('backup', fleet.cluster, '--wait', '--output', 'json');
    if (r.code !== 0)
      throw new Error(
        `backup failed: ${r.stdout}\n${r.stderr.split('\n').slice(-5).join('\n')}\n${await fleet.agent.log()}`,
      );
    return '';
  });

  const into = 'restored';
  await measure('restore', async () => {
    const r = await cli('restore', fleet.cluster, '--to', join(fleet.dir, into), '--target', 'immediate', '--wait');
    if (r.code !== 0)
      throw new Error(
        `restore failed: ${r.stdout}\n${r.stderr.split('\n').slice(-5).join('\n')}\n${await fleet.agent.log()}`,
      );
    return '';
  });

  log('comparing every synthetic file with its source');
  const restored = join(fleet.dir, into);
  let same = 0;
  let found = 0;
  for (const d of await readdir(join(restored, 'pgfleet_bench_files'))) {
    found += (await readdir(join(restored, 'pgfleet_bench_files', d))).length;
  }
  for (let i = 0; i < FILES; i++) {
    const got = await readFile(join(restored, relPath(i)));
    if (!got.equals(content(i))) throw new Error(`restored ${relPath(i)} differs from its source`);
    same++;
  }
  if (found !== FILES) throw new Error(`the restore holds ${found} synthetic files, the source ${FILES}`);
  results.at(-1).note = `${same} of ${FILES} files identical`;

  console.log(`\nagent peak RSS (VmHWM), ${FILES} files of ~${SIZE} bytes, target < 150 MB`);
  for (const r of results)
    console.log(
      `${r.what.padEnd(8)} ${r.seconds.toFixed(1).padStart(7)} s   RSS at start ${mb(r.base).padStart(6)} MB   peak ${mb(r.peak).padStart(6)} MB   ${r.note}`,
    );
} finally {
  await fleet.stop();
}
