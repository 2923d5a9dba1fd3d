import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, spawnSync } from 'node:child_process';
import { connect, createServer } from 'node:net';
import {
  link,
  mkdir,
  mkdtemp,
  readdir,
  readFile,
  realpath,
  rename,
  rm,
  stat,
  symlink,
  writeFile,
} from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { ErrorCodes, silentLogger, sleep } from '@pgfleet/core';
import { PosixDriver, Repository } from '@pgfleet/storage';
import { TEST_MANIFEST_KEYS } from '../testing/repository-fixtures.js';
import { fakePgdata, segment, WAL_FIXTURE_SEGMENT_SIZE, WAL_FIXTURE_SYSTEM_ID } from '../testing/wal-fixtures.js';
import { WalArchiveServer, archiveOrder } from './archive-server.js';
import { agentLauncherScript } from './launcher.js';
import {
  encodeFrame,
  FrameDecoder,
  FrameError,
  isDaemonReply,
  LEGACY_ARGS_VERSION,
  MAX_FRAME_BYTES,
  NoDaemonError,
  defaultSocketPath,
  PROTOCOL_VERSION,
  pushedMarkerDir,
  requestDaemon,
  type DaemonReply,
  type WalPushRequest,
} from './socket.js';

const SEG = WAL_FIXTURE_SEGMENT_SIZE;
const SYSID = WAL_FIXTURE_SYSTEM_ID;

/**
 * Sends any message, as a client of another release would, and resolves with the reply: for
 * request shapes no current client sends (requestDaemon takes only the one shape).
 */
function sendRaw(socketPath: string, message: unknown): Promise<DaemonReply> {
  return new Promise((resolve, reject) => {
    const sock = connect(socketPath, () => sock.write(encodeFrame(message)));
    const decoder = new FrameDecoder();
    sock.on('error', reject);
    sock.on('data', (chunk: Buffer) => {
      const m = decoder.push(chunk)[0];
      if (m === undefined) return;
      sock.destroy();
      if (isDaemonReply(m)) resolve(m);
      else reject(new TypeError(`not a reply: ${JSON.stringify(m)}`));
    });
  });
}

/**
 * A daemon (not started) for cluster c1 on a fake PGDATA and a posix repository in a new temp dir,
 * on a socket of its own or (defaultSocket) on PGDATA's default one, as wal-push finds it.
 */
async function daemonInTempDir(extra: { watchReady?: boolean }, defaultSocket = false) {
  const root = await realpath(await mkdtemp(join(tmpdir(), 'pgfleet-walsrv-')));
  const pgdata = await fakePgdata(root);
  const repoDir = join(root, 'repo');
  const repo = new Repository(new PosixDriver(repoDir), TEST_MANIFEST_KEYS);
  const socketPath = defaultSocket ? defaultSocketPath(pgdata) : join(root, 'agent.sock');
  const server = new WalArchiveServer({
    socketPath,
    pgdata,
    cluster: 'c1',
    systemIdentifier: SYSID.toString(),
    repo,
    repoPath: repoDir,
    codec: 'zstd',
    ahead: 2,
    log: silentLogger(),
    ...extra,
  });
  return { root, pgdata, repoDir, repo, socketPath, server };
}

test('frames survive any split and merge of socket chunks', () => {
  const a = { v: 1, op: 'wal-push', path: '/x/pg_wal/000000010000000000000001' };
  const b = { ok: false, code: ErrorCodes.WalFileEmpty.code, message: 'ünïcode' };
  const bytes = Buffer.concat([encodeFrame(a), encodeFrame(b)]);
  for (let cut = 0; cut <= bytes.length; cut++) {
    const d = new FrameDecoder();
    const got = [...d.push(bytes.subarray(0, cut)), ...d.push(bytes.subarray(cut))];
    assert.deepEqual(got, [a, b], `cut at ${cut}`);
    assert.equal(d.pending, 0);
  }
  const d = new FrameDecoder();
  const one: unknown[] = [];
  for (const byte of bytes) one.push(...d.push(Buffer.from([byte])));
  assert.deepEqual(one, [a, b]);
});

test('oversized or non-JSON frames are errors, never buffered forever', () => {
  const head = Buffer.alloc(4);
  head.writeUInt32BE(MAX_FRAME_BYTES + 1);
  assert.throws(() => new FrameDecoder().push(head), FrameError);
  const bad = Buffer.concat([Buffer.from([0, 0, 0, 3]), Buffer.from('{{{')]);
  assert.throws(() => new FrameDecoder().push(bad), FrameError);
  assert.throws(() => encodeFrame({ path: 'x'.repeat(MAX_FRAME_BYTES) }), FrameError);
});

test('requestDaemon: missing socket or a non-socket file means no daemon; a silent daemon is an error', async () => {
  const dir = await mkdtemp(join(tmpdir(), 'pgfleet-sock-'));
  try {
    const req: WalPushRequest = { v: PROTOCOL_VERSION, op: 'wal-push', path: '/x' };
    await assert.rejects(requestDaemon(join(dir, 'none.sock'), req, 1000), NoDaemonError);
    await writeFile(join(dir, 'file.sock'), '');
    await assert.rejects(requestDaemon(join(dir, 'file.sock'), req, 1000), NoDaemonError);
    // Accepts, then hangs up without a reply: outcome unknown, must not count as "no daemon".
    const mute = createServer((s) => s.once('data', () => s.destroy()));
    await new Promise<void>((r) => mute.listen(join(dir, 'mute.sock'), r));
    await assert.rejects(
      requestDaemon(join(dir, 'mute.sock'), req, 1000),
      (err: unknown) => !(err instanceof NoDaemonError) && /without an answer/.test((err as Error).message),
    );
    // Garbage reply.
    const liar = createServer((s) => s.once('data', () => s.end(encodeFrame({ ok: 'maybe' }))));
    await new Promise<void>((r) => liar.listen(join(dir, 'liar.sock'), r));
    await assert.rejects(requestDaemon(join(dir, 'liar.sock'), req, 1000), /unexpected reply/);
    await Promise.all([new Promise((r) => mute.close(r)), new Promise((r) => liar.close(r))]);
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
});

test('with watchReady a segment is stored as soon as PostgreSQL marks it ready, before archive_command asks', async () => {
  const { root, pgdata, repo, socketPath, server } = await daemonInTempDir({ watchReady: true });
  await server.start();
  const wal = join(pgdata, 'pg_wal');
  const push = (name: string) =>
    requestDaemon(socketPath, { v: PROTOCOL_VERSION, op: 'wal-push', path: join(wal, name) }, 10_000);
  // The deadline only bounds a hang.
  const until = async (what: string, ok: () => Promise<boolean>) => {
    const deadline = Date.now() + 120_000;
    while (!(await ok())) {
      assert.ok(Date.now() < deadline, what);
      await sleep(20);
    }
  };
  try {
    // As PostgreSQL does: the complete segment first, then its .ready file.
    const foreign = '000000010000000000000001';
    const good = ['000000010000000000000002', '000000010000000000000003'];
    await writeFile(join(wal, foreign), segment(foreign, 42n));
    await writeFile(join(wal, 'archive_status', `${foreign}.ready`), '');
    await until('foreign segment tried', async () => server.aheadFailures > 0);
    for (const n of good) {
      await writeFile(join(wal, n), segment(n));
      await writeFile(join(wal, 'archive_status', `${n}.ready`), '');
    }
    // pushedAhead counts once the push settled, a moment after the object is visible.
    await until(
      'ready segments stored without a request',
      async () =>
        server.pushedAhead >= 2 &&
        (await Promise.all(good.map((n) => repo.findWal('c1', n)))).every((f) => f.length === 1),
    );
    assert.equal(server.requests, 0, 'nobody asked yet');
    assert.equal(server.pushedAhead, 2);
    // A failed push-ahead is not retried in a loop meanwhile; archive_command gets the error itself.
    assert.equal(server.aheadFailures, 1);
    assert.equal((await repo.findWal('c1', foreign)).length, 0);
    const f = await push(foreign);
    assert.equal(!f.ok && f.code, ErrorCodes.WalFileInvalid.code);
    // archive_command's request finds the segment stored already.
    for (const n of good) assert.deepEqual(await push(n), { ok: true, result: 'exists' });
  } finally {
    await server.stop();
    await rm(root, { recursive: true, force: true });
  }
});

test('ready files are pushed in the archiver order: history first, then oldest segment', () => {
  const names = [
    '000000020000000000000005',
    '000000010000000000000004',
    '00000002.history',
    '000000010000000000000003.00000028.backup',
  ];
  assert.deepEqual([...names].sort(archiveOrder), [
    '00000002.history',
    '000000010000000000000003.00000028.backup',
    '000000010000000000000004',
    '000000020000000000000005',
  ]);
});

test('daemon archives through the socket: durable ack, idempotent, refusals keep their codes, ready files pushed ahead', async () => {
  const { root, pgdata, repoDir, repo, socketPath, server } = await daemonInTempDir({});
  await server.start();
  const push = (name: string, cluster?: string) =>
    requestDaemon(
      socketPath,
      { v: PROTOCOL_VERSION, op: 'wal-push', path: join(pgdata, 'pg_wal', name), ...(cluster ? { cluster } : {}) },
      10_000,
    );
  try {
    const names = [
      '000000010000000000000001',
      '000000010000000000000002',
      '000000010000000000000003',
      '000000010000000000000004',
    ];
    for (const n of names) {
      await writeFile(join(pgdata, 'pg_wal', n), segment(n));
      await writeFile(join(pgdata, 'pg_wal', 'archive_status', `${n}.ready`), '');
    }
    assert.deepEqual(await push(names[0]!, 'c1'), { ok: true, result: 'stored' });
    assert.equal((await repo.findWal('c1', names[0]!)).length, 1, 'stored before the ack');
    // The others were pushed ahead without being asked for (the deadline only bounds a hang).
    const deadline = Date.now() + 120_000;
    while (
      (await Promise.all(names.map((n) => repo.findWal('c1', n)))).some((f) => f.length === 0) &&
      Date.now() < deadline
    )
      await sleep(20);
    for (const n of names) assert.equal((await repo.findWal('c1', n)).length, 1, `${n} pushed ahead`);
    assert.ok(server.pushedAhead >= 3);
    assert.deepEqual(await push(names[1]!), { ok: true, result: 'exists' });
    assert.deepEqual(await push(names[0]!), { ok: true, result: 'exists' });

    // Empty and truncated files are refused with their codes; nothing lands in the repository.
    const bad = ['000000010000000000000005', '000000010000000000000006'];
    await writeFile(join(pgdata, 'pg_wal', bad[0]!), '');
    await writeFile(join(pgdata, 'pg_wal', bad[1]!), segment(bad[1]!).subarray(0, 8192));
    const empty = await push(bad[0]!);
    assert.equal(empty.ok, false);
    assert.equal(!empty.ok && empty.code, ErrorCodes.WalFileEmpty.code);
    const short = await push(bad[1]!);
    assert.equal(!short.ok && short.code, ErrorCodes.WalFileEmpty.code);
    for (const n of bad) assert.equal((await repo.findWal('c1', n)).length, 0);
    // Once the file is right, the retry succeeds.
    await writeFile(join(pgdata, 'pg_wal', bad[1]!), segment(bad[1]!));
    assert.deepEqual(await push(bad[1]!), { ok: true, result: 'stored' });

    // A foreign segment (other system identifier) and another cluster's request are refused.
    const foreign = '000000010000000000000007';
    await writeFile(join(pgdata, 'pg_wal', foreign), segment(foreign, 42n));
    const f = await push(foreign);
    assert.equal(!f.ok && f.code, ErrorCodes.WalFileInvalid.code);
    // wal-push configured for another cluster or repository: told to archive by itself.
    const other = await push(names[0]!, 'someone-else');
    assert.equal(!other.ok && other.direct, true);
    const otherRepo = await requestDaemon(
      socketPath,
      {
        v: PROTOCOL_VERSION,
        op: 'wal-push',
        path: join(pgdata, 'pg_wal', names[0]!),
        repoPath: join(root, 'elsewhere'),
      },
      10_000,
    );
    assert.equal(!otherRepo.ok && otherRepo.direct, true);
    assert.deepEqual(
      await requestDaemon(
        socketPath,
        {
          v: PROTOCOL_VERSION,
          op: 'wal-push',
          path: join(pgdata, 'pg_wal', names[0]!),
          cluster: 'c1',
          repoPath: repoDir,
        },
        10_000,
      ),
      { ok: true, result: 'exists' },
    );
    // The previous release's fast path sent its command line unparsed (version 2): the daemon
    // still reads cluster and repository from its flags and environment, for an archive_command
    // binary older than the agent during an upgrade.
    const viaArgs = (args: string[], env: Record<string, string> = {}) =>
      sendRaw(socketPath, {
        v: LEGACY_ARGS_VERSION,
        op: 'wal-push',
        path: join(pgdata, 'pg_wal', names[0]!),
        args: ['pg_wal/x', ...args],
        env,
      });
    assert.deepEqual(await viaArgs(['--cluster', 'c1', '--repo-path', repoDir]), { ok: true, result: 'exists' });
    assert.deepEqual(await viaArgs([`--repo=${repoDir}`], { PGFLEET_CLUSTER: 'c1' }), { ok: true, result: 'exists' });
    assert.deepEqual(
      await viaArgs(['--config', join(root, 'agent.yaml')]),
      { ok: true, result: 'exists' },
      'a config file is not read: the daemon serves what it serves',
    );
    const argsOther = await viaArgs(['--cluster', 'c1', '--repo-path', join(root, 'elsewhere')]);
    assert.equal(!argsOther.ok && argsOther.direct, true);
    const envOther = await viaArgs([], { PGFLEET_CLUSTER: 'someone-else' });
    assert.equal(!envOther.ok && envOther.direct, true);
    // A version-2 request without args is read like the one shape.
    assert.deepEqual(
      await sendRaw(socketPath, {
        v: LEGACY_ARGS_VERSION,
        op: 'wal-push',
        path: join(pgdata, 'pg_wal', names[0]!),
        cluster: 'c1',
      }),
      { ok: true, result: 'exists' },
    );
    const v2Other = await sendRaw(socketPath, {
      v: LEGACY_ARGS_VERSION,
      op: 'wal-push',
      path: join(pgdata, 'pg_wal', names[0]!),
      cluster: 'someone-else',
    });
    assert.equal(!v2Other.ok && v2Other.direct, true);
    // args need version 2: a version-1 request carrying them is refused, never archived as if it named nothing.
    const v1Args = await sendRaw(socketPath, {
      v: 1,
      op: 'wal-push',
      path: join(pgdata, 'pg_wal', names[0]!),
      args: ['x', '--cluster', 'someone-else'],
    });
    assert.equal(!v1Args.ok && v1Args.code, ErrorCodes.InvalidArgument.code);
    // A version no release sent is refused the same way.
    const v3 = await sendRaw(socketPath, { v: 3, op: 'wal-push', path: join(pgdata, 'pg_wal', names[0]!) });
    assert.equal(!v3.ok && v3.code, ErrorCodes.InvalidArgument.code);
    const badFlag = await viaArgs(['--no-such-flag']);
    assert.equal(!badFlag.ok && badFlag.direct && badFlag.code, ErrorCodes.InvalidArgument.code);
    // Same name, different content: never overwritten.
    await writeFile(
      join(pgdata, 'pg_wal', names[2]!),
      Buffer.concat([segment(names[2]!).subarray(0, SEG - 1), Buffer.from([7])]),
    );
    const conflict = await push(names[2]!);
    assert.equal(!conflict.ok && conflict.code, ErrorCodes.WalConflict.code);
    assert.equal((await repo.findWal('c1', names[2]!)).length, 1);
    assert.ok(server.requests >= 8);
  } finally {
    await server.stop();
  }
  assert.ok(!(await readdir(root)).includes('agent.sock'), 'socket removed on stop');
  await rm(root, { recursive: true, force: true });
});

test('a stale socket file left by a killed daemon is replaced; a live one is refused', async () => {
  const root = await mkdtemp(join(tmpdir(), 'pgfleet-walsrv-'));
  const pgdata = await fakePgdata(root);
  const socketPath = join(root, 'agent.sock');
  const repo = new Repository(new PosixDriver(join(root, 'repo')), TEST_MANIFEST_KEYS);
  const mk = () =>
    new WalArchiveServer({
      socketPath,
      pgdata,
      cluster: 'c1',
      systemIdentifier: SYSID.toString(),
      repo,
      codec: 'none',
      ahead: 0,
      log: silentLogger(),
    });
  // A daemon killed with SIGKILL leaves its socket file behind: nobody answers on it.
  const { spawnSync } = await import('node:child_process');
  spawnSync(process.execPath, [
    '-e',
    `require('net').createServer().listen(${JSON.stringify(socketPath)}, () => process.kill(process.pid, 'SIGKILL'))`,
  ]);
  assert.ok((await readdir(root)).includes('agent.sock'), 'stale socket file left behind');
  await assert.rejects(
    requestDaemon(socketPath, { v: PROTOCOL_VERSION, op: 'wal-push', path: '/x' }, 1000),
    NoDaemonError,
  );
  const a = mk();
  await a.start();
  await assert.rejects(mk().start(), /already listens/);
  await a.stop();
  await writeFile(socketPath, 'not a socket');
  await assert.rejects(mk().start(), /not a socket/);
  await rm(socketPath);
  const b = mk();
  await b.start();
  await b.stop();
  await rm(root, { recursive: true, force: true });
});

/**
 * The generated launcher in `root`, with a stand-in for node that records its arguments in
 * `nodeLog` and exits 3 (a small fake of our own client: these tests are about the script).
 */
async function launcherWithFakeNode(root: string): Promise<{ launcher: string; nodeLog: string }> {
  const nodeLog = join(root, 'node.log');
  const fakeNode = join(root, 'fake-node');
  await writeFile(fakeNode, `#!/bin/sh\necho "$@" >> '${nodeLog}'\nexit 3\n`, { mode: 0o755 });
  const launcher = join(root, 'pgfleet-agent');
  await writeFile(launcher, agentLauncherScript({ node: fakeNode, bin: '/x/bin.js', walPush: '/x/push-main.cjs' }), {
    mode: 0o755,
  });
  return { launcher, nodeLog };
}

test('the launcher answers archive_command from the daemon marker of a stored segment, and runs the client for anything else', async () => {
  const { root, pgdata, socketPath, server } = await daemonInTempDir({ watchReady: true }, true);
  const wal = join(pgdata, 'pg_wal');
  const markers = pushedMarkerDir(await realpath(pgdata));
  // A marker left by an earlier daemon names a file this one never checked: gone at start.
  await mkdir(markers, { recursive: true });
  await writeFile(join(markers, '000000010000000000000009'), '');
  await server.start();
  const { launcher, nodeLog } = await launcherWithFakeNode(root);
  const run = (args: string[], env: Record<string, string> = {}) => {
    const r = spawnSync(launcher, args, { cwd: pgdata, env: { PATH: process.env.PATH ?? '/usr/bin:/bin', ...env } });
    return r.status;
  };
  const nodeRuns = async () => (await readFile(nodeLog, 'utf8').catch(() => '')).split('\n').filter(Boolean);
  // The deadline only bounds a hang.
  const until = async (what: string, ok: () => Promise<boolean>) => {
    const deadline = Date.now() + 120_000;
    while (!(await ok())) {
      assert.ok(Date.now() < deadline, what);
      await sleep(20);
    }
  };
  const exists = (p: string) =>
    stat(p).then(
      () => true,
      () => false,
    );
  try {
    // Only the daemon's own pid and socket link: the stale marker is gone.
    assert.deepEqual((await readdir(markers)).sort(), ['.pid', '.sock']);
    const names = ['000000010000000000000002', '000000010000000000000003', '000000010000000000000004'];
    for (const n of names) {
      await writeFile(join(wal, n), segment(n));
      await writeFile(join(wal, 'archive_status', `${n}.ready`), '');
    }
    await until('markers of the pushed segments', async () => {
      const made = await readdir(markers);
      return names.every((n) => made.includes(n));
    });
    for (const n of names) assert.equal((await stat(join(markers, n))).ino, (await stat(join(wal, n))).ino);

    // The documented forms, answered without the client; the marker is used up.
    assert.equal(run(['wal-push', `pg_wal/${names[0]}`, '--config', '/etc/pgfleet/agent.yaml']), 0);
    assert.equal(await exists(join(markers, names[0]!)), false);
    assert.deepEqual(await nodeRuns(), []);
    // Asked again (PostgreSQL retries after a crash): no marker, so the client answers.
    assert.equal(run(['wal-push', `pg_wal/${names[0]}`]), 3);
    assert.deepEqual(await nodeRuns(), [`/x/push-main.cjs wal-push pg_wal/${names[0]}`]);

    // A command line the client would refuse (--config without its value) is the client's to refuse.
    assert.equal(run(['wal-push', `pg_wal/${names[1]}`, '--config', '--cluster=x']), 3);
    // Another file under the same name (a new cluster in the same place): never the marker's.
    const replaced = join(wal, `${names[1]}.new`);
    await writeFile(replaced, segment(names[1]!));
    await rename(replaced, join(wal, names[1]!));
    assert.equal(run(['wal-push', `pg_wal/${names[1]}`]), 3);
    // Options or environment that could name another destination: the client decides.
    assert.equal(run(['wal-push', `pg_wal/${names[2]}`, '--cluster', 'c1']), 3);
    assert.equal(run(['wal-push', `pg_wal/${names[2]}`], { PGFLEET_CLUSTER: 'c1' }), 3);
    assert.equal(run(['wal-push', `../other/pg_wal/${names[2]}`]), 3);
    assert.equal((await nodeRuns()).length, 6);
    assert.equal(await exists(join(markers, names[2]!)), true);
    // The client asking over the socket uses the marker up too.
    const r = await requestDaemon(
      socketPath,
      { v: PROTOCOL_VERSION, op: 'wal-push', path: join(wal, names[2]!) },
      10_000,
    );
    assert.deepEqual(r, { ok: true, result: 'exists' });
    assert.equal(await exists(join(markers, names[2]!)), false);
    // Other commands go to bin.js.
    assert.equal(run(['backup', '--help']), 3);
    assert.equal((await nodeRuns()).at(-1), '/x/bin.js backup --help');
    // The form with --config=FILE, on a segment pushed now.
    const last = '000000010000000000000005';
    await writeFile(join(wal, last), segment(last));
    await writeFile(join(wal, 'archive_status', `${last}.ready`), '');
    await until('the last segment marked', async () => exists(join(markers, last)));
    assert.equal(run(['wal-push', `pg_wal/${last}`, '--config=/etc/pgfleet/agent.yaml']), 0);
    // A stopped daemon leaves no marker behind.
    await server.stop();
    assert.equal(await exists(markers), false);
  } finally {
    await server.stop();
    await rm(root, { recursive: true, force: true });
  }
});

test('the launcher trusts markers only of a live daemon on the default socket, and waits for a push under way', async () => {
  const root = await realpath(await mkdtemp(join(tmpdir(), 'pgfleet-launcher-')));
  const pgdata = await fakePgdata(root);
  const markers = pushedMarkerDir(pgdata);
  await mkdir(markers);
  // What a daemon on the default socket leaves there (archive-server openMarkers); this test
  // process stands in for it (its pid), a plain file for its socket.
  await writeFile(defaultSocketPath(pgdata), '');
  await link(defaultSocketPath(pgdata), join(markers, '.sock'));
  await writeFile(join(markers, '.pid'), `${process.pid}\n`);
  const { launcher, nodeLog } = await launcherWithFakeNode(root);
  const nodeRuns = async () => (await readFile(nodeLog, 'utf8').catch(() => '')).split('\n').filter(Boolean).length;
  const exitOf = (child: ReturnType<typeof spawn>) =>
    new Promise<number | null>((res) => child.once('exit', (code) => res(code)));
  const name = '000000010000000000000005';
  const walFile = join(pgdata, 'pg_wal', name);
  const runSync = () => spawnSync(launcher, ['wal-push', `pg_wal/${name}`], { cwd: pgdata }).status;
  try {
    await writeFile(walFile, segment(name));
    // The daemon is pushing it: the launcher waits, then takes the marker made meanwhile.
    await writeFile(join(markers, `${name}.pending`), '');
    const waiting = spawn(launcher, ['wal-push', `pg_wal/${name}`], { cwd: pgdata, stdio: 'ignore' });
    const exited = exitOf(waiting);
    await link(walFile, join(markers, name));
    await rm(join(markers, `${name}.pending`));
    assert.equal(await exited, 0);
    assert.equal(await nodeRuns(), 0, 'the client never ran');

    // A marker of a daemon that died (its pid gone) vouches for nothing.
    await link(walFile, join(markers, name));
    const gone = spawnSync('true');
    await writeFile(join(markers, '.pid'), `${gone.pid}\n`);
    assert.equal(runSync(), 3);
    // Nor one of a daemon on another socket than the default one.
    await writeFile(join(markers, '.pid'), `${process.pid}\n`);
    await rm(join(markers, '.sock'));
    await writeFile(join(markers, '.sock'), '');
    assert.equal(runSync(), 3);
    // Nor a symbolic link in place of the hard link.
    await rm(join(markers, '.sock'));
    await link(defaultSocketPath(pgdata), join(markers, '.sock'));
    await rm(join(markers, name));
    await symlink(walFile, join(markers, name));
    assert.equal(runSync(), 3);
    assert.equal(await nodeRuns(), 3);
    // With the hard link back, the same command is answered without the client.
    await rm(join(markers, name));
    await link(walFile, join(markers, name));
    assert.equal(runSync(), 0);
    assert.equal(await nodeRuns(), 3);
  } finally {
    await rm(root, { recursive: true, force: true });
  }
});
