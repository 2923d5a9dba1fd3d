#!/usr/bin/env node
/**
 * The CPU seconds of pg_dump -Fd -j J itself (the leader and its workers, as /usr/bin/time counts
 * them; the server's backends not included) with its default gzip and with --compress=0, on one
 * pgbench database, alternating. What --dump-compress agent takes off pg_dump's workers
 * (docs/logical.md, "Who compresses").
 *
 *   node bench/pg-dump-cpu.mjs [--scale 20] [--jobs 2] [--runs 3]
 */
import { execFile } from 'node:child_process';
import { rm } from 'node:fs/promises';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { parseArgs } from 'node:util';
import { loadavg } from 'node:os';
import { startPostgres } from '../packages/testkit/dist/index.js';

const run = promisify(execFile);
const { values } = parseArgs({
  options: {
    scale: { type: 'string', default: '20' },
    jobs: { type: 'string', default: '2' },
    runs: { type: 'string', default: '3' },
  },
});
const pg = await startPostgres();
try {
  const env = { ...process.env, ...pg.env };
  await run(join(pg.binDir, 'pgbench'), ['-i', '-q', '-s', values.scale], { env });
  const dir = join(pg.dataDir, '..', 'pg-dump-cpu');
  const cpu = { gzip: [], none: [] };
  for (let i = 0; i < Number(values.runs); i++) {
    for (const mode of i % 2 === 0 ? ['gzip', 'none'] : ['none', 'gzip']) {
      await rm(dir, { recursive: true, force: true });
      const args = ['-f', '%U %S', join(pg.binDir, 'pg_dump'), '-Fd', '-j', values.jobs, '-f', dir];
      if (mode === 'none') args.push('--compress=0');
      const { stderr } = await run('/usr/bin/time', args, { env });
      const [u, s] = stderr.trim().split('\n').at(-1).split(' ').map(Number);
      cpu[mode].push(u + s);
    }
  }
  await rm(dir, { recursive: true, force: true });
  const median = (xs) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];
  for (const [mode, xs] of Object.entries(cpu))
    console.log(
      `pg_dump -Fd -j ${values.jobs}${mode === 'none' ? ' --compress=0' : ' (gzip)'}: ${xs.map((x) => x.toFixed(2)).join(', ')} s CPU (median ${median(xs).toFixed(2)})`,
    );
  console.log(
    `pgbench scale ${values.scale}; load average ${loadavg()
      .map((l) => l.toFixed(1))
      .join(' ')}`,
  );
} finally {
  await pg.stop();
}
