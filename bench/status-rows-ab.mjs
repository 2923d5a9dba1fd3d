#!/usr/bin/env node
/**
 * The controller's status rows (every page of ListClusters, listClusterStatusPage) of two builds,
 * alternated in one process over one catalog: on a loaded machine the load changes between runs,
 * so two builds are compared run by run on the same catalog rather than in separate processes.
 * Each root's packages (catalog store and controller) are its own; both read the same catalog.
 *
 *   node bench/status-rows-ab.mjs --roots /tmp/old,. [--catalog sqlite|postgres] [--seeded FILE]
 *        [--clusters 10000] [--backups 100000] [--page-size 5000] [--runs 5]
 *
 * SQLite: --seeded FILE (bench/fleet-catalog-cpu.mjs --seeded makes one) is copied and read, or a
 * catalog is seeded. PostgreSQL: a server is started (testkit) and seeded as fleet-scale seeds it.
 */
import { copyFile, mkdtemp, rm } from 'node:fs/promises';
import { loadavg, tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { pathToFileURL } from 'node:url';
import { parseArgs } from 'node:util';
import { seed } from './fleet-seed.mjs';

const { values } = parseArgs({
  options: {
    roots: { type: 'string' },
    catalog: { type: 'string', default: 'sqlite' },
    seeded: { type: 'string' },
    clusters: { type: 'string', default: '10000' },
    backups: { type: 'string', default: '100000' },
    'page-size': { type: 'string', default: '5000' },
    runs: { type: 'string', default: '5' },
  },
});
const roots = (values.roots ?? '').split(',').map((r) => resolve(r));
if (roots.length !== 2 || roots.some((r) => r === '')) {
  console.error('usage: node bench/status-rows-ab.mjs --roots OLD,NEW [--catalog sqlite|postgres] ...');
  process.exit(2);
}
const cpu = () => {
  const u = process.cpuUsage();
  return (u.user + u.system) / 1e6;
};
const median = (xs) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];

const dir = await mkdtemp(join(tmpdir(), 'pgfleet-status-ab-'));
let pg;
try {
  let url;
  if (values.catalog === 'postgres') {
    const { startPostgres } = await import('../packages/testkit/dist/index.js');
    pg = await startPostgres({ settings: { shared_buffers: '256MB' } });
    url = pg.connectionString;
  } else url = join(dir, 'catalog.db');
  if (values.seeded && values.catalog === 'sqlite') await copyFile(values.seeded, url);
  else {
    const s = await seed(url, Number(values.clusters), Number(values.backups), 1000, { agentRows: true });
    console.error(`seeded in ${s.toFixed(1)} s`);
  }
  const builds = [];
  for (const root of roots) {
    const load = (path) => import(pathToFileURL(join(root, path)).href);
    const { openCatalog } = await load('packages/catalog/dist/index.js');
    const { listClusterStatusPage } = await load('packages/controller/dist/health/status.js');
    const store = await openCatalog(url);
    const ctx = { store, now: () => Date.now(), sessions: { get: () => undefined, ofCluster: () => [] }, logger: {} };
    builds.push({ root, store, ctx, listClusterStatusPage, cpu: [], rows: 0 });
  }
  const pageSize = Number(values['page-size']);
  const loads = [];
  // Run 0 of each warms up (module compilation, caches filled once per process).
  for (let run = 0; run <= Number(values.runs); run++) {
    for (const b of run % 2 === 0 ? builds : [...builds].reverse()) {
      const t = cpu();
      let rows = 0;
      let pageToken = '';
      do {
        const page = await b.listClusterStatusPage(b.ctx, { pageSize, pageToken });
        rows += page.clusters.length;
        pageToken = page.nextPageToken;
      } while (pageToken);
      if (run > 0) b.cpu.push(cpu() - t);
      b.rows = rows;
    }
    loads.push(loadavg()[0]);
  }
  console.log(
    `${values.catalog}, ${builds[0].rows} clusters, load ${Math.min(...loads).toFixed(1)}-${Math.max(...loads).toFixed(1)}; status rows CPU seconds, median of ${values.runs}`,
  );
  for (const b of builds)
    console.log(`${median(b.cpu).toFixed(3)}  (${b.cpu.map((x) => x.toFixed(3)).join(', ')})  ${b.root}`);
  for (const b of builds) await b.store.close();
} finally {
  await pg?.stop();
  await rm(dir, { recursive: true, force: true });
}
