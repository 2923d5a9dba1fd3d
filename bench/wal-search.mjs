#!/usr/bin/env node
/**
 * `pgfleet wal search` rate over archived pgbench WAL (issue 15 target: >= 200 MB of WAL per
 * second on 2 cores). A private PostgreSQL 15 runs `pgbench -i` (COPY-like multi-inserts, index
 * builds) at the scale that writes `--size` of WAL, then pgbench's TPC-B updates, archived by `cp`,
 * then archived into a posix repository the way the agent does (Repository.archiveWal, zstd),
 * beside a backup manifest with the catalog snapshot taken at the start. The search itself is
 * the agent's code path (searchWal: listing, parallel fetch + zstd decompression, decoding,
 * relation names, per-transaction figures), run `--runs` times. Prints MB of WAL per second
 * (wall) and the CPU seconds the process used (threadpool included): on a shared machine the
 * wall time mostly measures the neighbours.
 *
 *   nice node bench/wal-search.mjs [--size 2GB] [--runs 3] [--scale N] [--tpcb-seconds 20] [--dir D]
 */
import { execFileSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdir, readdir, readFile, rm, stat, writeFile } from 'node:fs/promises';
import { existsSync } from 'node:fs';
import { loadavg, tmpdir } from 'node:os';
import { join } from 'node:path';
import { mkdtemp } from 'node:fs/promises';
import { parseArgs } from 'node:util';

const { values } = parseArgs({
  options: {
    size: { type: 'string', default: '2GB' },
    runs: { type: 'string', default: '3' },
    // pgbench -i writes ~12.5 MB of WAL per scale unit: by default the scale that reaches --size.
    scale: { type: 'string' },
    'tpcb-seconds': { type: 'string', default: '20' },
    // Keep the generated repository here and reuse it on later runs (A/B of code changes on the same WAL).
    dir: { type: 'string' },
  },
});
const { makeTempDir, removeDir, startPostgres } = await import('@pgfleet/testkit');
const { parseSize } = await import('../packages/core/dist/index.js');
const { PosixDriver, Repository, secretManifestKeys } = await import('../packages/storage/dist/index.js');
const { searchWal } = await import('../packages/agent/dist/wal-search/search.js');
const { storeCatalogSnapshot } = await import('../packages/agent/dist/backup/catalog-snapshot.js');

const CLUSTER = 'bench';
const silent = { info() {}, warn() {}, error() {}, debug() {}, trace() {}, fatal() {}, child: () => silent };
const log = (msg) => console.error(`[${new Date().toISOString().slice(11, 19)}] ${msg}`);
const cpuSeconds = (since) => {
  const u = process.cpuUsage(since);
  return (u.user + u.system) / 1e6;
};
const median = (xs) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];

/** Generates the archived WAL and its backup manifest into `work` (see the module header). */
async function generate(work) {
  const archiveDir = await makeTempDir('bench-wal-search-archive');
  let pg;
  try {
    log('starting PostgreSQL, archive_command = cp');
    pg = await startPostgres({
      archiveCommand: `cp %p ${archiveDir}/%f`,
      settings: { max_wal_size: '4GB', checkpoint_timeout: '5min' },
    });
    const [{ sysid, segsize }] = await pg.query(
      "SELECT system_identifier::text AS sysid, (SELECT setting::int FROM pg_settings WHERE name = 'wal_segment_size') AS segsize FROM pg_control_system()",
    );
    const secret = randomBytes(32);
    await writeFile(join(work, 'secret'), secret);
    const repo = new Repository(new PosixDriver(join(work, 'repo')), secretManifestKeys(secret));
    await repo.ensureClusterInfo(CLUSTER, { systemIdentifier: sysid, pgVersionNum: 150000, walSegmentSize: segsize });
    // The "backup": its start segment, its catalog snapshot, a manifest naming both.
    await pg.query('CHECKPOINT');
    const [{ startLsn, walStart }] = await pg.query(
      'SELECT pg_current_wal_lsn()::text AS "startLsn", pg_walfile_name(pg_current_wal_lsn()) AS "walStart"',
    );
    const label = '20260101-000000F';
    const pgOpts = { host: pg.host, port: pg.port, user: pg.user, database: 'postgres' };
    const catalogSnapshot = await storeCatalogSnapshot({
      pg: pgOpts,
      log: silent,
      repo,
      cluster: CLUSTER,
      label,
      codec: 'zstd',
    });
    const startTime = new Date().toISOString();
    const target = parseSize(values.size, 'size');
    const env = { ...process.env, ...pg.env };
    const pgbench = join(pg.binDir, 'pgbench');
    const scale = values.scale ?? String(Math.max(1, Math.ceil(target / 12.5e6)));
    log(`pgbench -i -s ${scale}`);
    execFileSync(pgbench, ['-i', '-q', '-s', scale], { env, stdio: 'ignore' });
    // TPC-B updates (the pgbench workload proper) on top of the bulk load.
    execFileSync(pgbench, ['-c', '4', '-j', '2', '-T', values['tpcb-seconds'], '-n'], { env, stdio: 'ignore' });
    for (let batch = 0; ; batch++) {
      const [{ bytes }] = await pg.query(
        `SELECT pg_wal_lsn_diff(pg_current_wal_lsn(), '${startLsn}')::bigint AS bytes`,
      );
      log(`${(Number(bytes) / 2 ** 20).toFixed(0)} MiB of WAL`);
      if (Number(bytes) >= target) break;
      await pg.query(
        `INSERT INTO pgbench_history SELECT g % 10, g % 100000, g % 1000, g % 5000, now(), NULL FROM generate_series(1, 500000) g`,
      );
    }
    await pg.query('SELECT pg_switch_wal()');
    const [{ last }] = await pg.query('SELECT pg_walfile_name(pg_current_wal_lsn()) AS last');
    for (;;) {
      const [{ archived }] = await pg.query('SELECT last_archived_wal AS archived FROM pg_stat_archiver');
      const before =
        last.slice(0, 16) + (Number.parseInt(last.slice(16), 16) - 1).toString(16).toUpperCase().padStart(8, '0');
      if (archived && archived >= before) break;
      await new Promise((r) => setTimeout(r, 200));
    }
    const names = (await readdir(archiveDir)).filter((n) => /^[0-9A-F]{24}$/.test(n) && n >= walStart).sort();
    log(`archiving ${names.length} segments into the repository (zstd)`);
    for (const name of names) {
      const path = join(archiveDir, name);
      await repo.archiveWal(CLUSTER, name, path, 'zstd', (await stat(path)).size);
    }
    await repo.writeManifest({
      format: 1,
      label,
      cluster: CLUSTER,
      type: 'full',
      systemIdentifier: sysid,
      pgVersionNum: 150000,
      walSegmentSize: segsize,
      timeline: 1,
      startLsn,
      stopLsn: startLsn,
      startTime,
      stopTime: startTime,
      walStart,
      walStop: walStart,
      backupLabel: `START WAL LOCATION: ${startLsn} (file ${walStart})\n`,
      directories: [],
      links: [],
      files: [],
      sizeBytes: 0,
      storedBytes: 0,
      agentVersion: 'bench',
      ...(catalogSnapshot ? { catalogSnapshot } : {}),
    });
    await writeFile(join(work, 'segments'), String(names.length));
  } finally {
    await pg?.stop();
    await removeDir(archiveDir);
  }
}

const work = values.dir ?? (await mkdtemp(join(tmpdir(), 'pgfleet-bench-wal-search-')));
try {
  if (!existsSync(join(work, 'segments'))) {
    await mkdir(work, { recursive: true });
    await generate(work);
  } else log(`reusing the repository in ${work}`);
  const repo = new Repository(
    new PosixDriver(join(work, 'repo')),
    secretManifestKeys(await readFile(join(work, 'secret'))),
  );
  const segsize = (await repo.readClusterInfo(CLUSTER)).walSegmentSize;
  const names = { length: Number(await readFile(join(work, 'segments'), 'utf8')) };
  const walBytes = names.length * segsize;
  const walls = [];
  const cpus = [];
  let found;
  for (let run = 0; run < Number(values.runs); run++) {
    const t = performance.now();
    const c = process.cpuUsage();
    found = await searchWal({
      repo,
      cluster: CLUSTER,
      filter: { kinds: ['delete', 'update', 'truncate', 'drop'], minRows: 0, limit: 50 },
      currentTimeline: 0,
      log: silent,
      progress: () => {},
    });
    walls.push((performance.now() - t) / 1000);
    cpus.push(cpuSeconds(c));
    log(
      `run ${run + 1}: ${found.segmentsRead} segments, ${walls.at(-1).toFixed(2)} s wall, ${cpus.at(-1).toFixed(2)} s CPU, ${found.transactionsSeen} transactions`,
    );
  }
  const mb = walBytes / 1e6;
  console.log(
    `\nwal search over ${names.length} archived pgbench segments (${(walBytes / 2 ** 30).toFixed(2)} GiB, zstd), median of ${values.runs} runs, load ${loadavg()[0].toFixed(2)}:`,
  );
  console.log(
    `  ${(mb / median(walls)).toFixed(0)} MB/s of WAL (wall ${median(walls).toFixed(2)} s), CPU ${median(cpus).toFixed(2)} s (${(mb / median(cpus)).toFixed(0)} MB per CPU second); ${found.transactionsSeen} committed transactions, ${found.matched} matched`,
  );
} finally {
  if (!values.dir) await rm(work, { recursive: true, force: true });
}
