#!/usr/bin/env node
/**
 * Agent memory against the size of the cluster (issue 16, part 3): a real PostgreSQL 15 cluster
 * with a synthetic PGDATA of many small files (`--files`, default 100,000, under
 * `pgfleet_bench_files/` in its data directory), a real controller and agent daemon (the e2e
 * harness, test/src/harness.ts), then:
 *
 *   backup     `pgfleet backup --wait` (full); peak RSS of the agent daemon
 *   incr       `pgfleet backup --type incr --wait` on the full, nothing changed since: every
 *              file is looked up in the prior manifest and (nearly) all are referenced
 *   restore    `pgfleet restore --target immediate --wait` (of the incr) into a new directory, on
 *              a freshly started agent (so its peak is the restore's own); every synthetic file is
 *              then compared with its source byte for byte, and the file count must match
 *
 * With `--wal-backlog N` it measures a WAL backlog instead (no synthetic files): archiving is
 * paused (archive_command set to '' with ALTER SYSTEM: PostgreSQL keeps the .ready files), N
 * segments are completed with pg_switch_wal (each after a small WAL record, so that every switch
 * ends a segment), and a fresh agent daemon is started and archive_command restored: PostgreSQL's
 * archiver works through the backlog calling wal-push, the daemon pushing ahead of it
 * (`--archive-ahead`, with `--watch-ready` from archive_status at once). Reported: the daemon's
 * peak RSS, the time until the repository holds every backlog segment, and the time until
 * archive_status holds no .ready file. A switched segment is written whole (PostgreSQL fills it
 * with zeros through its WAL buffers), so 10,000 segments of 16 MB would need 160 GB of disk: the
 * cluster is made with `initdb --wal-segsize` of `--wal-segsize` MB (default 1 in this mode).
 *
 * Peak RSS is the agent process's own high-water mark (VmHWM in /proc/<pid>/status, read just
 * before the daemon is stopped: the kernel's figure for every thread, heap or not), not a heap
 * figure. The target is < 150 MB.
 *
 *   node bench/memory.mjs [--files 100000] [--size 600]
 *   node bench/memory.mjs --wal-backlog 10000 [--wal-segsize 1] [--ahead 3] [--watch-ready] [--drain-timeout 3600]
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
    'wal-backlog': { type: 'string' },
    'wal-segsize': { type: 'string' },
    ahead: { type: 'string' },
    'watch-ready': { type: 'boolean', default: false },
    'drain-timeout': { type: 'string', default: '3600' },
  },
});
const BACKLOG = values['wal-backlog'] === undefined ? undefined : Number(values['wal-backlog']);
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

const segMb = Number(values['wal-segsize'] ?? (BACKLOG === undefined ? 16 : 1));
const fleet = await startFleet({
  cluster: 'memory',
  ...(BACKLOG === undefined
    ? {}
    : {
        pg: {
          initdbArgs: ['--wal-segsize', String(segMb)],
          // wal_init_zero off: a new segment is made by one write at its end (its holes read as
          // zeros); max_wal_size high: no checkpoint while the backlog is made (none could remove it anyway).
          settings: { wal_init_zero: 'off', max_wal_size: '100GB', checkpoint_timeout: '1h' },
        },
      }),
});
// The harness's fleet.cli kills a command after 180 s: a 100k-file job on a loaded machine takes longer.
const cli = (...args) =>
  runNode(CLI_BIN, args, {
    env: { PGFLEET_CONTROLLER: fleet.controllerAddress, ...INSECURE_ENV },
    timeoutMs: 3_600_000,
  });
const results = [];
const measure = async (what, fn, agentArgs = []) => {
  // A fresh agent daemon per step: VmHWM is the peak of this step alone.
  await fleet.agent?.stop();
  // A long WAL wait: on a loaded machine the harness's 60 s is not always enough for the last segment.
  const agent = await fleet.startAgent(['--archive-timeout', '600', ...agentArgs]);
  const pid = agent.child.pid;
  const base = kb(pid, 'VmRSS');
  const t = performance.now();
  const note = await fn();
  const seconds = (performance.now() - t) / 1000;
  const peak = kb(pid, 'VmHWM');
  results.push({ what, seconds, base, peak, note });
  log(`${what}: ${seconds.toFixed(1)} s, agent RSS at start ${mb(base)} MB, peak ${mb(peak)} MB ${note}`);
};
try {
  if (BACKLOG !== undefined) {
    await walBacklog(BACKLOG);
  } else await clusterFiles();
} finally {
  await fleet.stop();
}

/** The agent through a backlog of `n` ready WAL segments (module header). */
async function walBacklog(n) {
  const statusDir = join(fleet.pg.dataDir, 'pg_wal', 'archive_status');
  const readyCount = async () => (await readdir(statusDir)).filter((f) => f.endsWith('.ready')).length;
  const archived = async () => {
    let count = 0;
    for await (const batch of fleet.repo.listWalKeys(fleet.cluster)) count += batch.keys.length;
    return count;
  };
  await fleet.agent?.stop();
  fleet.agent = undefined;
  await fleet.pg.query(`ALTER SYSTEM SET archive_command = ''`);
  await fleet.pg.query('SELECT pg_reload_conf()');
  const before = await archived();
  log(`pausing archiving; making ${n} ready WAL segments of ${segMb} MB (${before} WAL files archived before)`);
  const BATCH = 100;
  for (let done = 0; done < n; done += BATCH) {
    const k = Math.min(BATCH, n - done);
    // A record in each segment first: pg_switch_wal() on a segment with nothing new in it does nothing.
    await fleet.pg.query(
      `DO $$ BEGIN FOR i IN 1..${k} LOOP PERFORM pg_logical_emit_message(false, 'pgfleet-bench', 'x'); PERFORM pg_switch_wal(); END LOOP; END $$`,
    );
    if ((done / BATCH) % 20 === 0) log(`${done + k} segments switched, ${await readyCount()} .ready`);
  }
  const ready = await readyCount();
  log(`${ready} .ready files in archive_status; starting the agent and restoring archive_command`);
  if (ready < n) throw new Error(`only ${ready} of ${n} segments are ready`);
  const timeoutMs = Number(values['drain-timeout']) * 1000;
  const agentArgs = [
    ...(values.ahead === undefined ? [] : ['--archive-ahead', values.ahead]),
    ...(values['watch-ready'] ? ['--archive-watch-ready'] : []),
  ];
  let repoSeconds;
  await measure(
    `wal-backlog ${n}`,
    async () => {
      const t = performance.now();
      await fleet.pg.query('ALTER SYSTEM RESET archive_command');
      await fleet.pg.query('SELECT pg_reload_conf()');
      let last = 0;
      for (;;) {
        const [left, stored] = [await readyCount(), (await archived()) - before];
        if (repoSeconds === undefined && stored >= ready) repoSeconds = (performance.now() - t) / 1000;
        if (left === 0) break;
        if (performance.now() - t > timeoutMs)
          return `NOT drained within ${values['drain-timeout']} s: ${left} .ready left, ${stored} stored`;
        if (performance.now() - last > 30_000) {
          last = performance.now();
          log(`${left} .ready left, ${stored} of ${ready} in the repository`);
        }
        await new Promise((r) => setTimeout(r, 2000));
      }
      return `${ready} segments: all in the repository after ${repoSeconds?.toFixed(1) ?? '?'} s, archive_status drained after ${((performance.now() - t) / 1000).toFixed(1)} s`;
    },
    agentArgs,
  );
  console.log(`\nagent peak RSS (VmHWM), WAL backlog of ${n} segments of ${segMb} MB, target < 150 MB`);
  for (const r of results)
    console.log(
      `${r.what} ${r.seconds.toFixed(1).padStart(7)} s   RSS at start ${mb(r.base).padStart(6)} MB   peak ${mb(r.peak).padStart(6)} MB   ${r.note}`,
    );
}

/** The synthetic files, their full and incr backups and the restore (module header). */
async function clusterFiles() {
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

  await measure('backup', async () => {
    const r = await cli('backup', fleet.cluster, '--wait', '--output', 'json');
    if (r.code !== 0)
      throw new Error(
        `backup failed: ${r.stdout}\n${r.stderr.split('\n').slice(-5).join('\n')}\n${await fleet.agent.log()}`,
      );
    return '';
  });

  // Nothing changed since the full: every file is looked up in the prior manifest, nearly all referenced.
  await measure('incr', async () => {
    const r = await cli('backup', fleet.cluster, '--type', 'incr', '--wait', '--output', 'json');
    if (r.code !== 0)
      throw new Error(
        `incr backup failed: ${r.stdout}\n${r.stderr.split('\n').slice(-5).join('\n')}\n${await fleet.agent.log()}`,
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
}
