#!/usr/bin/env node
/**
 * The controller's fleet-wide work over the catalog, in one process and without agents or gRPC,
 * timed in CPU seconds (process.cpuUsage): on a shared machine the wall time of a fleet-scale run
 * is the machine's, the CPU time of a fixed piece of work is the code's. Over a catalog seeded as
 * bench/fleet-scale.mjs seeds it (N clusters with policies, an agent row with heartbeat figures
 * each, `--backups` backups), it times:
 *   status      every page of ListClusters (listClusterStatusPage, --page-size rows a page)
 *   first page  the first page alone (what `pgfleet status | head` or the console waits for)
 *   health      one health round over every cluster (HealthMonitor.evaluateAll: reads, assessment,
 *               RPO history and state writes)
 *
 *   node bench/fleet-catalog-cpu.mjs [--clusters 10000] [--backups 100000] [--catalogs sqlite,postgres]
 *        [--page-size 5000] [--runs 3] [--root DIR] [--seeded FILE]
 *
 * --root runs another checkout's built packages, --seeded FILE keeps the seeded SQLite catalog for
 * the next run: before/after on one catalog and machine.
 */
import { existsSync } from 'node:fs';
import { copyFile, mkdtemp, rm } from 'node:fs/promises';
import { cpus, loadavg, tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { parseArgs } from 'node:util';
import { seed } from './fleet-seed.mjs';

const { values } = parseArgs({
  options: {
    clusters: { type: 'string', default: '10000' },
    backups: { type: 'string', default: '100000' },
    catalogs: { type: 'string', default: 'sqlite' },
    'page-size': { type: 'string', default: '5000' },
    runs: { type: 'string', default: '3' },
    root: { type: 'string', default: fileURLToPath(new URL('..', import.meta.url)) },
    seeded: { type: 'string' },
  },
});
const root = resolve(values.root);
const load = (path) => import(pathToFileURL(join(root, path)).href);
const { openCatalog } = await load('packages/catalog/dist/index.js');
const { listClusterStatusPage } = await load('packages/controller/dist/health/status.js');
const { HealthMonitor } = await load('packages/controller/dist/health/health.js');
const log = (msg) => console.error(`[${new Date().toISOString().slice(11, 19)}] ${msg}`);
const quiet = { child: () => quiet, trace() {}, debug() {}, info() {}, warn() {}, error() {}, fatal() {} };
const cpu = () => {
  const u = process.cpuUsage();
  return (u.user + u.system) / 1e6;
};
const median = (xs) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];

async function measure(url) {
  const store = await openCatalog(url);
  try {
    const ctx = {
      store,
      now: () => Date.now(),
      sessions: { get: () => undefined, ofCluster: () => [] },
      logger: quiet,
    };
    const pageSize = Number(values['page-size']);
    const timed = async (fn) => {
      const c0 = cpu();
      const t0 = performance.now();
      const r = await fn();
      return { cpu: cpu() - c0, wall: (performance.now() - t0) / 1000, r };
    };
    const status = [];
    const first = [];
    const health = [];
    let rows = 0;
    const monitor = () =>
      new HealthMonitor(store, {
        thresholds: { rpoSeconds: 300, staleBackupSeconds: 26 * 3600, silenceSeconds: 60 },
        intervalSeconds: 0,
        logger: quiet,
        now: () => Date.now(),
      });
    // Untimed: code compiled, and the first round's health states and RPO samples written (a
    // controller's steady rounds find them there).
    await monitor().evaluateAll();
    await listClusterStatusPage(ctx, { pageSize, pageToken: '' });
    for (let run = 0; run < Number(values.runs); run++) {
      first.push(await timed(() => listClusterStatusPage(ctx, { pageSize, pageToken: '' })));
      status.push(
        await timed(async () => {
          let pageToken = '';
          let n = 0;
          do {
            const page = await listClusterStatusPage(ctx, { pageSize, pageToken });
            n += page.clusters.length;
            pageToken = page.nextPageToken;
          } while (pageToken);
          return n;
        }),
      );
      rows = status.at(-1).r;
      const m = monitor();
      health.push(await timed(() => m.evaluateAll()));
    }
    const f = (xs, k) => median(xs.map((x) => x[k])).toFixed(3);
    return {
      rows,
      statusCpu: f(status, 'cpu'),
      statusWall: f(status, 'wall'),
      firstCpu: f(first, 'cpu'),
      firstWall: f(first, 'wall'),
      healthCpu: f(health, 'cpu'),
      healthWall: f(health, 'wall'),
    };
  } finally {
    await store.close();
  }
}

const n = Number(values.clusters);
log(`machine: ${cpus().length} cores, load average ${loadavg()[0].toFixed(1)}; packages from ${root}`);
const results = [];
for (const catalog of values.catalogs.split(',')) {
  const dir = await mkdtemp(join(tmpdir(), 'pgfleet-catalog-cpu-'));
  let pg;
  try {
    let url;
    if (catalog === 'postgres') {
      const { startPostgres } = await import('../packages/testkit/dist/index.js');
      pg = await startPostgres({ settings: { shared_buffers: '256MB' } });
      url = pg.connectionString;
    } else url = join(dir, 'catalog.db');
    // --seeded FILE (SQLite): seeded once into FILE, copied for each run (a round writes to it).
    const seeded = catalog === 'sqlite' ? values.seeded : undefined;
    if (!seeded || !existsSync(seeded)) {
      log(`${catalog}: seeding ${n} clusters, ${values.backups} backups`);
      const s = await seed(seeded ?? url, n, Number(values.backups), 1000, { agentRows: true });
      log(`${catalog}: seeded in ${s.toFixed(1)} s`);
    }
    if (seeded) await copyFile(seeded, url);
    const r = await measure(url);
    results.push({ catalog, ...r });
    log(`${catalog}: ${JSON.stringify(r)}`);
  } finally {
    await pg?.stop();
    await rm(dir, { recursive: true, force: true });
  }
}
console.log(`\nload average at the end: ${loadavg()[0].toFixed(1)}; median of ${values.runs} runs, seconds`);
console.log(
  '| catalog | clusters listed | status cpu | status wall | first page cpu | first page wall | health round cpu | health round wall |',
);
console.log('|---|---:|---:|---:|---:|---:|---:|---:|');
for (const r of results)
  console.log(
    `| ${r.catalog} | ${r.rows} | ${r.statusCpu} | ${r.statusWall} | ${r.firstCpu} | ${r.firstWall} | ${r.healthCpu} | ${r.healthWall} |`,
  );
