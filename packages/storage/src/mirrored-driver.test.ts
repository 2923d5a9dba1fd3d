// Two repositories as one (posix + posix and posix + real S3 from testkit): the shared driver
// suite, reads falling through to the second repository, a member failing a put, and WAL push
// idempotence per repository (fill-in, conflicts).
import { after, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Readable } from 'node:stream';
import { PgfleetError } from '@pgfleet/core';
import { startS3 } from '@pgfleet/testkit';
import type { RepositoryDriver } from './driver.js';
import { collect, repositoryDriverSuite, sha, sink, TEST_MANIFEST_KEYS } from './driver-suite.js';
import { MirroredDriver } from './mirrored-driver.js';
import { openRepository, openRepositoryDriver } from './open-repository.js';
import { PosixDriver, readSmall } from './posix-driver.js';
import { Repository } from './repository.js';
import { parseRepositoryUrl } from './repository-url.js';

const s3 = await startS3();
await s3.createBucket('mirror');
const credentials = { accessKeyId: s3.accessKeyId, secretAccessKey: s3.secretAccessKey };
const dirs: string[] = [];
const opened: RepositoryDriver[] = [];
after(async () => {
  for (const d of opened) d.close?.();
  await s3.stop();
  for (const d of dirs) await rm(d, { recursive: true, force: true });
});

async function posix(): Promise<PosixDriver> {
  const dir = await mkdtemp(join(tmpdir(), 'pgfleet-mirror-'));
  dirs.push(dir);
  return new PosixDriver(dir);
}
let seq = 0;
async function bucket(): Promise<RepositoryDriver> {
  const d = await openRepositoryDriver(
    parseRepositoryUrl(`s3://mirror/m${++seq}?endpoint=${s3.endpoint}&path-style=true`),
    credentials,
  );
  opened.push(d);
  return d;
}

repositoryDriverSuite('mirrored posix + posix', async () => new MirroredDriver([await posix(), await posix()]), {
  localFiles: false,
  spec: false,
});
repositoryDriverSuite('mirrored posix + s3', async () => new MirroredDriver([await posix(), await bucket()]), {
  localFiles: false,
  spec: false,
});

/** A member whose puts fail after reading the first bytes (a full disk, a dead endpoint). */
class FailingPuts extends PosixDriver {
  failing = true;
  override async put(key: string, body: Readable | Buffer, options?: { deferDirSync?: boolean }): Promise<void> {
    if (!this.failing) return super.put(key, body, options);
    if (!Buffer.isBuffer(body)) for await (const _ of body) break;
    throw new PgfleetError('RepoIoFailed', `cannot write ${key}: no space left on device`);
  }
}

const keys = (d: RepositoryDriver, prefix = '') => collect(d.list(prefix));

describe('mirrored repository', () => {
  test('opens a mirror from URLs and writes every object to both repositories', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'pgfleet-mirror-'));
    dirs.push(dir);
    const repo = await openRepository(
      [parseRepositoryUrl(dir), parseRepositoryUrl(`s3://mirror/open?endpoint=${s3.endpoint}&path-style=true`)],
      credentials,
    );
    opened.push(repo.driver);
    assert.ok(repo.driver instanceof MirroredDriver);
    assert.equal(repo.location, `${dir} + s3://mirror/open`);
    const data = randomBytes(200_000);
    const stored = await repo.writeObject('c1/backup/L/pg_data/base/1/1.zst', Readable.from([data]), 'zstd');
    const [a, b] = (repo.driver as MirroredDriver).members;
    for (const m of [a!, b!]) assert.equal((await m.stat('c1/backup/L/pg_data/base/1/1.zst'))?.size, stored.storedSize);
    assert.deepEqual(await keys(a!), await keys(b!));
  });

  test('reads fall through to the second repository when the first lacks an object', async () => {
    const [a, b] = [await posix(), await bucket()];
    const repo = new Repository(new MirroredDriver([a, b]), TEST_MANIFEST_KEYS);
    const data = randomBytes(100_000);
    const stored = await repo.writeObject('c1/backup/L/pg_data/f', Readable.from([data]), 'zstd');
    await a.delete(['c1/backup/L/pg_data/f']);
    assert.equal(await a.stat('c1/backup/L/pg_data/f'), undefined);
    assert.equal((await repo.driver.stat('c1/backup/L/pg_data/f'))?.size, stored.storedSize);
    assert.deepEqual(await keys(repo.driver, 'c1/'), ['c1/backup/L/pg_data/f']);
    const out = sink();
    await repo.readObject('c1/backup/L/pg_data/f', 'zstd', { sha256: stored.sha256, size: data.length }, out);
    assert.deepEqual(out.data(), data);
    await b.delete(['c1/backup/L/pg_data/f']);
    await assert.rejects(
      repo.driver.get('c1/backup/L/pg_data/f'),
      (e: unknown) => PgfleetError.is(e, 'RepoFileMissing') && /every repository/.test(e.message),
    );
  });

  test('a put fails when one repository fails, and a retry fills in the repository that lacks the object', async () => {
    const a = await posix();
    const b = new FailingPuts((await posix()).root);
    const mirror = new MirroredDriver([a, b]);
    const big = randomBytes(4 * 1024 * 1024);
    const chunks = Array.from({ length: 8 }, (_, i) => big.subarray(i * 512 * 1024, (i + 1) * 512 * 1024));
    await assert.rejects(mirror.put('x/big', Readable.from(chunks)), /no space left/);
    assert.deepEqual(await keys(a, 'x/'), [], 'the other upload was aborted: nothing half-done anywhere');

    // WAL: refused while a repository fails (PostgreSQL keeps the segment and retries) ...
    const repo = new Repository(mirror, TEST_MANIFEST_KEYS);
    const seg = randomBytes(64 * 1024);
    const name = '000000010000000000000007';
    const open = () => Readable.from([seg]);
    await assert.rejects(repo.pushWal('c1', name, sha(seg), open, 'zstd'), /no space left/);
    assert.equal(await repo.isWalArchived('c1', name), false);
    // ... and the retry after the repair stores it where it is missing.
    b.failing = false;
    assert.equal(await repo.pushWal('c1', name, sha(seg), open, 'zstd'), 'stored');
    assert.equal(await repo.isWalArchived('c1', name), true);
    assert.deepEqual(await keys(a, 'c1/wal/'), await keys(b, 'c1/wal/'));
    assert.equal(await repo.pushWal('c1', name, sha(seg), open, 'zstd'), 'exists');
  });

  test('WAL push is idempotent per repository: fills in a missing copy, refuses a conflict anywhere', async () => {
    const [a, b] = [await posix(), await bucket()];
    const seg = randomBytes(32 * 1024);
    const name = '000000010000000000000009';
    // Only the first repository has it (archived before the second one was added).
    assert.equal(
      await new Repository(a, TEST_MANIFEST_KEYS).pushWal('c1', name, sha(seg), () => Readable.from([seg]), 'zstd'),
      'stored',
    );
    const before = await keys(a, 'c1/wal/');
    const repo = new Repository(new MirroredDriver([a, b]), TEST_MANIFEST_KEYS);
    assert.equal(await repo.isWalArchived('c1', name), false);
    assert.equal(await repo.pushWal('c1', name, sha(seg), () => Readable.from([seg]), 'zstd'), 'stored');
    assert.deepEqual(await keys(b, 'c1/wal/'), before, 'the second repository got the same object');
    assert.deepEqual(await keys(a, 'c1/wal/'), before, 'the first was not rewritten');
    assert.equal(await repo.pushWal('c1', name, sha(seg), () => Readable.from([seg]), 'zstd'), 'exists');

    // Different content under a name the second repository holds: refused, nothing written anywhere.
    const other = '00000001000000000000000A';
    const seg2 = randomBytes(32 * 1024);
    await new Repository(b, TEST_MANIFEST_KEYS).pushWal('c1', other, sha(seg2), () => Readable.from([seg2]), 'zstd');
    const wrong = randomBytes(32 * 1024);
    await assert.rejects(
      repo.pushWal('c1', other, sha(wrong), () => Readable.from([wrong]), 'zstd'),
      (e: unknown) => PgfleetError.is(e, 'WalConflict') && e.message.includes(b.location),
    );
    assert.deepEqual(await new Repository(a, TEST_MANIFEST_KEYS).findWal('c1', other), []);
    const out = sink();
    await repo.fetchWal('c1', other, out);
    assert.deepEqual(out.data(), seg2, 'fetch falls through to the repository that has it');
  });

  test('format marker and cluster identity are written to each repository and checked in each', async () => {
    const [a, b] = [await posix(), await posix()];
    await new Repository(a, TEST_MANIFEST_KEYS).ensureClusterInfo('c1', {
      systemIdentifier: '1',
      pgVersionNum: 150000,
      walSegmentSize: 16 << 20,
    });
    const repo = new Repository(new MirroredDriver([a, b]), TEST_MANIFEST_KEYS);
    await repo.ensureClusterInfo('c1', { systemIdentifier: '1', pgVersionNum: 150000, walSegmentSize: 16 << 20 });
    assert.equal(JSON.parse((await readSmall(b, 'c1/cluster.json')).toString()).systemIdentifier, '1');
    assert.ok(await b.stat('pgfleet.json'));
    await new Repository(b, TEST_MANIFEST_KEYS).ensureClusterInfo('c2', {
      systemIdentifier: '2',
      pgVersionNum: 150000,
      walSegmentSize: 16 << 20,
    });
    await assert.rejects(
      repo.ensureClusterInfo('c2', { systemIdentifier: '3', pgVersionNum: 150000, walSegmentSize: 16 << 20 }),
      (e: unknown) => PgfleetError.is(e, 'SystemIdMismatch'),
    );
  });
});
