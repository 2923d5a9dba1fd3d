/**
 * The block maps' XXH64 (block-xxh64.ts) against an implementation it shares nothing with: zstd
 * writes the low 32 bits of XXH64 (seed 0) of a frame's content at the frame's end, so every
 * length class of the algorithm (under 32 bytes, the 8/4/1-byte tails, whole stripes, a page)
 * is checked against node:zlib's zstd. Then the batch form: a multi-MiB read hashed in batches
 * gives every block the digest it gets alone, in place, and nothing beside it is written.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import zlib from 'node:zlib';
import { xxh64, xxh64Blocks, xxh64Into, XXH64_BYTES } from './block-xxh64.js';

/** The content checksum zstd stores: XXH64's low 32 bits, little-endian, the frame's last 4 bytes. */
function zstdChecksum(data: Buffer): number {
  const frame = zlib.zstdCompressSync(data, { params: { [zlib.constants.ZSTD_c_checksumFlag]: 1 } });
  return frame.readUInt32LE(frame.length - 4);
}

test('XXH64 matches zstd content checksums at every length class', () => {
  const lengths = [
    ...Array.from({ length: 80 }, (_, i) => i),
    127,
    128,
    129,
    1000,
    8191,
    8192,
    8193,
    65536 + 7,
    1 << 20,
  ];
  for (const n of lengths)
    for (const data of [randomBytes(n), Buffer.alloc(n), Buffer.alloc(n, 0xff)])
      assert.equal(Number(xxh64(data) & 0xffffffffn), zstdChecksum(data), `${n} bytes`);
});

test('XXH64 of the specification examples', () => {
  assert.equal(xxh64(Buffer.alloc(0)), 0xef46db3751d8e999n);
  assert.equal(xxh64(Buffer.from('abc')), 0x44bc2cf5ad770999n);
});

test('a batch gives each block the digest it gets alone, the last one short, and writes nothing else', () => {
  const B = 8192;
  const data = randomBytes(3 * (1 << 20) + 5 * B + 100); // batches of 128 blocks, then a short last block
  const count = Math.ceil(data.length / B);
  const out = new Uint8Array((count + 2) * XXH64_BYTES).fill(0xaa);
  assert.equal(xxh64Blocks(data, B, out, XXH64_BYTES), count);
  const alone = new Uint8Array(XXH64_BYTES);
  for (let b = 0; b < count; b++) {
    xxh64Into(data.subarray(b * B, Math.min(data.length, (b + 1) * B)), alone, 0);
    const got = out.subarray((b + 1) * XXH64_BYTES, (b + 2) * XXH64_BYTES);
    assert.deepEqual(got, alone, `block ${b}`);
  }
  assert.deepEqual([...out.subarray(0, XXH64_BYTES)], Array(XXH64_BYTES).fill(0xaa), 'the slot before untouched');
  assert.deepEqual([...out.subarray((count + 1) * XXH64_BYTES)], Array(XXH64_BYTES).fill(0xaa), 'the slot after');
  assert.equal(xxh64Blocks(Buffer.alloc(0), B, out, 0), 0, 'no block in nothing');
});
