import { after, test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join, relative } from 'node:path';
import { PosixDriver, readSmall } from './posix-driver.js';
import { repositoryDriverSuite } from './driver-suite.js';

const dirs: string[] = [];
after(async () => {
  for (const d of dirs) await rm(d, { recursive: true, force: true });
});
async function tempDir(): Promise<string> {
  const dir = await mkdtemp(join(tmpdir(), 'pgfleet-posix-'));
  dirs.push(dir);
  return dir;
}

repositoryDriverSuite('posix', async () => new PosixDriver(await tempDir()), {
  localFiles: true,
  spec: true,
  listKeys: true,
});

/** A posix driver that records the directories it fsyncs (relative to the repository root, '.' for the root). */
class SyncRecordingDriver extends PosixDriver {
  synced: string[] = [];
  protected override async syncDir(path: string): Promise<void> {
    await super.syncDir(path);
    this.synced.push(relative(this.root, path) || '.');
  }
  take(): string[] {
    const s = this.synced;
    this.synced = [];
    return s;
  }
}

test('a put that creates directories makes their entries durable too, and only then', async () => {
  const d = new SyncRecordingDriver(await tempDir());
  await d.put('c/cluster.json', Buffer.from('{}'));
  assert.deepEqual(d.take(), ['c', '.'], 'c/ and its entry in the root');

  // A new wal/<timeline+log>/ directory (every 256 segments): its entry and wal/'s are synced, deepest first.
  await d.put('c/wal/0000000100000000/000000010000000000000001-x', Buffer.from('seg 1'));
  assert.deepEqual(d.take(), ['c/wal/0000000100000000', 'c/wal', 'c']);
  await d.put('c/wal/0000000100000000/000000010000000000000002-x', Buffer.from('seg 2'));
  assert.deepEqual(d.take(), ['c/wal/0000000100000000'], 'an existing directory costs one fsync, as before');
  await d.put('c/wal/0000000100000001/000000010000000100000000-x', Buffer.from('seg 3'));
  assert.deepEqual(d.take(), ['c/wal/0000000100000001', 'c/wal']);

  // Deferred puts leave every directory to syncKeys, which leaves nothing for later puts.
  await d.put('c/backup/L/pg_data/base/1/1259', Buffer.from('page'), { deferDirSync: true });
  assert.deepEqual(d.take(), []);
  await d.syncKeys(['c/backup/L/pg_data/base/1/1259']);
  assert.deepEqual(d.take(), [
    'c/backup/L/pg_data/base/1',
    'c/backup/L/pg_data/base',
    'c/backup/L/pg_data',
    'c/backup/L',
    'c/backup',
    'c',
    '.',
  ]);
  await d.put('c/backup/L/backup.manifest', Buffer.from('{}'));
  assert.deepEqual(d.take(), ['c/backup/L']);

  // Concurrent puts into one new directory: each returns only once its entry in wal/ is synced.
  const parentSyncedAtReturn = await Promise.all(
    ['a', 'b', 'c'].map(async (n) => {
      await d.put(`c/wal/0000000100000002/${n}`, Buffer.from(n));
      return d.synced.includes('c/wal');
    }),
  );
  assert.deepEqual(parentSyncedAtReturn, [true, true, true]);
  assert.equal(d.take().filter((s) => s === 'c/wal/0000000100000002').length, 3);
  assert.equal((await readSmall(d, 'c/wal/0000000100000002/b')).toString(), 'b');

  // The writer used by backups: a commit that is not deferred syncs new directories the same way.
  const w = await d.openWriter('c/other/dir/file');
  await w.write(Buffer.from('bytes'));
  await w.commit();
  assert.deepEqual(d.take(), ['c/other/dir', 'c/other', 'c']);
  assert.equal((await readSmall(d, 'c/other/dir/file')).toString(), 'bytes');
});

test('a repository root that does not exist yet is created durably', async () => {
  const parent = await tempDir();
  const d = new SyncRecordingDriver(join(parent, 'repo'));
  await d.put('pgfleet.json', Buffer.from('{}'));
  assert.deepEqual(d.take(), ['.', '..']);
});
