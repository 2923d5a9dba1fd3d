// The agent's block-incremental copy path alone, in one thread (no PostgreSQL, no pool): a relation
// file stored whole with its block map (as a full stores it), then the same file with a fraction
// of its blocks edited a little (as 1% random row updates leave ~45% of a table's heap pages)
// stored as a block-incremental with XOR deltas, with whole blocks, and as a whole file without
// a map (a file-level incr), each against the same full. Prints CPU seconds (user + system of
// this process) and stored MB per step, medians of --runs; run it under `node --cpu-prof` to see
// where the CPU goes (docs/benchmarks.md, "Block-incremental CPU").
//   node bench/block-incr-path.mjs [--root CHECKOUT] [--mb 256] [--changed 0.45] [--rewritten 0.03] [--codec zstd] [--runs 3] [--file PATH]
// --file: a real relation file instead of generated pages (its blocks are edited the same way).
import { randomBytes } from 'node:crypto';
import { copyFile, mkdtemp, open, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';

const { values } = parseArgs({
  options: {
    root: { type: 'string' },
    mb: { type: 'string', default: '256' },
    changed: { type: 'string', default: '0.45' },
    rewritten: { type: 'string', default: '0.03' },
    codec: { type: 'string', default: 'zstd' },
    runs: { type: 'string', default: '3' },
    file: { type: 'string' },
    steps: { type: 'string', default: 'full,deltas,whole,file' },
  },
});
// --root: another built checkout (its packages/*/dist) to compare with this one.
const ROOT = values.root ? resolve(values.root) : resolve(dirname(fileURLToPath(import.meta.url)), '..');
const { PosixDriver, Repository, wholeFileMap, blockCount } = await import(
  join(ROOT, 'packages/storage/dist/index.js')
);
const { runCopyTask } = await import(join(ROOT, 'packages/agent/dist/copy/tasks.js'));

const B = 8192;
const REL = 'base/5/16384';
const codec = values.codec;
const steps = new Set(values.steps.split(','));
const cpu = () => {
  const u = process.cpuUsage();
  return (u.user + u.system) / 1e6;
};

/** Heap-like pages: a header, line pointers, tuples of a few repeating shapes with random fields (64 templates, varied per page). */
const templates = Array.from({ length: 64 }, (_, seed) => {
  const page = Buffer.alloc(B);
  const words = ['alpha', 'bravo', 'charlie', 'delta', 'echo', 'foxtrot', 'golf', 'hotel'];
  let end = B;
  for (let t = 0; t < 60; t++) {
    end -= 120;
    page.writeUInt32LE((seed * 61 + t) >>> 0, end);
    page.writeUInt32LE((Math.random() * 1e9) >>> 0, end + 8);
    page.write(`${words[(seed + t) % 8]} ${seed}-${t} ${words[t % 8]}`.padEnd(90, ' '), end + 24, 'latin1');
    page.writeUInt16LE(end, 24 + 4 * t);
  }
  return page;
});
function heapPage(buf, at, b) {
  templates[b % 64].copy(buf, at);
  buf.writeUInt32LE(b, at);
  const noise = randomBytes(240);
  for (let t = 0; t < 60; t++) noise.copy(buf, at + B - 120 * (t + 1) + 12, 4 * t, 4 * t + 4);
}

const work = await mkdtemp(join(tmpdir(), 'pgfleet-block-incr-path-'));
try {
  const base = join(work, 'base');
  if (values.file) await copyFile(values.file, base);
  else {
    const n = Math.round((Number(values.mb) * 1e6) / B);
    const buf = Buffer.allocUnsafe(n * B);
    for (let b = 0; b < n; b++) heapPage(buf, b * B, b);
    await writeFile(base, buf);
  }
  // The edited file: small edits (an infomask, a ctid, a new tuple's few bytes) in `changed` of
  // the blocks, a page rewritten whole (pruned) in `rewritten` of them.
  const edited = join(work, 'edited');
  {
    const fh = await open(base, 'r');
    const size = (await fh.stat()).size;
    const buf = Buffer.allocUnsafe(size);
    await fh.read(buf, 0, size, 0);
    await fh.close();
    const n = Math.floor(size / B);
    for (let b = 0; b < n; b++) {
      const r = Math.random();
      if (r < Number(values.rewritten)) randomBytes(B).copy(buf, b * B);
      else if (r < Number(values.changed)) {
        for (let k = 0; k < 4; k++) randomBytes(8).copy(buf, b * B + Math.floor(Math.random() * (B - 8)));
        buf.writeUInt32LE(b ^ 0x5a5a, b * B + 8); // the page header's LSN
      }
    }
    await writeFile(edited, buf);
  }
  const repo = new Repository(new PosixDriver(join(work, 'repo')));
  await repo.init();
  const results = [];
  for (let run = 0; run < Number(values.runs); run++) {
    const res = {};
    const label = `2026010${(run % 9) + 1}T000000F`;
    let c0 = cpu();
    const full = await runCopyTask(repo, {
      kind: 'backup',
      src: base,
      key: repo.backupFileKey('c', label, REL, codec),
      codec,
      offset: 0,
      sums: true,
    });
    res.full = { cpu: cpu() - c0, mb: full.storedSize / 1e6 };
    const part = { backup: label, object: 'file', codec, size: full.size, sha256: full.sha256 };
    const map = wholeFileMap(full.size, [part], [blockCount(full.size)], full.sums);
    const parts = map.parts.map((p) => ({
      key: repo.blockPartKey('c', REL, p),
      codec: p.codec,
      sha256: p.sha256,
      size: p.size,
    }));
    const incr = async (name, withDeltas) => {
      c0 = cpu();
      const r = await runCopyTask(repo, {
        kind: 'backup-blocks',
        src: edited,
        key: repo.blockDataKey('c', `2026020${(run % 9) + 1}T000000I`, `${REL}.${name}`, codec),
        codec,
        prior: { sums: map.sums, blocks: map.blocks },
        checksum: map.checksum ?? 'sha1-64',
        ...(withDeltas ? { deltas: { parts, part: map.part, index: map.index, layers: [], size: map.size } } : {}),
      });
      res[name] = {
        cpu: cpu() - c0,
        mb: r.data.storedSize / 1e6,
        changed: r.changed.length,
        deltas: r.delta ? r.delta.reduce((a, d) => a + d, 0) : 0,
      };
    };
    if (steps.has('deltas')) await incr('deltas', true);
    if (steps.has('whole')) await incr('whole', false);
    if (steps.has('file')) {
      c0 = cpu();
      const r = await runCopyTask(repo, {
        kind: 'backup',
        src: edited,
        key: repo.backupFileKey('c', `2026030${(run % 9) + 1}T000000I`, REL, codec),
        codec,
        offset: 0,
      });
      res.file = { cpu: cpu() - c0, mb: r.storedSize / 1e6 };
    }
    console.error(`run ${run}: ${JSON.stringify(res)}`);
    results.push(res);
  }
  const median = (xs) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];
  console.log('| step | CPU s (median) | stored MB |');
  console.log('|---|---:|---:|');
  for (const k of ['full', 'deltas', 'whole', 'file'].filter((k) => results[0][k]))
    console.log(
      `| ${k} | ${median(results.map((r) => r[k].cpu)).toFixed(3)} | ${results[0][k].mb.toFixed(1)}${results[0][k].changed !== undefined ? ` (${results[0][k].changed} blocks, ${results[0][k].deltas} deltas)` : ''} |`,
    );
} finally {
  await rm(work, { recursive: true, force: true });
}
