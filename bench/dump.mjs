#!/usr/bin/env node
/**
 * Logical backups against the bare tools (issue 17's target: within 1.15x while also checksumming
 * and storing in the repository), side by side in one run on one fleet (the e2e harness:
 * controller, agent, PostgreSQL, posix repository in a temp dir) and one pgbench database:
 *
 *   dump     pg_dump -Fd -j J to a local directory   vs   pgfleet dump --jobs J --wait
 *   restore  pg_restore -j J into a new database       vs   pgfleet restore-dump --jobs J --wait
 *
 * Each pair runs --runs times, alternating which goes first; the medians are printed with the
 * ratio. pgfleet's figures are the CLI's wall time (job dispatch, progress and result included).
 *
 *   cd <checkout> && source scripts/node-env.sh && npx turbo run build
 *   node bench/dump.mjs [--scale 100] [--jobs 2] [--runs 1]      # --scale 5 for a quick run
 */
import { spawn } from 'node:child_process';
import { readFile, rm } from 'node:fs/promises';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { loadavg } from 'node:os';
import { CLI_BIN, INSECURE_ENV, runNode, startFleet } from '../test/dist/harness.js';

const { values } = parseArgs({
  options: {
    scale: { type: 'string', default: '100' },
    jobs: { type: 'string', default: '2' },
    runs: { type: 'string', default: '1' },
    'dump-store-early': { type: 'string', default: 'on' },
  },
});
const scale = Number(values.scale);
const jobs = values.jobs;
const runs = Number(values.runs);
const CLUSTER = 'dumpbench';
const DB = 'bench';
const s = (ms) => `${(ms / 1000).toFixed(1)} s`;
const median = (xs) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];

/** The agent process's CPU seconds so far (user + system, /proc/<pid>/stat; its children such as pg_dump not included). */
async function agentCpuSeconds() {
  const stat = await readFile(`/proc/${fleet.agent.child.pid}/stat`, 'utf8');
  const f = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  return (Number(f[11]) + Number(f[12])) / 100;
}
const agentCpu = [];

/** The agent's own account of each run: its 'database dumped' and 'dump restored' log lines. */
async function agentSplits() {
  const out = [];
  for (const line of (await fleet.agent.log()).split('\n')) {
    let l;
    try {
      l = JSON.parse(line);
    } catch {
      continue;
    }
    if (l.msg === 'database dumped' && l.database === DB)
      out.push(
        `  agent dump: before pg_dump ${l.startSeconds ?? '?'} s, pg_dump ${l.pgDumpSeconds} s, followers after it ${l.drainSeconds} s, stored after ${l.storeAfterSeconds} s; ${l.storedWhilePgDumpRan} of ${l.files} files stored while pg_dump ran`,
      );
    if (l.msg === 'dump restored')
      out.push(
        `  agent restore: fetch ${l.fetchSeconds} s, create ${l.createSeconds} s, pg_restore ${l.pgRestoreSeconds} s`,
      );
  }
  return out;
}

function run(cmd, args, env) {
  return new Promise((resolve, reject) => {
    const child = spawn(cmd, args, { env: { ...process.env, ...env }, stdio: ['ignore', 'ignore', 'pipe'] });
    let err = '';
    child.stderr.on('data', (d) => (err += d));
    child.on('error', reject);
    child.on('close', (code) =>
      code === 0 ? resolve() : reject(new Error(`${cmd} ${args.join(' ')}: exit ${code}\n${err}`)),
    );
  });
}

async function timed(fn) {
  const t0 = Date.now();
  await fn();
  return Date.now() - t0;
}

// The agent spools under its default --scratch-dir (beside the data directory), as in production.
const fleet = await startFleet({ cluster: CLUSTER, archive: false, startAgent: false });
await fleet.startAgent(['--dump-store-early', values['dump-store-early']]);
// fleet.cli kills a command after 3 minutes; a dump of scale 100 on a loaded machine takes longer.
const cli = (...args) =>
  runNode(CLI_BIN, args, {
    env: { PGFLEET_CONTROLLER: fleet.controllerAddress, ...INSECURE_ENV },
    timeoutMs: 3_600_000,
  });
try {
  const pg = fleet.pg;
  const env = { PGHOST: pg.host, PGPORT: String(pg.port), PGUSER: pg.user };
  await pg.query(`CREATE DATABASE ${DB}`);
  const ti = await timed(() => run(join(pg.binDir, 'pgbench'), ['-i', '-q', '-s', String(scale), DB], env));
  const [{ size }] = await pg.query(`SELECT pg_size_pretty(pg_database_size('${DB}')) AS size`);
  console.log(
    `pgbench -i -s ${scale}: database ${DB} ${size}, made in ${s(ti)}; --jobs ${jobs}, ${runs} run(s), --dump-store-early ${values['dump-store-early']}`,
  );

  const local = join(fleet.dir, 'local-dump');
  const times = { pgDump: [], pgfleetDump: [], pgRestore: [], pgfleetRestore: [] };
  let label;
  const bareDump = async () => {
    await rm(local, { recursive: true, force: true });
    times.pgDump.push(
      await timed(() => run(join(pg.binDir, 'pg_dump'), ['-Fd', '-j', jobs, '-f', local], { ...env, PGDATABASE: DB })),
    );
  };
  const ourDump = async () => {
    let out;
    const cpu0 = await agentCpuSeconds();
    times.pgfleetDump.push(
      await timed(async () => {
        out = await cli('dump', CLUSTER, '--database', DB, '--jobs', jobs, '--wait', '--output', 'json');
      }),
    );
    if (out.code !== 0) throw new Error(`pgfleet dump failed:\n${out.stderr}\n${await fleet.logs()}`);
    const dump = JSON.parse(out.stdout).dump;
    label = dump.label;
    const stored = dump.databases.reduce((n, d) => n + Number(d.storedSize ?? 0), 0);
    const cpu = (await agentCpuSeconds()) - cpu0;
    agentCpu.push(
      `  agent CPU during the dump: ${cpu.toFixed(2)} s for ${(stored / 1e6).toFixed(1)} MB stored (${((cpu * 1000) / (stored / 1e6)).toFixed(1)} ms per MB; pg_dump's own CPU not included)`,
    );
  };
  for (let i = 0; i < runs; i++) {
    for (const step of i % 2 === 0 ? [bareDump, ourDump] : [ourDump, bareDump]) await step();
  }
  const bareRestore = async (i) => {
    const into = `bare_${i}`;
    await pg.query(`CREATE DATABASE ${into}`);
    times.pgRestore.push(await timed(() => run(join(pg.binDir, 'pg_restore'), ['-j', jobs, '-d', into, local], env)));
    await pg.query(`DROP DATABASE ${into}`);
  };
  const ourRestore = async (i) => {
    const into = `ours_${i}`;
    let out;
    times.pgfleetRestore.push(
      await timed(async () => {
        out = await cli(
          'restore-dump',
          CLUSTER,
          '--dump',
          label,
          '--database',
          DB,
          '--to-database',
          into,
          '--jobs',
          jobs,
          '--wait',
        );
      }),
    );
    if (out.code !== 0) throw new Error(`pgfleet restore-dump failed:\n${out.stderr}\n${await fleet.logs()}`);
    await pg.query(`DROP DATABASE ${into}`);
  };
  for (let i = 0; i < runs; i++) {
    for (const step of i % 2 === 0 ? [bareRestore, ourRestore] : [ourRestore, bareRestore]) await step(i);
  }
  const row = (name, bare, ours) =>
    `${name.padEnd(8)} ${s(median(bare)).padStart(9)}  ${s(median(ours)).padStart(9)}  ${(median(ours) / median(bare)).toFixed(2)}x`;
  console.log(
    [
      `         bare tool  pgfleet    ratio   (medians of ${runs})`,
      row('dump', times.pgDump, times.pgfleetDump),
      row('restore', times.pgRestore, times.pgfleetRestore),
      ...(await agentSplits()),
      ...agentCpu,
      `load average ${loadavg()
        .map((l) => l.toFixed(1))
        .join(' ')} (other work on this machine slows every figure; ratios from one run stay comparable)`,
    ].join('\n'),
  );
} finally {
  await fleet.stop();
}
