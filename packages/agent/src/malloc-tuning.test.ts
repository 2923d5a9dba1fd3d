// The agent daemon's glibc malloc settings (issue 19): `run` re-executes itself once with them,
// keeping the operator's own; other commands start as they are.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { DAEMON_MALLOC_TUNABLES, daemonTunables } from './malloc-tuning.js';

test('the daemon adds its malloc tunables to the environment, and leaves an operator choice of glibc.malloc alone', () => {
  assert.equal(daemonTunables(undefined), DAEMON_MALLOC_TUNABLES);
  assert.equal(daemonTunables(''), DAEMON_MALLOC_TUNABLES);
  assert.equal(daemonTunables('glibc.pthread.rseq=0'), `glibc.pthread.rseq=0:${DAEMON_MALLOC_TUNABLES}`);
  assert.equal(daemonTunables('glibc.malloc.arena_max=4'), undefined);
  assert.equal(daemonTunables(DAEMON_MALLOC_TUNABLES), undefined);
});

test('a re-executed process keeps its arguments and Node flags, with the tunables in its environment', (t) => {
  const glibc = (process.report.getReport() as { header?: { glibcVersionRuntime?: string } }).header
    ?.glibcVersionRuntime;
  if (process.platform !== 'linux' || !glibc) return t.skip('not glibc');
  const probe = `
    const { reexecWithMallocTuning } = await import(${JSON.stringify(new URL('./malloc-tuning.js', import.meta.url).href)});
    reexecWithMallocTuning();
    console.log(JSON.stringify({ tunables: process.env.GLIBC_TUNABLES, argv: process.argv.slice(1), size: process.execArgv.includes('--max-old-space-size=100') }));
  `;
  const env = { ...process.env };
  delete env.GLIBC_TUNABLES;
  const out = JSON.parse(
    execFileSync(process.execPath, ['--max-old-space-size=100', '--input-type=module', '-e', probe, 'run', '--x'], {
      env,
      encoding: 'utf8',
    }),
  ) as { tunables: string; argv: string[]; size: boolean };
  assert.equal(out.tunables, DAEMON_MALLOC_TUNABLES);
  assert.deepEqual(out.argv, ['run', '--x']);
  assert.equal(out.size, true);
});
