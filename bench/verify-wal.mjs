#!/usr/bin/env node
/**
 * What verify costs per GB of archived WAL: the default mode (each segment's stored frames walked
 * to their end, its first frame alone decoded for the page header) against --full (every segment
 * decoded and its checksum computed). Real WAL from a private PostgreSQL (inserts of log-like
 * rows, archived by `cp`), archived once per configuration into a posix repository the way the
 * agent does (Repository.archiveWal, the block form), then runVerify in both modes, alternating.
 * Prints wall time and the CPU time this process used (threadpool included): on a shared machine
 * the wall time mostly measures the neighbours, the CPU time what the work costs.
 *
 *   node bench/verify-wal.mjs [--wal-mb 512] [--runs 3] [--configs zstd,lz4,none,zstd-encrypted]
 */
import { randomBytes } from 'node:crypto';
import { readdir, rm, stat } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { mkdtemp } from 'node:fs/promises';

const { values } = parseArgs({
  options: {
    'wal-mb': { type: 'string', default: '512' },
    runs: { type: 'string', default: '3' },
    configs: { type: 'string', default: 'zstd,lz4,none,zstd-encrypted' },
  },
});
const { makeTempDir, removeDir, startPostgres } = await import('@pgfleet/testkit');
const { fixedKeys, PosixDriver, Repository, secretManifestKeys } = await import('../packages/storage/dist/index.js');
const { runVerify } = await import('../packages/agent/dist/index.js');

const CLUSTER = 'bench';
const silent = { info() {}, warn() {}, error() {}, debug() {}, trace() {}, fatal() {}, child: () => silent };
const log = (msg) => console.error(`[${new Date().toISOString().slice(11, 19)}] ${msg}`);
const cpuSeconds = (since) => {
  const u = process.cpuUsage(since);
  return (u.user + u.system) / 1e6;
};
const median = (xs) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];

const archiveDir = await makeTempDir('bench-verify-wal-archive');
const work = await mkdtemp(join(tmpdir(), 'pgfleet-bench-verify-wal-'));
let pg;
try {
  log('starting PostgreSQL, archive_command = cp');
  pg = await startPostgres({
    archiveCommand: `cp %p ${archiveDir}/%f`,
    settings: { max_wal_size: '4GB', checkpoint_timeout: '15min' },
  });
  const [{ sysid, segsize }] = await pg.query(
    "SELECT system_identifier::text AS sysid, (SELECT setting::int * 1 FROM pg_settings WHERE name = 'wal_segment_size') AS segsize FROM pg_control_system()",
  );
  await pg.query('CREATE TABLE events (id bigint, at timestamptz, host text, path text, agent text, payload text)');
  const target = Number(values['wal-mb']) << 20;
  const [{ start }] = await pg.query('SELECT pg_current_wal_lsn()::text AS start');
  for (let batch = 0; ; batch++) {
    // Log-like rows (md5 ids, paths, user agents): real tables' mix of text and numbers.
    await pg.query(
      `INSERT INTO events SELECT g, now(), '10.' || (g % 250) || '.' || (g % 17) || '.1',
         '/api/v' || (g % 3) || '/items/' || md5(g::text), 'Mozilla/5.0 (X11; Linux x86_64) rv:' || (g % 120),
         repeat(md5((g * ${batch + 1})::text), 3) FROM generate_series(${batch * 200000}, ${batch * 200000 + 199999}) g`,
    );
    const [{ bytes }] = await pg.query(`SELECT pg_wal_lsn_diff(pg_current_wal_lsn(), '${start}')::bigint AS bytes`);
    if (Number(bytes) >= target) break;
  }
  await pg.query('SELECT pg_switch_wal()');
  const [{ last }] = await pg.query('SELECT pg_walfile_name(pg_current_wal_lsn()) AS last');
  // Every segment up to the one before the current must be archived.
  for (;;) {
    const [{ archived }] = await pg.query('SELECT last_archived_wal AS archived FROM pg_stat_archiver');
    if (
      archived &&
      archived >=
        last.slice(0, 16) + (Number.parseInt(last.slice(16), 16) - 1).toString(16).toUpperCase().padStart(8, '0')
    )
      break;
    await new Promise((r) => setTimeout(r, 200));
  }
  const names = (await readdir(archiveDir)).filter((n) => /^[0-9A-F]{24}$/.test(n)).sort();
  const walBytes = names.length * segsize;
  log(`${names.length} segments of real WAL (${(walBytes / 2 ** 30).toFixed(2)} GiB)`);

  const rows = [];
  for (const config of values.configs.split(',')) {
    const codec = config.replace('-encrypted', '');
    const encrypted = config.endsWith('-encrypted');
    const root = join(work, config);
    const repo = new Repository(
      new PosixDriver(root),
      secretManifestKeys(randomBytes(32)),
      encrypted ? fixedKeys({ [CLUSTER]: randomBytes(32) }) : undefined,
    );
    await repo.ensureClusterInfo(CLUSTER, { systemIdentifier: sysid, pgVersionNum: 150000, walSegmentSize: segsize });
    for (const name of names) {
      const path = join(archiveDir, name);
      await repo.archiveWal(CLUSTER, name, path, codec, (await stat(path)).size);
    }
    let stored = 0;
    for await (const w of repo.listWal(CLUSTER)) stored += w.storedSize;
    const times = { default: { wall: [], cpu: [] }, full: { wall: [], cpu: [] } };
    for (let run = 0; run < Number(values.runs); run++) {
      for (const mode of ['default', 'full']) {
        const t = performance.now();
        const c = process.cpuUsage();
        const v = await runVerify({ cluster: CLUSTER, repo, full: mode === 'full', concurrency: 2, log: silent });
        times[mode].wall.push((performance.now() - t) / 1000);
        times[mode].cpu.push(cpuSeconds(c));
        if (v.problems.length > 0 || v.walSegmentsChecked !== names.length)
          throw new Error(`${config} ${mode}: ${JSON.stringify(v.problems.slice(0, 3))}`);
      }
    }
    const perGb = (s) => (s / walBytes) * 2 ** 30;
    const row = {
      config,
      storedPct: +((stored / walBytes) * 100).toFixed(1),
      defaultWallSPerGiB: +perGb(median(times.default.wall)).toFixed(3),
      defaultCpuSPerGiB: +perGb(median(times.default.cpu)).toFixed(3),
      fullWallSPerGiB: +perGb(median(times.full.wall)).toFixed(3),
      fullCpuSPerGiB: +perGb(median(times.full.cpu)).toFixed(3),
    };
    row.cpuRatio = +(row.defaultCpuSPerGiB / row.fullCpuSPerGiB).toFixed(2);
    rows.push(row);
    log(JSON.stringify(row));
    await rm(root, { recursive: true, force: true });
  }
  console.log(
    `\nverify of ${names.length} real WAL segments (${(walBytes / 2 ** 30).toFixed(2)} GiB), median of ${values.runs} runs, per GiB of WAL:\n`,
  );
  console.log(
    '| configuration | stored | default wall s | default CPU s | --full wall s | --full CPU s | CPU default/full |',
  );
  console.log('|---|---|---|---|---|---|---|');
  for (const r of rows)
    console.log(
      `| ${r.config} | ${r.storedPct}% | ${r.defaultWallSPerGiB} | ${r.defaultCpuSPerGiB} | ${r.fullWallSPerGiB} | ${r.fullCpuSPerGiB} | ${r.cpuRatio} |`,
    );
} finally {
  await pg?.stop();
  await removeDir(archiveDir);
  await rm(work, { recursive: true, force: true });
}
