// Crash-safety of the launchers: no server or temp dir survives a test process that dies without stop().
import assert from 'node:assert/strict';
import { execFile, spawn } from 'node:child_process';
import { existsSync } from 'node:fs';
import { test } from 'node:test';
import { fileURLToPath } from 'node:url';
import { isPortListening, reapOrphans } from './index.js';
import { sleep } from '@pgfleet/core/async';

const INDEX = fileURLToPath(new URL('./index.js', import.meta.url));

// A test process that dies without calling stop() must not leave servers or temp dirs behind.
test('servers are killed and dirs removed when the process exits without stop()', { timeout: 60_000 }, async () => {
  const script = `
    import { startPostgres, startNats, startS3 } from ${JSON.stringify(INDEX)};
    const [pg, nats, s3] = await Promise.all([startPostgres(), startNats(), startS3()]);
    console.log(JSON.stringify({ pg: [pg.port, pg.dataDir, pg.socketDir], nats: [nats.port, nats.storeDir], s3: [s3.port, s3.storageDir] }));
    throw new Error('simulated test crash');
  `;
  const { stdout, stderr, code } = await new Promise<{ stdout: string; stderr: string; code: number | null }>(
    (resolve) => {
      const child = execFile(
        process.execPath,
        ['--input-type=module', '-e', script],
        { timeout: 45_000 },
        (err, stdout, stderr) => resolve({ stdout, stderr, code: err ? ((err as { code?: number }).code ?? null) : 0 }),
      );
      child.stdin?.end();
    },
  );
  assert.notEqual(code, 0, 'the child should have crashed');
  assert.match(stderr, /simulated test crash/, stderr);
  const info = JSON.parse(stdout.trim()) as {
    pg: [number, string, string];
    nats: [number, string];
    s3: [number, string];
  };
  for (const [name, port] of [
    ['postgres', info.pg[0]],
    ['nats', info.nats[0]],
    ['s3', info.s3[0]],
  ] as const) {
    assert.equal(await isPortListening(port), false, `${name} still listening on ${port}`);
  }
  for (const dir of [info.pg[1], info.pg[2], info.nats[1], info.s3[1]]) {
    assert.equal(existsSync(dir), false, `${dir} left behind`);
  }
});

// SIGKILL runs no handler: the next test process reaps what the dead one left behind.
test(
  'reapOrphans() stops servers of a SIGKILLed test process and removes their dirs',
  { timeout: 60_000 },
  async () => {
    const script = `
    import { startPostgres, startNats, startS3 } from ${JSON.stringify(INDEX)};
    const [pg, nats, s3] = await Promise.all([startPostgres(), startNats(), startS3()]);
    console.log(JSON.stringify({ ports: [pg.port, nats.port, s3.port], dirs: [pg.dataDir, pg.socketDir, nats.storeDir, s3.storageDir] }));
    setInterval(() => {}, 1000);
  `;
    const child = spawn(process.execPath, ['--input-type=module', '-e', script], {
      stdio: ['ignore', 'pipe', 'inherit'],
    });
    const line = await new Promise<string>((resolve, reject) => {
      let out = '';
      child.stdout.on('data', (b: Buffer) => {
        out += b.toString();
        if (out.includes('\n')) resolve(out.trim());
      });
      child.once('exit', (code) => reject(new Error(`child exited early with code ${code}: ${out}`)));
    });
    const info = JSON.parse(line) as { ports: number[]; dirs: string[] };
    const exited = new Promise((r) => child.once('exit', r));
    child.kill('SIGKILL');
    await exited;

    reapOrphans();
    for (const port of info.ports) {
      const deadline = Date.now() + 5000;
      while ((await isPortListening(port)) && Date.now() < deadline) await sleep(100);
      assert.equal(await isPortListening(port), false, `port ${port} still served after reaping`);
    }
    for (const dir of info.dirs) assert.equal(existsSync(dir), false, `${dir} left behind`);
  },
);
