// The agent's copy path (CopyPool, 2 threads: backup tasks with page checks and block-map sums
// as a full backup submits them, then restore tasks) over a directory of real PGDATA files, for
// one or more builds side by side: each run is a fresh process per build, interleaved (A B A B),
// reporting CPU seconds of the whole process (all threads), wall seconds and peak RSS. On a busy
// machine CPU seconds are the steadier figure (docs/benchmarks.md, "Copy path, A/B").
//   node bench/copy-path.mjs --data DIR [--root /path/to/other/checkout] [--codec zstd|lz4] [--runs 3]
// --data: files are taken recursively; those named like relation files (digits, optional .N)
// get page checks (a cluster with data checksums). Without --root: this checkout only.
import { spawnSync } from 'node:child_process';
import { readdirSync, statSync } from 'node:fs';
import { mkdir, mkdtemp, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { dirname, join, relative, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';

const HERE = fileURLToPath(import.meta.url);
const { values } = parseArgs({
  options: {
    data: { type: 'string' },
    root: { type: 'string', multiple: true, default: [] },
    codec: { type: 'string', default: 'zstd' },
    runs: { type: 'string', default: '3' },
    child: { type: 'string' },
  },
});

if (values.child) {
  // One measured run of the build at --child.
  const root = values.child;
  const { PosixDriver, Repository } = await import(join(root, 'packages/storage/dist/index.js'));
  const { CopyPool } = await import(join(root, 'packages/agent/dist/copy/pool.js'));
  const codec = values.codec;
  const work = await mkdtemp(join(tmpdir(), 'pgfleet-copy-path-'));
  try {
    const files = [];
    const walk = (d) => {
      for (const e of readdirSync(d, { withFileTypes: true })) {
        const p = join(d, e.name);
        if (e.isDirectory()) walk(p);
        else if (e.isFile()) files.push({ path: p, name: relative(values.data, p), size: statSync(p).size });
      }
    };
    walk(values.data);
    files.sort((a, b) => b.size - a.size); // largest first, as a backup submits them
    const repo = new Repository(new PosixDriver(join(work, 'repo')));
    await repo.init();
    const cpu = () => {
      const u = process.cpuUsage();
      return (u.user + u.system) / 1e6;
    };
    let pool = new CopyPool(repo, { threads: 2 });
    let c0 = cpu();
    let t0 = performance.now();
    const stored = await Promise.all(
      files.map(async (f) => {
        const m = /(?:^|\/)\d+(?:\.(\d+))?$/.exec(f.name);
        const page = m ? { page: { firstBlock: Number(m[1] ?? 0) * 131072, hi: 0xffffffff, lo: 0xffffffff } } : {};
        const key = `c/b/${f.name}`;
        const r = await pool.run({
          kind: 'backup',
          src: f.path,
          key,
          codec,
          offset: 0,
          ...page,
          ...(m ? { sums: true } : {}),
        });
        return { f, key, r };
      }),
    );
    const backup = { cpu: cpu() - c0, wall: (performance.now() - t0) / 1000 };
    await pool.close();
    const dest = join(work, 'restore');
    for (const d of new Set(stored.map((s) => dirname(join(dest, s.f.name))))) await mkdir(d, { recursive: true });
    pool = new CopyPool(repo, { threads: 2 });
    c0 = cpu();
    t0 = performance.now();
    await Promise.all(
      stored.map(({ f, key, r }) =>
        pool.run({
          kind: 'restore',
          key,
          codec,
          sha256: r.sha256,
          size: r.size,
          storedSha256: r.storedSha256,
          dest: join(dest, f.name),
          mode: 0o600,
          exclusive: true,
        }),
      ),
    );
    const restore = { cpu: cpu() - c0, wall: (performance.now() - t0) / 1000 };
    await pool.close();
    const hwm = Number(/VmHWM:\s+(\d+)/.exec(await readFile('/proc/self/status', 'utf8'))[1]) / 1024;
    const bytes = files.reduce((s, f) => s + f.size, 0);
    const storedBytes = stored.reduce((s, x) => s + x.r.storedSize, 0);
    console.log(JSON.stringify({ backup, restore, hwm, bytes, storedBytes, files: files.length }));
  } finally {
    await rm(work, { recursive: true, force: true });
  }
  process.exit(0);
}

if (!values.data) {
  console.error('usage: node bench/copy-path.mjs --data DIR [--root CHECKOUT]... [--codec zstd|lz4] [--runs N]');
  process.exit(2);
}
const roots = [...values.root.map((r) => resolve(r)), resolve(dirname(HERE), '..')];
const results = new Map(roots.map((r) => [r, []]));
for (let run = 0; run < Number(values.runs); run++) {
  for (const root of run % 2 === 0 ? roots : [...roots].reverse()) {
    const r = spawnSync(
      process.execPath,
      [HERE, '--child', root, '--data', resolve(values.data), '--codec', values.codec],
      { encoding: 'utf8', stdio: ['ignore', 'pipe', 'inherit'] },
    );
    if (r.status !== 0) throw new Error(`run of ${root} failed (${r.status})`);
    const m = JSON.parse(r.stdout.trim().split('\n').at(-1));
    results.get(root).push(m);
    console.error(`${root} run ${run}: ${JSON.stringify(m)}`);
  }
}
const median = (xs) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];
console.log(`| build | backup CPU s | backup wall s | restore CPU s | restore wall s | peak RSS MB | stored MB |`);
console.log('|---|---:|---:|---:|---:|---:|---:|');
for (const [root, ms] of results) {
  const f = (g) => median(ms.map(g)).toFixed(2);
  console.log(
    `| ${root} | ${f((m) => m.backup.cpu)} | ${f((m) => m.backup.wall)} | ${f((m) => m.restore.cpu)} | ${f((m) => m.restore.wall)} | ${median(ms.map((m) => m.hwm)).toFixed(0)} | ${(ms[0].storedBytes / 1e6).toFixed(1)} |`,
  );
}
const first = results.get(roots[0])[0];
console.log(
  `\n${first.files} files, ${(first.bytes / 1e6).toFixed(0)} MB, codec ${values.codec}, medians of ${values.runs} runs`,
);
