// The agent's copy path (CopyPool, 2 threads: backup tasks with page checks and block-map sums
// as a full backup submits them, then restore tasks) over a directory of real PGDATA files, for
// one or more builds side by side: each run is a fresh process per build, interleaved (A B A B),
// reporting CPU seconds of the whole process (all threads), wall seconds and peak RSS. On a busy
// machine CPU seconds are the steadier figure (docs/benchmarks.md, "Copy path, A/B").
//   node bench/copy-path.mjs --data DIR [--root /path/to/other/checkout] [--codec zstd|lz4] [--runs 3]
//                            [--encrypted] [--daemon-malloc] [--node-arg=--flag]...
// --encrypted: an encrypted repository (a random key). The restore's own peak RSS is printed too
// (VmHWM reset before it: what the backup left behind included, as in the bench's encryption
// pairs). --daemon-malloc: the children run with the agent daemon's glibc malloc tunables;
// --node-arg: Node flags for the children (the same for every build).
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
    encrypted: { type: 'boolean', default: false },
    'daemon-malloc': { type: 'boolean', default: false },
    'node-arg': { type: 'string', multiple: true, default: [] },
  },
});

if (values.child) {
  // One measured run of the build at --child.
  const root = values.child;
  const { PosixDriver, Repository, fixedKeys } = await import(join(root, 'packages/storage/dist/index.js'));
  const { randomBytes } = await import('node:crypto');
  const { writeFile } = await import('node:fs/promises');
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
    const repo = new Repository(
      new PosixDriver(join(work, 'repo')),
      undefined, // no manifest keys: only objects are stored here
      values.encrypted ? fixedKeys({ c: randomBytes(32) }) : undefined,
    );
    await repo.init();
    const cpu = () => {
      const u = process.cpuUsage();
      return (u.user + u.system) / 1e6;
    };
    // The worker threads get the keys resolved so far (Repository.threadKeys): resolve cluster c's first, as the agent has by then.
    if (values.encrypted) await repo.objects.storeSmall('c/key-probe', Buffer.from('probe'));
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
    const hwmMB = async () => Number(/VmHWM:\s+(\d+)/.exec(await readFile('/proc/self/status', 'utf8'))[1]) / 1024;
    const backupHwm = await hwmMB();
    await writeFile('/proc/self/clear_refs', '5'); // VmHWM := RSS now: the restore's own peak from here
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
    const restoreHwm = await hwmMB();
    const hwm = Math.max(backupHwm, restoreHwm);
    const bytes = files.reduce((s, f) => s + f.size, 0);
    const storedBytes = stored.reduce((s, x) => s + x.r.storedSize, 0);
    console.log(
      JSON.stringify({ backup, restore, hwm, backupHwm, restoreHwm, bytes, storedBytes, files: files.length }),
    );
  } finally {
    await rm(work, { recursive: true, force: true, maxRetries: 5 });
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
      [
        ...values['node-arg'],
        HERE,
        '--child',
        root,
        '--data',
        resolve(values.data),
        '--codec',
        values.codec,
        ...(values.encrypted ? ['--encrypted'] : []),
      ],
      {
        encoding: 'utf8',
        stdio: ['ignore', 'pipe', 'inherit'],
        // The agent daemon's allocator settings (agent/src/malloc-tuning.ts), read by glibc at start.
        env: values['daemon-malloc'] ? { ...process.env, GLIBC_TUNABLES: 'glibc.malloc.arena_max=2' } : process.env,
      },
    );
    if (r.status !== 0) throw new Error(`run of ${root} failed (${r.status})`);
    const m = JSON.parse(r.stdout.trim().split('\n').at(-1));
    results.get(root).push(m);
    console.error(`${root} run ${run}: ${JSON.stringify(m)}`);
  }
}
const median = (xs) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];
console.log(
  `| build | backup CPU s | backup wall s | restore CPU s | restore wall s | peak RSS MB | backup peak MB | restore peak MB (after the backup) | stored MB |`,
);
console.log('|---|---:|---:|---:|---:|---:|---:|---:|---:|');
for (const [root, ms] of results) {
  const f = (g) => median(ms.map(g)).toFixed(2);
  console.log(
    `| ${root} | ${f((m) => m.backup.cpu)} | ${f((m) => m.backup.wall)} | ${f((m) => m.restore.cpu)} | ${f((m) => m.restore.wall)} | ${median(ms.map((m) => m.hwm)).toFixed(0)} | ${median(ms.map((m) => m.backupHwm)).toFixed(1)} | ${median(ms.map((m) => m.restoreHwm)).toFixed(1)} | ${(ms[0].storedBytes / 1e6).toFixed(1)} |`,
  );
}
const first = results.get(roots[0])[0];
console.log(
  `\n${first.files} files, ${(first.bytes / 1e6).toFixed(0)} MB, codec ${values.codec}, medians of ${values.runs} runs`,
);
