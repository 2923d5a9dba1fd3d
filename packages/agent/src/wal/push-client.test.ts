/**
 * wal-push as PostgreSQL runs it: the built binary in a child process with PGDATA as its working
 * directory, against a stub daemon on the socket (to see the request it sends and how it treats
 * each reply) or none (it archives by itself into a posix repository). Every scenario runs through
 * each way the process can start (ENTRIES): bin.js and the installed launcher run the bundled
 * dist/wal/push-main.cjs, and the unbundled ES modules are what bin.js ran before the bundle (and
 * still runs when the bundle is missing), so all give the same requests, messages and exit codes.
 */
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { mkdtemp, readFile, realpath, rm, writeFile } from 'node:fs/promises';
import { createHash } from 'node:crypto';
import { createServer, type Server } from 'node:net';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { ErrorCodes } from '@pgfleet/core';
import { PosixDriver, Repository } from '@pgfleet/storage';
import { TEST_MANIFEST_KEYS } from '../testing/repository-fixtures.js';
import { fakePgdata, segment, writeTestClusterKey } from '../testing/wal-fixtures.js';
import { defaultSocketPath, encodeFrame, FrameDecoder, PROTOCOL_VERSION, type DaemonReply } from './socket.js';

const BIN = new URL('../bin.js', import.meta.url).pathname;
const BUNDLE = new URL('./push-main.cjs', import.meta.url).pathname;
const CLIENT = new URL('./push-client.js', import.meta.url).href;
/** The ways a wal-push process starts: `pgfleet-agent wal-push` is argv [entry, 'wal-push', ...]. */
const ENTRIES = [
  { name: 'bin.js (runs the bundle)', entry: BIN },
  { name: 'push-main.cjs (the installed launcher)', entry: BUNDLE },
  { name: 'push-main.js (ES modules, unbundled)', entry: new URL('./push-main.js', import.meta.url).pathname },
];
const SEGMENT = '000000010000000000000001';

interface Run {
  code: number | null;
  stdout: string;
  stderr: string;
}

/** Runs `node <nodeArgs> pgfleet-agent <args>` in `cwd` with only `env` from the PGFLEET_* family. */
function run(nodeArgs: string[], args: string[], cwd: string, env: Record<string, string> = {}): Promise<Run> {
  const base = Object.fromEntries(Object.entries(process.env).filter(([k]) => !k.startsWith('PGFLEET_')));
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [...nodeArgs, ...args], { cwd, env: { ...base, ...env } });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (c: Buffer) => (stdout += c.toString()));
    child.stderr.on('data', (c: Buffer) => (stderr += c.toString()));
    child.on('error', reject);
    child.on('close', (code) => resolve({ code, stdout, stderr }));
  });
}

/** A stub daemon: records each request and answers with `reply` (or hangs up without a word). */
async function stubDaemon(
  socketPath: string,
  reply: DaemonReply | 'hang-up',
): Promise<{ requests: unknown[]; close: () => Promise<void> }> {
  const requests: unknown[] = [];
  const server: Server = createServer((sock) => {
    const decoder = new FrameDecoder();
    sock.on('error', () => {});
    sock.on('data', (chunk: Buffer) => {
      const m = decoder.push(chunk)[0];
      if (m === undefined) return;
      requests.push(m);
      if (reply === 'hang-up') sock.destroy();
      else sock.end(encodeFrame(reply));
    });
  });
  await new Promise<void>((r) => server.listen(socketPath, r));
  return { requests, close: () => new Promise((r) => server.close(() => r())) };
}

async function setup() {
  const root = await realpath(await mkdtemp(join(tmpdir(), 'pgfleet-walpush-')));
  const pgdata = await fakePgdata(root);
  const repoDir = join(root, 'repo');
  const walPath = join(pgdata, 'pg_wal', SEGMENT);
  await writeFile(walPath, segment(SEGMENT));
  return { root, pgdata, repoDir, walPath, done: () => rm(root, { recursive: true, force: true }) };
}

describe('wal-push client', () => {
  it('loads neither pino, zod, yaml, gRPC, protobuf nor storage drivers on its way to the daemon', async () => {
    // Every module the client's static graph resolves, recorded by a resolve hook in a fresh process.
    const script = `
      import { registerHooks } from 'node:module';
      const seen = [];
      registerHooks({ resolve(specifier, context, next) { const r = next(specifier, context); seen.push(r.url); return r; } });
      await import(${JSON.stringify(CLIENT)});
      process.stdout.write(JSON.stringify(seen));`;
    const run = await new Promise<Run>((resolve, reject) => {
      const child = spawn(process.execPath, ['--input-type=module', '-e', script]);
      let stdout = '';
      let stderr = '';
      child.stdout.on('data', (c: Buffer) => (stdout += c.toString()));
      child.stderr.on('data', (c: Buffer) => (stderr += c.toString()));
      child.on('error', reject);
      child.on('close', (code) => resolve({ code, stdout, stderr }));
    });
    assert.equal(run.code, 0, run.stderr);
    const urls = JSON.parse(run.stdout) as string[];
    assert.ok(
      urls.some((u) => u.endsWith('/command-line.js')),
      'core parser loaded',
    );
    // Only node builtins and single light modules of agent, core and storage: no package entry point, no npm dependency.
    const heavy = urls.filter(
      (u) =>
        !u.startsWith('node:') && !/\/packages\/(agent|core|storage)\/dist\/(?!index\.js$)[^/]+(\/[^/]+)?\.js$/.test(u),
    );
    assert.deepEqual(heavy, [], `the wal-push client loads ${urls.length} modules: ${urls.join(' ')}`);
  });

  it('the bundle is built from the ES modules beside it, as they are now', async () => {
    // bin.js runs the bundle, so a stale one (tsc -b alone after a change) would be what every
    // wal-push test here and in test/ exercises.
    const inputs = JSON.parse(await readFile(new URL('./push-main.inputs.json', import.meta.url), 'utf8')) as Record<
      string,
      string
    >;
    assert.ok(Object.keys(inputs).some((f) => f.endsWith('push-client.js')));
    for (const [file, sha256] of Object.entries(inputs)) {
      const now = createHash('sha256')
        .update(await readFile(resolve(dirname(BUNDLE), file)))
        .digest('hex');
      assert.equal(
        now,
        sha256,
        `dist/wal/push-main.cjs was built from another ${file}: run \`npm run build\` in packages/agent (tsc -b alone does not rebuild the bundle)`,
      );
    }
  });

  it('bin.js and the bundle load nothing but node builtins and the bundle on their way to the daemon', async () => {
    const s = await setup();
    const daemon = await stubDaemon(defaultSocketPath(s.pgdata), { ok: true, result: 'exists' });
    // Every module a wal-push process resolves (import and require alike), written out at exit.
    const hook = `data:text/javascript,${encodeURIComponent(`
      import { registerHooks } from 'node:module';
      const seen = [];
      registerHooks({ resolve(specifier, context, next) { const r = next(specifier, context); seen.push(r.url); return r; } });
      process.on('exit', () => process.stderr.write('modules ' + JSON.stringify(seen) + '\\n'));`)}`;
    try {
      for (const entry of [BIN, BUNDLE]) {
        const r = await run(['--import', hook, entry], ['wal-push', `pg_wal/${SEGMENT}`, '--cluster', 'c1'], s.pgdata);
        assert.equal(r.code, 0, r.stderr);
        const urls = JSON.parse(/^modules (.*)$/m.exec(r.stderr)![1]!) as string[];
        const own = urls.filter((u) => !u.startsWith('node:'));
        assert.deepEqual(
          own.map((u) => u.replace(/^.*\/dist\//, '')),
          entry === BIN ? ['bin.js', 'wal/push-main.cjs'] : ['wal/push-main.cjs'],
          `${entry} loads ${urls.join(' ')}`,
        );
      }
      assert.equal(daemon.requests.length, 2);
    } finally {
      await daemon.close();
      await s.done();
    }
  });
  it('the bundle runs only wal-push: another command is refused with InvalidArgument, not run as wal-push', async () => {
    const s = await setup();
    try {
      const r = await run([BUNDLE], ['backup'], s.pgdata);
      assert.equal(r.code, ErrorCodes.InvalidArgument.exit);
      assert.match(
        r.stderr,
        new RegExp(`^pgfleet-agent: ${ErrorCodes.InvalidArgument.code} .*only \`pgfleet-agent wal-push\``),
      );
    } finally {
      await s.done();
    }
  });
});

for (const { name, entry } of ENTRIES) {
  describe(`wal-push through ${name}`, () => {
    const agent = (args: string[], cwd: string, env: Record<string, string> = {}) => run([entry], args, cwd, env);

    it('sends the one request shape: absolute path, cluster and repositories from flags and environment; exit 0 on the ack', async () => {
      const s = await setup();
      const daemon = await stubDaemon(defaultSocketPath(s.pgdata), { ok: true, result: 'stored' });
      try {
        const r = await agent(['wal-push', `pg_wal/${SEGMENT}`, '--repo-path', s.repoDir], s.pgdata, {
          PGFLEET_CLUSTER: 'c1',
        });
        assert.equal(r.code, 0, r.stderr);
        assert.deepEqual(daemon.requests, [
          { v: PROTOCOL_VERSION, op: 'wal-push', path: s.walPath, cluster: 'c1', repoPath: s.repoDir },
        ]);
        // Flags before %p and a socket named by --socket: parsed the same way.
        const other = await stubDaemon(join(s.root, 'other.sock'), { ok: true, result: 'exists' });
        try {
          const r2 = await agent(
            ['wal-push', '--cluster=c2', '--socket', join(s.root, 'other.sock'), `pg_wal/${SEGMENT}`],
            s.pgdata,
          );
          assert.equal(r2.code, 0, r2.stderr);
          assert.deepEqual(other.requests, [{ v: PROTOCOL_VERSION, op: 'wal-push', path: s.walPath, cluster: 'c2' }]);
        } finally {
          await other.close();
        }
      } finally {
        await daemon.close();
        await s.done();
      }
    });

    it("a daemon's refusal keeps its code and exit code; a daemon that hangs up fails with WalDaemonFailed", async () => {
      const s = await setup();
      const socket = defaultSocketPath(s.pgdata);
      try {
        const refusing = await stubDaemon(socket, {
          ok: false,
          code: ErrorCodes.WalFileEmpty.code,
          message: `WAL file ${SEGMENT} is empty (0 bytes)`,
        });
        const r = await agent(['wal-push', `pg_wal/${SEGMENT}`, '--cluster', 'c1'], s.pgdata);
        await refusing.close();
        assert.equal(r.code, ErrorCodes.WalFileEmpty.exit);
        assert.match(
          r.stderr,
          new RegExp(`^pgfleet-agent: ${ErrorCodes.WalFileEmpty.code} WAL file ${SEGMENT} is empty`),
        );

        const mute = await stubDaemon(socket, 'hang-up');
        const m = await agent(['wal-push', `pg_wal/${SEGMENT}`, '--cluster', 'c1', '--repo-path', s.repoDir], s.pgdata);
        await mute.close();
        assert.equal(m.code, ErrorCodes.WalDaemonFailed.exit);
        assert.match(m.stderr, new RegExp(`${ErrorCodes.WalDaemonFailed.code} .*without an answer`));
        assert.equal(
          (await new Repository(new PosixDriver(s.repoDir), TEST_MANIFEST_KEYS).findWal('c1', SEGMENT)).length,
          0,
        );
      } finally {
        await s.done();
      }
    });

    it('without a daemon it archives by itself: stored, idempotent, refusals with their codes', async () => {
      const s = await setup();
      const repo = new Repository(new PosixDriver(s.repoDir), TEST_MANIFEST_KEYS);
      const args = ['--cluster', 'c1', '--repo-path', s.repoDir];
      try {
        // No cluster key yet (the daemon never met the controller): nothing is archived, PostgreSQL retries.
        const keyless = await agent(['wal-push', `pg_wal/${SEGMENT}`, ...args], s.pgdata);
        assert.equal(keyless.code, ErrorCodes.WalKeyMissing.exit);
        assert.match(keyless.stderr, new RegExp(`${ErrorCodes.WalKeyMissing.code} .*${s.pgdata}.pgfleet-cluster.key`));
        assert.equal((await repo.findWal('c1', SEGMENT)).length, 0);
        await writeTestClusterKey(s.pgdata, 'c1');
        const first = await agent(['wal-push', `pg_wal/${SEGMENT}`, ...args], s.pgdata);
        assert.equal(first.code, 0, first.stderr);
        assert.deepEqual(
          (await repo.findWal('c1', SEGMENT)).map((w) => w.authentic),
          [true],
        );
        const again = await agent(['wal-push', `pg_wal/${SEGMENT}`, ...args], s.pgdata);
        assert.equal(again.code, 0, again.stderr);

        const empty = '000000010000000000000002';
        await writeFile(join(s.pgdata, 'pg_wal', empty), '');
        const e = await agent(['wal-push', `pg_wal/${empty}`, ...args], s.pgdata);
        assert.equal(e.code, ErrorCodes.WalFileEmpty.exit);
        assert.match(e.stderr, new RegExp(ErrorCodes.WalFileEmpty.code));

        // Same name, different content: never overwritten.
        const original = segment(SEGMENT);
        await writeFile(s.walPath, Buffer.concat([original.subarray(0, original.length - 1), Buffer.from([7])]));
        const conflict = await agent(['wal-push', `pg_wal/${SEGMENT}`, ...args], s.pgdata);
        assert.equal(conflict.code, ErrorCodes.WalConflict.exit);
        assert.match(conflict.stderr, new RegExp(ErrorCodes.WalConflict.code));
        assert.equal((await repo.findWal('c1', SEGMENT)).length, 1);

        // Nothing to archive into: the missing option, as the option table names it.
        const noRepo = await agent(['wal-push', `pg_wal/${empty}`, '--cluster', 'c1'], s.pgdata);
        assert.equal(noRepo.code, ErrorCodes.InvalidConfig.exit);
        assert.match(noRepo.stderr, /missing required option 'repo'/);
      } finally {
        repo.close();
        await s.done();
      }
    });

    it("a daemon serving another cluster says so and wal-push archives by itself; a config file's socket is tried", async () => {
      const s = await setup();
      const repo = new Repository(new PosixDriver(s.repoDir), TEST_MANIFEST_KEYS);
      await writeTestClusterKey(s.pgdata, 'c1');
      try {
        const elsewhere = await stubDaemon(defaultSocketPath(s.pgdata), {
          ok: false,
          code: ErrorCodes.InvalidConfig.code,
          message: 'the agent daemon serves another cluster; archiving directly',
          direct: true,
        });
        const r = await agent(['wal-push', `pg_wal/${SEGMENT}`, '--cluster', 'c1', '--repo-path', s.repoDir], s.pgdata);
        await elsewhere.close();
        assert.equal(r.code, 0, r.stderr);
        assert.match(r.stderr, /serves another cluster; archiving directly/);
        assert.equal((await repo.findWal('c1', SEGMENT)).length, 1);

        // No daemon at the default socket: the config file names another, with the cluster.
        const config = join(s.root, 'agent.yaml');
        const socket = join(s.root, 'configured.sock');
        await writeFile(config, `cluster: c9\nsocket: ${socket}\n`);
        const configured = await stubDaemon(socket, { ok: true, result: 'exists' });
        const c = await agent(['wal-push', `pg_wal/${SEGMENT}`, '--config', config], s.pgdata);
        await configured.close();
        assert.equal(c.code, 0, c.stderr);
        assert.deepEqual(configured.requests, [
          { v: PROTOCOL_VERSION, op: 'wal-push', path: s.walPath, cluster: 'c9' },
        ]);
      } finally {
        repo.close();
        await s.done();
      }
    });

    it('reports bad arguments with their exit code before asking any daemon; --help prints the table', async () => {
      const s = await setup();
      const daemon = await stubDaemon(defaultSocketPath(s.pgdata), { ok: true, result: 'stored' });
      try {
        const bad = await agent(['wal-push', `pg_wal/${SEGMENT}`, '--no-such-flag'], s.pgdata);
        assert.equal(bad.code, ErrorCodes.InvalidArgument.exit);
        assert.match(
          bad.stderr,
          new RegExp(`^pgfleet-agent: ${ErrorCodes.InvalidArgument.code} pgfleet-agent wal-push:`),
        );
        const missing = await agent(['wal-push'], s.pgdata);
        assert.equal(missing.code, ErrorCodes.InvalidArgument.exit);
        assert.match(missing.stderr, /missing <path>/);
        const help = await agent(['wal-push', '--help'], s.pgdata);
        assert.equal(help.code, 0);
        assert.match(help.stdout, /^pgfleet-agent wal-push: archive one WAL file/);
        assert.deepEqual(daemon.requests, []);
      } finally {
        await daemon.close();
        await s.done();
      }
    });
  });
}
