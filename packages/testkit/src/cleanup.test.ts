// Crash-safety of the launchers: no server or temp dir survives a test process that dies without stop().
import assert from 'node:assert/strict';
import { execFile, spawn } from 'node:child_process';
import { once } from 'node:events';
import { existsSync } from 'node:fs';
import { test } from 'node:test';
import { fileURLToPath } from 'node:url';
import { isPortListening, reapOrphans } from './index.js';

const INDEX = fileURLToPath(new URL('./index.js', import.meta.url));

// A test process that dies without calling stop() must not leave servers or temp dirs behind.
test('servers are killed and dirs removed when the process exits without stop()', { timeout: 180_000 }, async () => {
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
        { timeout: 150_000 },
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

/** A test process with a running PostgreSQL, nats-server and S3 server, killed by SIGKILL (runs no handler). */
async function sigkilledTestProcess(): Promise<{ ports: number[]; dirs: string[] }> {
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
  return info;
}

async function assertReaped(info: { ports: number[]; dirs: string[] }): Promise<void> {
  for (const port of info.ports) {
    assert.equal(await isPortListening(port), false, `port ${port} still served after reaping`);
  }
  for (const dir of info.dirs) assert.equal(existsSync(dir), false, `${dir} left behind`);
}

// SIGKILL runs no handler: the next test process reaps what the dead one left behind.
test(
  'reapOrphans() stops servers of a SIGKILLed test process and removes their dirs',
  { timeout: 180_000 },
  async () => {
    const info = await sigkilledTestProcess();
    // reapOrphans() returns once the servers are gone and their dirs removed: no waiting here.
    reapOrphans();
    await assertReaped(info);
  },
);

// Test files run in parallel: the first launcher of another test process may reap the same
// orphans at the same moment. reapOrphans() still returns only once they are gone.
test(
  'reapOrphans() returns only once the orphans are gone while another process reaps them too',
  { timeout: 180_000 },
  async () => {
    const info = await sigkilledTestProcess();
    const other = spawn(
      process.execPath,
      [
        '--input-type=module',
        '-e',
        `import { reapOrphans } from ${JSON.stringify(INDEX)}; console.log('reaping'); reapOrphans();`,
      ],
      { stdio: ['ignore', 'pipe', 'inherit'] },
    );
    const otherExited = new Promise<number | null>((r) => other.once('exit', r));
    // Start ours as the other one starts, so the two overlap (whichever claims first, the outcome is the same).
    await once(other.stdout, 'data');
    reapOrphans();
    await assertReaped(info);
    assert.equal(await otherExited, 0, 'the other reaper failed');
  },
);
