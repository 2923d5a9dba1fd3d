#!/usr/bin/env node
/**
 * How fast the WAL decoder (packages/pg/src/wal-decode) reads PostgreSQL 15 WAL on one core:
 * pgbench WAL is generated once by a private PostgreSQL (archived by `cp` into --wal-dir, reused
 * by later runs), the segments are read into memory, then decoded single-threaded: records only,
 * records with the CRC-32C check, and records with the heap/transaction interpretation `wal search`
 * does. pg_waldump over the same files is timed for scale (it also formats text). Prints MB of
 * WAL per second of CPU time of this process (the machine is shared: wall time measures the
 * neighbours too).
 *
 *   node bench/wal-decode.mjs [--size-mb 1024] [--runs 3] [--wal-dir /tmp/pgfleet-bench-wal-decode]
 */
import { execFileSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { mkdir, readdir, readFile, rm, stat } from 'node:fs/promises';
import { availableParallelism } from 'node:os';
import { join } from 'node:path';
import { parseArgs, promisify } from 'node:util';
import zlib from 'node:zlib';

const { values } = parseArgs({
  options: {
    'size-mb': { type: 'string', default: '1024' },
    runs: { type: 'string', default: '3' },
    'wal-dir': { type: 'string', default: '/tmp/pgfleet-bench-wal-decode' },
  },
});
const sizeMb = Number(values['size-mb']);
const walDir = values['wal-dir'];
const pgMod = await import('../packages/pg/dist/index.js');
const { WalDecoder, RelationNames, TransactionTracker } = pgMod;
const log = (msg) => console.error(`[${new Date().toISOString().slice(11, 19)}] ${msg}`);
const cpuSeconds = (since) => {
  const u = process.cpuUsage(since);
  return (u.user + u.system) / 1e6;
};
const coreCount = () => availableParallelism();
const median = (xs) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];
const SEG = 16 << 20;
const zstdDecompress = promisify(zlib.zstdDecompress);

async function segmentNames() {
  if (!existsSync(walDir)) return [];
  return (await readdir(walDir)).filter((n) => /^[0-9A-F]{24}$/.test(n)).sort();
}

async function generate() {
  const { chownToPostgres, startPostgres, pgBinDir } = await import('@pgfleet/testkit');
  // Segments of an earlier, smaller run came from another cluster: start from an empty dir.
  await rm(walDir, { recursive: true, force: true });
  await mkdir(walDir, { recursive: true });
  await chownToPostgres(walDir);
  log(`generating ~${sizeMb} MB of pgbench WAL into ${walDir}`);
  const pg = await startPostgres({
    archiveCommand: `cp %p ${walDir}/%f`,
    settings: { max_wal_size: '4GB', checkpoint_timeout: '5min', synchronous_commit: 'off' },
  });
  try {
    const env = { ...process.env, ...pg.env };
    execFileSync(join(pgBinDir(), 'pgbench'), ['-i', '-s', '20', '-q'], { env, stdio: 'ignore' });
    for (;;) {
      const [{ bytes }] = await pg.query("select pg_current_wal_lsn() - '0/0'::pg_lsn as bytes");
      if (Number(bytes) >= sizeMb * 1024 * 1024) break;
      execFileSync(join(pgBinDir(), 'pgbench'), ['-c', '4', '-j', '2', '-t', '20000', '-n'], { env, stdio: 'ignore' });
      log(`  ${Math.round(Number(bytes) / 1048576)} MB`);
    }
    await pg.query('checkpoint');
    const [{ name }] = await pg.query('select pg_walfile_name(pg_current_wal_insert_lsn()) as name');
    await pg.query('select pg_switch_wal()');
    while (!(await segmentNames()).includes(name)) await new Promise((r) => setTimeout(r, 200));
  } finally {
    await pg.stop();
  }
}

if ((await segmentNames()).length * 16 < sizeMb) await generate();
const names = (await segmentNames()).slice(0, Math.ceil(sizeMb / 16));
const segments = [];
for (const name of names) {
  if ((await stat(join(walDir, name))).size !== SEG) continue;
  const segno = parseInt(name.slice(8, 16), 16) * 256 + parseInt(name.slice(16), 16);
  segments.push({ name, bytes: await readFile(join(walDir, name)), startLsn: segno * SEG });
}
const mb = (segments.length * SEG) / 1048576;
log(`${segments.length} segments (${mb} MB) in memory`);

function decodeOnce(mode) {
  const d = new WalDecoder({ segmentSize: SEG, checkCrc: mode === 'crc' });
  // 'track': what `wal search` does per record (row counts per transaction and table, catalog
  // following); the snapshot is empty here, so every table is "unknown" but the work is the same.
  const tracker =
    mode === 'track' ? new TransactionTracker(new RelationNames({ lsn: '0/0', databases: [] })) : undefined;
  let records = 0;
  let blocks = 0;
  let transactions = 0;
  for (const s of segments) {
    for (const r of d.feed(s.bytes, s.startLsn)) {
      records++;
      blocks += r.blocks.length;
      if (tracker && tracker.observe(r)) transactions++;
    }
  }
  return { records, blocks, transactions, end: d.end() };
}

const results = [];
for (const mode of ['records', 'crc', 'track']) {
  const cpu = [];
  let last;
  for (let i = 0; i < Number(values.runs); i++) {
    const t = process.cpuUsage();
    last = decodeOnce(mode);
    cpu.push(cpuSeconds(t));
  }
  results.push({ mode, ...last, cpuS: median(cpu), mbPerS: mb / median(cpu) });
}
// The search's whole path on this machine: segments stored zstd-compressed (level 2, as the
// repository stores WAL), expanded on the libuv threadpool (node:zlib async) a few segments
// ahead while the main thread decodes and tracks: wall-clock MB/s on all cores.
const compressed = segments.map((s) => ({
  ...s,
  bytes: zlib.zstdCompressSync(s.bytes, { params: { [zlib.constants.ZSTD_c_compressionLevel]: 2 } }),
}));
const ratio = compressed.reduce((a, s) => a + s.bytes.length, 0) / (segments.length * SEG);
const pipelineWall = [];
const pipelineCpu = [];
for (let i = 0; i < Number(values.runs); i++) {
  const t = process.cpuUsage();
  const t0 = performance.now();
  const d = new WalDecoder({ segmentSize: SEG });
  const tracker = new TransactionTracker(new RelationNames({ lsn: '0/0', databases: [] }));
  const ahead = 4;
  const pending = compressed.slice(0, ahead).map((s) => zstdDecompress(s.bytes));
  for (let k = 0; k < compressed.length; k++) {
    const bytes = await pending[k];
    if (k + ahead < compressed.length) pending.push(zstdDecompress(compressed[k + ahead].bytes));
    pending[k] = undefined;
    for (const r of d.feed(bytes, compressed[k].startLsn)) tracker.observe(r);
  }
  pipelineWall.push((performance.now() - t0) / 1000);
  pipelineCpu.push(cpuSeconds(t));
}

const waldump = join((await import('@pgfleet/testkit')).pgBinDir(), 'pg_waldump');
const t0 = Date.now();
try {
  execFileSync(waldump, ['-p', walDir, names[0], names[segments.length - 1]], {
    stdio: ['ignore', 'ignore', 'ignore'],
  });
} catch {
  // pg_waldump exits non-zero at the end of the WAL given
}
const waldumpS = (Date.now() - t0) / 1000;
console.log(
  `WAL: ${mb} MB of pgbench WAL (${segments.length} segments), ${results[0].records} records, ${results[2].transactions} transactions; decode ended: ${results[0].end.reason}`,
);
console.log('mode        CPU s   MB/s (one core)');
for (const r of results)
  console.log(`${r.mode.padEnd(10)} ${r.cpuS.toFixed(2).padStart(6)} ${r.mbPerS.toFixed(0).padStart(7)}`);
console.log(
  `zstd (level 2, ${(ratio * 100).toFixed(1)}% of the size) expanded on the threadpool + decode + track: ${median(pipelineWall).toFixed(2)} s wall = ${(mb / median(pipelineWall)).toFixed(0)} MB/s (CPU ${median(pipelineCpu).toFixed(2)} s, ${coreCount()} cores)`,
);
console.log(`pg_waldump (text to /dev/null, wall) ${waldumpS.toFixed(2)} s = ${(mb / waldumpS).toFixed(0)} MB/s`);
