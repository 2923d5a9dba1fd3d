import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtemp, rm, readdir } from 'node:fs/promises';
import { randomBytes } from 'node:crypto';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Readable } from 'node:stream';
import { PgfleetError } from '@pgfleet/core';
import { PosixDriver } from './posix-driver.js';
import { Repository } from './repository.js';
import { secretManifestKeys } from './manifest-auth.js';
import type { Codec } from './codec.js';
import { sha, sink } from './driver-suite.js';

const dirs: string[] = [];
after(async () => {
  for (const d of dirs) await rm(d, { recursive: true, force: true });
});
async function repo(): Promise<Repository> {
  const dir = await mkdtemp(join(tmpdir(), 'pgfleet-repo-'));
  dirs.push(dir);
  return new Repository(new PosixDriver(dir), secretManifestKeys(Buffer.alloc(32, 1)));
}

for (const codec of ['zstd', 'gzip', 'none'] as Codec[]) {
  test(`objects round-trip with ${codec} and checksums of content and stored bytes`, async () => {
    const r = await repo();
    const data = Buffer.concat([Buffer.alloc(2 << 20, 7), randomBytes(100_000)]);
    const stored = await r.writeObject('c/backup/L/pg_data/base/1/1259', Readable.from([data]), codec);
    assert.equal(stored.size, data.length);
    assert.equal(stored.sha256, sha(data));
    if (codec !== 'none') assert.ok(stored.storedSize < data.length / 2);
    const out = sink();
    await r.readObject('c/backup/L/pg_data/base/1/1259', codec, { sha256: stored.sha256, size: data.length }, out);
    assert.deepEqual(out.data(), data);
  });
}

test('a damaged object fails with RepoChecksumMismatch', async () => {
  const r = await repo();
  const stored = await r.writeObject('k/f', Readable.from([Buffer.from('payload')]), 'none');
  await r.driver.put('k/f', Buffer.from('pAyload'));
  await assert.rejects(r.readObject('k/f', 'none', { sha256: stored.sha256 }, sink()), (e: unknown) =>
    PgfleetError.is(e, 'RepoChecksumMismatch'),
  );
});

test('cluster identity is read once per process, and another system is still refused every time', async () => {
  const r = await repo();
  const info = { systemIdentifier: '1', pgVersionNum: 150000, walSegmentSize: 16 << 20 };
  const reads: string[] = [];
  const stat = r.driver.stat.bind(r.driver);
  r.driver.stat = (key: string) => {
    reads.push(key);
    return stat(key);
  };
  for (let i = 0; i < 5; i++) await r.ensureClusterInfo('c', info);
  assert.equal(reads.filter((k) => k === 'c/cluster.json').length, 1, 'one look per process, not one per segment');
  for (let i = 0; i < 2; i++)
    await assert.rejects(r.ensureClusterInfo('c', { ...info, systemIdentifier: '2' }), (e: unknown) =>
      PgfleetError.is(e, 'SystemIdMismatch'),
    );
  // A second process (a new instance) reads what the first wrote.
  const again = new Repository(new PosixDriver(r.location), secretManifestKeys(Buffer.alloc(32, 1)));
  await assert.rejects(again.ensureClusterInfo('c', { ...info, systemIdentifier: '2' }), (e: unknown) =>
    PgfleetError.is(e, 'SystemIdMismatch'),
  );
});

test('a backup without a manifest is not listed; cluster identity is enforced', async () => {
  const r = await repo();
  await r.ensureClusterInfo('c', { systemIdentifier: '1', pgVersionNum: 150000, walSegmentSize: 16 << 20 });
  await r.ensureClusterInfo('c', { systemIdentifier: '1', pgVersionNum: 150000, walSegmentSize: 16 << 20 });
  await assert.rejects(
    r.ensureClusterInfo('c', { systemIdentifier: '2', pgVersionNum: 150000, walSegmentSize: 16 << 20 }),
    (e: unknown) => PgfleetError.is(e, 'SystemIdMismatch'),
  );
  await r.writeObject('c/backup/20260101-000000F/pg_data/PG_VERSION', Readable.from([Buffer.from('15\n')]), 'none');
  assert.deepEqual(await r.listBackups('c'), []);
  await assert.rejects(r.readManifest('c', '20260101-000000F'), (e: unknown) => PgfleetError.is(e, 'UnknownBackup'));
  await r.driver.put('c/backup/20260101-000000F/backup.manifest', Buffer.from('{not json'));
  await assert.rejects(r.readManifest('c', '20260101-000000F'), (e: unknown) => PgfleetError.is(e, 'ManifestUnsigned'));
  assert.ok((await readdir(join(r.location, 'c'))).includes('cluster.json'));
});
