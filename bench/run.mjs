#!/usr/bin/env node
/**
 * pgfleet benchmark: pgfleet vs pgBackRest vs pg_basebackup on the same PostgreSQL cluster, in
 * one run. Plain Node ESM, no build step (it runs the built binaries of packages/*).
 *
 *   cd /work/main && source scripts/node-env.sh && npx turbo run build
 *   node bench/run.mjs [--scale 100] [--noisy-gb 1.5] [--pgbench-seconds 30] [--wal-segments 20]
 *                      [--encrypted-runs 2]
 *                      [--skip pgfleet,pgbackrest,pg_basebackup,restore,incr,wal-push,wal-archive,verify,encrypted]
 *
 * See bench/README.md for what each phase measures. Everything it starts (PostgreSQL, the
 * controller and agent, pgbackrest/pg_basebackup/pgbench children) is torn down at the end,
 * on errors and on Ctrl-C, and its temp dir is removed (PGFLEET_KEEP_TMP=1 keeps it).
 */
import { spawn, spawnSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import {
  accessSync,
  closeSync,
  constants as fsc,
  createWriteStream,
  existsSync,
  fstatSync,
  openSync,
  readdirSync,
  readFileSync,
  readSync,
  realpathSync,
  rmSync,
} from 'node:fs';
import { chmod, chown, copyFile, lstat, mkdir, readdir, readFile, rm, writeFile } from 'node:fs/promises';
import os from 'node:os';
import { basename, delimiter, dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';

const REPO_ROOT = resolve(dirname(fileURLToPath(import.meta.url)), '..');
/** The codecs of pgfleet's measured full backups and restores (each on a fresh agent); --codecs narrows them. */
const ALL_PGF_CODECS = ['zstd', 'lz4', 'none'];
const AGENT_BIN = join(REPO_ROOT, 'packages/agent/dist/bin.js');
// wal-push run by hand here runs what the installed launcher (scripts/install.sh) execs for
// `pgfleet-agent wal-push`: the build's one-file bundle, without bin.js's ES module start in front
// of it. archive_command runs the launcher itself (scripts/agent-launcher.mjs), as installed.
const WAL_PUSH_BIN = join(REPO_ROOT, 'packages/agent/dist/wal/push-main.cjs');
const CONTROLLER_BIN = join(REPO_ROOT, 'packages/controller/dist/bin.js');
const CLI_BIN = join(REPO_ROOT, 'packages/cli/dist/bin.js');
const CLUSTER = 'main';
const STANZA = 'bench';
const HOUR = 3_600_000;
/** pgBackRest spells zstd 'zst' */
const BR_CODEC = { zstd: 'zst', lz4: 'lz4' };

// ---------------------------------------------------------------------------------------------
// options
// ---------------------------------------------------------------------------------------------
const SKIPPABLE = [
  'pgfleet',
  'pgbackrest',
  'pg_basebackup',
  'restore',
  'incr',
  'block-incr',
  'wal-push',
  'wal-archive',
  'verify',
  'encrypted',
];
/** --update-locality: the changed pages of each update come in this many contiguous ranges. */
const LOCAL_RANGES = 10;
const USAGE = `Usage: node bench/run.mjs [options]

  --scale N            pgbench scale factor (default 100, ~1.5 GB)
  --noisy-gb G         add ~G GB of realistic, ~3-4x compressible rows (default 1.5; 0 = none)
  --pgbench-seconds S  pgbench -T before the incremental backups, and per tool in the
                       sustained-archiving phase (default 30)
  --pgbench-clients C  pgbench -c/-j (default: number of CPUs)
  --wal-segments N     real 16 MiB WAL segments pushed one by one per tool (default 20)
  --encrypted-runs N   pairs of pgfleet zstd full backup + restore, plaintext then encrypted
                       repository, for the cost of encryption at rest (default 2; needs pgfleet)
  --update-pct P       block-incr phase: % of the rows of the big tables updated at random
                       before each incremental (default 1)
  --update-locality    block-incr phase: update the rows of ${LOCAL_RANGES} random contiguous page ranges
                       (--update-pct of each table's pages in all) instead of rows at random
  --block-incr-links N block-incr phase: incrementals in the chain whose restore is compared
                       with the full's (default 7)
  --whole-blocks       block-incr phase: the chain's incrementals store changed blocks whole
                       (agent --whole-blocks), to compare with the default XOR deltas
  --codecs LIST        pgfleet codecs of the per-codec full backups and restores (default
                       zstd,lz4,none; e.g. zstd alone to measure only the encryption pairs sooner)
  --skip LIST          comma list of: ${SKIPPABLE.join(', ')}
  --out DIR            where results/<timestamp>.json|.md go (default bench/results)
  --agent-cpu-prof DIR run the agent daemon under node --cpu-prof, profiles (one per thread,
                       written when the agent stops) into DIR (docs/performance.md)
  -h, --help`;

let opts;
try {
  opts = parseArgs({
    options: {
      scale: { type: 'string', default: '100' },
      'noisy-gb': { type: 'string', default: '1.5' },
      'pgbench-seconds': { type: 'string', default: '30' },
      'pgbench-clients': { type: 'string', default: String(Math.max(1, os.availableParallelism())) },
      'wal-segments': { type: 'string', default: '20' },
      'encrypted-runs': { type: 'string', default: '2' },
      'update-pct': { type: 'string', default: '1' },
      'block-incr-links': { type: 'string', default: '7' },
      'update-locality': { type: 'boolean', default: false },
      'whole-blocks': { type: 'boolean', default: false },
      skip: { type: 'string', default: '' },
      codecs: { type: 'string', default: ALL_PGF_CODECS.join(',') },
      out: { type: 'string', default: join(REPO_ROOT, 'bench/results') },
      'agent-cpu-prof': { type: 'string' },
      help: { type: 'boolean', short: 'h', default: false },
    },
    strict: true,
  }).values;
} catch (err) {
  console.error(`${err.message}\n\n${USAGE}`);
  process.exit(2);
}
if (opts.help) {
  console.log(USAGE);
  process.exit(0);
}
const num = (name, min) => {
  const v = Number(opts[name]);
  if (!Number.isFinite(v) || v < min) {
    console.error(`--${name} must be a number >= ${min} (got '${opts[name]}')`);
    process.exit(2);
  }
  return v;
};
const P = {
  scale: Math.round(num('scale', 1)),
  noisyGb: num('noisy-gb', 0),
  pgbenchSeconds: Math.round(num('pgbench-seconds', 1)),
  pgbenchClients: Math.round(num('pgbench-clients', 1)),
  walSegments: Math.round(num('wal-segments', 1)),
  encryptedRuns: Math.round(num('encrypted-runs', 1)),
  updatePct: num('update-pct', 0.001),
  blockIncrLinks: Math.round(num('block-incr-links', 1)),
  updateLocality: opts['update-locality'],
  wholeBlocks: opts['whole-blocks'],
  skip: new Set(
    opts.skip
      .split(',')
      .map((s) => s.trim().toLowerCase())
      .filter(Boolean)
      .map(
        (s) =>
          ({ basebackup: 'pg_basebackup', 'pg-basebackup': 'pg_basebackup', walpush: 'wal-push', pgbr: 'pgbackrest' })[
            s
          ] ?? s,
      ),
  ),
};
for (const s of P.skip) {
  if (!SKIPPABLE.includes(s)) {
    console.error(`--skip: unknown phase '${s}' (known: ${SKIPPABLE.join(', ')})`);
    process.exit(2);
  }
}
const run = (what) => !P.skip.has(what);
const PGF_CODECS = opts.codecs
  .split(',')
  .map((s) => s.trim())
  .filter(Boolean);
for (const c of PGF_CODECS) {
  if (!ALL_PGF_CODECS.includes(c)) {
    console.error(`--codecs: unknown codec '${c}' (known: ${ALL_PGF_CODECS.join(', ')})`);
    process.exit(2);
  }
}
/** --agent-cpu-prof: V8 CPU profiles of the agent daemon, every thread (copy workers too). */
const agentProfDir = opts['agent-cpu-prof'] ? resolve(opts['agent-cpu-prof']) : undefined;
const agentNodeArgs = agentProfDir ? ['--cpu-prof', `--cpu-prof-dir=${agentProfDir}`] : [];

// ---------------------------------------------------------------------------------------------
// process bookkeeping: everything we spawn is tracked and killed on exit / Ctrl-C
// ---------------------------------------------------------------------------------------------
const live = new Set(); // ChildProcess (each leads its own process group)
const tempDirs = new Set();
const keepTmp = process.env.PGFLEET_KEEP_TMP === '1';

function killGroup(child, signal) {
  if (child.exitCode !== null || child.signalCode !== null) return;
  try {
    process.kill(-child.pid, signal);
  } catch {
    try {
      child.kill(signal);
    } catch {
      /* gone */
    }
  }
}
process.on('exit', () => {
  for (const c of live) killGroup(c, 'SIGKILL');
  if (!keepTmp) for (const d of tempDirs) rmSync(d, { recursive: true, force: true });
});
let interrupted = false;
for (const sig of ['SIGINT', 'SIGTERM', 'SIGHUP']) {
  process.on(sig, () => {
    if (interrupted) return;
    interrupted = true;
    console.error(`\n${sig}: tearing down`);
    // 'exit' handlers (ours and testkit's) kill what is still running and remove temp dirs.
    process.exit(130);
  });
}

// The testkit is a workspace package: resolve it from the repository, built (dist/).
let testkit;
try {
  testkit = await import('@pgfleet/testkit');
} catch (err) {
  console.error(
    `cannot load @pgfleet/testkit (${err.message}).\nBuild first: cd ${REPO_ROOT} && source scripts/node-env.sh && npx turbo run build`,
  );
  process.exit(2);
}
const { freePort, makeTempDir, pgBinDir, pgEnvForChild, pgOsUser, startPostgres } = testkit;

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
const log = (msg) => console.error(`[${new Date().toISOString().slice(11, 19)}] ${msg}`);

/**
 * Runs a command to completion in its own process group (as the postgres OS user when asPg and
 * we are root). Never throws on a non-zero exit: returns {code, stdout, stderr, ms}.
 */
function exec(cmd, args, { asPg = false, cwd, env, timeoutMs = HOUR, shell = false } = {}) {
  return new Promise((resolvePromise) => {
    const t0 = performance.now();
    const child = spawn(cmd, args, {
      cwd: cwd ?? os.tmpdir(),
      env: { ...process.env, ...env },
      stdio: ['ignore', 'pipe', 'pipe'],
      detached: true,
      shell,
      ...(asPg ? pgEnvForChild() : {}),
    });
    live.add(child);
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (d) => (stdout += d));
    child.stderr.on('data', (d) => (stderr += d));
    const timer = setTimeout(() => {
      stderr += `\n[bench] killed after ${timeoutMs} ms`;
      killGroup(child, 'SIGKILL');
    }, timeoutMs);
    const done = (code) => {
      clearTimeout(timer);
      live.delete(child);
      resolvePromise({ code, stdout, stderr, ms: performance.now() - t0 });
    };
    child.on('error', (e) => {
      stderr += `\n${e.message}`;
      done(-1);
    });
    child.on('close', (code, signal) => done(code ?? (signal ? 128 : -1)));
  });
}

/** exec that throws with the command's output when it fails. */
async function must(cmd, args, o = {}) {
  const r = await exec(cmd, args, o);
  if (r.code !== 0) {
    const out = (r.stderr.trim() || r.stdout.trim()).split('\n').slice(-25).join('\n');
    throw new Error(`${[cmd, ...args].join(' ')} exited with ${r.code}:\n${out}`);
  }
  return r;
}

/** A long-running process (controller, agent) whose output goes to a log file. */
function startDaemon(script, args, logFile, { asPg = false, nodeArgs = [] } = {}) {
  const out = createWriteStream(logFile, { flags: 'a' }); // appended: the agent is restarted onto the same log
  const child = spawn(process.execPath, [...nodeArgs, script, ...args], {
    stdio: ['ignore', 'pipe', 'pipe'],
    detached: true,
    ...(asPg ? pgEnvForChild() : {}),
  });
  live.add(child);
  child.stdout.pipe(out, { end: false });
  child.stderr.pipe(out, { end: false });
  const exited = new Promise((r) => child.once('exit', () => r()));
  return {
    child,
    log: () => readFile(logFile, 'utf8').catch(() => ''),
    async stop() {
      if (child.exitCode === null && child.signalCode === null) {
        killGroup(child, 'SIGTERM');
        const t = setTimeout(() => killGroup(child, 'SIGKILL'), 10_000);
        await exited;
        clearTimeout(t);
      }
      live.delete(child);
      out.end();
    },
  };
}

const fatal = (msg) => Object.assign(new Error(msg), { fatal: true });

async function waitFor(what, fn, timeoutMs = 120_000, intervalMs = 200) {
  const deadline = Date.now() + timeoutMs;
  let lastErr;
  while (Date.now() < deadline) {
    try {
      const v = await fn();
      if (v !== undefined && v !== false) return v;
    } catch (err) {
      if (err?.fatal) throw err; // e.g. the daemon we wait for has exited: no point in waiting
      lastErr = err;
    }
    await sleep(intervalMs);
  }
  throw new Error(`timed out after ${timeoutMs / 1000} s waiting for ${what}${lastErr ? `: ${lastErr.message}` : ''}`);
}

/** Apparent size of a file tree in bytes (symlinks not followed). */
/** The end of what a failed tool printed (stderr, else stdout), for the error it becomes. */
function lastLines(r) {
  return (r.stderr.trim() || r.stdout.trim()).split('\n').slice(-10).join('\n');
}

async function treeBytes(p) {
  let st;
  try {
    st = await lstat(p);
  } catch {
    return 0;
  }
  if (!st.isDirectory()) return st.isFile() ? st.size : 0;
  let total = 0;
  for (const e of await readdir(p)) total += await treeBytes(join(p, e));
  return total;
}

/** Reads every file of a tree once (so every tool starts with the same warm page cache). */
async function warmCache(dir) {
  await exec('sh', ['-c', `find "${dir}" -type f -print0 | xargs -0 cat > /dev/null 2>&1; true`]);
}

/** New entries of a directory compared with a previous listing. */
function listDir(dir) {
  try {
    return new Set(readdirSync(dir));
  } catch {
    return new Set();
  }
}
function newEntries(dir, before, filter = () => true) {
  return [...listDir(dir)].filter((e) => !before.has(e) && filter(e)).sort();
}

async function syncDisks() {
  const r = await exec('sync', []);
  return r.ms / 1000;
}

function which(bin) {
  for (const d of (process.env.PATH ?? '').split(delimiter)) {
    const p = join(d, bin);
    try {
      accessSync(p, fsc.X_OK);
      return p;
    } catch {
      /* next */
    }
  }
  return undefined;
}

const shq = (s) => `'${String(s).replace(/'/g, `'\\''`)}'`;
const sqlq = (s) => `'${String(s).replace(/'/g, "''")}'`;
const mb = (bytes) => bytes / 1e6;

// ---------------------------------------------------------------------------------------------
// results
// ---------------------------------------------------------------------------------------------
/** @type {{operation:string, tool:string, wallS?:number, outputBytes?:number, status:string, note?:string, [k:string]:unknown}[]} */
const rows = [];
const extra = {};
const problems = [];

function record(row) {
  rows.push({ status: 'ok', ...row });
  const r = rows[rows.length - 1];
  const what = `${r.operation} | ${r.tool}`;
  if (r.status === 'ok') {
    log(
      `${what}: ${r.wallS?.toFixed(3)} s${r.outputBytes !== undefined ? `, ${mb(r.outputBytes).toFixed(1)} MB` : ''}${r.agentCpuS !== undefined ? `, agent CPU ${r.agentCpuS} s` : ''}`,
    );
  } else {
    log(`${what}: ${r.status}${r.note ? ` (${r.note.split('\n')[0]})` : ''}`);
  }
}

/** Runs one measured step; a failure becomes a 'failed' row (or 'n/a' for unimplemented features) and the run goes on. */
async function step(operation, tool, fn, { naPattern } = {}) {
  try {
    const r = await fn();
    if (r) record({ operation, tool, ...r });
  } catch (err) {
    const msg = String(err?.message ?? err);
    if (naPattern && naPattern.test(msg)) {
      record({
        operation,
        tool,
        status: 'n/a (not implemented)',
        note: msg.split('\n').slice(-3).join(' ').slice(0, 400),
      });
    } else {
      record({ operation, tool, status: 'failed', note: msg.slice(0, 2000) });
      problems.push(`${operation} | ${tool}: ${msg}`);
    }
  }
}

// ---------------------------------------------------------------------------------------------
// preflight
// ---------------------------------------------------------------------------------------------
function ensureBuilt() {
  const missing = [AGENT_BIN, WAL_PUSH_BIN, CONTROLLER_BIN, CLI_BIN].filter((f) => !existsSync(f));
  if (missing.length && run('pgfleet')) {
    throw new Error(
      `pgfleet is not built (missing ${missing.join(', ')}).\nRun: cd ${REPO_ROOT} && source scripts/node-env.sh && npx turbo run build`,
    );
  }
}

async function ensurePgbackrest() {
  let bin = which('pgbackrest');
  if (bin) return bin;
  const isRoot = process.getuid?.() === 0;
  if (isRoot && which('apt-get')) {
    log('pgbackrest is not installed: installing the Debian package (apt-get update && apt-get install -y pgbackrest)');
    const env = { DEBIAN_FRONTEND: 'noninteractive' };
    await must('apt-get', ['update'], { env, timeoutMs: 600_000 });
    await must('apt-get', ['install', '-y', '--no-install-recommends', 'pgbackrest'], { env, timeoutMs: 900_000 });
    bin = which('pgbackrest');
    if (bin) return bin;
  }
  throw new Error(
    'pgbackrest is not installed. Install it (Debian/Ubuntu: sudo apt-get install -y pgbackrest; the bench does this itself when run as root) ' +
      'or leave it out with --skip pgbackrest (the pgfleet ratios then have no baseline).',
  );
}

async function hostFacts(pgBin, pgbackrestBin) {
  const cpu = os.cpus();
  const git = spawnSync('git', ['-C', REPO_ROOT, 'rev-parse', '--short', 'HEAD'], { encoding: 'utf8' });
  const dirty = spawnSync('git', ['-C', REPO_ROOT, 'status', '--porcelain', '--untracked-files=no'], {
    encoding: 'utf8',
  });
  const pgv = spawnSync(join(pgBin, 'postgres'), ['--version'], { encoding: 'utf8' });
  const brv = pgbackrestBin ? spawnSync(pgbackrestBin, ['version'], { encoding: 'utf8' }) : undefined;
  return {
    hostname: os.hostname(),
    cpus: cpu.length,
    cpuModel: cpu[0]?.model,
    memGB: +(os.totalmem() / 1e9).toFixed(1),
    kernel: os.release(),
    loadavgAtStart: os.loadavg().map((x) => +x.toFixed(2)),
    node: process.version,
    postgres: pgv.stdout?.trim(),
    pgbackrest: brv?.stdout?.trim(),
    gitCommit: git.status === 0 ? `${git.stdout.trim()}${dirty.stdout?.trim() ? '+dirty' : ''}` : undefined,
  };
}

// ---------------------------------------------------------------------------------------------
// /proc helpers for the agent's memory
// ---------------------------------------------------------------------------------------------
function procStatusKb(pid, field) {
  try {
    const m = readFileSync(`/proc/${pid}/status`, 'utf8').match(new RegExp(`^${field}:\\s+(\\d+) kB`, 'm'));
    return m ? Number(m[1]) : undefined;
  } catch {
    return undefined;
  }
}
const CLK_TCK = Number(spawnSync('getconf', ['CLK_TCK'], { encoding: 'utf8' }).stdout) || 100;
/** CPU seconds (user + system, all its threads) a process has used so far. */
function procCpuS(pid) {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    const f = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    return (Number(f[11]) + Number(f[12])) / CLK_TCK; // utime, stime
  } catch {
    return NaN;
  }
}
function descendants(pid) {
  const parent = new Map();
  for (const e of readdirSync('/proc')) {
    if (!/^\d+$/.test(e)) continue;
    try {
      const stat = readFileSync(`/proc/${e}/stat`, 'utf8');
      const ppid = Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[1]);
      parent.set(Number(e), ppid);
    } catch {
      /* exited */
    }
  }
  const out = [pid];
  for (let i = 0; i < out.length; i++) for (const [c, p] of parent) if (p === out[i]) out.push(c);
  return out;
}
/** Samples the RSS of a process tree every `ms` until stopped; returns the peak sum in kB. */
function rssSampler(pid, ms = 200) {
  let peak = 0;
  const tick = () => {
    const kb = descendants(pid).reduce((s, p) => s + (procStatusKb(p, 'VmRSS') ?? 0), 0);
    if (kb > peak) peak = kb;
  };
  tick();
  const t = setInterval(tick, ms);
  return () => {
    clearInterval(t);
    tick();
    return peak;
  };
}

// ---------------------------------------------------------------------------------------------
// the benchmark
// ---------------------------------------------------------------------------------------------
async function main() {
  const startedAt = new Date();
  const stamp = startedAt.toISOString().replace(/[:]/g, '').replace(/\..+/, 'Z');
  ensureBuilt();
  const pgBin = pgBinDir();
  for (const b of ['pgbench', 'pg_basebackup', 'psql']) {
    if (!existsSync(join(pgBin, b)))
      throw new Error(
        `${join(pgBin, b)} is missing (install the postgresql-${pgBin.split('/').at(-2)} client/contrib packages)`,
      );
  }
  const pgbackrestBin = run('pgbackrest') ? await ensurePgbackrest() : undefined;
  const host = await hostFacts(pgBin, pgbackrestBin);
  const pgUser = pgOsUser();
  log(
    `host: ${host.cpus} x ${host.cpuModel}, ${host.memGB} GB RAM, ${host.postgres}, ${host.pgbackrest ?? 'pgbackrest skipped'}, load ${host.loadavgAtStart.join(' ')}`,
  );
  if (host.loadavgAtStart[0] > host.cpus * 0.5)
    log(`WARNING: the machine is busy (load ${host.loadavgAtStart[0]}): figures will be noisy`);

  const work = await makeTempDir('bench');
  if (agentProfDir) {
    await mkdir(agentProfDir, { recursive: true });
    await chmod(agentProfDir, 0o777); // the agent runs as postgres when we are root
  }
  tempDirs.add(work);
  const pgfRepo = join(work, 'pgfleet-repo');
  // The encrypted runs: a repository of their own (encryption is per cluster, and this cluster's
  // objects in pgfRepo are plaintext), its key in a 0600 file the agent (user postgres) reads.
  const pgfRepoEncrypted = join(work, 'pgfleet-repo-encrypted');
  const keyFile = join(work, 'pgfleet-bench.key');
  const brConf = join(work, 'pgbackrest.conf');
  const brRepo = { zstd: join(work, 'pgbr-repo-zstd'), lz4: join(work, 'pgbr-repo-lz4') };
  const brRepoIndex = { zstd: '1', lz4: '2' };
  for (const d of [
    pgfRepo,
    brRepo.zstd,
    brRepo.lz4,
    join(work, 'pgbr-log'),
    join(work, 'pgbr-lock'),
    join(work, 'pgbr-spool'),
    join(work, 'scratch'),
    pgfRepoEncrypted,
  ]) {
    await mkdir(d, { recursive: true });
    if (pgUser) await chown(d, pgUser.uid, pgUser.gid);
  }
  await writeFile(keyFile, `${randomBytes(32).toString('base64')}\n`, { mode: 0o600 });
  if (pgUser) await chown(keyFile, pgUser.uid, pgUser.gid);

  let pg;
  let controller;
  let agent;
  let controllerAddress;
  const restored = [];
  const result = {
    startedAt: startedAt.toISOString(),
    command: `node bench/run.mjs ${process.argv.slice(2).join(' ')}`.trim(),
    params: { ...P, skip: [...P.skip] },
    host,
    input: {},
    rows,
    extra,
    problems,
  };

  try {
    // ---- 1. one PostgreSQL cluster (data checksums) with the data -------------------------
    log('starting PostgreSQL (data checksums; archive_command off while loading)');
    pg = await startPostgres({
      archiveCommand: '/bin/true',
      settings: {
        shared_buffers: '256MB',
        max_wal_size: '4GB',
        checkpoint_timeout: '15min',
        // keeps the last 64 real segments in pg_wal, the source for the wal-push comparison
        wal_keep_size: '1GB',
      },
      startTimeoutMs: 120_000,
    });
    const pgConn = ['-h', '127.0.0.1', '-p', String(pg.port), '-U', 'postgres'];
    let t0 = performance.now();
    log(`pgbench -i -s ${P.scale}`);
    await must(join(pgBin, 'pgbench'), ['-i', '-q', '-s', String(P.scale), ...pgConn, 'postgres'], { asPg: true });
    extra.loadPgbenchS = +((performance.now() - t0) / 1000).toFixed(1);

    if (P.noisyGb > 0) {
      t0 = performance.now();
      const target = P.noisyGb * 1e9;
      log(`adding ~${P.noisyGb} GB of less compressible rows (table noisy)`);
      await pg.query(
        `CREATE TABLE noisy (id bigint, created_at timestamptz, user_id int, kind text, session text, amount numeric(12,2), payload text)`,
      );
      // ~290 bytes per row on disk; zstd -3 compresses the heap ~3.6x, lz4 ~2.5x (pgbench's tables: ~20x)
      let next = 1;
      for (;;) {
        const [{ s }] = await pg.query(`SELECT pg_relation_size('noisy')::bigint AS s`);
        const remaining = target - Number(s);
        if (remaining <= 0) break;
        const n = Math.max(1000, Math.min(500_000, Math.ceil(remaining / 290)));
        await pg.query(
          `INSERT INTO noisy
           SELECT g, now() - random() * interval '365 days', (random() * 1000000)::int,
                  (ARRAY['login','logout','purchase','page_view','click','search','refund','signup'])[1 + floor(random() * 8)::int],
                  md5(random()::text),
                  round((random() * 10000)::numeric, 2),
                  concat_ws(' ', 'GET', '/api/v1/' || (ARRAY['orders','users','items','carts','search'])[1 + floor(random() * 5)::int] || '/' || (random() * 100000)::int,
                            'status=' || (ARRAY['200','200','200','201','304','404','500'])[1 + floor(random() * 7)::int],
                            'ip=10.' || (random() * 255)::int || '.' || (random() * 255)::int || '.' || (random() * 255)::int,
                            'trace=' || substr(md5(random()::text), 1, 16),
                            'ua="Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/' || (100 + (random() * 30)::int) || '.0 Safari/537.36"')
           FROM generate_series($1::bigint, $2::bigint) g`,
          [next, next + n - 1],
        );
        next += n;
      }
      await pg.query('VACUUM (ANALYZE) noisy');
      extra.loadNoisyS = +((performance.now() - t0) / 1000).toFixed(1);
    }
    await pg.query('CHECKPOINT');

    /** What a restore is compared with: row counts and checksums of a cluster (the source, or a restored copy). */
    const dataFacts = async (db) => {
      const [got] = await db.query(
        `SELECT (SELECT count(*) FROM pgbench_accounts)::bigint AS accounts,
                ${P.noisyGb > 0 ? `(SELECT count(*) FROM noisy)::bigint` : '0::bigint'} AS noisy,
                ${P.noisyGb > 0 ? `(SELECT coalesce(sum(hashtext(payload)::bigint), 0) FROM noisy)::bigint` : '0::bigint'} AS noisy_hash,
                (SELECT sum(abalance)::bigint FROM pgbench_accounts) AS abalance`,
      );
      return {
        accounts: String(got.accounts),
        noisy: String(got.noisy),
        noisyHash: String(got.noisy_hash),
        abalance: String(got.abalance),
      };
    };
    const [sizes] = await pg.query(`SELECT pg_database_size('postgres')::bigint AS db`);
    /** The source's data as every full backup holds it (nothing writes before the fulls). */
    const expected = await dataFacts(pg);
    const pgdataBytes = (await treeBytes(pg.dataDir)) - (await treeBytes(join(pg.dataDir, 'pg_wal')));
    result.input = {
      pgdataBytesWithoutWal: pgdataBytes,
      databaseBytes: Number(sizes.db),
      pgbenchAccounts: Number(expected.accounts),
      noisyRows: Number(expected.noisy),
    };
    log(`PGDATA without pg_wal: ${mb(pgdataBytes).toFixed(0)} MB (database ${mb(Number(sizes.db)).toFixed(0)} MB)`);

    /** Verifies a restored data dir (not timed): starts it, waits for promotion, compares the data at backup time (`want`: the fulls' unless given). */
    const verifyRestore = async (dir, want = expected) => {
      if (!run('verify')) return 'not verified (--skip verify)';
      const r = await startPostgres({
        dataDir: dir,
        waitForRecovery: true,
        keepDataDir: true,
        settings: { archive_mode: 'off' },
        startTimeoutMs: 600_000,
      });
      restored.push(r);
      try {
        const g = await dataFacts(r);
        if (JSON.stringify(g) !== JSON.stringify(want))
          throw new Error(`restored data differs: got ${JSON.stringify(g)}, expected ${JSON.stringify(want)}`);
        return 'verified: started, promoted, row counts and checksums match';
      } finally {
        await r.stop();
        restored.splice(restored.indexOf(r), 1);
      }
    };
    /**
     * One timed restore into `dir`: caches synced before, the wall time of `restore(dir)`, the sync
     * it left to do, the bytes written, and whether the copy starts with the source's rows; then
     * the copy is removed.
     */
    const timedRestore = async (tool, dir, restore, want = expected) => {
      await syncDisks();
      const r = await restore(dir);
      if (r.code !== 0) throw new Error(`${tool} restore exited with ${r.code}:\n${lastLines(r)}`);
      const syncS = await syncDisks();
      const outputBytes = await treeBytes(dir);
      try {
        return { wallS: r.ms / 1000, outputBytes, syncAfterS: +syncS.toFixed(3), note: await verifyRestore(dir, want) };
      } finally {
        await rm(dir, { recursive: true, force: true });
      }
    };

    /**
     * `fn`'s result with the agent's CPU seconds (all threads, from /proc) while it ran: on a busy
     * machine the steadier figure than the wall time.
     */
    const withAgentCpu = async (fn) => {
      const pid = agent.child.pid;
      const cpu0 = procCpuS(pid);
      const r = await fn();
      return { ...r, agentCpuS: +(procCpuS(pid) - cpu0).toFixed(2) };
    };

    // ---- archive_command: one tool at a time, switched with ALTER SYSTEM + reload ----------
    // The installed launcher and archive_command in its documented form (cluster and repository
    // in the config file): a segment the daemon pushed ahead is answered without starting Node.
    const launcher = join(work, 'pgfleet-agent');
    await writeFile(
      launcher,
      (await exec(process.execPath, [join(REPO_ROOT, 'scripts/agent-launcher.mjs'), process.execPath, REPO_ROOT]))
        .stdout,
      { mode: 0o755 },
    );
    const walPushConfig = join(work, 'wal-push.yaml');
    await writeFile(walPushConfig, `cluster: ${CLUSTER}\nrepo-path: ${JSON.stringify(pgfRepo)}\n`);
    const archiveCmd = {
      none: '/bin/true',
      pgfleet: `${shq(launcher)} wal-push "%p" --config ${shq(walPushConfig)}`,
      'pgfleet-encrypted': `${shq(process.execPath)} ${shq(WAL_PUSH_BIN)} wal-push "%p" --cluster ${CLUSTER} --repo-path ${shq(pgfRepoEncrypted)} --encryption-key-file ${shq(keyFile)}`,
      pgbackrest: `${shq(pgbackrestBin ?? 'pgbackrest')} --config=${shq(brConf)} --stanza=${STANZA} archive-push "%p"`,
    };
    let archiveMode = 'none';
    const setArchive = async (mode) => {
      if (mode === archiveMode) return;
      log(`archive_command -> ${mode}`);
      await pg.query(`ALTER SYSTEM SET archive_command = ${sqlq(archiveCmd[mode])}`);
      await pg.query('SELECT pg_reload_conf()');
      await waitFor('archive_command reload', async () => {
        const [r] = await pg.query(`SELECT current_setting('archive_command') AS c`);
        return r.c === archiveCmd[mode];
      });
      await sleep(500); // the archiver rereads its config between files
      archiveMode = mode;
      await archiveAll(`switch to ${mode}`);
    };
    /** Switches to a new segment and waits until everything up to it is archived (by the current command). */
    const archiveAll = async (why, timeoutMs = 600_000) => {
      await pg.query(
        `CREATE TABLE IF NOT EXISTS bench_marker (t timestamptz); INSERT INTO bench_marker VALUES (now())`,
      );
      const [{ f }] = await pg.query(`SELECT pg_walfile_name(pg_switch_wal()) AS f`);
      const [{ n: failedBefore }] = await pg.query('SELECT failed_count::int AS n FROM pg_stat_archiver');
      let failing;
      await waitFor(
        `WAL ${f} to be archived (${why}, archive_command = ${archiveMode})`,
        async () => {
          const [a] = await pg.query(
            'SELECT last_archived_wal AS w, last_failed_wal AS fw, failed_count::int AS n FROM pg_stat_archiver',
          );
          if (a.w !== null && a.w >= f) return true;
          // PostgreSQL retries a failing archive_command 3 times, then waits a minute: give up early
          if (a.n - failedBefore >= 3) failing = a;
          return failing !== undefined;
        },
        timeoutMs,
      );
      if (failing) {
        const tailLog = (await pg.log())
          .split('\n')
          .filter((l) => !/^\s*$/.test(l))
          .slice(-15)
          .join('\n');
        throw new Error(
          `archive_command (${archiveMode}) fails at ${failing.fw} (${failing.n - failedBefore} failures); server log tail:\n${tailLog}`,
        );
      }
    };
    const readyCount = () => {
      try {
        return readdirSync(join(pg.dataDir, 'pg_wal/archive_status')).filter((f) => f.endsWith('.ready')).length;
      } catch {
        return -1;
      }
    };

    // ---- pgfleet processes: controller + agent, like test/src/harness.ts -------------------
    // A benchmark fleet on loopback: clear text, chosen explicitly (--insecure) as the binaries require.
    const cli = (...args) =>
      exec(process.execPath, [CLI_BIN, ...args], {
        env: { PGFLEET_CONTROLLER: controllerAddress, PGFLEET_INSECURE: 'true' },
      });
    /** Whether the controller and agent run on the encrypted repository (the encrypted runs). */
    let encryptedRepo = false;
    /** Extra agent options (the block-incr phase's --file-incremental run). */
    let agentExtraArgs = [];
    /** (Re)starts the agent daemon with this codec for backups and WAL (the codec is an agent setting). */
    const startAgent = async (codec) => {
      await agent?.stop();
      agent = startDaemon(
        AGENT_BIN,
        [
          'run',
          '--controller',
          controllerAddress,
          '--cluster',
          CLUSTER,
          '--pgdata',
          pg.dataDir,
          '--pg-host',
          '127.0.0.1',
          '--pg-port',
          String(pg.port),
          '--repo-path',
          encryptedRepo ? pgfRepoEncrypted : pgfRepo,
          ...(encryptedRepo ? ['--encryption-key-file', keyFile] : []),
          '--archive-timeout',
          '600',
          '--compress',
          codec,
          '--insecure',
          // WAL pushed from PostgreSQL's .ready files, before archive_command asks (opt-in).
          '--archive-watch-ready',
          ...agentExtraArgs,
        ],
        join(work, `agent-${codec}${encryptedRepo ? '-encrypted' : ''}.log`),
        { asPg: true, nodeArgs: agentNodeArgs },
      );
      await waitFor('agent to connect', async () => {
        if (agent.child.exitCode !== null)
          throw fatal(`agent exited with ${agent.child.exitCode}: ${await agent.log()}`);
        const r = await cli('clusters', '--output', 'json');
        if (r.code !== 0) return false;
        const doc = JSON.parse(r.stdout);
        return (Array.isArray(doc) ? doc : doc.clusters).some((c) => c.name === CLUSTER && c.agentConnected === true);
      });
    };
    /** (Re)starts the controller on the repository of encryptedRepo (jobs name its repository), with the same catalog. */
    const startController = async () => {
      await controller?.stop();
      controller = startDaemon(
        CONTROLLER_BIN,
        [
          'run',
          '--listen',
          controllerAddress,
          '--catalog',
          join(work, 'catalog.db'),
          '--repo-path',
          encryptedRepo ? pgfRepoEncrypted : pgfRepo,
          // The controller reads reported manifests back before it records a backup (issue 13).
          ...(encryptedRepo ? ['--encryption-key-file', keyFile] : []),
          // a free port: a fixed default collides with any other controller on the host
          '--metrics-listen',
          '127.0.0.1:0',
          '--insecure',
        ],
        join(work, 'controller.log'),
      );
      await waitFor('controller to listen', async () => {
        if (controller.child.exitCode !== null)
          throw fatal(`controller exited with ${controller.child.exitCode}: ${await controller.log()}`);
        return (await cli('clusters')).code === 0;
      });
    };
    /**
     * Moves the zstd pgfleet setup to the encrypted repository or back: archive_command first
     * (a daemon serving the other repository tells wal-push to archive directly), then the
     * controller and the agent. `restart`: restart them even when they stay (every measured run
     * of a pair then starts from the same state: a fresh agent's first backup costs more CPU).
     */
    const useEncryptedRepo = async (on, { restart = false } = {}) => {
      if (on === encryptedRepo && !restart) return;
      log(`pgfleet -> the ${on ? 'encrypted' : 'plaintext'} repository`);
      await setArchive(on ? 'pgfleet-encrypted' : 'pgfleet');
      encryptedRepo = on;
      await agent?.stop();
      agent = undefined;
      await startController();
      await startAgent('zstd');
    };
    if (run('pgfleet')) {
      try {
        controllerAddress = `127.0.0.1:${await freePort()}`;
        log(`starting pgfleet-controller (${controllerAddress}) and pgfleet-agent`);
        await startController();
        await startAgent('zstd');
      } catch (err) {
        // measure the other tools anyway; the pgfleet rows are missing and the run exits non-zero
        record({
          operation: 'setup',
          tool: 'pgfleet controller + agent',
          status: 'failed',
          note: String(err?.message ?? err).slice(0, 2000),
        });
        problems.push(`pgfleet did not start, its phases were skipped: ${err?.message ?? err}`);
        P.skip.add('pgfleet');
        await agent?.stop().catch(() => {});
        await controller?.stop().catch(() => {});
        agent = controller = undefined;
      }
    }
    /** A pgfleet restore of backup `label` into a dir (for timedRestore). */
    const pgfRestore = (label) => (dir) =>
      cli(
        'restore',
        CLUSTER,
        '--to',
        dir,
        '--backup',
        label,
        '--target',
        'immediate',
        '--target-action',
        'promote',
        '--wait',
        '--timeout',
        '60',
      );
    /** pgfleet full backups by codec (their labels, for the restores). */
    const pgfFull = {};
    const pgfBackup = async (type) => {
      const pgfBackupDir = join(encryptedRepo ? pgfRepoEncrypted : pgfRepo, CLUSTER, 'backup');
      const before = listDir(pgfBackupDir);
      await syncDisks();
      const pid = agent.child.pid;
      const cpu0 = procCpuS(pid);
      const r = await cli('backup', CLUSTER, ...(type === 'full' ? [] : ['--type', type]), '--wait', '--timeout', '60');
      const agentCpuS = +(procCpuS(pid) - cpu0).toFixed(2);
      if (r.code !== 0) throw new Error(`pgfleet backup --type ${type} exited with ${r.code}:\n${lastLines(r)}`);
      const labels = newEntries(pgfBackupDir, before);
      if (labels.length !== 1)
        throw new Error(`expected one new backup in ${pgfBackupDir}, found ${labels.length}: ${labels.join(', ')}`);
      const syncS = await syncDisks();
      return {
        wallS: r.ms / 1000,
        outputBytes: await treeBytes(join(pgfBackupDir, labels[0])),
        label: labels[0],
        syncAfterS: +syncS.toFixed(3),
        agentCpuS,
      };
    };

    // ---- pgBackRest: one stanza, repo1 = zstd, repo2 = lz4, process-max 2 ------------------
    if (run('pgbackrest')) {
      await writeFile(
        brConf,
        [
          '[global]',
          `repo1-path=${brRepo.zstd}`,
          'repo1-retention-full=99',
          `repo2-path=${brRepo.lz4}`,
          'repo2-retention-full=99',
          'process-max=2',
          'start-fast=y',
          // archive-push (both repos) and the default for backups; backups pass --compress-type
          'compress-type=zst', // pgBackRest's name for zstd
          `log-path=${join(work, 'pgbr-log')}`,
          `lock-path=${join(work, 'pgbr-lock')}`,
          `spool-path=${join(work, 'pgbr-spool')}`,
          'log-level-console=warn',
          'log-level-file=off',
          'archive-timeout=600',
          '',
          `[${STANZA}]`,
          `pg1-path=${pg.dataDir}`,
          `pg1-port=${pg.port}`,
          `pg1-socket-path=${pg.socketDir}`,
          'pg1-user=postgres',
          '',
        ].join('\n'),
      );
      await chmod(brConf, 0o644);
      await must(pgbackrestBin, [`--config=${brConf}`, `--stanza=${STANZA}`, 'stanza-create'], { asPg: true });
    }
    const br = (...args) => exec(pgbackrestBin, [`--config=${brConf}`, `--stanza=${STANZA}`, ...args], { asPg: true });
    const brBackup = async (codec, type) => {
      const dir = join(brRepo[codec], 'backup', STANZA);
      const before = listDir(dir);
      await syncDisks();
      const r = await br(
        `--repo=${brRepoIndex[codec]}`,
        `--compress-type=${BR_CODEC[codec]}`,
        `--type=${type}`,
        'backup',
      );
      if (r.code !== 0) throw new Error(`pgbackrest backup exited with ${r.code}:\n${lastLines(r)}`);
      const labels = newEntries(dir, before, (e) => /^\d{8}-\d{6}F/.test(e));
      if (labels.length !== 1)
        throw new Error(`expected one new backup in ${dir}, found ${labels.join(', ') || 'none'}`);
      const syncS = await syncDisks();
      return {
        wallS: r.ms / 1000,
        outputBytes: await treeBytes(join(dir, labels[0])),
        label: labels[0],
        syncAfterS: +syncS.toFixed(3),
      };
    };

    await warmCache(pg.dataDir);

    // ---- 2a. full backups ----------------------------------------------------------------------
    // One per codec, each on a freshly started agent (--compress <codec>; archive_command goes through
    // its socket meanwhile), so each row's agent peak RSS (VmHWM) is that backup's alone (issue 19).
    /** Peak RSS of the agent per measured pgfleet operation, e.g. { 'backup zstd': 131.2 }. */
    extra.agentPeakRssMB = {};
    const agentPeakMB = () => +((procStatusKb(agent.child.pid, 'VmHWM') ?? 0) / 1024).toFixed(1);
    /** Resets the agent's VmHWM to its current RSS (Linux >= 4.0; needs ptrace rights on it: root or its user). */
    const resetAgentPeak = async () => {
      try {
        await writeFile(`/proc/${agent.child.pid}/clear_refs`, '5');
        return true;
      } catch {
        return false;
      }
    };
    if (run('pgfleet')) {
      await setArchive('pgfleet');
      for (const codec of PGF_CODECS) {
        await step('full backup', `pgfleet (${codec}, 2 workers)`, async () => {
          if (codec !== 'zstd') await startAgent(codec);
          const stopSampler = rssSampler(agent.child.pid);
          try {
            const r = await pgfBackup('full');
            pgfFull[codec] = r.label;
            return { ...r, agentPeakRssMB: agentPeakMB() };
          } finally {
            const peakTreeKb = stopSampler();
            extra.agentPeakRssMB[`backup ${codec}`] = agentPeakMB();
            if (codec === 'zstd') {
              extra.agentPeakRssFullBackupMB = agentPeakMB();
              extra.agentPeakRssSampledTreeMB = +(peakTreeKb / 1024).toFixed(1);
            }
            if (codec === 'lz4') extra.agentPeakRssLz4FullBackupMB = agentPeakMB();
            if (codec !== 'zstd') await startAgent('zstd');
          }
        });
      }
    }
    if (run('pgbackrest')) {
      await setArchive('pgbackrest');
      for (const codec of ['zstd', 'lz4'])
        await step('full backup', `pgBackRest ${codec}, process-max 2`, () => brBackup(codec, 'full'));
    }
    if (run('pg_basebackup')) {
      for (const [codec, compress] of [
        ['zstd', 'server-zstd:workers=2'],
        ['lz4', 'server-lz4'],
      ]) {
        await step('full backup', `pg_basebackup ${compress}`, async () => {
          const dir = join(work, `basebackup-${codec}`);
          await syncDisks();
          const r = await exec(
            join(pgBin, 'pg_basebackup'),
            [...pgConn, '-D', dir, '-Ft', '-X', 'stream', '--checkpoint=fast', `--compress=${compress}`],
            { asPg: true },
          );
          if (r.code !== 0) throw new Error(`pg_basebackup exited with ${r.code}: ${r.stderr.trim()}`);
          const syncS = await syncDisks();
          const outputBytes = await treeBytes(dir);
          await rm(dir, { recursive: true, force: true });
          return {
            wallS: r.ms / 1000,
            outputBytes,
            syncAfterS: +syncS.toFixed(3),
            note: 'includes pg_wal.tar (WAL streamed during the backup)',
          };
        });
      }
    }

    // ---- 2b. restores (of the full backups, --target immediate) ------------------------------
    if (run('restore')) {
      for (const codec of run('pgfleet') ? PGF_CODECS : []) {
        if (!pgfFull[codec]) continue;
        await step('restore', `pgfleet (${codec}, 2 workers)`, async () => {
          await startAgent('zstd'); // a fresh agent: this restore's peak RSS alone
          const r = await withAgentCpu(() =>
            timedRestore('pgfleet', join(work, `restore-pgfleet-${codec}`), pgfRestore(pgfFull[codec])),
          );
          extra.agentPeakRssMB[`restore ${codec}`] = agentPeakMB();
          return { ...r, agentPeakRssMB: agentPeakMB() };
        });
      }
      if (run('pgbackrest')) {
        for (const codec of ['lz4', 'zstd']) {
          if (
            !rows.some(
              (r) => r.tool.startsWith(`pgBackRest ${codec}`) && r.operation === 'full backup' && r.status === 'ok',
            )
          )
            continue;
          await step('restore', `pgBackRest ${codec}, process-max 2`, async () => {
            const dir = join(work, `restore-pgbr-${codec}`);
            await mkdir(dir, { mode: 0o700 });
            if (pgUser) await chown(dir, pgUser.uid, pgUser.gid);
            return timedRestore('pgbackrest', dir, () =>
              br(
                `--repo=${brRepoIndex[codec]}`,
                `--pg1-path=${dir}`,
                '--type=immediate',
                '--target-action=promote',
                'restore',
              ),
            );
          });
        }
      }
    }

    // ---- 2b'. encryption at rest: zstd full backup + restore, plaintext and encrypted ---------
    // Pairs run alternately (ABBA) on the same data, each on its own repository (encryption is per
    // cluster): the overhead is the encrypted median over the plaintext median of these pairs.
    // The agent's CPU seconds (all threads, from /proc) are taken with each wall time: on a busy
    // machine they are the steadier figure.
    if (run('pgfleet') && run('encrypted')) {
      const pairs = { plaintext: { backup: [], restore: [] }, encrypted: { backup: [], restore: [] } };
      let restoreRow;
      await step('full backup', 'pgfleet (zstd, 2 workers, encrypted)', async () => {
        try {
          for (let i = 0; i < P.encryptedRuns; i++) {
            // ABBA order (plaintext first in even pairs, encrypted first in odd ones): whatever the
            // previous run leaves behind (dirty pages, ~1000 just-deleted inodes of its restore that
            // ext4 scans past while creating the next restore's files) falls on both modes alike.
            for (const mode of i % 2 === 0 ? ['plaintext', 'encrypted'] : ['encrypted', 'plaintext']) {
              await useEncryptedRepo(mode === 'encrypted', { restart: true });
              const b = await withAgentCpu(() => pgfBackup('full'));
              const peakKey = (op) => `${op} zstd ${mode} (pair)`;
              const keepPeak = (op, mb) =>
                (extra.agentPeakRssMB[peakKey(op)] = Math.max(extra.agentPeakRssMB[peakKey(op)] ?? 0, mb));
              keepPeak('backup', agentPeakMB());
              pairs[mode].backup.push(b);
              log(`encryption pair ${i + 1}, ${mode}: full backup ${b.wallS.toFixed(2)} s, agent CPU ${b.agentCpuS} s`);
              if (!run('restore')) continue;
              const reset = await resetAgentPeak(); // else the backup's peak stays in VmHWM
              const r = await withAgentCpu(() =>
                timedRestore('pgfleet', join(work, `restore-pgfleet-${mode}-${i}`), pgfRestore(b.label)),
              );
              if (reset) keepPeak('restore', agentPeakMB());
              pairs[mode].restore.push(r);
              log(`encryption pair ${i + 1}, ${mode}: restore ${r.wallS.toFixed(2)} s, agent CPU ${r.agentCpuS} s`);
            }
          }
        } finally {
          await useEncryptedRepo(false);
        }
        const median = (a) => [...a].sort((x, y) => x - y)[(a.length - 1) >> 1];
        const summary = (op) => {
          const p = pairs.plaintext[op];
          const e = pairs.encrypted[op];
          if (e.length === 0) return undefined;
          const pct = (x, y) => +((100 * (y - x)) / x).toFixed(1);
          const pw = median(p.map((r) => r.wallS));
          const ew = median(e.map((r) => r.wallS));
          const pc = median(p.map((r) => r.agentCpuS));
          const ec = median(e.map((r) => r.agentCpuS));
          return {
            plaintextWallS: p.map((r) => +r.wallS.toFixed(2)),
            encryptedWallS: e.map((r) => +r.wallS.toFixed(2)),
            plaintextAgentCpuS: p.map((r) => r.agentCpuS),
            encryptedAgentCpuS: e.map((r) => r.agentCpuS),
            wallOverheadPct: pct(pw, ew),
            agentCpuOverheadPct: pct(pc, ec),
            medians: { plaintextWallS: pw, encryptedWallS: ew, plaintextAgentCpuS: pc, encryptedAgentCpuS: ec },
          };
        };
        extra.encryption = { pairs: P.encryptedRuns, backup: summary('backup'), restore: summary('restore') };
        const e = pairs.encrypted;
        const row = (list) => {
          const m = median(list.map((r) => r.wallS));
          const r = list.find((x) => x.wallS === m);
          return { ...r, wallS: m, note: `median of ${list.length}; ${r.note ?? ''}`.trim() };
        };
        if (e.restore.length > 0) restoreRow = row(e.restore);
        return row(e.backup);
      });
      if (restoreRow) record({ operation: 'restore', tool: 'pgfleet (zstd, 2 workers, encrypted)', ...restoreRow });
    }

    // ---- 2b'. sustained archiving in the production shape (issue 19) -------------------------
    // PostgreSQL's archiver runs archive_command per .ready file while pgbench writes WAL as fast
    // as it can (large rows, several clients); the agent daemon runs and sees archive_status as
    // PostgreSQL makes it. Each archive_command is timed by a shell wrapper around it (what the
    // archiver waits for per segment); segments/s = segments archived / (pgbench + drain time).
    // pgBackRest pushes to repo1 only here (one repository, like the pgfleet agent), sync and with
    // archive-async=y (its own spool and process-max 2).
    if (run('wal-archive') && (run('pgfleet') || run('pgbackrest'))) {
      const timingLog = join(work, 'archive-times.log');
      await writeFile(timingLog, '');
      await chmod(timingLog, 0o666);
      const brWalConf = join(work, 'pgbackrest-wal.conf');
      if (run('pgbackrest')) {
        const conf = await readFile(brConf, 'utf8');
        await writeFile(
          brWalConf,
          conf
            .split('\n')
            .filter((l) => !l.startsWith('repo2-'))
            .join('\n'),
        );
        await chmod(brWalConf, 0o644);
      }
      const timed = (mode, cmd) =>
        `s=$(date +%s%N); ${cmd}; r=$?; echo "${mode} %f $s $(date +%s%N) $r" >> ${shq(timingLog)}; exit $r`;
      // each mode's key (no spaces) names its lines in the timing log
      const br = `${shq(pgbackrestBin ?? 'pgbackrest')} --config=${shq(brWalConf)} --stanza=${STANZA}`;
      const modes = [
        ...(run('pgfleet') ? [['pgfleet-agent wal-push (zstd, via agent daemon)', archiveCmd.pgfleet]] : []),
        ...(run('pgbackrest')
          ? [
              ['pgbackrest archive-push (zstd, sync)', `${br} archive-push "%p"`],
              ['pgbackrest archive-push (zstd, archive-async=y)', `${br} --archive-async archive-push "%p"`],
            ]
          : []),
      ];
      await pg.query(`CREATE TABLE IF NOT EXISTS walbench (id bigint, payload text)`);
      // ~1 KB rows stay below the TOAST threshold, so they reach the WAL uncompressed.
      const script = join(work, 'walbench.sql');
      await writeFile(
        script,
        `INSERT INTO walbench SELECT g, repeat(md5(random()::text), 30) FROM generate_series(1, 2000) g;\n`,
      );
      await chmod(script, 0o644);
      const c = String(Math.max(4, P.pgbenchClients));
      extra.walArchive = { seconds: P.pgbenchSeconds, clients: Number(c), tools: {} };
      for (const [i, [label, cmd]] of modes.entries()) {
        const key = `wal-archive-${i}`;
        archiveCmd[key] = timed(key, cmd);
        await step('sustained archiving', label, async () => {
          await setArchive(key);
          await pg.query('TRUNCATE walbench');
          await pg.query('CHECKPOINT');
          const [a0] = await pg.query(
            'SELECT archived_count::bigint AS n, failed_count::bigint AS f, pg_current_wal_lsn() AS lsn FROM pg_stat_archiver',
          );
          const since = (await readFile(timingLog, 'utf8')).length;
          let maxReady = 0;
          const poll = setInterval(() => (maxReady = Math.max(maxReady, readyCount())), 250);
          const t0 = performance.now();
          let bench;
          try {
            bench = await must(
              join(pgBin, 'pgbench'),
              ['-n', '-f', script, '-T', String(P.pgbenchSeconds), '-c', c, '-j', '2', ...pgConn, 'postgres'],
              { asPg: true },
            );
          } finally {
            clearInterval(poll);
          }
          const benchS = (performance.now() - t0) / 1000;
          const readyAtEnd = readyCount();
          const [{ lsn: lsnEnd }] = await pg.query('SELECT pg_current_wal_lsn() AS lsn');
          await waitFor(`archiver to drain (${label})`, async () => readyCount() === 0, 1_800_000, 100);
          const totalS = (performance.now() - t0) / 1000;
          const [a1] = await pg.query(
            `SELECT archived_count::bigint AS n, failed_count::bigint AS f, (pg_wal_lsn_diff('${lsnEnd}', '${a0.lsn}') / 16777216)::float8 AS segs FROM pg_stat_archiver`,
          );
          const archived = Number(a1.n) - Number(a0.n);
          const ms = (await readFile(timingLog, 'utf8'))
            .slice(since)
            .split('\n')
            .map((l) => l.split(' '))
            .filter((f) => f.length === 5 && f[0] === key && /^[0-9A-F]{24}$/.test(f[1]))
            .map((f) => (Number(f[3]) - Number(f[2])) / 1e6)
            .sort((x, y) => x - y);
          const perSegment = {
            n: ms.length,
            meanMs: +(ms.reduce((x, y) => x + y, 0) / Math.max(1, ms.length)).toFixed(1),
            medianMs: +(ms[Math.floor(ms.length / 2)] ?? 0).toFixed(1),
            p90Ms: +(ms[Math.floor(ms.length * 0.9)] ?? 0).toFixed(1),
          };
          const r = {
            tps: Number(bench.stdout.match(/tps = ([\d.]+)/)?.[1] ?? 0),
            walSegmentsPerS: +(Number(a1.segs) / benchS).toFixed(2),
            archived,
            failed: Number(a1.f) - Number(a0.f),
            segmentsPerS: +(archived / totalS).toFixed(2),
            maxReady,
            readyAtEnd,
            drainS: +(totalS - benchS).toFixed(2),
            perSegment,
          };
          extra.walArchive.tools[label] = r;
          log(`${label}: ${JSON.stringify(r)}`);
          return {
            wallS: perSegment.meanMs / 1000,
            note: `${r.segmentsPerS} segments/s archived (WAL written at ${r.walSegmentsPerS}/s, ${r.tps} tps), backlog max ${maxReady} .ready, ${readyAtEnd} at pgbench's end, drained in ${r.drainS} s; archive_command median ${perSegment.medianMs} ms, p90 ${perSegment.p90Ms} ms over ${perSegment.n}`,
          };
        });
      }
      await setArchive(run('pgfleet') ? 'pgfleet' : 'pgbackrest');
    }

    // ---- 2c. pgbench, then incremental backups ----------------------------------------------
    if (run('incr')) {
      await setArchive(run('pgfleet') ? 'pgfleet' : run('pgbackrest') ? 'pgbackrest' : 'none');
      const c = String(P.pgbenchClients);
      log(`pgbench -T ${P.pgbenchSeconds} -c ${c} -j ${c} (archive_command = ${archiveMode})`);
      let maxReady = 0;
      const poll = setInterval(() => (maxReady = Math.max(maxReady, readyCount())), 500);
      let bench;
      try {
        bench = await must(
          join(pgBin, 'pgbench'),
          ['-T', String(P.pgbenchSeconds), '-c', c, '-j', c, ...pgConn, 'postgres'],
          { asPg: true },
        );
      } finally {
        clearInterval(poll);
      }
      const tps = bench.stdout.match(/tps = ([\d.]+)/)?.[1];
      const readyAtEnd = readyCount();
      const td = performance.now();
      await waitFor('archiver to drain after pgbench', async () => readyCount() === 0, 1_800_000, 100);
      extra.pgbench = {
        seconds: P.pgbenchSeconds,
        clients: P.pgbenchClients,
        tps: tps ? Number(tps) : undefined,
        archiveCommand: archiveMode,
        archiveReadyMax: maxReady,
        archiveReadyAtEnd: readyAtEnd,
        archiveDrainS: +((performance.now() - td) / 1000).toFixed(2),
      };
      log(
        `pgbench: ${tps} tps; archive backlog (.ready files) max ${maxReady}, at end ${readyAtEnd}, drained in ${extra.pgbench.archiveDrainS} s`,
      );

      if (run('pgfleet')) {
        await setArchive('pgfleet');
        await step('incr backup', 'pgfleet (zstd, 2 workers)', () => pgfBackup('incr'), {
          naPattern:
            /not (yet )?implemented|unimplemented|not supported|unsupported|unknown (backup )?type|invalid.*type/i,
        });
      }
      if (run('pgbackrest')) {
        await setArchive('pgbackrest');
        for (const codec of ['zstd', 'lz4'])
          await step('incr backup', `pgBackRest ${codec}, process-max 2`, () => brBackup(codec, 'incr'));
      }
    }

    // ---- 2c'. block-level incrementals (issue 14): 1% of the big tables' rows updated -------
    // Each measured incremental follows its own fresh random update of --update-pct of the rows
    // of every table of at least 10% of the database (statistically the same change set for
    // each tool): pgfleet block-incr, pgfleet file-incr (--file-incremental), pgBackRest incr.
    // Then a chain of --block-incr-links block incrementals is restored against its full.
    if (run('block-incr') && (run('pgfleet') || run('pgbackrest'))) {
      const big = await pg.query(
        `SELECT c.oid::regclass::text AS t,
                (SELECT quote_ident(a.attname) FROM pg_attribute a
                  WHERE a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped
                    AND NOT EXISTS (SELECT 1 FROM pg_index i WHERE i.indrelid = c.oid AND a.attnum = ANY (i.indkey))
                  ORDER BY a.attnum DESC LIMIT 1) AS col
           FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
          WHERE c.relkind = 'r' AND n.nspname NOT IN ('pg_catalog', 'information_schema')
            AND pg_relation_size(c.oid) >= 0.1 * pg_database_size(current_database())`,
      );
      const tables = big.filter((b) => b.col);
      const updateRows = async () => {
        const t0 = performance.now();
        let rows = 0;
        for (const { t, col } of tables) {
          if (!P.updateLocality) {
            const r = await pg.query(
              `WITH u AS (UPDATE ${t} SET ${col} = ${col} WHERE random() < ${P.updatePct / 100} RETURNING 1) SELECT count(*)::int AS n FROM u`,
            );
            rows += r[0].n;
            continue;
          }
          // Every row of a few page ranges (a TID range scan): the changes of a table whose
          // recent rows are the hot ones, where random updates touch ~45% of the pages at 1%.
          const [{ pages }] = await pg.query(`SELECT (pg_relation_size('${t}') / 8192)::int AS pages`);
          const len = Math.max(1, Math.round((pages * P.updatePct) / 100 / LOCAL_RANGES));
          for (let i = 0; i < LOCAL_RANGES; i++) {
            const from = Math.floor(Math.random() * Math.max(1, pages - len));
            const r = await pg.query(
              `WITH u AS (UPDATE ${t} SET ${col} = ${col} WHERE ctid >= '(${from},0)'::tid AND ctid < '(${from + len},0)'::tid RETURNING 1) SELECT count(*)::int AS n FROM u`,
            );
            rows += r[0].n;
          }
        }
        log(
          `updated ${rows} rows of ${tables.map((x) => x.t).join(', ')} in ${((performance.now() - t0) / 1000).toFixed(1)} s`,
        );
        return rows;
      };
      extra.blockIncr = {
        updatePct: P.updatePct,
        updateLocality: P.updateLocality,
        tables: tables.map((x) => x.t),
        links: P.blockIncrLinks,
        wholeBlocks: P.wholeBlocks,
      };
      if (run('pgfleet') && pgfFull.zstd) {
        await setArchive('pgfleet');
        if (P.wholeBlocks) {
          agentExtraArgs = ['--whole-blocks'];
          await startAgent('zstd');
        }
        let lastLabel;
        for (let i = 1; i <= P.blockIncrLinks; i++) {
          await updateRows();
          if (i === 1) {
            await step('incr after 1% update', 'pgfleet block-incr (zstd, 2 workers)', async () => {
              const r = await pgfBackup('incr');
              lastLabel = r.label;
              return r;
            });
          } else {
            lastLabel = (await pgfBackup('incr')).label;
          }
        }
        if (lastLabel) {
          // The chain ends with the source as it is now (the incr phase's pgbench ran before it;
          // the updates above rewrite values unchanged, so only pgbench moved the checksums).
          const chainEnd = await dataFacts(pg);
          await step(`restore full + ${P.blockIncrLinks} block-incr`, 'pgfleet (zstd, 2 workers)', () =>
            timedRestore('pgfleet', join(work, 'restore-pgfleet-block-chain'), pgfRestore(lastLabel), chainEnd),
          );
          // The chain's target is against a full of the same data: by now the source holds the
          // sustained-archiving phase's rows too (6.3 GB against the first full's 3.1 GB on
          // 2026-12-07), so the first full's restore is no yardstick. A new full of the chain's
          // end is taken and restored (nothing changed since its last link).
          const sameFull = await pgfBackup('full');
          await step('restore of a full of the same data', 'pgfleet (zstd, 2 workers)', () =>
            timedRestore('pgfleet', join(work, 'restore-pgfleet-block-full'), pgfRestore(sameFull.label), chainEnd),
          );
        }
        if (P.wholeBlocks) agentExtraArgs = [];
        // The same block-level incremental with every changed block stored whole (--whole-blocks,
        // as before XOR deltas), then the file-level one.
        for (const [args, what] of [
          [['--whole-blocks'], 'pgfleet block-incr whole blocks (zstd, 2 workers)'],
          [['--file-incremental'], 'pgfleet file-incr (zstd, 2 workers)'],
        ]) {
          await updateRows();
          agentExtraArgs = args;
          try {
            await startAgent('zstd');
            await step('incr after 1% update', what, () => pgfBackup('incr'));
          } finally {
            agentExtraArgs = [];
            await startAgent('zstd');
          }
        }
      }
      if (run('pgbackrest')) {
        await setArchive('pgbackrest');
        await updateRows();
        await step('incr after 1% update', 'pgBackRest zstd, process-max 2', () => brBackup('zstd', 'incr'));
      }
    }

    // ---- 2d. wal-push of single 16 MiB segments: one process per segment, like PostgreSQL ---
    if (run('wal-push') && (run('pgfleet') || run('pgbackrest'))) {
      // Source: fresh, real, completed, full segments of this cluster, written while archive_command
      // is off so that no repository holds them yet (an "already archived" answer would be a
      // shortcut). OLTP-like content: a checkpoint, then UPDATEs of 200k pgbench accounts (full-page
      // images + tuples). Recycled files carry future names and stale headers, and segments ended
      // by pg_switch_wal() are mostly zeros, so neither is used.
      await setArchive('none');
      const walDir = join(pg.dataDir, 'pg_wal');
      const want = P.walSegments + 1; // the first push per tool is a warm-up, not counted
      const [{ first }] = await pg.query(`SELECT pg_walfile_name(pg_current_wal_lsn()) AS first`);
      const isFull = (f) => {
        const fd = openSync(join(walDir, f), 'r');
        try {
          const page = Buffer.alloc(8192 - 24); // last page without its short header
          readSync(fd, page, 0, page.length, fstatSync(fd).size - page.length);
          return page.some((b) => b !== 0);
        } finally {
          closeSync(fd);
        }
      };
      const fullSegments = async () => {
        const [{ cur }] = await pg.query(`SELECT pg_walfile_name(pg_current_wal_lsn()) AS cur`);
        return readdirSync(walDir)
          .filter((f) => /^[0-9A-F]{24}$/.test(f) && f > first && f < cur)
          .sort()
          .filter(isFull)
          .slice(0, want);
      };
      let picked = [];
      for (let i = 0; i < 100 && picked.length < want; i++) {
        if (i % 5 === 0) log(`writing WAL for the wal-push comparison (${picked.length}/${want} full segments)`);
        await pg.query('CHECKPOINT');
        const lo = ((i * 200_000) % (P.scale * 100_000)) + 1;
        await pg.query('UPDATE pgbench_accounts SET abalance = abalance + 1 WHERE aid BETWEEN $1 AND $2', [
          lo,
          lo + 199_999,
        ]);
        picked = await fullSegments();
      }
      if (picked.length < 2) throw new Error(`only ${picked.length} full WAL segments in ${walDir}; need at least 2`);
      if (picked.length < want)
        log(`WARNING: only ${picked.length} full segments available (wanted ${want}); measuring ${picked.length - 1}`);
      const scratch = join(work, 'scratch');
      await mkdir(join(scratch, 'pg_wal'), { recursive: true });
      await mkdir(join(scratch, 'global'), { recursive: true });
      for (const f of picked) await copyFile(join(walDir, f), join(scratch, 'pg_wal', f));
      await copyFile(join(pg.dataDir, 'global/pg_control'), join(scratch, 'global/pg_control'));
      await copyFile(join(pg.dataDir, 'PG_VERSION'), join(scratch, 'PG_VERSION'));
      if (pgUser) await testkit.chownToPostgres(scratch, { recursive: true });
      extra.walPushSegments = picked.length - 1;
      extra.walPushSource = `${picked.length} full segments of this run, ${picked[0]} to ${picked.at(-1)}`;

      const pushAll = async (label, cmdFor) => {
        const times = [];
        let stderrSample;
        for (const [i, f] of picked.entries()) {
          const r = await exec('/bin/sh', ['-c', cmdFor(`pg_wal/${f}`)], {
            asPg: true,
            cwd: scratch,
            timeoutMs: 120_000,
          });
          if (r.code !== 0)
            throw new Error(
              `${label} of ${f} exited with ${r.code}: ${(r.stderr.trim() || r.stdout.trim()).split('\n').slice(-5).join('\n')}`,
            );
          // anything beyond info-level log lines (e.g. a daemon that declined and a direct push)
          stderrSample ??=
            r.stderr
              .split('\n')
              .filter((l) => l.trim() && !/^\{"level":(10|20|30),/.test(l))
              .join('\n') || undefined;
          if (i > 0) times.push(r.ms);
        }
        times.sort((a, b) => a - b);
        const mean = times.reduce((s, x) => s + x, 0) / times.length;
        return {
          wallS: mean / 1000,
          medianMs: +times[Math.floor(times.length / 2)].toFixed(1),
          maxMs: +times.at(-1).toFixed(1),
          segments: times.length,
          ...(stderrSample ? { note: `stderr: ${stderrSample.split('\n')[0].slice(0, 300)}` } : {}),
        };
      };
      if (run('pgfleet')) {
        // (a) no daemon listens for the scratch dir: wal-push archives the file itself
        for (const codec of ['zstd', 'lz4']) {
          await step('wal-push, per 16 MiB segment', `pgfleet-agent wal-push (${codec}, no daemon)`, async () => {
            const repo = join(work, `walpush-pgfleet-${codec}`);
            await mkdir(repo);
            if (pgUser) await chown(repo, pgUser.uid, pgUser.gid);
            // No daemon ever connected for this scratch cluster, so it has no cluster key (WAL
            // names are authenticated with it): give wal-push one, as the daemon would have written.
            const keyFile = join(work, `walbench-${codec}.key`);
            await writeFile(keyFile, randomBytes(32).toString('hex'), { mode: 0o600 });
            if (pgUser) await chown(keyFile, pgUser.uid, pgUser.gid);
            const r = await pushAll(
              'pgfleet wal-push',
              (p) =>
                `${shq(process.execPath)} ${shq(WAL_PUSH_BIN)} wal-push ${shq(p)} --cluster walbench --repo-path ${shq(repo)} --cluster-key-file ${shq(keyFile)} --compress ${codec}`,
            );
            return { ...r, outputBytes: (await treeBytes(join(repo, 'walbench', 'wal'))) / (r.segments + 1) };
          });
        }
        // (b) handed to the running agent daemon over its unix socket (when this build has one)
        await step(
          'wal-push, per 16 MiB segment',
          'pgfleet-agent wal-push (zstd, via agent daemon)',
          async () => {
            const help = await exec(process.execPath, [AGENT_BIN, 'wal-push', '--help']);
            if (!/--socket/.test(help.stdout + help.stderr))
              throw new Error('not implemented: wal-push has no --socket option in this build');
            const real = realpathSync(pg.dataDir);
            const socket = join(dirname(real), `${basename(real)}.pgfleet-agent.sock`);
            if (!existsSync(socket)) throw new Error(`not implemented: the agent daemon has no socket at ${socket}`);
            // the daemon serves its own cluster and repository: push as archive_command would
            const walRoot = join(pgfRepo, CLUSTER, 'wal');
            const before = await treeBytes(walRoot);
            const r = await pushAll(
              'pgfleet wal-push via daemon',
              (p) =>
                `${shq(process.execPath)} ${shq(WAL_PUSH_BIN)} wal-push ${shq(p)} --socket ${shq(socket)} --cluster ${CLUSTER} --repo-path ${shq(pgfRepo)}`,
            );
            return { ...r, outputBytes: ((await treeBytes(walRoot)) - before) / (r.segments + 1) };
          },
          { naPattern: /^not implemented/ },
        );
      }
      if (run('pgbackrest')) {
        for (const codec of ['zstd', 'lz4']) {
          await step('wal-push, per 16 MiB segment', `pgbackrest archive-push (${codec})`, async () => {
            const repo = join(work, `walpush-pgbr-${codec}`);
            await mkdir(repo);
            if (pgUser) await chown(repo, pgUser.uid, pgUser.gid);
            // a stanza of its own on a scratch repo, one repo only (same system, so archive-push accepts the segments)
            const conf = join(work, `walpush-pgbr-${codec}.conf`);
            await writeFile(
              conf,
              [
                '[global]',
                `repo1-path=${repo}`,
                `compress-type=${BR_CODEC[codec]}`,
                `log-path=${join(work, 'pgbr-log')}`,
                `lock-path=${join(work, 'pgbr-lock')}`,
                `spool-path=${join(work, 'pgbr-spool')}`,
                'log-level-console=warn',
                'log-level-file=off',
                '',
                '[walbench]',
                `pg1-path=${pg.dataDir}`,
                `pg1-port=${pg.port}`,
                `pg1-socket-path=${pg.socketDir}`,
                'pg1-user=postgres',
                '',
              ].join('\n'),
            );
            await chmod(conf, 0o644);
            await must(pgbackrestBin, [`--config=${conf}`, '--stanza=walbench', 'stanza-create'], { asPg: true });
            // %p is relative to PGDATA: pg1-path points at the scratch copy (pg_wal + pg_control)
            const base = `${shq(pgbackrestBin)} --config=${shq(conf)} --stanza=walbench --pg1-path=${shq(scratch)}`;
            const r = await pushAll(`pgbackrest archive-push`, (p) => `${base} archive-push ${shq(p)}`);
            return { ...r, outputBytes: (await treeBytes(join(repo, 'archive'))) / (r.segments + 1) };
          });
        }
      }
    }

    // ---- agent memory over the whole run ----------------------------------------------------
    if (agent) extra.agentPeakRssWholeRunMB = +((procStatusKb(agent.child.pid, 'VmHWM') ?? 0) / 1024).toFixed(1);
  } catch (err) {
    // keep what was measured so far: the report below prints it, marked as aborted
    result.aborted = String(err?.message ?? err);
    problems.push(`run aborted: ${err?.stack ?? err}`);
    if (interrupted) throw err;
  } finally {
    log('tearing down');
    for (const r of restored) await r.stop().catch(() => {});
    await agent?.stop().catch(() => {});
    await controller?.stop().catch(() => {});
    await pg?.stop().catch(() => {});
    if (!keepTmp) {
      await rm(work, { recursive: true, force: true });
      tempDirs.delete(work);
    } else log(`kept ${work} (PGFLEET_KEEP_TMP=1)`);
  }

  result.finishedAt = new Date().toISOString();
  extra.loadavgAtEnd = os.loadavg().map((x) => +x.toFixed(2));
  return { result, stamp };
}

// ---------------------------------------------------------------------------------------------
// report
// ---------------------------------------------------------------------------------------------
function addRatios(result) {
  const base = (op, codec) =>
    rows.find((r) => r.operation === op && r.tool.startsWith(`pgBackRest ${codec}`) && r.status === 'ok');
  const walBase = (codec) =>
    rows.find(
      (r) => r.operation.startsWith('wal-push') && r.tool === `pgbackrest archive-push (${codec})` && r.status === 'ok',
    );
  for (const r of rows) {
    if (!r.tool.startsWith('pgfleet') || r.status !== 'ok') continue;
    for (const codec of ['zstd', 'lz4']) {
      const b = r.operation.startsWith('wal-push') ? walBase(codec) : base(r.operation, codec);
      if (!b) continue;
      r[`timeVsPgbackrest_${codec}`] = +(r.wallS / b.wallS).toFixed(2);
      if (r.outputBytes !== undefined && b.outputBytes && r.operation !== 'restore')
        r[`sizeVsPgbackrest_${codec}`] = +(r.outputBytes / b.outputBytes).toFixed(2);
    }
  }
  const input = result.input.pgdataBytesWithoutWal;
  for (const r of rows) {
    if (r.status === 'ok' && r.outputBytes !== undefined && input && /backup/.test(r.operation))
      r.outputPctOfInput = +((100 * r.outputBytes) / input).toFixed(1);
  }
}

function table(result) {
  const head = [
    'operation',
    'tool',
    'wall s',
    'output MB',
    '% of PGDATA',
    'time vs pgBR zstd',
    'time vs pgBR lz4',
    'size vs pgBR zstd',
    'size vs pgBR lz4',
  ];
  const fmtS = (s) => (s === undefined ? '' : s < 1 ? s.toFixed(3) : s.toFixed(2));
  const x = (v) => (v === undefined ? '' : `${v.toFixed(2)}x`);
  // Grouped by operation (in the order operations first ran): a row measured later, like the
  // encrypted runs, stands beside the others of its operation.
  const opOrder = [...new Set(rows.map((r) => r.operation))];
  const ordered = rows
    .map((r, i) => ({ r, i }))
    .sort((a, b) => opOrder.indexOf(a.r.operation) - opOrder.indexOf(b.r.operation) || a.i - b.i)
    .map((x) => x.r);
  const body = ordered.map((r) =>
    r.status !== 'ok'
      ? [r.operation, r.tool, r.status, '', '', '', '', '', '']
      : [
          r.operation,
          r.tool,
          fmtS(r.wallS),
          r.outputBytes === undefined ? '' : mb(r.outputBytes).toFixed(1),
          r.outputPctOfInput === undefined ? '' : `${r.outputPctOfInput}%`,
          x(r.timeVsPgbackrest_zstd),
          x(r.timeVsPgbackrest_lz4),
          x(r.sizeVsPgbackrest_zstd),
          x(r.sizeVsPgbackrest_lz4),
        ],
  );
  const w = head.map((h, i) => Math.max(h.length, ...body.map((b) => String(b[i]).length)));
  const line = (cells) => cells.map((c, i) => (i >= 2 ? String(c).padStart(w[i]) : String(c).padEnd(w[i]))).join(' | ');
  const text = [line(head), w.map((n) => '-'.repeat(n)).join('-|-'), ...body.map(line)].join('\n');
  const md = [
    `| ${head.join(' | ')} |`,
    `|${head.map((_, i) => (i >= 2 ? '---:' : '---')).join('|')}|`,
    ...body.map((b) => `| ${b.join(' | ')} |`),
  ].join('\n');
  const e = result.extra;
  const notes = [];
  const inp = result.input;
  if (result.host.loadavgAtStart)
    notes.push(
      `load average (1/5/15 min) at start ${result.host.loadavgAtStart.join(' ')}${e.loadavgAtEnd ? `, at end ${e.loadavgAtEnd.join(' ')}` : ''} on ${result.host.cpus} CPUs`,
    );
  if (inp.pgdataBytesWithoutWal)
    notes.push(
      `input: PGDATA ${mb(inp.pgdataBytesWithoutWal).toFixed(0)} MB without pg_wal (pgbench scale ${result.params.scale}, ${inp.pgbenchAccounts} accounts; noisy table ${inp.noisyRows} rows)`,
    );
  if (e.agentPeakRssFullBackupMB !== undefined)
    notes.push(
      `pgfleet agent peak RSS (VmHWM) during the full backup: ${e.agentPeakRssFullBackupMB} MB; sampled peak of its process tree: ${e.agentPeakRssSampledTreeMB} MB`,
    );
  if (e.agentPeakRssLz4FullBackupMB !== undefined)
    notes.push(
      `pgfleet agent peak RSS (VmHWM) during the lz4 full backup (agent restarted with --compress lz4): ${e.agentPeakRssLz4FullBackupMB} MB`,
    );
  if (e.agentPeakRssMB && Object.keys(e.agentPeakRssMB).length > 0)
    notes.push(
      `pgfleet agent peak RSS (VmHWM) per operation (backups and restores on a fresh agent each; '(pair)': the encryption pairs, backup on a fresh agent then its restore on the same one, VmHWM reset before the restore, the highest over the pairs): ${Object.entries(
        e.agentPeakRssMB,
      )
        .map(([k, v]) => `${k} ${v} MB`)
        .join(', ')}`,
    );
  if (e.agentPeakRssWholeRunMB !== undefined)
    notes.push(
      `pgfleet agent peak RSS after the lz4 backup, over the restores, incr and wal-push (zstd agent restarted): ${e.agentPeakRssWholeRunMB} MB`,
    );
  if (e.pgbench)
    notes.push(
      `pgbench -T ${e.pgbench.seconds} -c ${e.pgbench.clients}: ${e.pgbench.tps} tps with archive_command = ${e.pgbench.archiveCommand}; archive backlog max ${e.pgbench.archiveReadyMax} .ready files, ${e.pgbench.archiveReadyAtEnd} at the end, drained in ${e.pgbench.archiveDrainS} s`,
    );
  if (e.encryption) {
    const enc = e.encryption;
    for (const [op, m] of [
      ['full backup', enc.backup],
      ['restore', enc.restore],
    ]) {
      if (!m) continue;
      notes.push(
        `encryption at rest, ${op} (zstd, ${enc.pairs} alternating pairs): wall plaintext ${m.plaintextWallS.join('/')} s, encrypted ${m.encryptedWallS.join('/')} s, median overhead ${m.wallOverheadPct}%; agent CPU plaintext ${m.plaintextAgentCpuS.join('/')} s, encrypted ${m.encryptedAgentCpuS.join('/')} s, median overhead ${m.agentCpuOverheadPct}%`,
      );
    }
  }
  const wal = rows.filter((r) => r.operation.startsWith('wal-push') && r.status === 'ok');
  for (const r of wal)
    notes.push(
      `${r.tool}: mean ${(r.wallS * 1000).toFixed(1)} ms, median ${r.medianMs} ms, max ${r.maxMs} ms over ${r.segments} segments (${e.walPushSource})${r.note ? `; ${r.note}` : ''}`,
    );
  for (const r of rows.filter((r) => r.agentCpuS !== undefined && r.status === 'ok'))
    notes.push(`${r.operation} | ${r.tool}: agent CPU ${r.agentCpuS} s (user + system, all threads)`);
  for (const r of rows.filter((r) => r.note && r.status === 'ok' && r.operation === 'restore'))
    notes.push(`${r.operation} | ${r.tool}: ${r.note}`);
  for (const r of rows.filter((r) => r.status !== 'ok'))
    notes.push(`${r.operation} | ${r.tool}: ${r.status}: ${r.note?.split('\n').slice(0, 6).join(' / ')}`);
  return { text, md, notes };
}

let exitCode = 0;
try {
  const { result, stamp } = await main();
  addRatios(result);
  const { text, md, notes } = table(result);
  const h = result.host;
  console.log(
    `\npgfleet benchmark ${result.startedAt} (${[h.gitCommit ?? 'no git', `${h.cpus} x ${h.cpuModel}`, h.postgres, h.pgbackrest].filter(Boolean).join('; ')})`,
  );
  if (result.aborted) console.log(`ABORTED, partial results: ${result.aborted.split('\n')[0]}`);
  console.log(`command: ${result.command}\n`);
  console.log(text);
  console.log('');
  for (const n of notes) console.log(`- ${n}`);
  console.log(
    "\nwall s = the tool's own wall time (for pgfleet: `pgfleet backup|restore --wait`, CLI start-up included); output = apparent bytes written for that backup (WAL archive excluded, except pg_basebackup's pg_wal.tar); wal-push rows: mean seconds and bytes per segment.",
  );
  await mkdir(opts.out, { recursive: true });
  const base = join(opts.out, stamp);
  await writeFile(`${base}.json`, JSON.stringify(result, null, 2) + '\n');
  await writeFile(
    `${base}.md`,
    `${md}\n\n${notes.map((n) => `- ${n}`).join('\n')}\n\nCommand: \`${result.command}\`\n`,
  );
  console.log(`\nresults: ${base}.json (and .md)`);
  if (problems.length) {
    exitCode = 1;
    console.error(`\n${problems.length} step(s) failed:\n${problems.map((p) => `  * ${p}`).join('\n')}`);
  }
} catch (err) {
  console.error(`\nbenchmark aborted: ${err?.stack ?? err}`);
  exitCode = 1;
}
process.exit(exitCode);
