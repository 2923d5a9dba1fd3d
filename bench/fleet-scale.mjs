#!/usr/bin/env node
/**
 * One controller at fleet size (issue 16): a load generator in a few child processes, each
 * holding many simulated agents that speak the real agent protocol (AgentService.Connect through
 * packages/rpc's client, the agent's own Hello/Welcome/heartbeat/result messages and its
 * heartbeatRole()), against one real controller process on a SQLite catalog and on a PostgreSQL
 * catalog (a PostgreSQL 15+ started here through testkit). Every simulated agent is the one agent
 * of a cluster of its own, so N agents are N clusters, each with a schedule policy.
 *
 * For each catalog and each size it prints:
 *   connect storm   every agent started at once: time until the last one is welcomed
 *   steady state    controller CPU (share of one core) and RSS over --steady seconds of 5 s
 *                   heartbeats, and the share of agents whose last heartbeat the catalog holds
 *   dispatch        p50/p99 of admin StartInfo call -> the simulated agent holds the job
 *   scheduler       round time (the controller's 'scheduler round' log) with N clusters' policies
 *   status          `pgfleet status` (whole CLI process) with --backups backups in the catalog
 *   backups         `pgfleet backups <cluster>` of a cluster with --big-cluster-backups backups
 *
 *   node bench/fleet-scale.mjs [--agents 1000,5000,10000] [--catalogs sqlite,postgres] [--procs 4]
 *        [--steady 30] [--dispatches 200] [--backups 100000] [--big-cluster-backups 1000]
 *
 * A quick run: --agents 1000 --steady 15 --dispatches 100 --backups 20000 (a minute or two per
 * catalog). The catalog is seeded directly through the catalog store before the controller starts.
 *
 * The controller runs as deployed: with the NODE_OPTIONS of deploy/systemd/pgfleet-controller.service
 * (printed at the start of each run; FLEET_CONTROLLER_NODE_OPTIONS='' runs it with node's
 * defaults). FLEET_CONTROLLER_NODE_ARGS='--cpu-prof --cpu-prof-dir=/tmp/x' adds node flags (a
 * profile). ListClusters and ListBackups are timed over every page, as the CLI fetches them.
 */
import { fork, spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { cpus, loadavg, tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { cluster, seed, SYSID } from './fleet-seed.mjs';

const ROOT = fileURLToPath(new URL('..', import.meta.url));
const HEARTBEAT_SECONDS = 5;
const log = (msg) => console.error(`[${new Date().toISOString().slice(11, 19)}] ${msg}`);
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

// ---------------------------------------------------------------------------------------------
// Worker: the simulated agents of one process.

async function worker() {
  const { createClient } = await import('../packages/rpc/dist/client-index.js');
  const { AgentService, JobState } = await import('../packages/proto/dist/index.js');
  const { heartbeatRole } = await import('../packages/agent/dist/daemon.js');
  const { reconnectDelayMs } = await import('../packages/agent/dist/controllers.js');
  const { timestampFromDate } = await import('@bufbuild/protobuf/wkt');
  const { address, first, count } = JSON.parse(process.env.FLEET_WORKER);
  const stats = { welcomed: 0, beats: 0, ended: 0, jobs: 0, reconnects: 0, errors: {} };
  let stopping = false;
  /** Agents welcomed at least once, and those whose stream is up now. */
  const everWelcomed = new Set();
  const up = new Set();
  let lastWelcome = 0;
  const agents = [];

  function connect(i, failures = 0) {
    // One HTTP/2 connection per agent, as real agents on their own hosts have: without a local
    // subchannel pool grpc-js would share one connection between every client of this process.
    const client = createClient(AgentService, address, { channelOptions: { 'grpc.use_local_subchannel_pool': 1 } });
    const stream = client.connect();
    const name = cluster(i);
    let lsn = 0x3000000 + i;
    let timer;
    stream.send({
      msg: {
        case: 'hello',
        value: {
          agentId: `${name}-db1`,
          cluster: name,
          hostname: `${name}-db1.example`,
          agentVersion: 'fleet-scale',
          pgVersion: 150000,
          systemIdentifier: SYSID,
          pgdata: '/var/lib/postgresql/15/main',
          runningJobIds: [],
          repositories: [{ kind: { case: 'posix', value: { path: '/srv/repo' } } }],
        },
      },
    });
    const beat = () => {
      lsn += 4096;
      const at = `0/${lsn.toString(16).toUpperCase()}`;
      stream.send({
        msg: {
          case: 'heartbeat',
          value: {
            time: timestampFromDate(new Date()),
            pgUp: true,
            currentLsn: at,
            streamedLsn: '',
            archiver: { archivedCount: 10n, lastArchivedWal: '000000010000000000000003', failedCount: 0n },
            ...heartbeatRole({ inRecovery: false, timeline: 1, lsn: at }),
          },
        },
      });
      stats.beats++;
    };
    void (async () => {
      try {
        for await (const msg of stream) {
          if (msg.msg.case === 'welcome') {
            if (!everWelcomed.has(i)) stats.welcomed++;
            everWelcomed.add(i);
            up.add(i);
            failures = 0;
            lastWelcome = Date.now();
            const every = (msg.msg.value.heartbeatIntervalSeconds || HEARTBEAT_SECONDS) * 1000;
            // Real agents beat right after Welcome, then every interval; spread so the steady state
            // is not one synchronised burst per interval.
            timer = setTimeout(() => {
              beat();
              timer = setInterval(beat, every);
            }, Math.random() * every);
          } else if (msg.msg.case === 'job') {
            stats.jobs++;
            const job = msg.msg.value;
            process.send({ type: 'job', jobId: job.jobId, at: Date.now() });
            stream.send({
              msg: {
                case: 'result',
                value: { jobId: job.jobId, state: JobState.SUCCEEDED, result: { case: 'info', value: {} } },
              },
            });
          }
        }
      } catch (err) {
        const key = String(err.message).slice(0, 120);
        stats.errors[key] = (stats.errors[key] ?? 0) + 1;
      }
      clearTimeout(timer);
      clearInterval(timer);
      client.close();
      up.delete(i);
      if (stopping) return;
      stats.ended++;
      // As the real agent does (daemon.ts): back after a jittered pause, the same one it computes.
      setTimeout(
        () => {
          stats.reconnects++;
          connect(i, failures + 1);
        },
        reconnectDelayMs(failures, 1),
      );
    })();
    agents.push({ stream, client });
  }

  process.on('message', (m) => {
    if (m.type === 'go') {
      // Everything at once, a few hundred per tick so the process stays responsive.
      let i = 0;
      const batch = () => {
        for (let n = 0; n < 250 && i < count; n++, i++) connect(first + i);
        if (i < count) setImmediate(batch);
      };
      batch();
    } else if (m.type === 'stats') {
      process.send({ type: 'stats', ...stats, held: up.size, lastWelcome, rss: process.memoryUsage().rss });
    } else if (m.type === 'stop') {
      stopping = true;
      for (const a of agents) {
        a.stream.cancel();
        a.client.close();
      }
      setTimeout(() => process.exit(0), 200);
    }
  });
  process.send({ type: 'ready' });
}

// ---------------------------------------------------------------------------------------------
// Main: seed, controller, workers, measurements.

async function main() {
  const { values } = parseArgs({
    options: {
      agents: { type: 'string', default: '1000,5000,10000' },
      catalogs: { type: 'string', default: 'sqlite,postgres' },
      procs: { type: 'string', default: '4' },
      steady: { type: 'string', default: '30' },
      dispatches: { type: 'string', default: '200' },
      backups: { type: 'string', default: '100000' },
      'big-cluster-backups': { type: 'string', default: '1000' },
      'status-runs': { type: 'string', default: '3' },
      // A catalog of more clusters than agents: status at fleet size without holding every agent.
      clusters: { type: 'string' },
      'keep-logs': { type: 'boolean', default: false },
    },
  });
  const sizes = values.agents.split(',').map(Number);
  const catalogs = values.catalogs.split(',');
  const load = loadavg()[0];
  log(
    `machine: ${cpus().length} cores, load average ${load.toFixed(1)}${load > 1 ? ' (loaded by other work: absolute figures are pessimistic)' : ''}`,
  );
  const { startPostgres, freePort } = await import('../packages/testkit/dist/index.js');
  const pg = catalogs.includes('postgres')
    ? await startPostgres({ settings: { max_connections: '200', shared_buffers: '256MB', fsync: 'on' } })
    : undefined;
  const results = [];
  try {
    for (const catalog of catalogs)
      for (const n of sizes) {
        const r = await runOne({ catalog, n, pg, freePort, opts: values });
        results.push(r);
        printTable(results);
      }
  } finally {
    await pg?.stop();
  }
  console.log(
    `\nload average at the end: ${loadavg()
      .map((l) => l.toFixed(1))
      .join(' ')} on ${cpus().length} cores`,
  );
  printTable(results);
}

function printTable(results) {
  const rows = [
    [
      'catalog',
      'agents',
      'held',
      'storm s',
      'cpu %',
      'cpu wait %',
      'rss MB',
      'idle MB',
      'KB/agent',
      'beats ok',
      'disp p50',
      'disp p99',
      'sched s',
      'status s',
      'backups s',
      'ListClusters ms',
      'ListClusters cpu s',
      'ListBackups ms',
    ],
    ...results.map((r) => [
      r.catalog,
      r.n,
      r.held,
      r.storm.toFixed(1),
      (r.cpu * 100).toFixed(0),
      (r.starved * 100).toFixed(0),
      r.rss.toFixed(0),
      r.rssIdle.toFixed(0),
      r.perAgentKb.toFixed(0),
      `${(r.beatsOk * 100).toFixed(0)}%`,
      `${r.p50} ms`,
      `${r.p99} ms`,
      r.sched,
      r.status.toFixed(2),
      r.backupsCli.toFixed(2),
      r.statusCall.toFixed(0),
      r.statusCpu.toFixed(2),
      r.backupsCall.toFixed(0),
    ]),
  ];
  const w = rows[0].map((_, i) => Math.max(...rows.map((r) => String(r[i]).length)));
  console.log(`\n${rows.map((r) => r.map((c, i) => String(c).padEnd(w[i])).join('  ')).join('\n')}`);
}

const pct = (sorted, p) => sorted[Math.min(sorted.length - 1, Math.floor((sorted.length * p) / 100))];

async function runOne({ catalog, n, pg, freePort, opts }) {
  const dir = await mkdtemp(join(tmpdir(), 'pgfleet-fleet-scale-'));
  let url;
  if (catalog === 'postgres') {
    const db = `fleet_${n}_${Date.now()}`;
    await pg.query(`CREATE DATABASE ${db}`);
    url = `${pg.connectionString.replace(/\/postgres$/, '')}/${db}`;
  } else url = join(dir, 'catalog.db');
  const clusters = Math.max(n, Number(opts.clusters ?? n));
  log(`${catalog} ${n} agents: seeding the catalog (${clusters} clusters)`);
  const seeded = await seed(url, clusters, Number(opts.backups), Number(opts['big-cluster-backups']));
  log(`${catalog} ${n}: seeded in ${seeded.toFixed(1)} s`);

  const secret = join(dir, 'manifest.secret');
  await writeFile(secret, `${randomBytes(32).toString('hex')}\n`, { mode: 0o600 });
  const address = `127.0.0.1:${await freePort()}`;
  const logFile = join(dir, 'controller.log');
  const nodeOptions = productionNodeOptions();
  log(`${catalog} ${n}: controller NODE_OPTIONS='${nodeOptions}' (deploy/systemd/pgfleet-controller.service)`);
  const { openSync } = await import('node:fs');
  const out = openSync(logFile, 'a');
  const controller = spawn(
    process.execPath,
    [
      // FLEET_CONTROLLER_NODE_ARGS='--cpu-prof --cpu-prof-dir=/tmp/x' (say) profiles the controller.
      ...(process.env.FLEET_CONTROLLER_NODE_ARGS?.split(' ').filter(Boolean) ?? []),
      join(ROOT, 'packages/controller/dist/bin.js'),
      'run',
      '--listen',
      address,
      '--catalog',
      url,
      '--repo-path',
      join(dir, 'repo'),
      '--manifest-secret',
      secret,
      '--insecure',
      '--heartbeat-interval',
      String(HEARTBEAT_SECONDS),
      '--schedule-interval',
      '10',
      '--log-level',
      'debug',
      '--metrics-listen',
      'off',
    ],
    {
      stdio: ['ignore', out, out],
      // FLEET_GRPC_TRACE=keepalive (say) traces grpc-js inside the controller, into its log.
      // Run as deployed: the unit's NODE_OPTIONS (the young generation's cap matters to RSS).
      env: {
        ...process.env,
        NODE_OPTIONS: [process.env.NODE_OPTIONS, nodeOptions].filter(Boolean).join(' '),
        ...(process.env.FLEET_GRPC_TRACE ? { GRPC_TRACE: process.env.FLEET_GRPC_TRACE, GRPC_VERBOSITY: 'DEBUG' } : {}),
      },
    },
  );
  const env = { PGFLEET_CONTROLLER: address, PGFLEET_INSECURE: 'true' };
  const cli = (...args) =>
    new Promise((resolve) => {
      const t0 = performance.now();
      const p = spawn(process.execPath, [join(ROOT, 'packages/cli/dist/bin.js'), ...args], {
        env: { ...process.env, ...env },
        stdio: ['ignore', 'pipe', 'pipe'],
      });
      let stdout = '';
      let stderr = '';
      p.stdout.on('data', (d) => (stdout += d));
      p.stderr.on('data', (d) => (stderr += d));
      p.on('exit', (code) => resolve({ code, stdout, stderr, seconds: (performance.now() - t0) / 1000 }));
    });
  const workers = [];
  try {
    for (let t = Date.now(); ;) {
      const r = await cli('clusters', '--output', 'json');
      if (r.code === 0) break;
      if (Date.now() - t > 120_000) throw new Error(`controller did not answer: ${r.stderr}`);
      await sleep(250);
    }
    // The controller's RSS with the catalog open and no agent: what each agent adds is above it.
    const rssIdle = rssMb(controller.pid);
    // Workers
    const procs = Math.min(Number(opts.procs), n);
    const per = Math.ceil(n / procs);
    const jobs = new Map();
    const waiters = new Map();
    for (let p = 0; p < procs; p++) {
      const first = p * per;
      const count = Math.min(per, n - first);
      const w = fork(fileURLToPath(import.meta.url), ['--worker'], {
        env: { ...process.env, FLEET_WORKER: JSON.stringify({ address, first, count }) },
        execArgv: ['--max-old-space-size=4096'],
      });
      const ready = new Promise((r) => w.once('message', r));
      w.on('message', (m) => {
        if (m.type === 'job') {
          jobs.set(m.jobId, m.at);
          waiters.get(m.jobId)?.(m.at);
        }
      });
      workers.push({ w, ready });
    }
    await Promise.all(workers.map((w) => w.ready));
    const stats = async () => {
      const all = await Promise.all(
        workers.map(
          ({ w }) =>
            new Promise((r) => {
              const on = (m) => {
                if (m.type !== 'stats') return;
                w.off('message', on);
                r(m);
              };
              w.on('message', on);
              w.send({ type: 'stats' });
            }),
        ),
      );
      return {
        welcomed: all.reduce((s, x) => s + x.welcomed, 0),
        ended: all.reduce((s, x) => s + x.ended, 0),
        held: all.reduce((s, x) => s + x.held, 0),
        reconnects: all.reduce((s, x) => s + x.reconnects, 0),
        errors: Object.entries(Object.assign({}, ...all.map((x) => x.errors))).slice(0, 5),
        lastWelcome: Math.max(...all.map((x) => x.lastWelcome)),
        workerRss: all.reduce((s, x) => s + x.rss, 0),
      };
    };

    // Connect storm.
    log(`${catalog} ${n}: connect storm`);
    const go = Date.now();
    for (const { w } of workers) w.send({ type: 'go' });
    let s;
    for (;;) {
      await sleep(250);
      s = await stats();
      if (s.welcomed >= n || Date.now() - go > 300_000) break;
    }
    const storm = (s.lastWelcome - go) / 1000;
    log(
      `${catalog} ${n}: ${s.welcomed}/${n} welcomed in ${storm.toFixed(1)} s (${s.ended} streams lost and retried${s.errors.length ? `: ${JSON.stringify(s.errors)}` : ''})`,
    );

    // Steady state: one interval to settle, then CPU and RSS over the window.
    await sleep(HEARTBEAT_SECONDS * 1000 + 2000);
    const steady = Number(opts.steady);
    const seen0 = await lastSeen(url);
    const cpu0 = cpuSeconds(controller.pid);
    const wait0 = runDelaySeconds(controller.pid);
    const t0 = performance.now();
    let rssMax = 0;
    while (performance.now() - t0 < steady * 1000) {
      await sleep(1000);
      rssMax = Math.max(rssMax, rssMb(controller.pid));
    }
    const window = (performance.now() - t0) / 1000;
    const perAgentKb = ((rssMax - rssIdle) * 1024) / n;
    log(
      `${catalog} ${n}: rss ${rssIdle.toFixed(0)} MB before the agents, ${perAgentKb.toFixed(0)} KB more per agent held`,
    );
    const cpu = (cpuSeconds(controller.pid) - cpu0) / window;
    // Time the controller's main thread was runnable but waited for a CPU: on a loaded machine the
    // CPU share above is what it got, not what it needed.
    const starved = (runDelaySeconds(controller.pid) - wait0) / window;
    // The agents whose heartbeat the catalog recorded during the window (it lasts several intervals).
    const seen1 = await lastSeen(url);
    const beatsOk = [...seen1].filter(([c, t]) => t > (seen0.get(c) ?? 0)).length / n;
    log(
      `${catalog} ${n}: steady cpu ${(cpu * 100).toFixed(0)}% of a core (runnable but waiting for a CPU ${(starved * 100).toFixed(0)}% of the time), rss ${rssMax.toFixed(0)} MB, heartbeats of ${(beatsOk * 100).toFixed(0)}% of the agents recorded during the ${steady} s`,
    );

    // Dispatch: admin call -> job on the simulated agent.
    const { createClient } = await import('../packages/rpc/dist/client-index.js');
    const { AdminService } = await import('../packages/proto/dist/index.js');
    const admin = createClient(AdminService, address, { defaultDeadlineMs: 60_000 });
    const lat = [];
    const dispatchErrors = [];
    for (let i = 0; i < Number(opts.dispatches); i++) {
      const name = cluster(Math.floor(Math.random() * n));
      const t = Date.now();
      let job;
      try {
        ({ job } = await admin.startInfo({ cluster: name }));
      } catch (err) {
        dispatchErrors.push(err.code ?? err.message);
        continue;
      }
      // A stream lost between the call and the job's arrival: counted as lost, not waited for.
      const at =
        jobs.get(job.id) ??
        (await Promise.race([new Promise((r) => waiters.set(job.id, r)), sleep(30_000).then(() => undefined)]));
      waiters.delete(job.id);
      if (at === undefined) dispatchErrors.push('job not received within 30 s');
      else lat.push(at - t);
      await sleep(20);
    }
    // The same calls as `pgfleet status` and `pgfleet backups <cluster>`, timed from an already
    // connected client: the call itself (server work + transfer), without a CLI process's Node
    // start-up, which the whole-process figures below include.
    // The controller's CPU seconds per call, beside its wall time: on a shared machine the wall time
    // is the machine's, the CPU the call's (plus the heartbeats handled meanwhile: `cpu` above).
    const cpuPerCall = new Map();
    const timeCall = async (call, name) => {
      const t = [];
      const c0 = cpuSeconds(controller.pid);
      for (let i = 0; i < Math.max(3, Number(opts['status-runs'])); i++) {
        const t0 = performance.now();
        try {
          await call();
          t.push(performance.now() - t0);
        } catch (err) {
          log(`call failed after ${(performance.now() - t0).toFixed(0)} ms: ${err.message}`);
          t.push(Infinity);
        }
      }
      cpuPerCall.set(name, (cpuSeconds(controller.pid) - c0) / t.length);
      return t.sort((a, b) => a - b)[Math.floor(t.length / 2)];
    };
    // Every page, as the CLI fetches them (ListClusters and ListBackups are paged).
    const allPages = async (call) => {
      let pageToken = '';
      do pageToken = (await call({ pageSize: 5000, pageToken })).nextPageToken;
      while (pageToken);
    };
    const statusCall = await timeCall(() => allPages((p) => admin.listClusters(p)), 'ListClusters');
    const backupsCall = await timeCall(
      () => allPages((p) => admin.listBackups({ cluster: cluster(0), ...p })),
      'ListBackups',
    );
    const statusCpu = cpuPerCall.get('ListClusters');
    log(
      `${catalog} ${n}: calls from a connected client (median): ListClusters of ${clusters} clusters ${statusCall.toFixed(0)} ms (controller cpu ${statusCpu.toFixed(2)} s per listing, ${((cpu * statusCall) / 1000).toFixed(2)} s of it the steady heartbeat load's), ListBackups ${cluster(0)} ${backupsCall.toFixed(0)} ms (cpu ${cpuPerCall.get('ListBackups').toFixed(3)} s)`,
    );
    admin.close();
    lat.sort((a, b) => a - b);
    const p50 = pct(lat, 50);
    const p99 = pct(lat, 99);
    log(
      `${catalog} ${n}: dispatch p50 ${p50} ms, p99 ${p99} ms, max ${lat.at(-1)} ms (${lat.length} jobs${dispatchErrors.length ? `, ${dispatchErrors.length} refused: ${[...new Set(dispatchErrors)].join(', ')}` : ''})`,
    );

    // Scheduler rounds seen while the agents were connected.
    await sleep(11_000);
    const rounds = (await readFile(logFile, 'utf8'))
      .split('\n')
      .filter((l) => l.includes('"scheduler round"'))
      .map((l) => JSON.parse(l))
      .filter((r) => r.clusters >= clusters * 0.99);
    const sched = rounds.length ? `${(Math.max(...rounds.map((r) => r.durationMs)) / 1000).toFixed(2)}` : 'none';
    log(
      `${catalog} ${n}: scheduler rounds over ${clusters} clusters: ${rounds.map((r) => r.durationMs).join(', ')} ms`,
    );

    // status and backups <cluster>, whole CLI processes.
    const runs = Number(opts['status-runs']);
    const timeCli = async (...args) => {
      const t = [];
      for (let i = 0; i < runs; i++) {
        const r = await cli(...args);
        // A starved controller may miss the CLI's deadline: reported, not fatal to the run.
        if (r.code !== 0)
          log(`pgfleet ${args.join(' ')} failed after ${r.seconds.toFixed(1)} s: ${r.stderr.split('\n')[0]}`);
        t.push(r.code === 0 ? r.seconds : Infinity);
      }
      return t.sort((a, b) => a - b)[Math.floor(t.length / 2)];
    };
    const status = await timeCli('status', '--output', 'json');
    const backupsCli = await timeCli('backups', cluster(0), '--output', 'json');
    const version = await timeCli('--help');
    log(
      `${catalog} ${n}: status ${status.toFixed(2)} s, backups ${cluster(0)} ${backupsCli.toFixed(2)} s (a bare \`pgfleet --version\` takes ${version.toFixed(2)} s)`,
    );
    const end = await stats();
    log(
      `${catalog} ${n}: at the end ${end.held}/${n} agents held, ${end.reconnects} reconnects in all${end.errors.length ? `: ${JSON.stringify(end.errors)}` : ''}`,
    );
    return {
      catalog,
      n,
      held: end.held,
      storm,
      cpu,
      starved,
      rss: rssMax,
      rssIdle,
      perAgentKb,
      beatsOk,
      p50,
      p99,
      sched,
      status,
      backupsCli,
      statusCall,
      statusCpu,
      backupsCall,
    };
  } finally {
    for (const { w } of workers) w.send({ type: 'stop' });
    await sleep(500);
    controller.kill('SIGTERM');
    await new Promise((r) => (controller.exitCode !== null ? r() : controller.once('exit', r)));
    if (!opts['keep-logs']) await rm(dir, { recursive: true, force: true });
    else log(`logs kept in ${dir}`);
  }
}

/**
 * The NODE_OPTIONS the controller runs with in production, read from the systemd unit (the compose
 * file sets the same) so the bench measures what is deployed; FLEET_CONTROLLER_NODE_OPTIONS
 * overrides it ('' for node's defaults).
 */
function productionNodeOptions() {
  if (process.env.FLEET_CONTROLLER_NODE_OPTIONS !== undefined) return process.env.FLEET_CONTROLLER_NODE_OPTIONS;
  const unit = readFileSync(join(ROOT, 'deploy/systemd/pgfleet-controller.service'), 'utf8');
  const m = /^Environment=NODE_OPTIONS=(.*)$/m.exec(unit);
  return m ? m[1].replace(/^"|"$/g, '').trim() : '';
}

/** The controller process's user+system CPU seconds. */
function cpuSeconds(pid) {
  const f = readFileSync(`/proc/${pid}/stat`, 'utf8');
  const fields = f.slice(f.lastIndexOf(')') + 2).split(' ');
  return (Number(fields[11]) + Number(fields[12])) / 100;
}

/** Seconds the process's main thread spent runnable, waiting for a CPU (/proc/PID/schedstat run_delay). */
function runDelaySeconds(pid) {
  return Number(readFileSync(`/proc/${pid}/schedstat`, 'utf8').split(' ')[1]) / 1e9;
}

function rssMb(pid) {
  const m = /VmRSS:\s+(\d+) kB/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'));
  return m ? Number(m[1]) / 1024 : 0;
}

/** Each agent's last heartbeat as the catalog holds it (cluster -> ms). */
async function lastSeen(url) {
  const { openCatalog } = await import('../packages/catalog/dist/index.js');
  const store = await openCatalog(url);
  try {
    return new Map((await store.listAgents()).map((a) => [a.cluster, a.lastSeen ?? 0]));
  } finally {
    await store.close();
  }
}

if (process.argv.includes('--worker')) await worker();
else await main();
