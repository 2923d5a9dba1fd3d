// The S3 driver against a real S3 server (fauxqs from @pgfleet/testkit): the shared driver suite,
// multipart uploads, pagination, error mapping, the Repository on top, and the lazy SDK import.
import { after, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { fileURLToPath } from 'node:url';
import { Readable } from 'node:stream';
import { promisify } from 'node:util';
import { HeadObjectCommand, S3Client, UploadPartCommand } from '@aws-sdk/client-s3';
import { PgfleetError, sleep } from '@pgfleet/core';
import { freePort, startS3 } from '@pgfleet/testkit';
import { collect as keys, repositoryDriverSuite, sha, sink, TEST_MANIFEST_KEYS } from './driver-suite.js';
import { readSmall } from './posix-driver.js';
import { Repository } from './repository.js';
import { bindS3Client } from './s3-client.js';
import { createS3Driver, S3Driver } from './s3-driver.js';
import type { CreateS3DriverOptions, S3Like } from './s3-like.js';

const MiB = 1024 * 1024;
const BUCKET = 'pgfleet-repo';

const s3 = await startS3();
await s3.createBucket(BUCKET);
const raw = new S3Client(s3.clientConfig);
const drivers: S3Driver[] = [];
after(async () => {
  for (const d of drivers) d.close();
  raw.destroy();
  await s3.stop();
});

let seq = 0;
function options(extra: Partial<CreateS3DriverOptions> = {}): CreateS3DriverOptions {
  return {
    bucket: BUCKET,
    prefix: `t${++seq}/repo`,
    endpoint: s3.endpoint,
    region: s3.region,
    forcePathStyle: true,
    accessKeyId: s3.accessKeyId,
    secretAccessKey: s3.secretAccessKey,
    ...extra,
  };
}
async function driver(extra: Partial<CreateS3DriverOptions> = {}): Promise<S3Driver> {
  const d = await createS3Driver(options(extra));
  drivers.push(d);
  return d;
}

/** A driver on the real server whose client counts calls and remembers upload ids. */
function countingDriver(extra: Partial<CreateS3DriverOptions> = {}) {
  const opts = options(extra);
  const inner = bindS3Client(opts);
  const calls: Record<string, number> = {};
  const uploadIds: string[] = [];
  const client = Object.fromEntries(
    Object.entries(inner).map(([name, fn]) => [
      name,
      async (...args: unknown[]) => {
        calls[name] = (calls[name] ?? 0) + 1;
        const res = await (fn as (...a: unknown[]) => unknown)(...args);
        if (name === 'createMultipartUpload') uploadIds.push(res as string);
        return res;
      },
    ]),
  ) as unknown as S3Like;
  client.destroy = () => inner.destroy();
  const d = new S3Driver(client, opts);
  drivers.push(d);
  return { driver: d, calls, uploadIds, fullKey: (k: string) => `${d.prefix}${k}` };
}

function chunked(data: Buffer, chunk: number): Readable {
  return Readable.from(
    (function* () {
      for (let off = 0; off < data.length; off += chunk) yield data.subarray(off, off + chunk);
    })(),
  );
}

repositoryDriverSuite('s3', () => driver(), { localFiles: false, spec: false });

describe('S3 driver specifics', () => {
  test('location is s3://bucket/prefix, with the prefix normalised', async () => {
    assert.equal((await driver({ prefix: '/a/b/' })).location, `s3://${BUCKET}/a/b`);
    assert.equal((await driver({ prefix: '' })).location, `s3://${BUCKET}`);
    await assert.rejects(createS3Driver(options({ prefix: 'a/../b' })), (e: unknown) =>
      PgfleetError.is(e, 'InvalidConfig'),
    );
    await assert.rejects(createS3Driver(options({ partSizeBytes: MiB })), (e: unknown) =>
      PgfleetError.is(e, 'InvalidConfig'),
    );
  });

  test('a 20 MiB stream goes up as a multipart upload in 5 MiB parts and round-trips', async () => {
    const { driver: d, calls, fullKey } = countingDriver({ partSizeBytes: 5 * MiB });
    const data = randomBytes(20 * MiB);
    await d.put('big/file', chunked(data, 64 * 1024 + 3));
    assert.equal(calls.createMultipartUpload, 1);
    assert.equal(calls.uploadPart, 4, 'exactly 4 parts: no empty tail part');
    assert.equal(calls.completeMultipartUpload, 1);
    assert.equal(calls.putObject, undefined);
    const head = await raw.send(new HeadObjectCommand({ Bucket: BUCKET, Key: fullKey('big/file') }));
    assert.match(head.ETag ?? '', /-4"$/, 'the server assembled a 4-part object');
    assert.deepEqual(await d.stat('big/file'), { key: 'big/file', size: data.length });
    assert.ok((await readSmall(d, 'big/file')).equals(data), 'content differs');

    // Less than one part: a single PutObject, no multipart.
    await d.put('small/file', chunked(data.subarray(0, 5 * MiB - 1), 1 * MiB));
    assert.equal(calls.createMultipartUpload, 1);
    assert.equal(calls.putObject, 1);
    // A buffer body larger than a part is multipart too.
    await d.put('buf/file', data.subarray(0, 11 * MiB));
    assert.equal(calls.createMultipartUpload, 2);
    assert.equal(calls.uploadPart, 7);
    assert.ok((await readSmall(d, 'buf/file')).equals(data.subarray(0, 11 * MiB)));
  });

  test('a stream failing after some parts aborts the multipart upload and leaves nothing', async () => {
    const { driver: d, calls, uploadIds, fullKey } = countingDriver({ partSizeBytes: 5 * MiB });
    const source = Readable.from(
      (async function* () {
        for (let i = 0; i < 12; i++) yield randomBytes(MiB);
        throw new Error('source broke');
      })(),
    );
    await assert.rejects(
      d.put('x/partial', source),
      (e: unknown) => PgfleetError.is(e, 'RepoIoFailed') && /source broke/.test((e as Error).message),
    );
    assert.ok((calls.uploadPart ?? 0) >= 1, 'some parts were uploaded before the failure');
    assert.equal(calls.abortMultipartUpload, 1);
    assert.equal(await d.stat('x/partial'), undefined);
    assert.deepEqual(await keys(d.list('x/')), []);
    // The upload is gone on the server, not just unfinished.
    await assert.rejects(
      raw.send(
        new UploadPartCommand({
          Bucket: BUCKET,
          Key: fullKey('x/partial'),
          UploadId: uploadIds[0],
          PartNumber: 9,
          Body: Buffer.from('x'),
        }),
      ),
      (e: unknown) => (e as Error).name === 'NoSuchUpload',
    );
  });

  test('lists page by page with continuation tokens, keys relative to the prefix', async () => {
    const { driver: d, calls } = countingDriver({ listPageSize: 2 });
    for (const k of ['p/e', 'p/c', 'p/a', 'p/d', 'p/b', 'q/z']) await d.put(k, Buffer.from(k));
    assert.deepEqual(await keys(d.list('p/')), ['p/a', 'p/b', 'p/c', 'p/d', 'p/e']);
    assert.equal(calls.listObjects, 3);
    // Prefixes are directories: 't1/repo' and 't1/repox' do not see each other's keys.
    const sibling = await driver({ prefix: `${d.prefix.slice(0, -1)}x` });
    await sibling.put('p/f', Buffer.from('sibling'));
    assert.deepEqual(await keys(sibling.list('')), ['p/f']);
    assert.deepEqual(await keys(d.list('')), ['p/a', 'p/b', 'p/c', 'p/d', 'p/e', 'q/z']);
  });

  test('lists one level with a delimiter, page by page: common prefixes and objects across pages', async () => {
    const { driver: d, calls } = countingDriver({ listPageSize: 2 });
    for (const k of ['b/L1/m', 'b/L1/pg_data/x', 'b/L2/m', 'b/L3/s', 'b/top', 'b/L4/pg_data/y/z'])
      await d.put(k, Buffer.from(k));
    calls.listObjects = 0;
    const level = await d.listLevel('b/');
    assert.deepEqual(level.levels, ['L1', 'L2', 'L3', 'L4']);
    assert.deepEqual(level.objects, [{ key: 'b/top', size: 5 }]);
    // Five entries (four prefixes, one object), two per page: three requests, none per object below.
    assert.equal(calls.listObjects, 3);
  });

  test("ObjectIo.walk streams an S3 object through the frame walker: a whole one gives its size and first bytes, a cut one is 'cut'", async () => {
    const repo = new Repository(await driver(), TEST_MANIFEST_KEYS);
    const content = Buffer.alloc(3 * MiB);
    for (let at = 0, i = 0; at < content.length - 64; i++) at += content.write(`row ${i};`, at);
    for (const codec of ['zstd', 'lz4', 'none'] as const) {
      const key = repo.backupFileKey('c', 'L', `base/1/${codec}`, codec);
      const stored = await repo.objects.storeStream(key, Readable.from([content]), codec);
      const w = await repo.objects.walk(key, codec, 40, stored.storedSize);
      assert.deepEqual([w.fault, w.contentBytes, w.head], [undefined, content.length, content.subarray(0, 40)], codec);
      if (codec === 'none') continue;
      const bytes = await readSmall(repo.driver, key);
      await repo.driver.put(key, bytes.subarray(0, bytes.length >> 1));
      assert.equal((await repo.objects.walk(key, codec, 40)).fault?.kind, 'cut', codec);
    }
  });

  test('S3 errors become RepoIoFailed naming the bucket and key', async () => {
    const d = await driver({ bucket: 'no-such-bucket' });
    const names = (e: unknown) =>
      PgfleetError.is(e, 'RepoIoFailed') &&
      e.message.includes('s3://no-such-bucket/') &&
      /NoSuchBucket/.test(e.message);
    await assert.rejects(d.put('a/b', Buffer.from('x')), names);
    await assert.rejects(d.get('a/b'), names);
    await assert.rejects(keys(d.list('a/')), names);

    const port = await freePort();
    const dead = await driver({ endpoint: `http://127.0.0.1:${port}`, maxAttempts: 2 });
    await assert.rejects(
      dead.put('a/b', Buffer.from('x')),
      (e: unknown) => PgfleetError.is(e, 'RepoIoFailed') && e.message.includes(`s3://${BUCKET}/`),
    );
  });
});

describe('S3 driver with a fake client', () => {
  const notUsed = async (): Promise<never> => {
    throw new Error('not used');
  };
  function fake(over: Partial<S3Like>): S3Like {
    return {
      putObject: notUsed,
      createMultipartUpload: notUsed,
      uploadPart: notUsed,
      completeMultipartUpload: notUsed,
      abortMultipartUpload: notUsed,
      getObject: notUsed,
      headObject: notUsed,
      listObjects: notUsed,
      deleteObjects: notUsed,
      destroy() {},
      ...over,
    };
  }

  test('deletes in batches of 1000 and reports real per-key failures', async () => {
    const batches: number[] = [];
    let failWith: string | undefined;
    const d = new S3Driver(
      fake({
        async deleteObjects(ks) {
          batches.push(ks.length);
          return [{ key: ks[0]!, code: failWith ?? 'NoSuchKey', message: 'm' }];
        },
      }),
      { bucket: 'b', prefix: 'r' },
    );
    await d.delete(Array.from({ length: 2500 }, (_, i) => `k/${i}`));
    assert.deepEqual(batches, [1000, 1000, 500]);
    await d.delete([]);
    assert.equal(batches.length, 3);
    failWith = 'AccessDenied';
    await assert.rejects(
      d.delete(['k/1']),
      (e: unknown) => PgfleetError.is(e, 'RepoIoFailed') && e.message.includes('s3://b/r/k/1'),
    );
  });

  test('a failed part upload aborts the upload and fails the producing pipeline with the reason', async () => {
    const aborted: string[] = [];
    let parts = 0;
    const d = new S3Driver(
      fake({
        // The repository asks once whether the cluster is encrypted (encryption.json): it is not.
        async headObject() {
          return undefined;
        },
        async createMultipartUpload() {
          return 'u1';
        },
        async uploadPart(_k, _u, n) {
          parts++;
          if (n === 2)
            throw Object.assign(new Error('We encountered an internal error'), {
              name: 'InternalError',
              $metadata: { httpStatusCode: 500 },
            });
          return `"etag${n}"`;
        },
        async abortMultipartUpload(key, uploadId) {
          await sleep(50); // a network round trip
          aborted.push(`${key} ${uploadId}`);
        },
      }),
      { bucket: 'b', prefix: 'r', partSizeBytes: 1024 },
    );
    const r = new Repository(d, TEST_MANIFEST_KEYS);
    await assert.rejects(
      r.writeObject('k/f', chunked(randomBytes(10_000), 100), 'none'),
      (e: unknown) =>
        PgfleetError.is(e, 'RepoIoFailed') &&
        e.message === 'cannot write s3://b/r/k/f (HTTP 500): InternalError: We encountered an internal error',
    );
    assert.equal(parts, 2, 'no part is started after a failure');
    assert.deepEqual(aborted, ['r/k/f u1']);
  });

  test('a connection failure while reading a body surfaces as RepoIoFailed', async () => {
    const d = new S3Driver(
      fake({
        async getObject() {
          return Readable.from(
            (async function* () {
              yield Buffer.from('part of it');
              throw Object.assign(new Error('socket hang up'), { code: 'ECONNRESET' });
            })(),
          );
        },
      }),
      { bucket: 'b' },
    );
    await assert.rejects(
      readSmall(d, 'a/b'),
      (e: unknown) => PgfleetError.is(e, 'RepoIoFailed') && /s3:\/\/b\/a\/b.*socket hang up/.test(e.message),
    );
  });
});

describe('Repository on the S3 driver', () => {
  test('objects round-trip through compression, also when they go up in parts', async () => {
    const r = new Repository(await driver({ partSizeBytes: 5 * MiB }), TEST_MANIFEST_KEYS);
    const data = Buffer.concat([Buffer.alloc(2 * MiB, 7), randomBytes(100_000)]);
    const stored = await r.writeObject('c/backup/L/pg_data/base/1/1259', Readable.from([data]), 'zstd');
    assert.equal(stored.sha256, sha(data));
    const out = sink();
    await r.readObject('c/backup/L/pg_data/base/1/1259', 'zstd', { sha256: stored.sha256, size: data.length }, out);
    assert.deepEqual(out.data(), data);

    const big = randomBytes(12 * MiB);
    const bigStored = await r.writeObject('c/backup/L/pg_data/base/1/16384', chunked(big, MiB), 'none');
    assert.equal(bigStored.storedSize, big.length);
    const bigOut = sink();
    await r.readObject('c/backup/L/pg_data/base/1/16384', 'none', { sha256: sha(big), size: big.length }, bigOut);
    assert.ok(bigOut.data().equals(big));
  });

  test('a WAL file that changed after it was hashed never completes its multipart upload', async () => {
    const { driver: d, calls } = countingDriver({ partSizeBytes: 5 * MiB });
    const r = new Repository(d, TEST_MANIFEST_KEYS);
    const wal = randomBytes(12 * MiB);
    const changed = Buffer.from(wal);
    changed[wal.length - 1]! ^= 1;
    const name = '000000010000000000000007';
    await assert.rejects(
      r.pushWal('c', name, sha(wal), () => chunked(changed, MiB), 'none'),
      (e: unknown) => PgfleetError.is(e, 'WalFileInvalid'),
    );
    assert.equal(calls.createMultipartUpload, 1);
    assert.ok((calls.uploadPart ?? 0) >= 1, 'parts went up before the change showed');
    assert.equal(calls.completeMultipartUpload, undefined);
    assert.equal(calls.abortMultipartUpload, 1);
    assert.deepEqual(await keys(d.list('c/')), []);
  });
});

test("importing '@pgfleet/storage' does not load the AWS SDK; createS3Driver does", async () => {
  // A child process records every module URL it resolves, imports the package index, then
  // creates an S3 driver. The SDK must appear only after the second step.
  const script = `
    import { registerHooks } from 'node:module';
    const seen = [];
    registerHooks({ resolve(spec, ctx, next) { const r = next(spec, ctx); seen.push(r.url); return r; } });
    const storage = await import('@pgfleet/storage');
    const atImport = seen.filter((u) => u.includes('@aws-sdk') || u.includes('@smithy'));
    const indexLoaded = seen.some((u) => u.includes('/storage/dist/index.js'));
    const d = await storage.createS3Driver({ bucket: 'b', endpoint: 'http://127.0.0.1:1', region: 'us-east-1' });
    d.close();
    const afterCreate = seen.filter((u) => u.includes('@aws-sdk/client-s3')).length;
    console.log(JSON.stringify({ atImport, indexLoaded, afterCreate }));
  `;
  const cwd = fileURLToPath(new URL('..', import.meta.url));
  const { stdout } = await promisify(execFile)(process.execPath, ['--input-type=module', '-e', script], { cwd });
  const res = JSON.parse(stdout) as { atImport: string[]; indexLoaded: boolean; afterCreate: number };
  assert.ok(res.indexLoaded, 'the package index was imported');
  assert.deepEqual(res.atImport, []);
  assert.ok(res.afterCreate > 0, 'createS3Driver loads the SDK');
});
