#!/usr/bin/env node
// CPU cost of starting each pgfleet binary: the CLI (--help, and a command that loads its whole
// controller-facing graph and stops at a usage error before connecting), the agent (--help, and
// wal-fetch of a segment the repository does not hold: what PostgreSQL's restore_command runs at
// the end of every archive replay), and the controller (--help). End-to-end tests start these
// processes hundreds of times, so their start-up is a large share of the suite's CPU.
// CPU is user + system from the kernel's rusage of each child (/usr/bin/time), which stays close
// to what the process needs on a machine busy with other work; runs are interleaved so a busy
// moment hits every command alike. --root names checkouts to compare (each with its own
// node_modules and built dist/, e.g. a copy of an older build), default this one.
//
//   node bench/bin-start.mjs [--runs 15] [--root /path/to/old/checkout] [--root .]
import { spawnSync } from 'node:child_process';
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { parseArgs } from 'node:util';

const { values } = parseArgs({
  options: { runs: { type: 'string', default: '15' }, root: { type: 'string', multiple: true } },
});
const runs = Number(values.runs);
const roots = (values.root ?? [new URL('..', import.meta.url).pathname]).map((r) => resolve(r));
const scratch = mkdtempSync(join(tmpdir(), 'pgfleet-bin-start-'));
const repo = join(scratch, 'repo');
mkdirSync(repo);
const keyFile = join(scratch, 'cluster.key');
writeFileSync(keyFile, `${'ab'.repeat(32)}\n`, { mode: 0o600 });

const cases = (root) => {
  const bin = (p) => join(root, 'packages', p, 'dist/bin.js');
  return [
    { label: 'pgfleet --help', argv: [bin('cli'), '--help'] },
    // PGF-1020 (no --ca-cert, no --insecure): raised once the command's modules are loaded.
    { label: 'pgfleet status (to PGF-1020)', argv: [bin('cli'), 'status', '--controller', '127.0.0.1:1'] },
    { label: 'pgfleet-agent --help', argv: [bin('agent'), '--help'] },
    {
      label: 'pgfleet-agent wal-fetch (absent segment)',
      argv: [
        bin('agent'),
        'wal-fetch',
        '0000000100000000000000FF',
        join(scratch, 'out'),
        '--cluster',
        'bench',
        '--repo-path',
        repo,
        '--prefetch',
        '0',
        '--cluster-key-file',
        keyFile,
      ],
    },
    { label: 'pgfleet-controller --help', argv: [bin('controller'), '--help'] },
  ];
};

const all = [
  { root: '', label: 'node -e 0', argv: ['-e', '0'] },
  ...roots.flatMap((root) => cases(root).map((c) => ({ ...c, root }))),
];
const cpu = new Map(all.map((c) => [c, []]));
for (let i = 0; i < runs; i++) {
  for (const c of all) {
    const r = spawnSync('/usr/bin/time', ['-f', '%U %S', process.execPath, ...c.argv], {
      encoding: 'utf8',
      cwd: scratch,
    });
    const m = r.stderr
      .trim()
      .split('\n')
      .at(-1)
      .match(/^([\d.]+) ([\d.]+)$/);
    if (!m) throw new Error(`${c.label}: no rusage in ${r.stderr}`);
    cpu.get(c).push((Number(m[1]) + Number(m[2])) * 1000);
  }
}
rmSync(scratch, { recursive: true, force: true });

const median = (xs) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];
console.log(`| root | process | CPU median ms (${runs} runs) | min |`);
console.log('|---|---|---:|---:|');
for (const c of all)
  console.log(`| ${c.root} | ${c.label} | ${median(cpu.get(c)).toFixed(0)} | ${Math.min(...cpu.get(c)).toFixed(0)} |`);
