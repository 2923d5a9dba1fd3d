#!/usr/bin/env node
/**
 * Repository reads at fleet scale (issue 16): a generated posix repository of one cluster with
 * 2,000 backups (a full every 7th, incrementals between, 4 tiny files each, manifests and
 * summaries signed exactly as the agent writes them) and 1M archived WAL segments (tiny objects
 * under authenticated keys: only the shape of the key tree matters), then the questions the
 * agent asks of it, timed:
 *
 *   listBackups        the summaries of every complete backup (backup prior selection, drills)
 *   restore target     planRestore for a time target between two backups (choose by summaries,
 *                      read the chosen manifest) + the presence check of its WAL range (every
 *                      segment from its walStart to the next backup's start archived)
 *   expire planning    runExpire --dry-run of the oldest 7 backups and the WAL before the 8th
 *   verify planning    what verify lists and reads before its first object check: every object
 *                      under backup/, every manifest, every archived WAL file (verify checks
 *                      everything, so this one is O(files) by design); as verify does it:
 *                      manifests 4 at a time, the WAL listed without a stat per object
 *   verify planning, before   the same the old way, for comparison: manifests one after
 *                      another, a stat per WAL object
 *   old listBackups    for comparison: every object under backup/ listed and every manifest
 *                      parsed (what listBackups did before summaries)
 *
 *   node bench/repo-scale.mjs [--backups 2000] [--wal 1000000] [--runs 3] [--repo DIR] [--keep] [--only verify,expire]
 *
 * --repo DIR reuses a repository generated there earlier with the same --backups/--wal (and
 * generates it when absent); --keep leaves it behind. Objects are written with fs directly, no
 * fsync: generation is not what is measured.
 */
import { createHash } from 'node:crypto';
import { existsSync } from 'node:fs';
import { mkdir, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseArgs } from 'node:util';

const { values } = parseArgs({
  options: {
    backups: { type: 'string', default: '2000' },
    wal: { type: 'string', default: '1000000' },
    runs: { type: 'string', default: '3' },
    repo: { type: 'string' },
    keep: { type: 'boolean', default: false },
    only: { type: 'string' },
  },
});
const { PosixDriver, Repository, sealManifest, secretManifestKeys, summarizeManifest, summaryMacName, walMac } =
  await import('../packages/storage/dist/index.js');
const { planRestore } = await import('../packages/agent/dist/restore/plan.js');
const { runExpire } = await import('../packages/agent/dist/retention/expire.js');

const C = 'fleet';
const BACKUPS = Number(values.backups);
const WAL = Number(values.wal);
const RUNS = Number(values.runs);
const SEG = 16 << 20;
const KEYS = secretManifestKeys(Buffer.alloc(32, 7));
const KEY = KEYS.keyFor(C);
const silent = { info() {}, warn() {}, error() {}, debug() {}, trace() {}, fatal() {}, child: () => silent };
const log = (msg) => console.error(`[${new Date().toISOString().slice(11, 19)}] ${msg}`);
const sha = (b) => createHash('sha256').update(b).digest('hex');
const hex8 = (n) => n.toString(16).toUpperCase().padStart(8, '0');
const segName = (n) => `00000001${hex8(Math.floor(n / 256))}${hex8(n % 256)}`;
const lsnOf = (n, off) => {
  const v = BigInt(n) * BigInt(SEG) + BigInt(off);
  return `${(v >> 32n).toString(16).toUpperCase()}/${(v & 0xffffffffn).toString(16).toUpperCase()}`;
};
const T0 = Date.UTC(2025, 0, 1);
const STEP_MS = 6 * 3600_000;
/** Segments per backup interval: the archive spreads evenly over the backups. */
const PER_BACKUP = Math.max(4, Math.floor(WAL / BACKUPS));
const label = (i) => {
  const d = new Date(T0 + i * STEP_MS);
  const p = (n) => String(n).padStart(2, '0');
  return `${d.getUTCFullYear()}${p(d.getUTCMonth() + 1)}${p(d.getUTCDate())}-${p(d.getUTCHours())}${p(d.getUTCMinutes())}${p(d.getUTCSeconds())}${i % 7 === 0 ? 'F' : 'I'}`;
};

/** Runs `fns` with at most `limit` in flight. */
async function pool(count, limit, fn) {
  let next = 0;
  await Promise.all(
    Array.from({ length: limit }, async () => {
      while (next < count) await fn(next++);
    }),
  );
}

const root = values.repo ?? (await mkdtemp(join(tmpdir(), 'pgfleet-bench-repo-scale-')));
const shapeMark = join(root, `bench-shape-${BACKUPS}-${WAL}`);

async function generate() {
  log(`generating ${BACKUPS} backups and ${WAL} WAL segments in ${root}`);
  await rm(root, { recursive: true, force: true });
  await mkdir(root, { recursive: true });
  const repo = new Repository(new PosixDriver(root), KEYS);
  await repo.init();
  await repo.ensureClusterInfo(C, {
    systemIdentifier: '7000000000000000001',
    pgVersionNum: 150000,
    walSegmentSize: SEG,
  });
  const content = Buffer.from('x');
  const fig = { size: 1, sha256: sha(content), storedSize: 1, storedSha256: sha(content) };
  const paths = ['PG_VERSION', 'base/1/1259', 'base/1/2619', 'global/pg_control'];
  /** Where each path's bytes are held now (an incremental references unchanged ones). */
  const holder = new Map();
  const manifests = [];
  for (let i = 0; i < BACKUPS; i++) {
    const l = label(i);
    const full = i % 7 === 0;
    const first = i * PER_BACKUP + 2;
    const files = paths.map((path, k) => {
      // An incremental stores one changed file, the others come from the backups before it.
      if (full || k === i % paths.length) holder.set(path, l);
      return { path, mtimeMs: 0, mode: 0o600, codec: 'none', backup: holder.get(path), ...fig };
    });
    manifests.push({
      format: 1,
      label: l,
      cluster: C,
      type: full ? 'full' : 'incr',
      ...(full ? {} : { priorLabel: label(i - 1) }),
      systemIdentifier: '7000000000000000001',
      pgVersionNum: 150000,
      walSegmentSize: SEG,
      timeline: 1,
      startLsn: lsnOf(first, 0x28),
      stopLsn: lsnOf(first + 1, 0x100),
      startTime: new Date(T0 + i * STEP_MS).toISOString(),
      stopTime: new Date(T0 + i * STEP_MS + 60_000).toISOString(),
      walStart: segName(first),
      walStop: segName(first + 1),
      backupLabel: `START WAL LOCATION: ${lsnOf(first, 0x28)} (file ${segName(first)})\n`,
      directories: [
        { path: 'base', mode: 0o700 },
        { path: 'base/1', mode: 0o700 },
        { path: 'global', mode: 0o700 },
      ],
      links: [],
      files,
      sizeBytes: 4,
      storedBytes: files.filter((f) => f.backup === l).length,
      agentVersion: 'bench',
    });
  }
  await pool(manifests.length, 32, async (i) => {
    const m = manifests[i];
    const dir = join(root, C, 'backup', m.label);
    await mkdir(join(dir, 'pg_data', 'base', '1'), { recursive: true });
    await mkdir(join(dir, 'pg_data', 'global'), { recursive: true });
    for (const f of m.files) if (f.backup === m.label) await writeFile(join(dir, 'pg_data', f.path), content);
    const summary = sealManifest(JSON.stringify(summarizeManifest(m), null, 1), KEY, C, summaryMacName(m.label));
    await writeFile(join(dir, 'backup.summary'), summary);
    await writeFile(join(dir, 'backup.manifest'), sealManifest(JSON.stringify(m, null, 1), KEY, C, m.label));
  });
  log(`backups written; WAL: ${Math.ceil(WAL / 256)} directories`);
  for (let d = 0; d * 256 < WAL; d++) await mkdir(join(root, C, 'wal', `00000001${hex8(d)}`), { recursive: true });
  const body = Buffer.from('w');
  await pool(WAL, 64, async (n) => {
    const name = segName(n);
    const digest = sha(name);
    const key = `${name}-${digest}-${walMac(KEY, C, name, digest)}`;
    await writeFile(join(root, C, 'wal', name.slice(0, 16), key), body);
    if (n % 100_000 === 99_999) log(`  ${n + 1} segments`);
  });
  await writeFile(shapeMark, '');
  log('generated');
}

if (!existsSync(shapeMark)) await generate();
else log(`reusing ${root}`);

const repo = new Repository(new PosixDriver(root), KEYS);
const median = (xs) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];

const only = values.only?.split(',');
async function timed(name, fn) {
  if (only && !only.some((o) => name.startsWith(o))) return;
  const ms = [];
  let note = '';
  for (let r = 0; r < RUNS; r++) {
    const t = performance.now();
    note = await fn();
    ms.push(performance.now() - t);
  }
  const fmt = (x) => (x / 1000).toFixed(2);
  console.log(
    `${name.padEnd(18)} ${fmt(median(ms)).padStart(7)} s median   (${ms.map(fmt).join(', ')})   ${note ?? ''}`,
  );
}

console.log(`repository: ${BACKUPS} backups, ${WAL} WAL segments (${PER_BACKUP} per backup interval), ${root}`);
await timed('listBackups', async () => `${(await repo.listBackups(C)).length} backups`);

// A time target three hours after a backup three quarters of the way through the repository.
const pick = Math.floor(BACKUPS * 0.75);
const target = new Date(T0 + pick * STEP_MS + 3 * 3600_000);
await timed('restore target', async () => {
  const plan = await planRestore({ repo, cluster: C, target: { kind: 'time', time: target }, log: silent });
  await plan.reader.close();
  // The WAL the target needs: every segment from the backup's start up to the next backup's start.
  const first = plan.reader.head.walStart;
  const end = segName((pick + 1) * PER_BACKUP + 2);
  let expect = first;
  let count = 0;
  for await (const w of repo.listWal(C, { timeline: 1, fromPosition: first.slice(8) })) {
    if (!w.authentic) continue;
    if (w.name >= end) break;
    if (w.name !== expect) throw new Error(`WAL gap: ${expect} missing (found ${w.name})`);
    count++;
    const n = Number.parseInt(w.name.slice(8, 16), 16) * 256 + Number.parseInt(w.name.slice(16), 16) + 1;
    expect = segName(n);
  }
  return `backup ${plan.reader.head.label}, ${count} segments present`;
});

await timed('expire planning', async () => {
  const out = await runExpire({
    cluster: C,
    repo,
    labels: Array.from({ length: 7 }, (_, i) => label(i)),
    walKeepFrom: segName(7 * PER_BACKUP + 2),
    keepRanges: [],
    dryRun: true,
    log: silent,
  });
  return `${out.deletedLabels.length} backups, ${out.walFilesDeleted} WAL files would go`;
});

await timed('verify planning', async () => {
  let objects = 0;
  const labels = new Set();
  for await (const o of repo.listBackupObjects(C)) {
    objects++;
    labels.add(o.label);
  }
  // As verify does: manifests 4 at a time, the WAL listed without a stat per object.
  const sorted = [...labels].sort();
  let manifests = 0;
  for (let i = 0; i < sorted.length; i += 4)
    for (const m of await Promise.all(sorted.slice(i, i + 4).map((l) => repo.readManifest(C, l))))
      if (m.files.length > 0) manifests++;
  let wal = 0;
  for await (const batch of repo.listWalUnsized(C)) for (const w of batch) if (w.authentic) wal++;
  return `${objects} backup objects, ${manifests} manifests, ${wal} WAL files`;
});

// The verify job itself (runVerify) up to its first object checks: the time and CPU from its
// start to its first backup object read, from the start of its WAL phase to its first WAL object
// read, and the RSS then. The repository's objects are one byte each (not valid files), so the job
// is stopped at its first WAL read rather than run to the end.
await timed('verify start', async () => {
  const { runVerify } = await import('../packages/agent/dist/verify/verify.js');
  const objects = repo.objects;
  const stop = new AbortController();
  const cpu = () => {
    const u = process.cpuUsage();
    return (u.user + u.system) / 1000;
  };
  const at = { start: performance.now(), cpu0: cpu() };
  const mark = (name) => {
    if (at[name] === undefined)
      at[name] = { ms: performance.now() - at.start, cpu: cpu() - at.cpu0, rss: process.memoryUsage().rss };
  };
  const measure = objects.measure.bind(objects);
  const walk = objects.walk.bind(objects);
  objects.measure = (...a) => {
    mark('firstBackupCheck');
    return measure(...a);
  };
  objects.walk = (...a) => {
    mark('firstWalCheck');
    stop.abort();
    return walk(...a);
  };
  let walStart;
  try {
    await runVerify({
      cluster: C,
      repo,
      full: false,
      log: silent,
      signal: stop.signal,
      progress: (p) => {
        if (p.phase === 'wal' && walStart === undefined)
          walStart = { ms: performance.now() - at.start, cpu: cpu() - at.cpu0 };
      },
    });
  } catch (err) {
    if (!stop.signal.aborted) throw err;
  } finally {
    objects.measure = measure;
    objects.walk = walk;
  }
  const s = (x) => (x / 1000).toFixed(2);
  const b = at.firstBackupCheck;
  const w = at.firstWalCheck;
  return (
    `first backup check after ${s(b.ms)} s (${s(b.cpu)} s CPU, RSS ${(b.rss / 1e6).toFixed(0)} MB); ` +
    `WAL phase from ${s(walStart.ms)} s (${s(walStart.cpu)} s CPU), first WAL check ${s(w.ms - walStart.ms)} s later ` +
    `(${s(w.cpu - walStart.cpu)} s CPU, RSS ${(w.rss / 1e6).toFixed(0)} MB); peak RSS ${((process.resourceUsage().maxRSS * 1024) / 1e6).toFixed(0)} MB`
  );
});

await timed('verify planning, before (manifests one by one, a stat per WAL object)', async () => {
  let objects = 0;
  const labels = new Set();
  for await (const o of repo.listBackupObjects(C)) {
    objects++;
    labels.add(o.label);
  }
  let manifests = 0;
  for (const l of labels) if ((await repo.readManifest(C, l)).files.length > 0) manifests++;
  let wal = 0;
  for await (const w of repo.listWal(C)) if (w.authentic) wal++;
  return `${objects} backup objects, ${manifests} manifests, ${wal} WAL files`;
});

await timed('old listBackups', async () => {
  let n = 0;
  for await (const o of repo.listBackupObjects(C))
    if (o.key.endsWith('/backup.manifest') && (await repo.readManifest(C, o.label))) n++;
  return `${n} manifests (every object listed, every manifest parsed)`;
});

if (!values.keep && !values.repo) await rm(root, { recursive: true, force: true });
