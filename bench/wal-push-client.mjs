#!/usr/bin/env node
// The foreground cost of archive_command through the agent daemon: one `pgfleet-agent wal-push`
// process per segment, against a stub daemon that acks at once (no hashing, compression or fsync),
// so what is measured is Node's start-up, the client's module graph and one socket round trip.
// Runs are interleaved (`node -e 0`, then each --bin in turn) so a busy moment hits all alike.
// Besides wall time it reports the CPU time each process used, user + system from the kernel's
// rusage of the child (bash's `time`, the same for every command, Node or not): on a machine busy
// with other work, wall time swings with the scheduler while CPU time stays close to what the
// process needs. --pgbackrest adds `pgbackrest archive-push` of a segment it has already archived
// (it reads and checksums the file, finds the same one in its repository and exits 0: the nearest
// to a daemon that has the segment already), in a throwaway PGDATA from initdb and a stanza created
// offline (no server runs).
//
// Without --bin it runs the two ways a wal-push process starts: `node dist/bin.js wal-push` (tests,
// bench/run.mjs, a hand-written archive_command) and `node dist/wal/push-main.cjs wal-push`, the
// bundle the installed launcher (scripts/install.sh) execs for wal-push. A --bin may name either
// file, e.g. a copy of an older build's dist/bin.js to compare with.
//
//   node bench/wal-push-client.mjs [--runs 40] [--bin packages/agent/dist/bin.js] [--bin other/bin.js] [--pgbackrest]
import { spawn, spawnSync } from 'node:child_process';
import { chmodSync, chownSync, mkdirSync, mkdtempSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { parseArgs } from 'node:util';

const { values } = parseArgs({
  options: {
    runs: { type: 'string', default: '40' },
    bin: { type: 'string', multiple: true },
    pgbackrest: { type: 'boolean', default: false },
  },
});
const runs = Number(values.runs);
const bins = (
  values.bin ??
  ['bin.js', 'wal/push-main.cjs'].map((f) => new URL(`../packages/agent/dist/${f}`, import.meta.url).pathname)
).map((b) => resolve(b));

const root = mkdtempSync(join(tmpdir(), 'pgfleet-walpush-bench-'));
const pgdata = join(root, 'data');
mkdirSync(join(pgdata, 'pg_wal'), { recursive: true });
const segment = '000000010000000000000001';
writeFileSync(join(pgdata, 'pg_wal', segment), 'stub: the daemon below does not read it');

// The stub daemon runs in its own process (spawnSync below blocks this one) and speaks the agent's
// framing (packages/agent/src/wal/socket.ts: 4-byte big-endian length, UTF-8 JSON). It listens on
// the default socket wal-push looks for: beside PGDATA, archive_command's working directory.
const STUB = `import { createServer } from 'node:net';
const frame = (m) => { const b = Buffer.from(JSON.stringify(m)); const h = Buffer.alloc(4); h.writeUInt32BE(b.length); return Buffer.concat([h, b]); };
createServer((s) => {
  let buf = Buffer.alloc(0);
  s.on('error', () => {});
  s.on('data', (c) => {
    buf = Buffer.concat([buf, c]);
    if (buf.length >= 4 && buf.length >= 4 + buf.readUInt32BE(0)) s.end(frame({ ok: true, result: 'exists' }));
  });
}).listen(process.argv[1], () => process.stdout.write('ready\\n'));`;
const daemon = spawn(process.execPath, ['--input-type=module', '-e', STUB, join(root, 'data.pgfleet-agent.sock')], {
  stdio: ['ignore', 'pipe', 'inherit'],
});
await new Promise((r) => daemon.stdout.once('data', r));

const args = ['wal-push', `pg_wal/${segment}`, '--cluster', 'bench', '--repo-path', join(root, 'repo')];
const commands = [
  { label: 'node -e 0', argv: [process.execPath, '-e', '0'], cwd: pgdata },
  ...bins.map((bin) => ({ label: `wal-push ${bin}`, argv: [process.execPath, bin, ...args], cwd: pgdata })),
];

/** pgbackrest archive-push of initdb's first segment, archived once before the timed runs. */
function setUpPgbackrest() {
  const must = (argv, opts = {}) => {
    const r = spawnSync(argv[0], argv.slice(1), { encoding: 'utf8', ...opts });
    if (r.status !== 0) throw new Error(`${argv.join(' ')} exited ${r.status}: ${r.stderr}`);
  };
  const bindir = `/usr/lib/postgresql/${readdirSync('/usr/lib/postgresql').sort((a, b) => b - a)[0]}/bin`;
  const dir = join(root, 'pgbackrest');
  mkdirSync(dir);
  // initdb refuses to run as root: as root, the files belong to postgres (root still reads them).
  const asRoot = process.getuid?.() === 0;
  if (asRoot) {
    chmodSync(root, 0o755);
    chownSync(dir, Number(spawnSync('id', ['-u', 'postgres'], { encoding: 'utf8' }).stdout), 0);
  }
  const initdb = [`${bindir}/initdb`, '-D', join(dir, 'pg'), '-A', 'trust', '--no-sync', '-U', 'postgres'];
  must(asRoot ? ['runuser', '-u', 'postgres', '--', ...initdb] : initdb);
  const conf = join(root, 'pgbackrest.conf');
  writeFileSync(
    conf,
    `[global]\nrepo1-path=${join(root, 'pgbackrest-repo')}\nlock-path=${join(root, 'pgbackrest-lock')}\n` +
      `log-level-console=error\nlog-level-file=off\ncompress-type=zst\n[bench]\npg1-path=${join(dir, 'pg')}\n`,
  );
  const br = ['pgbackrest', `--config=${conf}`, '--stanza=bench'];
  must([...br, 'stanza-create', '--no-online']);
  const push = [...br, 'archive-push', `pg_wal/${segment}`];
  must(push, { cwd: join(dir, 'pg') });
  return { label: 'pgbackrest archive-push (segment already archived)', argv: push, cwd: join(dir, 'pg') };
}

// bash's `time` reads the child's rusage: CPU time with microsecond resolution for any program.
const TIMED = 'TIMEFORMAT="bench-time %3R %3U %3S"; time "$@"';
const times = commands.map(() => []);
const cpu = commands.map(() => []);
try {
  if (values.pgbackrest) {
    commands.push(setUpPgbackrest());
    times.push([]);
    cpu.push([]);
  }
  for (let i = 0; i < runs; i++) {
    commands.forEach((c, k) => {
      const r = spawnSync('bash', ['-c', TIMED, 'bench', ...c.argv], { cwd: c.cwd, encoding: 'utf8' });
      if (r.status !== 0) throw new Error(`${c.label} exited ${r.status}: ${r.stderr}`);
      const [, real, user, sys] = /bench-time (\S+) (\S+) (\S+)/.exec(r.stderr);
      times[k].push(Number(real) * 1000);
      cpu[k].push((Number(user) + Number(sys)) * 1000);
    });
  }
} finally {
  daemon.kill();
  rmSync(root, { recursive: true, force: true });
}
const median = (xs) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];
const mean = (xs) => xs.reduce((a, b) => a + b, 0) / xs.length;
console.log(
  `| process (${runs} interleaved runs, stub daemon acks at once) | wall median ms | wall mean ms | CPU median ms |`,
);
console.log('|---|---:|---:|---:|');
commands.forEach((c, k) =>
  console.log(
    `| ${c.label} | ${median(times[k]).toFixed(1)} | ${mean(times[k]).toFixed(1)} | ${median(cpu[k]).toFixed(1)} |`,
  ),
);
