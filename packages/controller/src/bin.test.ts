// The pgfleet-controller binary as a user runs it: config errors, and a real start and stop.
import { strict as assert } from 'node:assert';
import { execFile, spawn } from 'node:child_process';
import { promisify } from 'node:util';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { after, before, test } from 'node:test';
import { createClient, waitForReady } from '@pgfleet/rpc';
import { AdminService } from '@pgfleet/proto';
import { ErrorCodes } from '@pgfleet/core';
import { runScript } from './testing/run-script.js';

const BIN = fileURLToPath(new URL('./bin.js', import.meta.url));
let dir: string;
before(() => {
  dir = mkdtempSync(join(tmpdir(), 'pgfleet-ctl-bin-'));
});
after(() => rmSync(dir, { recursive: true, force: true }));

const run = (args: string[], env: NodeJS.ProcessEnv = {}) => runScript(BIN, args, env);

const execFileAsync = promisify(execFile);
const BUF = fileURLToPath(new URL('../../../node_modules/.bin/buf', import.meta.url));

test('missing required options and unknown config keys print PGF-1002 and exit 2, no stack', async () => {
  const missing = await run(['run', '--repo-path', '/srv/repo']);
  assert.equal(missing.code, 2);
  assert.match(missing.stderr, /^PGF-1002 missing required option 'catalog'/);
  assert.doesNotMatch(missing.stderr, /\n\s+at /);

  const cfg = join(dir, 'bad.yaml');
  writeFileSync(cfg, 'catalog: /tmp/x.db\nrepo-path: /srv/repo\nlisten_address: 1.2.3.4:1\n');
  const unknown = await run(['run', '--config', cfg]);
  assert.equal(unknown.code, 2);
  assert.match(unknown.stderr, /PGF-1002 .*listen_address/);
});

test('run without --tls-dir or --insecure refuses to start, naming both ways (PGF-1020, exit 2)', async () => {
  const r = await run(['run', '--catalog', join(dir, 'refused.db'), '--repo-path', '/srv/repo']);
  assert.equal(r.code, 2, r.stderr);
  assert.match(r.stderr, new RegExp(`^${ErrorCodes.InsecureNotChosen.code} .*no --tls-dir was given`));
  assert.match(r.stderr, /ca init --dir DIR/);
  assert.match(r.stderr, /--insecure/);
  const both = await run(['run', '--catalog', join(dir, 'refused.db'), '--tls-dir', dir, '--insecure']);
  assert.equal(both.code, 2, both.stderr);
  assert.match(both.stderr, /--tls-dir and --insecure contradict each other/);
});

test('--help documents run', async () => {
  const r = await run(['run', '--help']);
  assert.equal(r.code, 0);
  for (const s of ['--catalog', '--repo-path', '--listen', 'PGFLEET_HEARTBEAT_INTERVAL'])
    assert.ok(r.stdout.includes(s), s);
});

test('run serves the admin API until SIGTERM', async () => {
  // A port that was free a moment ago (bound to 0, then released).
  const probe = createServer();
  await new Promise<void>((r) => probe.listen(0, '127.0.0.1', r));
  const port = (probe.address() as { port: number }).port;
  await new Promise<void>((r) => probe.close(() => r()));
  const child = spawn(process.execPath, [BIN, 'run', '--listen', `127.0.0.1:${port}`, '--log-level', 'warn'], {
    env: {
      PATH: process.env.PATH,
      PGFLEET_CATALOG: join(dir, 'c.db'),
      PGFLEET_REPO_PATH: '/srv/repo',
      PGFLEET_INSECURE: 'true',
      // Its own free port: the default metrics address is taken by any other controller.
      PGFLEET_METRICS_LISTEN: '127.0.0.1:0',
    },
    stdio: ['ignore', 'ignore', 'pipe'],
  });
  let stderr = '';
  child.stderr!.on('data', (d: Buffer) => (stderr += d.toString()));
  const exited = new Promise<number | null>((resolve) => child.on('close', resolve));
  const admin = createClient(AdminService, `127.0.0.1:${port}`, { defaultDeadlineMs: 5000 });
  try {
    await waitForReady(admin, 120_000);
    assert.deepEqual((await admin.listClusters({})).clusters, []);
    // Operators probe the controller with standard tools: gRPC health and server reflection.
    const url = `http://127.0.0.1:${port}`;
    const methods = (
      await execFileAsync(BUF, ['curl', '--protocol', 'grpc', '--http2-prior-knowledge', '--list-methods', url])
    ).stdout;
    for (const m of [
      'pgfleet.v1.AdminService/StartRestore',
      'pgfleet.v1.AgentService/Connect',
      'grpc.health.v1.Health/Check',
    ])
      assert.ok(methods.includes(m), `${m} in\n${methods}`);
    const health = (
      await execFileAsync(BUF, [
        'curl',
        '--protocol',
        'grpc',
        '--http2-prior-knowledge',
        `${url}/grpc.health.v1.Health/Check`,
      ])
    ).stdout;
    assert.equal(JSON.parse(health).status, 'SERVING');
  } finally {
    admin.close();
    child.kill('SIGTERM');
  }
  assert.equal(await exited, 0, stderr);
  // --insecure is said loudly at start, even at log level warn.
  assert.match(stderr, /"level":40.*INSECURE: serving without TLS \(--insecure\)/);
});
