/**
 * Bad input gets a stable error code, a non-zero exit, and leaves nothing half-written in the
 * repository or the catalog.
 */
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { createWriteStream, existsSync } from 'node:fs';
import { readdir, writeFile, mkdir, copyFile } from 'node:fs/promises';
import { join } from 'node:path';
import { chownToPostgres, makeTempDir, removeDir, startPostgres, type PgInstance } from '@pgfleet/testkit';
import {
  AGENT_BIN,
  CLI_BIN,
  INSECURE_ARGS,
  assertRefused,
  restoreUnder,
  runNode,
  startFleet,
  type Fleet,
} from './harness.js';

async function listRecursive(dir: string): Promise<string[]> {
  if (!existsSync(dir)) return [];
  return (await readdir(dir, { recursive: true })).map(String).sort();
}

describe('bad input: clear codes, non-zero exits, nothing half-written', { timeout: 300_000 }, () => {
  let fleet: Fleet;

  before(async () => {
    fleet = await startFleet({ cluster: 'billing' });
    await fleet.pg.query('CREATE TABLE t (id int)');
  });
  after(async () => {
    await fleet?.stop();
  });

  it('unknown cluster: PGF-2001', async () => {
    const r = await fleet.cli('backup', 'nope', '--wait');
    assert.notEqual(r.code, 0);
    assert.match(r.stderr, /PGF-2001/);
    const l = await fleet.cli('backups', 'nope');
    assert.notEqual(l.code, 0);
    assert.match(l.stderr, /PGF-2001/);
  });

  it('unreachable controller: PGF-7001 naming the address', async () => {
    const r = await runNode(CLI_BIN, ['clusters', '--controller', '127.0.0.1:1', ...INSECURE_ARGS]);
    assert.notEqual(r.code, 0);
    assert.match(r.stderr, /PGF-7001/);
    assert.match(r.stderr, /127\.0\.0\.1:1/);
  });

  it('PITR targets: before the oldest backup, in the future, malformed, or without any backup', async () => {
    assertRefused(await restoreUnder(fleet, 'r0', '--target', 'immediate'), /PGF-6005/);

    const before = new Date(Date.now() - 3600_000).toISOString();
    const b = await fleet.cli('backup', 'billing', '--wait');
    assert.equal(b.code, 0, b.stderr + (await fleet.logs()));

    assertRefused(await restoreUnder(fleet, 'r1', '--target-time', before), /PGF-6001/);
    assertRefused(
      await restoreUnder(fleet, 'r2', '--target-time', new Date(Date.now() + 3600_000).toISOString()),
      /PGF-6002/,
    );
    assertRefused(await restoreUnder(fleet, 'r3', '--target-lsn', '0/1'), /PGF-6001/);
    assertRefused(await restoreUnder(fleet, 'r4', '--target-time', 'yesterday-ish'), /PGF-6003/);
    assertRefused(await restoreUnder(fleet, 'r5', '--target', 'immediate', '--target-name', 'x'), /PGF-6003/);
    assertRefused(await restoreUnder(fleet, 'r6', '--target-name', 'never_created', '--wait'), /PGF-6004/);
    for (const d of ['r1', 'r2', 'r3', 'r4', 'r5'])
      assert.equal(existsSync(join(fleet.dir, d)), false, `${d} must not be created`);
  });

  it('restore into a non-empty directory is refused: PGF-3006, nothing overwritten', async () => {
    const dir = join(fleet.dir, 'occupied');
    await mkdir(dir);
    await writeFile(join(dir, 'keep.txt'), 'precious');
    await chownToPostgres(dir, { recursive: true });
    const r = await fleet.cli('restore', 'billing', '--to', dir, '--target', 'immediate', '--wait');
    assert.notEqual(r.code, 0);
    assert.match(r.stderr, /PGF-3006/);
    assert.deepEqual(await readdir(dir), ['keep.txt']);
  });

  it('wal-push of a missing or empty file fails (PGF-4001, PGF-4002) and stores nothing', async () => {
    const repo = join(fleet.dir, 'walpush-repo');
    const args = ['--cluster', 'billing', '--repo-path', repo, '--cluster-key-file', fleet.clusterKeyFile];
    const missing = await runNode(AGENT_BIN, [
      'wal-push',
      join(fleet.dir, 'pg_wal', '000000010000000000000042'),
      ...args,
    ]);
    assert.notEqual(missing.code, 0);
    assert.match(missing.stderr, /PGF-4001/);
    const walDir = join(fleet.dir, 'fake', 'pg_wal');
    await mkdir(walDir, { recursive: true });
    await writeFile(join(walDir, '000000010000000000000042'), '');
    const empty = await runNode(AGENT_BIN, ['wal-push', join(walDir, '000000010000000000000042'), ...args]);
    assert.notEqual(empty.code, 0);
    assert.match(empty.stderr, /PGF-4002/);
    await writeFile(join(walDir, '000000010000000000000043'), Buffer.alloc(8192, 1));
    const truncated = await runNode(AGENT_BIN, ['wal-push', join(walDir, '000000010000000000000043'), ...args]);
    assert.notEqual(truncated.code, 0);
    assert.match(truncated.stderr, /PGF-400[23]/);
    assert.deepEqual(
      (await listRecursive(repo)).filter((f) => f.includes('wal')),
      [],
    );
  });

  it('wal-push is idempotent: same content succeeds, different content under the same name fails', async () => {
    const repo = join(fleet.dir, 'walpush-repo2');
    const args = ['--cluster', 'billing', '--repo-path', repo, '--cluster-key-file', fleet.clusterKeyFile];
    // A real completed segment of the cluster, taken from its archive (pg_wal may already have
    // recycled it after a checkpoint).
    await fleet.switchAndArchive();
    const [row] = await fleet.pg.query<{ w: string }>('SELECT last_archived_wal AS w FROM pg_stat_archiver');
    const name = row!.w;
    const walDir = join(fleet.dir, 'archived', 'pg_wal');
    await mkdir(walDir, { recursive: true });
    await fleet.repo.fetchWal('billing', name, createWriteStream(join(walDir, name)));
    await chownToPostgres(join(fleet.dir, 'archived'), { recursive: true });
    const segs = [name];
    const src = join(walDir, name);
    const first = await runNode(AGENT_BIN, ['wal-push', src, ...args], { asPg: true });
    assert.equal(first.code, 0, first.stderr);
    const again = await runNode(AGENT_BIN, ['wal-push', src, ...args], { asPg: true });
    assert.equal(again.code, 0, again.stderr);
    // Same name, different content (another valid segment renamed): refused, never overwritten.
    const fakeDir = join(fleet.dir, 'other', 'pg_wal');
    await mkdir(fakeDir, { recursive: true });
    await copyFile(src, join(fakeDir, segs.at(-1)!));
    const { open } = await import('node:fs/promises');
    const fh = await open(join(fakeDir, segs.at(-1)!), 'r+');
    await fh.write(Buffer.from('tampered'), 0, 8, 8192 * 3);
    await fh.close();
    await chownToPostgres(join(fleet.dir, 'other'), { recursive: true });
    const conflict = await runNode(AGENT_BIN, ['wal-push', join(fakeDir, segs.at(-1)!), ...args], { asPg: true });
    assert.notEqual(conflict.code, 0);
    assert.match(conflict.stderr, /PGF-4004/);
  });

  it('agent with a missing PGDATA exits non-zero with PGF-3001', async () => {
    const r = await runNode(
      AGENT_BIN,
      [
        'run',
        '--controller',
        fleet.controllerAddress,
        '--cluster',
        'ghost',
        '--pgdata',
        '/nonexistent/pgdata',
        '--insecure',
      ],
      { timeoutMs: 120_000 },
    );
    assert.notEqual(r.code, 0);
    assert.match(r.stderr, /PGF-3001/);
  });
});

describe('archive_mode off: backup refused with PGF-3002 and nothing recorded', { timeout: 300_000 }, () => {
  let fleet: Fleet;
  before(async () => {
    fleet = await startFleet({ cluster: 'noarchive', archive: false });
  });
  after(async () => {
    await fleet?.stop();
  });

  it('refuses, exits non-zero, leaves no backup in repository or catalog', async () => {
    const r = await fleet.cli('backup', 'noarchive', '--wait');
    assert.notEqual(r.code, 0);
    assert.match(r.stderr, /PGF-3002/);
    const list = await fleet.cli('backups', 'noarchive', '--output', 'json');
    assert.equal(list.code, 0, list.stderr);
    const doc = JSON.parse(list.stdout);
    assert.equal((Array.isArray(doc) ? doc : doc.backups).length, 0);
    assert.deepEqual(
      (await listRecursive(fleet.repoDir)).filter((f) => f.includes('backup/')),
      [],
    );
  });
});

void makeTempDir;
void removeDir;
void startPostgres;
export type { PgInstance };
