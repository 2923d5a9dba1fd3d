// The cluster key file: where it lives, how the daemon keeps a Welcome's key in it, and which files are refused.
import assert from 'node:assert/strict';
import { chmod, mkdtemp, readFile, rm, stat, symlink, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, test } from 'node:test';
import { PgfleetError } from '@pgfleet/core';
import {
  ClusterKey,
  defaultClusterKeyFile,
  jobClusterKeyFile,
  readClusterKeyFile,
  removeJobClusterKeyFile,
  requireClusterKeyFile,
} from './cluster-key.js';

const dirs: string[] = [];
after(async () => {
  for (const d of dirs) await rm(d, { recursive: true, force: true });
});

test('default: beside the data directory; another cluster of a job beside the own file, never in PGDATA', () => {
  assert.equal(defaultClusterKeyFile('/srv/pg/main'), '/srv/pg/main.pgfleet-cluster.key');
  const own = { file: '/etc/pgfleet/cluster.key', cluster: 'shop' };
  assert.equal(jobClusterKeyFile(own, 'shop'), own.file);
  assert.equal(jobClusterKeyFile(own, 'billing'), '/etc/pgfleet/cluster-billing.key');
});

test("a drill of another cluster gets a key file of its own, removed when the job ends; the agent's own is kept", async () => {
  const dir = await mkdtemp(join(tmpdir(), 'pgfleet-ckey-'));
  dirs.push(dir);
  const own = { file: join(dir, 'cluster.key'), cluster: 'shop' };
  assert.equal(jobClusterKeyFile(own, 'billing', 'j1'), join(dir, 'cluster-billing.drill-j1.key'));
  assert.equal(jobClusterKeyFile(own, 'shop', 'j1'), own.file, 'its own cluster: its own file');
  const key = Buffer.alloc(32, 9);
  await writeFile(own.file, key.toString('hex'), { mode: 0o600 });
  const drillFile = jobClusterKeyFile(own, 'billing', 'j1');
  const other = jobClusterKeyFile(own, 'billing', 'j2');
  for (const f of [drillFile, other]) await writeFile(f, key.toString('hex'), { mode: 0o600 });
  assert.equal(await removeJobClusterKeyFile(own, 'billing', 'j1'), drillFile);
  await assert.rejects(stat(drillFile), { code: 'ENOENT' });
  assert.ok(await stat(other), "another drill's file stays");
  assert.equal(await removeJobClusterKeyFile(own, 'billing', 'j1'), drillFile, 'already gone: no error');
  assert.equal(await removeJobClusterKeyFile(own, 'shop', 'j1'), undefined);
  assert.ok(await stat(own.file), "the agent's own key file stays");
});

test("the daemon keeps a Welcome's key in the file (0600) and reads it back at the next start", async () => {
  const dir = await mkdtemp(join(tmpdir(), 'pgfleet-ckey-'));
  dirs.push(dir);
  const file = join(dir, 'tls', 'cluster.key');
  const first = new ClusterKey('shop', file);
  assert.equal(await first.load(), false, 'nothing on a first start');
  assert.equal(first.keyFor('shop'), undefined);
  await assert.rejects(requireClusterKeyFile(file, 'shop'), (e: unknown) => PgfleetError.is(e, 'WalKeyMissing'));
  const key = Buffer.alloc(32, 7);
  assert.equal(await first.received(key), true);
  assert.equal(await first.received(key), false, 'the same key again changes nothing');
  assert.equal((await stat(file)).mode & 0o777, 0o600);
  assert.equal((await readFile(file, 'utf8')).trim(), key.toString('hex'));
  const next = new ClusterKey('shop', file);
  assert.equal(await next.load(), true);
  assert.deepEqual(next.keyFor('shop'), key);
  assert.equal(next.keyFor('other'), undefined, "only the agent's own cluster");
  assert.equal(await next.received(new Uint8Array(3)), false, 'not a key: ignored');
  assert.deepEqual(next.keyFor('shop'), key);
});

test('a key file others may read, a link or one holding no key is refused', async () => {
  const dir = await mkdtemp(join(tmpdir(), 'pgfleet-ckey-'));
  dirs.push(dir);
  const refused = async (path: string, why: RegExp) =>
    assert.rejects(
      readClusterKeyFile(path),
      (e: unknown) => PgfleetError.is(e, 'ClusterKeyFileInvalid') && why.test((e as Error).message),
    );
  const open = join(dir, 'open.key');
  await writeFile(open, `${'ab'.repeat(32)}\n`, { mode: 0o600 });
  await chmod(open, 0o644);
  await refused(open, /mode 0644/);
  const link = join(dir, 'link.key');
  await symlink(open, link);
  await refused(link, /not a regular file/);
  const junk = join(dir, 'junk.key');
  await writeFile(junk, 'not a key\n', { mode: 0o600 });
  await refused(junk, /does not hold a key/);
});
