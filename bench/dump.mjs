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
 *
 * --compare-agent BIN adds a second pgfleet dump per run by another build's agent (BIN: its
 * packages/agent/dist/bin.js, in a copy whose node_modules resolve, e.g. a symlink to this
 * checkout's), on the same fleet and database, the order rotating; each pgfleet dump then starts
 * its own fresh agent. Besides wall times it prints the CPU seconds of each dump: the agent's, its
 * children's (pg_dump and its workers) and the server's (the postmaster's exited children: the
 * backends of pg_dump and of the row counts), which load from other work on the machine does not
 * inflate the way it does wall time. --restore off skips the restore pairs. --timeline on prints,
 * for each pgfleet dump, the controller's and the agent's log lines between the CLI's start and its
 * exit, in ms from the start (dispatch, the job's steps, the result).
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
    'compare-agent': { type: 'string' },
    restore: { type: 'string', default: 'on' },
    timeline: { type: 'string', default: 'off' },
  },
});
const scale = Number(values.scale);
const jobs = values.jobs;
const runs = Number(values.runs);
const CLUSTER = 'dumpbench';
const DB = 'bench';
const s = (ms) => `${(ms / 1000).toFixed(1)} s`;
const median = (xs) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];

/** A process's CPU seconds so far (/proc/<pid>/stat): its own (user + system) and its exited, waited-for children's. */
async function cpuOf(pid) {
  const stat = await readFile(`/proc/${pid}/stat`, 'utf8');
  const f = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  return { own: (Number(f[11]) + Number(f[12])) / 100, children: (Number(f[13]) + Number(f[14])) / 100 };
}
/** The agent process's CPU seconds so far (its children such as pg_dump not included). */
async function agentCpuSeconds() {
  return (await cpuOf(fleet.agent.child.pid)).own;
}
const agentCpu = [];
const timelines = [];

/**
 * --timeline on: the controller's and the agent's log lines between a pgfleet dump's CLI start and
 * its exit, in ms from the start (where the CLI's wall time went, step by step).
 */
async function timeline(who, t0, t1) {
  const lines = [];
  for (const [name, text] of [
    ['controller', await fleet.controller.log()],
    ['agent', await fleet.agent.log()],
  ])
    for (const line of text.split('\n')) {
      let l;
      try {
        l = JSON.parse(line);
      } catch {
        continue;
      }
      const t = typeof l.time === 'number' ? l.time : Date.parse(l.time);
      if (!(t >= t0 && t <= t1)) continue;
      const { time: _t, level: _l, pid: _p, hostname: _h, msg, ...rest } = l;
      lines.push([t - t0, `${name}: ${msg} ${JSON.stringify(rest).slice(0, 300)}`]);
    }
  lines.sort((a, b) => a[0] - b[0]);
  return [
    `  timeline of a ${who} dump (ms from the CLI's start; exit at ${t1 - t0}):`,
    ...lines.map(([t, l]) => `    ${String(t).padStart(6)} ${l}`),
  ];
}

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
  const times = { pgDump: [], pgfleetDump: [], pgfleetDumpOther: [], pgRestore: [], pgfleetRestore: [] };
  const postmaster = Number((await readFile(join(pg.dataDir, 'postmaster.pid'), 'utf8')).split('\n')[0]);
  /** The server's CPU seconds so far: the postmaster and its exited backends (a dump's end when its connections are closed). */
  const serverCpu = async () => {
    // A closed connection's backend exits (and is reaped) a moment after the client saw its end.
    await new Promise((r) => setTimeout(r, 300));
    const c = await cpuOf(postmaster);
    return c.own + c.children;
  };
  const cpuLines = [];
  let label;
  const bareDump = async () => {
    await rm(local, { recursive: true, force: true });
    const s0 = await serverCpu();
    // pg_dump is this process's child: its CPU lands in our exited children's figure.
    const k0 = (await cpuOf(process.pid)).children;
    const wall = await timed(() =>
      run(join(pg.binDir, 'pg_dump'), ['-Fd', '-j', jobs, '-f', local], { ...env, PGDATABASE: DB }),
    );
    times.pgDump.push(wall);
    const children = (await cpuOf(process.pid)).children - k0;
    cpuLines.push({ who: 'bare', wall, children, server: (await serverCpu()) - s0 });
  };
  const fleetArgs = ['--dump-store-early', values['dump-store-early']];
  const ourDump = async (bin) => {
    let out;
    if (values['compare-agent']) {
      await fleet.agent.stop();
      await fleet.startAgent(fleetArgs, undefined, bin);
    }
    const cpu0 = await agentCpuSeconds();
    const kids0 = (await cpuOf(fleet.agent.child.pid)).children;
    const s0 = await serverCpu();
    const tStart = Date.now();
    const wall = await timed(async () => {
      out = await cli('dump', CLUSTER, '--database', DB, '--jobs', jobs, '--wait', '--output', 'json');
    });
    if (values.timeline === 'on') timelines.push(await timeline(bin ? 'other' : 'this', tStart, tStart + wall));
    (bin ? times.pgfleetDumpOther : times.pgfleetDump).push(wall);
    if (out.code !== 0) throw new Error(`pgfleet dump failed:\n${out.stderr}\n${await fleet.logs()}`);
    const dump = JSON.parse(out.stdout).dump;
    label = dump.label;
    const stored = dump.databases.reduce((n, d) => n + Number(d.storedSize ?? 0), 0);
    const cpu = (await agentCpuSeconds()) - cpu0;
    cpuLines.push({
      split: (await agentSplits())
        .filter((l) => l.startsWith('  agent dump'))
        .at(-1)
        ?.trim(),
      who: bin ? 'other' : 'this',
      wall,
      agent: cpu,
      children: (await cpuOf(fleet.agent.child.pid)).children - kids0,
      server: (await serverCpu()) - s0,
    });
    agentCpu.push(
      `  agent CPU during the dump: ${cpu.toFixed(2)} s for ${(stored / 1e6).toFixed(1)} MB stored (${((cpu * 1000) / (stored / 1e6)).toFixed(1)} ms per MB; pg_dump's own CPU not included)`,
    );
  };
  const steps = [bareDump, () => ourDump(undefined)];
  if (values['compare-agent']) steps.push(() => ourDump(values['compare-agent']));
  for (let i = 0; i < runs; i++) {
    // The order rotates: each step goes first, second (and third) in turn.
    for (let k = 0; k < steps.length; k++) await steps[(i + k) % steps.length]();
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
  for (let i = 0; i < runs && values.restore !== 'off'; i++) {
    for (const step of i % 2 === 0 ? [bareRestore, ourRestore] : [ourRestore, bareRestore]) await step(i);
  }
  const row = (name, bare, ours) =>
    `${name.padEnd(8)} ${s(median(bare)).padStart(9)}  ${s(median(ours)).padStart(9)}  ${(median(ours) / median(bare)).toFixed(2)}x`;
  console.log(
    [
      `         bare tool  pgfleet    ratio   (medians of ${runs})`,
      row('dump', times.pgDump, times.pgfleetDump),
      ...(values['compare-agent'] ? [row('dump (other agent)', times.pgDump, times.pgfleetDumpOther)] : []),
      ...(values.restore !== 'off' ? [row('restore', times.pgRestore, times.pgfleetRestore)] : []),
      ...(await agentSplits()),
      ...agentCpu,
      '  CPU seconds per dump, in run order (children: pg_dump and its workers; server: the backends):',
      ...cpuLines.map(
        (l) =>
          `    ${l.who.padEnd(5)} wall ${s(l.wall)}, ${l.agent !== undefined ? `agent ${l.agent.toFixed(2)} s, ` : ''}children ${l.children.toFixed(2)} s, server ${l.server.toFixed(2)} s${l.split ? `\n      ${l.split}` : ''}`,
      ),
      ...timelines.flat(),
      `load average ${loadavg()
        .map((l) => l.toFixed(1))
        .join(' ')} (other work on this machine slows every figure; ratios from one run stay comparable)`,
    ].join('\n'),
  );
} finally {
  await fleet.stop();
}
