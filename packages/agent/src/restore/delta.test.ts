import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import {
  lstat,
  mkdir,
  mkdtemp,
  readFile,
  readdir,
  readlink,
  rm,
  stat,
  symlink,
  unlink,
  utimes,
  writeFile,
} from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Readable } from 'node:stream';
import { PgfleetError } from '@pgfleet/core';
import { PosixDriver, Repository, type BackupManifest, type ManifestFile } from '@pgfleet/storage';
import { runRestore, type RestoreOptions } from './restore.js';
import { testFullManifest, testRestoreOptions } from '../testing/restore-fixtures.js';
import { TEST_MANIFEST_KEYS } from '../testing/repository-fixtures.js';

const FILES: Record<string, string> = {
  PG_VERSION: '16\n',
  'global/pg_control': 'control'.repeat(100),
  'base/1/100': 'relation A '.repeat(2000),
  'base/1/200': 'relation B '.repeat(3000),
  'postgresql.auto.conf': '# auto\n',
  'pg_tblspc/16400/PG_16_202307071/1/300': 'tablespace relation '.repeat(500),
};

async function makeBackup(root: string): Promise<{ repo: Repository; repoPath: string; manifest: BackupManifest }> {
  const repoPath = join(root, 'repo');
  const repo = new Repository(new PosixDriver(repoPath), TEST_MANIFEST_KEYS);
  await repo.init();
  const label = '20260101-000000F';
  const files: ManifestFile[] = [];
  for (const [path, content] of Object.entries(FILES)) {
    const s = await repo.writeObject(
      repo.backupFileKey('c1', label, path, 'zstd'),
      Readable.from([Buffer.from(content)]),
      'zstd',
    );
    files.push({
      path,
      size: s.size,
      mtimeMs: 1_700_000_000_000,
      mode: 0o600,
      sha256: s.sha256,
      storedSize: s.storedSize,
      storedSha256: s.storedSha256,
      codec: 'zstd',
      backup: label,
    });
  }
  const manifest = testFullManifest({
    label,
    systemIdentifier: Buffer.from(FILES['global/pg_control']!).readBigUInt64LE(0).toString(),
    directories: [
      'base',
      'base/1',
      'global',
      'pg_wal',
      'pg_wal/archive_status',
      'pg_tblspc',
      'pg_tblspc/16400/PG_16_202307071',
      'pg_tblspc/16400/PG_16_202307071/1',
    ].map((path) => ({ path, mode: 0o700 })),
    links: [{ path: 'pg_tblspc/16400', target: join(root, 'outside-tablespace') }],
    files,
  });
  await repo.writeManifest(manifest);
  return { repo, repoPath, manifest };
}

test('delta restore keeps matching files, fetches damaged and missing ones, removes extras, never leaves the directory', async () => {
  const root = await mkdtemp(join(tmpdir(), 'pgfleet-delta-'));
  try {
    const { repo, repoPath, manifest } = await makeBackup(root);
    const outside = join(root, 'outside-tablespace');
    await mkdir(outside);
    await writeFile(join(outside, 'precious'), 'not ours');
    const target = join(root, 'pgdata');
    const opts = (over: Partial<RestoreOptions> = {}): RestoreOptions =>
      testRestoreOptions(repo, repoPath, manifest.label, target, over);
    await runRestore(opts({ targetDir: `${target}/` })); // a trailing slash changes nothing
    assert.ok(
      existsSync(`${target}.tablespaces/16400`) && !existsSync(join(target, '.tablespaces')),
      'tablespaces beside the target, not inside',
    );
    // Another major's version directory in the restored location (shared across pg_upgrade) is never removed.
    await mkdir(`${target}.tablespaces/16400/PG_14_202107181/1`, { recursive: true });
    await writeFile(`${target}.tablespaces/16400/PG_14_202107181/1/300`, 'another cluster');

    // Damage: same size and mtime but other bytes (only a checksum sees it), a removed file, extras everywhere.
    const a = join(target, 'base/1/100');
    const before = await stat(a);
    await writeFile(a, 'relation X '.repeat(2000));
    await utimes(a, before.atime, before.mtime);
    await unlink(join(target, 'base/1/200'));
    await writeFile(join(target, 'base/1/999'), 'extra relation');
    await mkdir(join(target, 'junk/sub'), { recursive: true });
    await writeFile(join(target, 'junk/sub/file'), 'x');
    await writeFile(join(target, 'pg_wal/000000020000000000000007'), 'stale wal of another history');
    await writeFile(join(target, 'pg_wal/archive_status/000000020000000000000007.ready'), '');
    await symlink(outside, join(target, 'extra-link'));
    await writeFile(`${target}.tablespaces/16400/PG_16_202307071/1/999`, 'extra in the tablespace');
    await unlink(join(target, 'pg_tblspc/16400'));
    await symlink(join(root, 'elsewhere'), join(target, 'pg_tblspc/16400'));
    // A stale postmaster.pid (crashed server) does not block a delta restore.
    const dead = spawnSync(process.execPath, ['-e', '0']).pid!;
    await writeFile(join(target, 'postmaster.pid'), `${dead}\n${target}\n`);

    await assert.rejects(
      runRestore(opts()),
      (e: unknown) => PgfleetError.is(e, 'RestoreTargetNotEmpty'),
      'without --delta a non-empty directory is refused',
    );
    const out = await runRestore(opts({ delta: true }));

    for (const [path, content] of Object.entries(FILES)) {
      const got = await readFile(join(target, path), 'utf8');
      assert.ok(got.startsWith(content), `${path} restored`); // postgresql.auto.conf gets the recovery settings appended
    }
    assert.deepEqual((await readdir(join(target, 'base/1'))).sort(), ['100', '200']);
    assert.deepEqual(await readdir(join(target, 'pg_wal')), ['archive_status']);
    assert.deepEqual(await readdir(join(target, 'pg_wal/archive_status')), []);
    for (const gone of ['junk', 'extra-link', 'postmaster.pid'])
      assert.equal(existsSync(join(target, gone)), false, `${gone} removed`);
    // The tablespace is restored beside the target, never into the source's location.
    assert.equal(await readlink(join(target, 'pg_tblspc/16400')), `${target}.tablespaces/16400`);
    assert.deepEqual(await readdir(`${target}.tablespaces/16400/PG_16_202307071/1`), ['300']);
    assert.equal(await readFile(`${target}.tablespaces/16400/PG_14_202107181/1/300`, 'utf8'), 'another cluster');
    assert.deepEqual(await readdir(outside), ['precious'], 'nothing outside the target touched');
    assert.equal(await readFile(join(outside, 'precious'), 'utf8'), 'not ours');
    assert.ok(existsSync(join(target, 'recovery.signal')) && existsSync(join(target, 'backup_label')));
    // Kept: PG_VERSION, pg_control and the tablespace file; fetched: the damaged, the missing and the (appended-to) auto.conf.
    assert.equal(out.kept, 3);
    assert.equal(
      out.bytes,
      FILES['base/1/100']!.length + FILES['base/1/200']!.length + FILES['postgresql.auto.conf']!.length,
    );
    assert.equal((await stat(join(target, 'base/1/100'))).mode & 0o777, 0o600);
  } finally {
    await rm(root, { recursive: true, force: true });
  }
});

test('links planted in the data directory before a delta restore are removed as links, never written through', async () => {
  const root = await mkdtemp(join(tmpdir(), 'pgfleet-delta-'));
  try {
    const { repo, repoPath, manifest } = await makeBackup(root);
    const target = join(root, 'pgdata');
    const opts = (over: Partial<RestoreOptions> = {}): RestoreOptions =>
      testRestoreOptions(repo, repoPath, manifest.label, target, over);
    await runRestore(opts());
    const outside = join(root, 'canary');
    await mkdir(join(outside, 'base1'), { recursive: true });
    await writeFile(join(outside, 'precious'), 'not ours');
    // A directory of the backup swapped for a link out; files swapped for links to outside files.
    await rm(join(target, 'base/1'), { recursive: true });
    await symlink(join(outside, 'base1'), join(target, 'base/1'));
    await unlink(join(target, 'postgresql.auto.conf'));
    await symlink(join(outside, 'precious'), join(target, 'postgresql.auto.conf'));
    await rm(join(target, 'backup_label'));
    await symlink(join(outside, 'label'), join(target, 'backup_label'));
    await rm(join(target, 'recovery.signal'));

    await runRestore(opts({ delta: true }));
    for (const [path, content] of Object.entries(FILES))
      assert.ok((await readFile(join(target, path), 'utf8')).startsWith(content), `${path} restored`);
    for (const path of ['base/1', 'postgresql.auto.conf', 'backup_label'])
      assert.equal((await lstat(join(target, path))).isSymbolicLink(), false, `${path} is no link`);
    assert.deepEqual((await readdir(outside)).sort(), ['base1', 'precious']);
    assert.deepEqual(await readdir(join(outside, 'base1')), []);
    assert.equal(await readFile(join(outside, 'precious'), 'utf8'), 'not ours');
  } finally {
    await rm(root, { recursive: true, force: true });
  }
});

test("delta restore refuses a running server, a directory that is not a data directory, and another cluster's data directory", async () => {
  const root = await mkdtemp(join(tmpdir(), 'pgfleet-delta-'));
  try {
    const { repo, repoPath, manifest } = await makeBackup(root);
    const opts = (targetDir: string): RestoreOptions =>
      testRestoreOptions(repo, repoPath, manifest.label, targetDir, { delta: true });
    const live = join(root, 'live');
    await mkdir(live);
    await writeFile(join(live, 'PG_VERSION'), '16\n');
    await writeFile(join(live, 'postmaster.pid'), `${process.pid}\n${live}\n`);
    await assert.rejects(runRestore(opts(live)), (e: unknown) => PgfleetError.is(e, 'RestoreTargetInUse'));
    assert.deepEqual((await readdir(live)).sort(), ['PG_VERSION', 'postmaster.pid']);

    const home = join(root, 'home');
    await mkdir(home);
    await writeFile(join(home, 'notes.txt'), 'keep me');
    await assert.rejects(runRestore(opts(home)), (e: unknown) => PgfleetError.is(e, 'RestoreTargetNotEmpty'));
    assert.deepEqual(await readdir(home), ['notes.txt']);

    // A stopped data directory of another database system (a mistyped --to): refused, untouched.
    const other = join(root, 'other');
    await mkdir(join(other, 'global'), { recursive: true });
    await writeFile(join(other, 'PG_VERSION'), '16\n');
    await writeFile(join(other, 'global/pg_control'), 'another system'.repeat(20));
    await writeFile(join(other, 'their-data'), 'precious');
    await assert.rejects(
      runRestore(opts(other)),
      (e: unknown) =>
        PgfleetError.is(e, 'SystemIdMismatch') &&
        /delta restore only updates a data directory of the same cluster/.test((e as Error).message),
    );
    assert.deepEqual((await readdir(other)).sort(), ['PG_VERSION', 'global', 'their-data']);
  } finally {
    await rm(root, { recursive: true, force: true });
  }
});

test('a backup that listed a linked pg_wal among its links (older pgfleet) restores it as a plain directory, never as a link', async () => {
  const root = await mkdtemp(join(tmpdir(), 'pgfleet-delta-'));
  try {
    const { repo, repoPath, manifest } = await makeBackup(root);
    const liveWal = join(root, 'live-wal');
    await mkdir(liveWal);
    await writeFile(join(liveWal, '000000010000000000000009'), 'the source cluster WAL');
    await repo.writeManifest({
      ...manifest,
      directories: manifest.directories.filter((d) => !d.path.startsWith('pg_wal')),
      links: [...manifest.links, { path: 'pg_wal', target: liveWal }],
    });
    const target = join(root, 'pgdata');
    await runRestore(testRestoreOptions(repo, repoPath, manifest.label, target));
    const st = await lstat(join(target, 'pg_wal'));
    assert.ok(st.isDirectory() && !st.isSymbolicLink());
    assert.deepEqual(await readdir(join(target, 'pg_wal')), ['archive_status']);
    assert.deepEqual(await readdir(liveWal), ['000000010000000000000009']);
  } finally {
    await rm(root, { recursive: true, force: true });
  }
});
