#!/usr/bin/env node
/**
 * Whole `pgfleet` processes against a real controller over a seeded SQLite catalog (no agents):
 * `backups <cluster>` of a cluster with many backups and of one with few, `status`, each as a
 * table and as `--output json` (stdout to /dev/null), old and new checkouts interleaved (--root,
 * each with its built dist/), beside the floor: `node -e 0`, and a bundle (built here with
 * esbuild) that only opens a gRPC channel with @pgfleet/rpc and makes the one ListBackups call.
 * CPU is the CLI process's own (user + system from its rusage via /usr/bin/time: the controller's
 * work is not in it); wall is from spawn to exit. The controller is this checkout's.
 *
 *   node bench/cli-commands.mjs --seeded /tmp/seed10k.db [--runs 9] [--status-runs 3]
 *        [--big c00000] [--small c00001] [--root /old/checkout] [--root .]
 *
 * The catalog: bench/fleet-catalog-cpu.mjs --seeded FILE (10,000 clusters, 100,000 backups, 1,000
 * of them in c00000, an agent's heartbeat per cluster).
 */
import { spawn, spawnSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { copyFile, mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { createServer } from 'node:net';
import { loadavg, tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';

const { values } = parseArgs({
  options: {
    seeded: { type: 'string' },
    runs: { type: 'string', default: '9' },
    'status-runs': { type: 'string', default: '3' },
    big: { type: 'string', default: 'c00000' },
    small: { type: 'string', default: 'c00001' },
    root: { type: 'string', multiple: true },
  },
});
if (!values.seeded) throw new Error('--seeded FILE: a catalog made by bench/fleet-catalog-cpu.mjs --seeded');
const here = fileURLToPath(new URL('..', import.meta.url));
const roots = (values.root ?? [here]).map((r) => resolve(r));
const dir = await mkdtemp(join(tmpdir(), 'pgfleet-cli-commands-'));
const catalog = join(dir, 'catalog.db');
await copyFile(values.seeded, catalog);
await mkdir(join(dir, 'repo'));
const secret = join(dir, 'manifest.secret');
await writeFile(secret, `${randomBytes(32).toString('hex')}\n`, { mode: 0o600 });
const port = await new Promise((res) => {
  const s = createServer().listen(0, '127.0.0.1', () => {
    const p = s.address().port;
    s.close(() => res(p));
  });
});
const address = `127.0.0.1:${port}`;

// The floor: grpc-js, the generated AdminService and one call, nothing of the CLI.
const floorSource = join(here, 'bench', '.cli-floor.mjs');
await writeFile(
  floorSource,
  `import { createClient, insecureCredentials } from '@pgfleet/rpc/client';
import { AdminService } from '@pgfleet/proto';
const admin = createClient(AdminService, process.argv[2], { credentials: insecureCredentials(true, 'pgfleet', process.argv[2]) });
await admin.listBackups({ cluster: process.argv[3], pageSize: 5000 });
admin.close();
`,
);
const { build } = await import('esbuild');
const floor = join(dir, 'floor.bundle.mjs');
await build({
  entryPoints: [floorSource],
  outfile: floor,
  bundle: true,
  platform: 'node',
  format: 'esm',
  target: 'node24',
  logLevel: 'warning',
  banner: {
    js: "import { createRequire as __floorCreateRequire } from 'node:module'; const require = __floorCreateRequire(import.meta.url);",
  },
});
await rm(floorSource);

const controller = spawn(
  process.execPath,
  [
    join(here, 'packages/controller/dist/bin.js'),
    'run',
    '--listen',
    address,
    '--catalog',
    catalog,
    '--repo-path',
    join(dir, 'repo'),
    '--manifest-secret',
    secret,
    '--insecure',
    '--schedule-interval',
    '3600',
    '--metrics-listen',
    'off',
    '--log-level',
    'error',
  ],
  { stdio: 'ignore' },
);
const env = { ...process.env, PGFLEET_CONTROLLER: address, PGFLEET_INSECURE: 'true' };

function run(argv) {
  const t = performance.now();
  const r = spawnSync('/usr/bin/time', ['-f', '%U %S', process.execPath, ...argv], {
    env,
    encoding: 'utf8',
    stdio: ['ignore', 'ignore', 'pipe'],
  });
  const wall = performance.now() - t;
  const m = r.stderr
    .trim()
    .split('\n')
    .at(-1)
    .match(/^([\d.]+) ([\d.]+)$/);
  if (r.status !== 0 || !m) throw new Error(`${argv.join(' ')}: exit ${r.status}: ${r.stderr}`);
  return { cpu: (Number(m[1]) + Number(m[2])) * 1000, wall };
}

// Waits for the controller to answer.
for (let i = 0; ; i++) {
  try {
    run([floor, address, values.small]);
    break;
  } catch (err) {
    if (i > 60) throw err;
    await new Promise((r) => setTimeout(r, 500));
  }
}

const label = (root) => (roots.length > 1 ? ` [${root === resolve(here) ? 'this checkout' : root}]` : '');
const cases = [
  { label: 'node -e 0', argv: ['-e', '0'], runs: 'runs' },
  { label: `floor: rpc client + 1 ListBackups (${values.small})`, argv: [floor, address, values.small], runs: 'runs' },
  ...roots.flatMap((root) => {
    const cli = join(root, 'packages/cli/dist/bin.js');
    return [
      { label: `pgfleet --help${label(root)}`, argv: [cli, '--help'], runs: 'runs' },
      { label: `pgfleet backups ${values.small}${label(root)}`, argv: [cli, 'backups', values.small], runs: 'runs' },
      { label: `pgfleet backups ${values.big}${label(root)}`, argv: [cli, 'backups', values.big], runs: 'runs' },
      {
        label: `pgfleet backups ${values.big} --output json${label(root)}`,
        argv: [cli, 'backups', values.big, '--output', 'json'],
        runs: 'runs',
      },
      { label: `pgfleet status${label(root)}`, argv: [cli, 'status'], runs: 'status-runs' },
      {
        label: `pgfleet status --output json${label(root)}`,
        argv: [cli, 'status', '--output', 'json'],
        runs: 'status-runs',
      },
    ];
  }),
].map((c) => ({ ...c, n: Number(values[c.runs]), cpu: [], wall: [] }));
const loads = [loadavg()[0]];
try {
  const most = Math.max(...cases.map((c) => c.n));
  for (let i = 0; i < most; i++) {
    for (const c of cases) {
      if (i >= c.n) continue;
      const r = run(c.argv);
      c.cpu.push(r.cpu);
      c.wall.push(r.wall);
    }
    loads.push(loadavg()[0]);
  }
} finally {
  controller.kill();
  await new Promise((r) => controller.once('exit', r));
  await rm(dir, { recursive: true, force: true });
}
const median = (xs) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];
const range = (xs) => `${Math.min(...xs).toFixed(0)}-${Math.max(...xs).toFixed(0)}`;
console.log(
  `load average (1 min) ${Math.min(...loads).toFixed(1)}-${Math.max(...loads).toFixed(1)}; CPU = the CLI process's user + system`,
);
console.log('| process | runs | CPU ms median (range) | wall ms median (range) |\n|---|---:|---:|---:|');
for (const c of cases)
  console.log(
    `| ${c.label} | ${c.n} | ${median(c.cpu).toFixed(0)} (${range(c.cpu)}) | ${median(c.wall).toFixed(0)} (${range(c.wall)}) |`,
  );
