// Real-server test of startS3: the S3 operations our repository driver relies on, against fauxqs.
import assert from 'node:assert/strict';
import { existsSync } from 'node:fs';
import { test } from 'node:test';
import {
  CompleteMultipartUploadCommand,
  CreateMultipartUploadCommand,
  DeleteObjectsCommand,
  GetObjectCommand,
  ListObjectsV2Command,
  PutObjectCommand,
  S3Client,
  UploadPartCommand,
} from '@aws-sdk/client-s3';
import { isPortListening, startS3 } from './index.js';

const MiB = 1024 * 1024;

test('startS3: fauxqs on 127.0.0.1 handles what our S3 driver needs', { timeout: 180_000 }, async (t) => {
  const s3 = await startS3();
  t.after(() => s3.stop());
  assert.match(s3.endpoint, /^http:\/\/127\.0\.0\.1:\d+$/);
  const client = new S3Client(s3.clientConfig);
  t.after(() => client.destroy());
  const Bucket = 'testkit-bucket';
  await s3.createBucket(Bucket);

  await t.test('PutObject / GetObject roundtrip', async () => {
    await client.send(new PutObjectCommand({ Bucket, Key: 'dir/hello.txt', Body: 'hello s3' }));
    const got = await client.send(new GetObjectCommand({ Bucket, Key: 'dir/hello.txt' }));
    assert.equal(await got.Body?.transformToString(), 'hello s3');
  });

  await t.test('ListObjectsV2 with MaxKeys=2 paginates over 5 keys', async () => {
    const keys = ['list/a', 'list/b', 'list/c', 'list/d', 'list/e'];
    for (const Key of keys) await client.send(new PutObjectCommand({ Bucket, Key, Body: Key }));
    const seen: string[] = [];
    let token: string | undefined;
    let pages = 0;
    do {
      const page = await client.send(
        new ListObjectsV2Command({ Bucket, Prefix: 'list/', MaxKeys: 2, ContinuationToken: token }),
      );
      pages++;
      assert.ok((page.Contents?.length ?? 0) <= 2, `page ${pages} has ${page.Contents?.length} keys`);
      for (const o of page.Contents ?? []) seen.push(o.Key!);
      token = page.IsTruncated ? page.NextContinuationToken : undefined;
      assert.ok(!page.IsTruncated || token, 'truncated page without NextContinuationToken');
      assert.ok(pages <= 5, 'pagination does not terminate');
    } while (token);
    assert.deepEqual(seen.sort(), keys);
    assert.equal(pages, 3);
  });

  await t.test('ListObjectsV2 lists in binary key order like S3, so no key is lost at a page boundary', async () => {
    // Locale collation puts '_' before '.', binary order the other way round: a relation file
    // and its _fsm/_vm forks straddling a page boundary once lost the main fork.
    const keys = ['order/13406.zst', 'order/13406_fsm.zst', 'order/13406_vm.zst', 'order/A.zst', 'order/a.zst'];
    for (const Key of [...keys].reverse()) await client.send(new PutObjectCommand({ Bucket, Key, Body: Key }));
    const seen: string[] = [];
    let token: string | undefined;
    do {
      const page = await client.send(
        new ListObjectsV2Command({ Bucket, Prefix: 'order/', MaxKeys: 1, ContinuationToken: token }),
      );
      for (const o of page.Contents ?? []) seen.push(o.Key!);
      token = page.IsTruncated ? page.NextContinuationToken : undefined;
    } while (token && seen.length <= keys.length);
    assert.deepEqual(seen, [...keys].sort(), 'every key once, in byte order');
  });

  await t.test('DeleteObjects batch', async () => {
    const res = await client.send(
      new DeleteObjectsCommand({
        Bucket,
        Delete: { Objects: [{ Key: 'list/a' }, { Key: 'list/b' }, { Key: 'list/c' }] },
      }),
    );
    assert.equal(res.Errors?.length ?? 0, 0, JSON.stringify(res.Errors));
    assert.equal(res.Deleted?.length, 3);
    const left = await client.send(new ListObjectsV2Command({ Bucket, Prefix: 'list/' }));
    assert.deepEqual(left.Contents?.map((o) => o.Key).sort(), ['list/d', 'list/e']);
  });

  await t.test('multipart upload (2 x 5 MiB) and a ranged GET', async () => {
    const Key = 'big/object.bin';
    const part1 = Buffer.alloc(5 * MiB, 'a');
    const part2 = Buffer.alloc(5 * MiB, 'b');
    const { UploadId } = await client.send(new CreateMultipartUploadCommand({ Bucket, Key }));
    assert.ok(UploadId);
    const p1 = await client.send(new UploadPartCommand({ Bucket, Key, UploadId, PartNumber: 1, Body: part1 }));
    const p2 = await client.send(new UploadPartCommand({ Bucket, Key, UploadId, PartNumber: 2, Body: part2 }));
    await client.send(
      new CompleteMultipartUploadCommand({
        Bucket,
        Key,
        UploadId,
        MultipartUpload: {
          Parts: [
            { PartNumber: 1, ETag: p1.ETag },
            { PartNumber: 2, ETag: p2.ETag },
          ],
        },
      }),
    );
    const whole = await client.send(new GetObjectCommand({ Bucket, Key }));
    assert.equal(whole.ContentLength, 10 * MiB);
    const body = Buffer.from(await whole.Body!.transformToByteArray());
    assert.ok(body.equals(Buffer.concat([part1, part2])), 'multipart body differs');

    // 4 bytes across the part boundary
    const ranged = await client.send(
      new GetObjectCommand({ Bucket, Key, Range: `bytes=${5 * MiB - 2}-${5 * MiB + 1}` }),
    );
    assert.equal(await ranged.Body?.transformToString(), 'aabb');
    assert.equal(ranged.ContentLength, 4);
    assert.match(ranged.ContentRange ?? '', new RegExp(`^bytes ${5 * MiB - 2}-${5 * MiB + 1}/${10 * MiB}$`));
  });

  const { port, storageDir } = s3;
  await s3.stop();
  await s3.stop(); // idempotent
  assert.equal(await isPortListening(port), false, 'fauxqs process gone');
  assert.equal(existsSync(storageDir), false, 'storage dir removed');
});
