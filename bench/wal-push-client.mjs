#!/usr/bin/env node
// The foreground cost of archive_command through the agent daemon: one `pgfleet-agent wal-push`
// process per segment, against a stub daemon that acks at once (no hashing, compression or fsync),
// so what is measured is Node's start-up, the client's module graph and one socket round trip.
// Runs are interleaved (`node -e 0`, then each --bin in turn) so a busy moment hits all alike.
// Besides wall time it reports the process's own CPU time (user + system, read by a preloaded
// exit hook, the same for every command): on a machine busy with other work, wall time swings
// with the scheduler while CPU time stays close to what the process needs.
//
// Without --bin it runs the two ways a wal-push process starts: `node dist/bin.js wal-push` (tests,
// bench/run.mjs, a hand-written archive_command) and `node dist/wal/push-main.cjs wal-push`, the
// bundle the installed launcher (scripts/install.sh) execs for wal-push. A --bin may name either
// file, e.g. a copy of an older build's dist/bin.js to compare with.
//
//   node bench/wal-push-client.mjs [--runs 40] [--bin packages/agent/dist/bin.js] [--bin other/bin.js]
import { spawn, spawnSync } from 'node:child_process';
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { parseArgs } from 'node:util';

const { values } = parseArgs({
  options: { runs: { type: 'string', default: '40' }, bin: { type: 'string', multiple: true } },
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
  { label: 'node -e 0', argv: ['-e', '0'] },
  ...bins.map((bin) => ({ label: `wal-push ${bin}`, argv: [bin, ...args] })),
];
const CPU_HOOK = `data:text/javascript,process.on('exit', () => { const u = process.cpuUsage(); process.stderr.write('\\nbench-cpu-us ' + (u.user + u.system) + '\\n'); });`;
const times = commands.map(() => []);
const cpu = commands.map(() => []);
try {
  for (let i = 0; i < runs; i++) {
    commands.forEach((c, k) => {
      const t0 = process.hrtime.bigint();
      const r = spawnSync(process.execPath, ['--import', CPU_HOOK, ...c.argv], { cwd: pgdata, encoding: 'utf8' });
      const ms = Number(process.hrtime.bigint() - t0) / 1e6;
      if (r.status !== 0) throw new Error(`${c.label} exited ${r.status}: ${r.stderr}`);
      times[k].push(ms);
      cpu[k].push(Number(/bench-cpu-us (\d+)/.exec(r.stderr)[1]) / 1000);
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
