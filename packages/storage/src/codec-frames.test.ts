import { test } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { Readable, Writable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import zlib from 'node:zlib';
import { compressBlock, compressor, decompressor, scanZstdFrames } from './codec.js';

async function decode(stored: Buffer, pieces: number): Promise<Buffer> {
  const out: Buffer[] = [];
  const step = Math.max(1, Math.ceil(stored.length / pieces));
  const parts = Array.from({ length: Math.ceil(stored.length / step) }, (_, i) => stored.subarray(i * step, (i + 1) * step));
  await pipeline(Readable.from(parts), decompressor('zstd'), new Writable({ write(c: Buffer, _e, cb) { out.push(c); cb(); } }));
  return Buffer.concat(out);
}

test('zstd decoder reads the block form (frames of any size, split anywhere) and the streamed form', async () => {
  const blocks = [Buffer.alloc(3000, 1), randomBytes(5000), Buffer.alloc(1 << 20, 3), Buffer.alloc(0), randomBytes(70_000)];
  const framed = Buffer.concat(blocks.map((b) => compressBlock('zstd', b)));
  const scan = scanZstdFrames(framed, 4 << 20);
  assert.equal(scan?.length, framed.length);
  assert.equal(scan?.contentSize, blocks.reduce((s, b) => s + b.length, 0));
  assert.equal(scanZstdFrames(framed, 4 << 20, 1)?.contentSize, 3000);
  for (const pieces of [1, 7, 1000]) assert.deepEqual(await decode(framed, pieces), Buffer.concat(blocks), `block form in ${pieces} piece(s)`);

  const content = Buffer.concat([randomBytes(100_000), Buffer.alloc(3 << 20, 9)]);
  const streamed: Buffer[] = [];
  await pipeline(Readable.from([content]), compressor('zstd'), new Writable({ write(c: Buffer, _e, cb) { streamed.push(c); cb(); } }));
  assert.equal(scanZstdFrames(Buffer.concat(streamed), 4 << 20), undefined, 'a streamed frame declares no content size');
  for (const pieces of [1, 5]) assert.deepEqual(await decode(Buffer.concat(streamed), pieces), content, `streamed form in ${pieces} piece(s)`);
  assert.deepEqual(await decode(zlib.zstdCompressSync(Buffer.alloc(0)), 1), Buffer.alloc(0));
  await assert.rejects(decode(framed.subarray(0, framed.length - 10), 3));
});
