// The agent daemon's glibc malloc and V8 settings (issue 19): `run` re-executes itself once with
// them, keeping the operator's own; other commands start as they are.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { DAEMON_MALLOC_TUNABLES, DAEMON_NODE_FLAGS, daemonNodeFlags, daemonTunables } from './malloc-tuning.js';

test('the daemon adds its malloc tunables to the environment, and leaves an operator choice of glibc.malloc alone', () => {
  assert.equal(daemonTunables(undefined), DAEMON_MALLOC_TUNABLES);
  assert.equal(daemonTunables(''), DAEMON_MALLOC_TUNABLES);
  assert.equal(daemonTunables('glibc.pthread.rseq=0'), `glibc.pthread.rseq=0:${DAEMON_MALLOC_TUNABLES}`);
  assert.equal(daemonTunables('glibc.malloc.arena_max=4'), undefined);
  assert.equal(daemonTunables(DAEMON_MALLOC_TUNABLES), undefined);
});

test('the daemon caps the young generation unless its Node flags or NODE_OPTIONS size it already', () => {
  assert.deepEqual(daemonNodeFlags([], undefined), [...DAEMON_NODE_FLAGS]);
  assert.deepEqual(daemonNodeFlags(['--max-old-space-size=100'], '--trace-warnings'), [...DAEMON_NODE_FLAGS]);
  assert.deepEqual(daemonNodeFlags([...DAEMON_NODE_FLAGS], undefined), []);
  assert.deepEqual(daemonNodeFlags(['--max_semi_space_size=8'], undefined), []);
  assert.deepEqual(daemonNodeFlags([], '--max-semi-space-size=16'), []);
  assert.deepEqual(daemonNodeFlags(['-e', 'console.log("--max-semi-space-size=1")'], undefined), [
    ...DAEMON_NODE_FLAGS,
  ]);
});

test('a re-executed process keeps its arguments and Node flags, with the tunables in its environment', (t) => {
  const glibc = (process.report.getReport() as { header?: { glibcVersionRuntime?: string } }).header
    ?.glibcVersionRuntime;
  if (process.platform !== 'linux' || !glibc) return t.skip('not glibc');
  const probe = `
    const { reexecWithMallocTuning } = await import(${JSON.stringify(new URL('./malloc-tuning.js', import.meta.url).href)});
    reexecWithMallocTuning();
    const v8 = await import('node:v8');
    // Short-lived garbage at a job's rate: without the cap V8 grows new space to 2 x 16 MiB.
    let junk = [];
    for (let i = 0; i < 2e6; i++) { junk.push({ i }); if (junk.length > 1000) junk = []; }
    const newSpace = v8.getHeapSpaceStatistics().find((s) => s.space_name === 'new_space');
    console.log(JSON.stringify({ tunables: process.env.GLIBC_TUNABLES, argv: process.argv.slice(1), size: process.execArgv.includes('--max-old-space-size=100'), semi: process.execArgv.includes(${JSON.stringify(DAEMON_NODE_FLAGS[0])}), newSpace: newSpace.space_size }));
  `;
  const env = { ...process.env };
  delete env.GLIBC_TUNABLES;
  const out = JSON.parse(
    execFileSync(process.execPath, ['--max-old-space-size=100', '--input-type=module', '-e', probe, 'run', '--x'], {
      env,
      encoding: 'utf8',
    }),
  ) as { tunables: string; argv: string[]; size: boolean; semi: boolean; newSpace: number };
  assert.equal(out.tunables, DAEMON_MALLOC_TUNABLES);
  assert.deepEqual(out.argv, ['run', '--x']);
  assert.equal(out.size, true, JSON.stringify(out));
  assert.equal(out.semi, true, JSON.stringify(out));
  // Two 1 MiB semi-spaces at most.
  assert.ok(out.newSpace <= 2 << 20, `new space ${out.newSpace} bytes`);
});
