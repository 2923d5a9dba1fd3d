#!/usr/bin/env node
/**
 * A restore isolated from the bench around it: the agent's restore (runRestore, the copy pool and
 * its tasks as a job runs them) of given backups of a kept posix repository (`PGFLEET_KEEP_TMP=1
 * node bench/run.mjs ...` leaves /tmp/pgfleet-bench-*), one after the other, alternating, into
 * fresh directories. Prints per restore the wall time and the CPU seconds of this process (user +
 * system, worker threads included): on a loaded machine the CPU figures and the ratio of the
 * chain's restore to the full's in one run are what to read.
 *
 *   node bench/chain-restore.mjs --dir /tmp/pgfleet-bench-XXXX --label <last incr> --label <full> [--runs 3] [--workers 2]
 *
 * With --workers 1 every task runs on the main thread, so `node --cpu-prof` sees them all
 * (bench/cpu-profile-summary.mjs summarises the profile).
 */
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { join, resolve, dirname } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';

const REPO_ROOT = resolve(dirname(fileURLToPath(import.meta.url)), '..');
const { values } = parseArgs({
  options: {
    dir: { type: 'string' },
    cluster: { type: 'string', default: 'main' },
    label: { type: 'string', multiple: true },
    runs: { type: 'string', default: '1' },
    workers: { type: 'string', default: '2' },
  },
});
if (!values.dir || !values.label?.length) {
  console.error(
    'Usage: node bench/chain-restore.mjs --dir /tmp/pgfleet-bench-XXXX --label L [--label L2] [--runs N] [--workers N]',
  );
  process.exit(2);
}
const { runRestore } = await import(join(REPO_ROOT, 'packages/agent/dist/restore/restore.js'));
const storage = await import(join(REPO_ROOT, 'packages/storage/dist/index.js'));
const { createLogger } = await import(join(REPO_ROOT, 'packages/core/dist/index.js'));

const repoPath = join(values.dir, 'pgfleet-repo');
const secret = Buffer.from((await readFile(join(values.dir, 'manifest.secret'), 'utf8')).trim(), 'hex');
const repo = new storage.Repository(new storage.PosixDriver(repoPath), storage.secretManifestKeys(secret));
const scratch = await mkdtemp(join(values.dir, 'scratch', 'chain-restore-'));
const results = new Map(values.label.map((l) => [l, []]));
try {
  for (let run = 0; run < Number(values.runs); run++) {
    for (const label of values.label) {
      const target = join(scratch, `${label}-${run}`);
      const cpu0 = process.cpuUsage();
      const t0 = performance.now();
      const out = await runRestore({
        cluster: values.cluster,
        repo,
        walFetchArgs: ['--repo', repoPath],
        backupLabel: label,
        targetDir: target,
        target: { kind: 'immediate' },
        action: 'promote',
        workers: Number(values.workers),
        log: createLogger({ level: 'silent' }),
        progress: () => {},
      });
      const wall = (performance.now() - t0) / 1000;
      const cpu = process.cpuUsage(cpu0);
      const r = { wall, user: cpu.user / 1e6, system: cpu.system / 1e6, bytes: out.bytes };
      results.get(label).push(r);
      console.log(
        `${label} run ${run + 1}: ${wall.toFixed(2)} s wall, CPU ${r.user.toFixed(2)} + ${r.system.toFixed(2)} = ${(r.user + r.system).toFixed(2)} s, ${(out.bytes / 1e6).toFixed(1)} MB`,
      );
      await rm(target, { recursive: true, force: true });
    }
  }
} finally {
  await rm(scratch, { recursive: true, force: true });
}
const median = (xs) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];
for (const [label, rs] of results)
  console.log(
    `${label}: median wall ${median(rs.map((r) => r.wall)).toFixed(2)} s, median CPU ${median(rs.map((r) => r.user + r.system)).toFixed(2)} s`,
  );
