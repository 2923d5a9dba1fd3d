/**
 * The confined writer (confined-path.ts): whatever is planted in a restore target, nothing is
 * created, truncated or appended to outside it.
 */
import assert from 'node:assert/strict';
import { lstat, mkdir, mkdtemp, readdir, readFile, rm, symlink, writeFile, link } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, test } from 'node:test';
import { PgfleetError } from '@pgfleet/core';
import { RestoreTree } from './confined-path.js';

let root = '';
let target = '';
let outside = '';
before(async () => {
  root = await mkdtemp(join(tmpdir(), 'pgfleet-confined-'));
});
after(async () => rm(root, { recursive: true, force: true }));

async function fresh(name: string): Promise<RestoreTree> {
  target = join(root, name, 'pgdata');
  outside = join(root, name, 'outside');
  await mkdir(target, { recursive: true });
  await mkdir(outside);
  await writeFile(join(outside, 'precious'), 'not ours');
  return new RestoreTree(target);
}

const escaped = (e: unknown) => PgfleetError.is(e, 'RestoreEscapeRefused');

async function outsideUnchanged(): Promise<void> {
  assert.deepEqual(await readdir(outside), ['precious']);
  assert.equal(await readFile(join(outside, 'precious'), 'utf8'), 'not ours');
}

test('a directory component that is a link is refused, at any depth; nothing is created through it', async () => {
  const tree = await fresh('dirs');
  await symlink(outside, join(target, 'base'));
  await assert.rejects(tree.ensureDirectory('base/1', 0o700), escaped);
  await assert.rejects(tree.clearForFile('base/1/1259'), escaped);
  await mkdir(join(target, 'global'));
  await symlink(outside, join(target, 'global/sub'));
  await assert.rejects(tree.ensureDirectory('global/sub/deeper', 0o700), escaped);
  await writeFile(join(target, 'afile'), 'x');
  await assert.rejects(tree.ensureDirectory('afile/below', 0o700), escaped);
  await outsideUnchanged();
});

test('paths that are not relative and normalised are refused before any file system call', async () => {
  const tree = await fresh('syntax');
  for (const bad of ['/etc/passwd', '../outside/precious', 'a/../../outside', 'a//b', 'a/', '', 'x\0y'])
    assert.throws(() => tree.place(bad), escaped, JSON.stringify(bad));
  // A tablespace file needs a tablespace of this restore: never a path through an unknown link.
  assert.throws(() => tree.place('pg_tblspc/99/PG_15_1/x'), escaped);
  const ts = tree.withTablespaces(new Map([['pg_tblspc/16384', join(root, 'syntax', 'ts')]]));
  assert.equal(ts.pathOf('pg_tblspc/16384/PG_15_1/5/1'), join(root, 'syntax', 'ts', 'PG_15_1/5/1'));
  assert.equal(ts.pathOf('base/1/2'), join(target, 'base/1/2'));
});

test('a link, a hard link or a file planted at a file name is replaced, never written through', async () => {
  const tree = await fresh('files');
  await mkdir(join(target, 'base/1'), { recursive: true });
  await symlink(join(outside, 'precious'), join(target, 'base/1/1259'));
  await link(join(outside, 'precious'), join(target, 'base/1/1260'));
  await symlink(join(outside, 'new-file'), join(target, 'backup_label'));
  await symlink(join(outside, 'precious'), join(target, 'postgresql.auto.conf'));

  assert.equal(await tree.existingFile('base/1/1259'), undefined, 'a link is not a file to keep');
  assert.equal(await tree.existingFile('base/1/1260'), undefined, 'nor is a hard link');
  await tree.clearForFile('base/1/1259');
  await tree.clearForFile('base/1/1260');
  assert.deepEqual(await readdir(join(target, 'base/1')), []);
  await tree.createFile('backup_label', 'START WAL LOCATION: 0/1\n');
  assert.ok((await lstat(join(target, 'backup_label'))).isFile());
  await assert.rejects(tree.appendFile('postgresql.auto.conf', 'restore_command = evil\n'), escaped);
  const fh = await tree.createNew('base/1/1259', 0o600);
  await fh.close();
  await assert.rejects(tree.openExisting('postgresql.auto.conf'), escaped);
  await outsideUnchanged();
  assert.deepEqual(await readdir(outside), ['precious']);
});

test('tablespace links are created only at pg_tblspc/<oid>, and never over something planted', async () => {
  const tree = await fresh('links');
  const location = join(root, 'links', 'ts');
  await mkdir(location);
  await tree.createTablespaceLink('pg_tblspc/16384', location);
  assert.equal((await lstat(join(target, 'pg_tblspc/16384'))).isSymbolicLink(), true);
  await assert.rejects(tree.createTablespaceLink('pg_tblspc/16384', outside), escaped);
  await assert.rejects(tree.createTablespaceLink('backup_label', outside), escaped);
  const planted = await fresh('links2');
  await symlink(outside, join(target, 'pg_tblspc'));
  await assert.rejects(planted.createTablespaceLink('pg_tblspc/1', location), escaped);
  await outsideUnchanged();
});

test('a fresh tree (a new or empty target) checks each directory once, refusing a link met then, and creates what is missing', async () => {
  await fresh('once');
  const tree = RestoreTree.fresh(target);
  await symlink(outside, join(target, 'base'));
  await assert.rejects(tree.newFile('base/1/1259'), escaped);
  await assert.rejects(tree.createNew('base/1/1260', 0o600), escaped);
  assert.equal(await tree.newFile('global/pg_control'), join(target, 'global/pg_control'));
  assert.ok((await lstat(join(target, 'global'))).isDirectory());
  await tree.ensureDirectory('pg_xact', 0o700);
  const fh = await tree.createNew('pg_xact/0000', 0o600);
  await fh.close();
  // Created new: anything at the name fails instead of being replaced or written through.
  await assert.rejects(tree.createNew('pg_xact/0000', 0o600), (e: NodeJS.ErrnoException) => e.code === 'EEXIST');
  await outsideUnchanged();
});
