/**
 * What the repository promises across a crash of a writer: a WAL copy found by a listing is made
 * durable and read back before "already archived" is answered (a damaged one is replaced), a
 * backup can make the WAL it needs durable whoever archived it, and leases of backups in
 * progress are found with their state.
 */
import { after, test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdir, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { dirname, join, relative } from 'node:path';
import { Readable } from 'node:stream';
import { type BackupLease, leasedLabels, leaseState } from './backup-lease.js';
import { sha, sink, TEST_MANIFEST_KEYS, testWalKey } from './driver-suite.js';
import { MirroredDriver } from './mirrored-driver.js';
import { PosixDriver } from './posix-driver.js';
import { Repository } from './repository.js';

const dirs: string[] = [];
after(async () => {
  for (const d of dirs) await rm(d, { recursive: true, force: true });
});
async function tempDir(): Promise<string> {
  const dir = await mkdtemp(join(tmpdir(), 'pgfleet-crash-'));
  dirs.push(dir);
  return dir;
}

/** A posix driver recording every fsync (files and directories, relative to the root). */
class SyncRecordingDriver extends PosixDriver {
  synced: string[] = [];
  protected override async syncDir(path: string): Promise<void> {
    await super.syncDir(path);
    this.synced.push(relative(this.root, path) || '.');
  }
  protected override async syncFile(path: string): Promise<void> {
    await super.syncFile(path);
    this.synced.push(relative(this.root, path));
  }
  take(): string[] {
    const s = this.synced;
    this.synced = [];
    return s;
  }
}

const SEG_NAME = '000000010000000000000003';
const segment = (fill: number) => Buffer.alloc(64 << 10, fill);

/** What a pusher that died after its rename but before its directory fsync leaves: the object, written by another process. */
async function leftByDeadPusher(root: string, name: string, body: Buffer): Promise<string> {
  const key = testWalKey('c', name, sha(body));
  await mkdir(dirname(join(root, key)), { recursive: true });
  await writeFile(join(root, key), body);
  return key;
}

test('"exists" only after the found copy is fsynced with its directories and read back; once per process', async () => {
  const root = await tempDir();
  const seg = segment(3);
  const key = await leftByDeadPusher(root, SEG_NAME, seg);
  const d = new SyncRecordingDriver(root);
  const repo = new Repository(d, TEST_MANIFEST_KEYS);
  assert.equal(await repo.pushWal('c', SEG_NAME, sha(seg), () => Readable.from([seg]), 'none'), 'exists');
  assert.deepEqual(
    d.take(),
    [key, 'c/wal/0000000100000000', 'c/wal', 'c', '.'],
    'the file, then its directories up to the root',
  );
  // The same process asked again (archive_command retrying, the WAL stream): nothing more to do.
  assert.equal(await repo.pushWal('c', SEG_NAME, sha(seg), () => Readable.from([seg]), 'none'), 'exists');
  assert.deepEqual(d.take(), []);
});

test('a found copy that fails its checksum is replaced by the right bytes, and reported', async () => {
  const root = await tempDir();
  const seg = segment(4);
  const name = '000000010000000000000004';
  const key = await leftByDeadPusher(root, name, seg);
  await writeFile(join(root, key), segment(5)); // the named checksum no longer matches: damaged
  const wal = join(root, 'pg_wal', name);
  await mkdir(dirname(wal), { recursive: true });
  await writeFile(wal, seg);
  const repo = new Repository(new PosixDriver(root), TEST_MANIFEST_KEYS);
  const out = await repo.archiveWal('c', name, wal, 'none', seg.length);
  assert.deepEqual(out, { result: 'stored', sha256: sha(seg), replaced: [key] });
  assert.deepEqual(await readFile(join(root, key)), seg);
  const back = sink();
  await repo.fetchWal('c', name, back);
  assert.deepEqual(back.data(), seg);
});

test('a damaged copy under another codec is replaced and removed, so no reader picks it', async () => {
  const root = await tempDir();
  const seg = segment(6);
  const name = '000000010000000000000006';
  const damaged = await leftByDeadPusher(root, name, seg);
  await writeFile(join(root, damaged), Buffer.from('torn'));
  const repo = new Repository(new PosixDriver(root), TEST_MANIFEST_KEYS);
  assert.equal(await repo.pushWal('c', name, sha(seg), () => Readable.from([seg]), 'zstd'), 'stored');
  const found = await repo.findWal('c', name);
  assert.deepEqual(
    found.map((w) => w.codec),
    ['zstd'],
  );
});

test('on a mirror, each member confirms its own copy; the one lacking it gets it', async () => {
  const [ra, rb] = [await tempDir(), await tempDir()];
  const seg = segment(7);
  const name = '000000010000000000000007';
  await leftByDeadPusher(ra, name, seg);
  const a = new SyncRecordingDriver(ra);
  const repo = new Repository(new MirroredDriver([a, new PosixDriver(rb)]), TEST_MANIFEST_KEYS);
  assert.equal(await repo.pushWal('c', name, sha(seg), () => Readable.from([seg]), 'none'), 'stored');
  assert.ok(a.take().length > 0, 'the copy in the first member was synced');
  assert.equal(await repo.isWalArchived('c', name), true);
});

test('syncWal fsyncs every named WAL file and its directories, and names what is missing', async () => {
  const root = await tempDir();
  const k1 = await leftByDeadPusher(root, '000000010000000000000010', segment(1));
  const k2 = await leftByDeadPusher(root, '000000010000000100000000', segment(2));
  const d = new SyncRecordingDriver(root);
  const repo = new Repository(d, TEST_MANIFEST_KEYS);
  const lacking = await repo.syncWal('c', [
    '000000010000000000000010',
    '000000010000000100000000',
    '000000010000000100000001',
  ]);
  assert.deepEqual(lacking, ['000000010000000100000001']);
  const synced = d.take();
  for (const p of [k1, k2, 'c/wal/0000000100000000', 'c/wal/0000000100000001', 'c/wal', 'c', '.'])
    assert.ok(synced.includes(p), `${p} synced: ${synced.join(' ')}`);
  assert.ok(synced.indexOf('c/wal/0000000100000000') < synced.indexOf('c/wal'), 'deepest directory first');
});

function lease(label: string, chain: string[], refreshedAt: Date, staleAfterMs = 60_000): BackupLease {
  return {
    format: 1,
    cluster: 'c',
    label,
    chain,
    host: 'h',
    pid: 1,
    startedAt: refreshedAt.toISOString(),
    refreshedAt: refreshedAt.toISOString(),
    staleAfterMs,
  };
}

test('leases: listed with their state; live ones protect their label and chain, stale and unreadable ones nothing', async () => {
  const root = await tempDir();
  const repo = new Repository(new PosixDriver(root), TEST_MANIFEST_KEYS);
  const now = Date.parse('2030-01-01T00:10:00Z');
  await repo.writeBackupLease(lease('L3I', ['L2I', 'L1F'], new Date(now - 30_000)));
  await repo.writeBackupLease(lease('L9I', ['L8F'], new Date(now - 61_000)));
  await repo.driver.put('c/backup/L7I/backup.lease', Buffer.from('not json'));
  const found = await repo.listBackupLeases('c', now);
  assert.deepEqual(
    found.map((f) => [f.label, f.state, f.ageMs]),
    [
      ['L3I', 'live', 30_000],
      ['L7I', 'unreadable', undefined],
      ['L9I', 'stale', 61_000],
    ],
  );
  assert.deepEqual([...leasedLabels(found).keys()].sort(), ['L1F', 'L2I', 'L3I']);
  // A refresh time ahead of the reader's clock (another host's clock) is fresh, not negative.
  assert.deepEqual(leaseState(lease('X', [], new Date(now + 5000)), now), { state: 'live', ageMs: 0 });
  // A lease cannot pin retention forever: a refresh time a day ahead, or a claimed stale time of a
  // year, is judged stale by the bounds (whoever wrote it).
  assert.equal(leaseState(lease('X', [], new Date(now + 86_400_000)), now).state, 'stale');
  assert.equal(
    leaseState({ ...lease('X', [], new Date(now - 2 * 3_600_000)), staleAfterMs: 365 * 86_400_000 }, now).state,
    'stale',
  );
  assert.equal(await repo.hasBackupLease('c', 'L3I'), true);
  await repo.removeBackupLease('c', 'L3I');
  assert.equal(await repo.hasBackupLease('c', 'L3I'), false);
  // A lease is not a manifest: no listing of complete backups sees it.
  assert.deepEqual(await repo.listBackups('c'), []);
});

test('a withdrawn manifest is reinstated byte for byte', async () => {
  const root = await tempDir();
  const repo = new Repository(new PosixDriver(root), TEST_MANIFEST_KEYS);
  const key = repo.backupManifestKey('c', 'L1F');
  const stored = Buffer.from('{"format":1, "kept": "as stored"}\n');
  await repo.driver.put(key, stored);
  const taken = await repo.withdrawManifest('c', 'L1F');
  assert.deepEqual(taken, stored);
  assert.equal(await repo.hasManifest('c', 'L1F'), false);
  assert.equal(await repo.withdrawManifest('c', 'L1F'), undefined);
  await repo.reinstateManifest('c', 'L1F', taken!);
  assert.deepEqual(await readFile(join(root, key)), stored);
});
