import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Readable, Writable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import zlib from 'node:zlib';
import {
  blockDecoder,
  blockEncoder,
  compressLevel,
  compressor,
  CODECS,
  decompressor,
  DEFAULT_ZSTD_LEVEL,
  scanZstdFrames,
  xxh32Small,
  zstdFrameChecksummed,
  type BlockCodec,
  type Codec,
} from './codec.js';
import { lz4Frame } from './codec-blocks.js';
import { encodeFile, ObjectIo } from './object-io.js';
import { PosixDriver } from './posix-driver.js';
import { PgfleetError } from '@pgfleet/core/errors';

const sha = (b: Uint8Array) => createHash('sha256').update(b).digest('hex');

async function collect(parts: Buffer[], stage: NodeJS.ReadWriteStream): Promise<Buffer> {
  const out: Buffer[] = [];
  await pipeline(
    Readable.from(parts),
    stage,
    new Writable({
      write(c: Buffer, _e, cb) {
        out.push(c);
        cb();
      },
    }),
  );
  return Buffer.concat(out);
}

/** `stored` in `pieces` parts of about equal size, through the codec's decompressor stream. */
function decode(codec: Codec, stored: Buffer, pieces: number): Promise<Buffer> {
  const step = Math.max(1, Math.ceil(stored.length / pieces));
  const parts = Array.from({ length: Math.ceil(stored.length / step) }, (_, i) =>
    stored.subarray(i * step, (i + 1) * step),
  );
  return collect(parts, decompressor(codec));
}

/** Content of varied compressibility: runs, random bytes, text, and an empty block. */
const BLOCKS = [
  Buffer.alloc(3000, 1),
  randomBytes(5000),
  Buffer.alloc(1 << 20, 3),
  Buffer.alloc(0),
  Buffer.from('pgfleet '.repeat(9000)),
  randomBytes(70_000),
];

/** The block form of BLOCKS: one encoder call per block, its output copied (the encoder reuses it). */
async function encodeBlocks(codec: BlockCodec): Promise<Buffer> {
  const enc = blockEncoder(codec);
  try {
    const frames: Buffer[] = [];
    for (const b of BLOCKS) frames.push(Buffer.from(await enc.encode(b)));
    return Buffer.concat(frames);
  } finally {
    enc.close();
  }
}

for (const codec of ['zstd', 'lz4', 'none'] as const) {
  test(`${codec} block form: decoder streams (split anywhere) and block decoders read what the block encoder wrote`, async () => {
    const framed = await encodeBlocks(codec);
    const content = Buffer.concat(BLOCKS);
    for (const pieces of [1, 7, 1000])
      assert.deepEqual(await decode(codec, framed, pieces), content, `block form in ${pieces} piece(s)`);

    // The block decoder as the restore drives it: into a caller buffer, room for whole blocks only.
    const dec = blockDecoder(codec);
    const out = Buffer.alloc(content.length + (2 << 20));
    let consumed = 0;
    let produced = 0;
    for (;;) {
      const step = dec.decode(framed.subarray(consumed), out, produced);
      if (step.consumed === 0 && step.produced === 0) break;
      consumed += step.consumed;
      produced += step.produced;
    }
    assert.equal(consumed, framed.length);
    assert.deepEqual(out.subarray(0, produced), content);
    // Too little room for the next block: it says so instead of producing a part of it.
    dec.reset();
    const small = Buffer.alloc(100);
    const first = dec.decode(framed, small, 0);
    assert.ok(first.produced <= small.length);
    dec.close();
  });
}

test('zstd: frames declare their content size, the streamed form reads too, truncation and garbage are errors', async () => {
  const framed = await encodeBlocks('zstd');
  const scan = scanZstdFrames(framed, 4 << 20);
  assert.equal(scan?.length, framed.length);
  assert.equal(
    scan?.contentSize,
    BLOCKS.reduce((s, b) => s + b.length, 0),
  );
  assert.equal(scanZstdFrames(framed, 4 << 20, 1)?.contentSize, 3000);
  // The zstd command line reads the block form as plain zstd.
  assert.deepEqual(zlib.zstdDecompressSync(framed.subarray(0, scanZstdFrames(framed, 4 << 20, 1)!.length)), BLOCKS[0]);

  const content = Buffer.concat([randomBytes(100_000), Buffer.alloc(3 << 20, 9)]);
  // What agents before the block form wrote for WAL and S3 objects: one long streamed frame.
  const streamed = await collect([content], zlib.createZstdCompress());
  assert.equal(
    scanZstdFrames(await collect([content], compressor('zstd')), 4 << 20)?.contentSize,
    content.length,
    'the compressor writes the block form',
  );
  assert.equal(scanZstdFrames(streamed, 4 << 20), undefined, 'a streamed frame declares no content size');
  for (const pieces of [1, 5, 300])
    assert.deepEqual(await decode('zstd', streamed, pieces), content, `streamed form in ${pieces} piece(s)`);
  assert.deepEqual(await decode('zstd', zlib.zstdCompressSync(Buffer.alloc(0)), 1), Buffer.alloc(0));
  await assert.rejects(decode('zstd', framed.subarray(0, framed.length - 10), 3), /ends inside a frame/);
  await assert.rejects(decode('zstd', Buffer.concat([framed, randomBytes(64)]), 2));
});

test('lz4: standard LZ4 frames (the lz4 command line reads them), incompressible blocks stored raw, bad headers refused', async () => {
  const enc = blockEncoder('lz4');
  const random = randomBytes(4096);
  const raw = Buffer.from(await enc.encode(random));
  assert.equal(raw.readUInt32LE(0), 0x184d2204, 'LZ4 frame magic');
  assert.equal(raw.readUInt32LE(6), random.length, 'content size in the header');
  assert.equal(raw.readUInt32LE(15) >>> 31, 1, 'an incompressible block is stored uncompressed');
  assert.equal(raw.length, 15 + 4 + random.length + 4);
  enc.close();
  assert.equal(xxh32Small(Buffer.alloc(0), 0, 0), 0x02cc5d05, 'XXH32 of nothing (reference value)');

  const framed = await encodeBlocks('lz4');
  const dir = await mkdtemp(join(tmpdir(), 'pgfleet-lz4-'));
  try {
    await writeFile(join(dir, 'f.lz4'), framed);
    // The reference tool (Debian package lz4, installed by .ci/run) reads our frames.
    const cli = execFileSync('lz4', ['-dc', join(dir, 'f.lz4')], { maxBuffer: 64 << 20 });
    assert.deepEqual(cli, Buffer.concat(BLOCKS));
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
  const bad = Buffer.from(framed);
  bad[14] = bad[14]! ^ 0xff; // header checksum of the first frame
  await assert.rejects(decode('lz4', bad, 1), /header checksum/);
  await assert.rejects(decode('lz4', framed.subarray(0, framed.length - 3), 2), /ends inside a frame/);
});

test('every codec: compressor and decompressor streams round-trip, empty input included', async () => {
  const content = Buffer.concat([randomBytes(300_000), Buffer.alloc((2 << 20) + 17, 5)]);
  for (const codec of CODECS) {
    for (const input of [content, Buffer.alloc(0)]) {
      const stored = await collect([input.subarray(0, 1000), input.subarray(1000)], compressor(codec));
      assert.deepEqual(await decode(codec, stored, 4), input, `${codec}, ${input.length} bytes`);
    }
  }
});

test('encodeFile: one read gives the content sha256 and the block form, empty files included', async () => {
  const dir = await mkdtemp(join(tmpdir(), 'pgfleet-encode-'));
  try {
    const content = Buffer.concat([randomBytes(200_000), Buffer.alloc((1 << 20) * 2 + 5, 1)]);
    for (const [name, data] of [
      ['data', content],
      ['empty', Buffer.alloc(0)],
    ] as const) {
      await writeFile(join(dir, name), data);
      for (const codec of ['zstd', 'lz4', 'none'] as const) {
        const out = await encodeFile(join(dir, name), codec);
        assert.equal(out.size, data.length);
        assert.equal(out.sha256, createHash('sha256').update(data).digest('hex'));
        assert.deepEqual(await decode(codec, Buffer.concat(out.stored), 3), data, `${codec}, ${name}`);
      }
    }
    // Concurrent calls, each with a zstd context of the thread's pool (the WAL daemon archives several segments at once).
    const files = await Promise.all(
      [1, 2, 3, 4].map(async (i) => {
        const data = Buffer.concat([randomBytes(50_000 * i), Buffer.alloc((1 << 20) * i, i)]);
        await writeFile(join(dir, `c${i}`), data);
        return { path: join(dir, `c${i}`), data };
      }),
    );
    const outs = await Promise.all(files.map((f) => encodeFile(f.path, 'zstd')));
    for (const [i, f] of files.entries())
      assert.deepEqual(await decode('zstd', Buffer.concat(outs[i]!.stored), 2), f.data, `concurrent ${i}`);
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
});

test('compress levels per codec: zstd 1-19 and gzip 1-9 with their defaults; lz4 and none take none (CompressLevelInvalid)', () => {
  assert.equal(compressLevel('zstd', undefined), DEFAULT_ZSTD_LEVEL);
  assert.equal(compressLevel('gzip', undefined), 6);
  assert.equal(compressLevel('lz4', undefined), undefined);
  assert.equal(compressLevel('zstd', 19), 19);
  assert.equal(compressLevel('gzip', 1), 1);
  for (const [codec, level, says] of [
    ['zstd', 20, /out of range for zstd: 1 to 19/],
    ['zstd', 0, /out of range/],
    ['gzip', 10, /out of range for gzip: 1 to 9/],
    ['lz4', 3, /codec lz4 has no compression levels/],
    ['none', 1, /codec none has no compression levels/],
  ] as const) {
    assert.throws(
      () => compressLevel(codec, level),
      (e: unknown) => PgfleetError.is(e, 'CompressLevelInvalid') && says.test(e.message),
    );
  }
});

test('restore of zstd objects: stored bytes checked against their sha256, each frame against its content checksum; older objects by content', async () => {
  const dir = await mkdtemp(join(tmpdir(), 'pgfleet-frames-'));
  try {
    const driver = new PosixDriver(join(dir, 'repo'));
    const io = new ObjectIo(driver);
    // Three frames of table-like bytes (compressible, not trivially).
    const content = Buffer.concat([randomBytes(300_000), Buffer.alloc(2 << 20, 7), randomBytes(200_000)]);
    await writeFile(join(dir, 'src'), content);
    const s = await io.storeFile('o/t', { path: join(dir, 'src'), offset: 0 }, 'zstd');
    assert.ok(s);
    const objectPath = driver.filePath('o/t');
    const stored = await readFile(objectPath);
    assert.ok(zstdFrameChecksummed(stored), 'frames are written with their content checksum');
    const restoreTo = (name: string, expected: { sha256: string; size: number; storedSha256?: string }) =>
      io.restoreFile('o/t', 'zstd', expected, { path: join(dir, name), mode: 0o600 });
    const mismatch = (e: unknown) => PgfleetError.is(e, 'RepoChecksumMismatch');

    await restoreTo('a', { sha256: s.sha256, size: s.size, storedSha256: s.storedSha256 });
    assert.deepEqual(await readFile(join(dir, 'a')), content);
    // Stored bytes other than the manifest's: refused.
    await assert.rejects(
      restoreTo('b', { sha256: s.sha256, size: s.size, storedSha256: sha(Buffer.from('x')) }),
      mismatch,
    );
    await assert.rejects(
      restoreTo('c', { sha256: s.sha256, size: s.size + 1, storedSha256: s.storedSha256 }),
      mismatch,
    );

    // A frame whose content does not match its checksum (the manifest naming these very bytes):
    // zstd refuses it as it decodes, though nobody hashed the content.
    const firstFrame = scanZstdFrames(stored, 4 << 20, 1)!.length;
    const bad = Buffer.from(stored);
    bad[firstFrame - 1]! ^= 0x01; // the last byte of the first frame: its XXH64 checksum
    await writeFile(objectPath, bad);
    await assert.rejects(restoreTo('d', { sha256: s.sha256, size: s.size, storedSha256: sha(bad) }), mismatch);

    // Frames without checksums (agents before this one): the content is hashed as before.
    const old = Buffer.concat(
      [content.subarray(0, 1 << 20), content.subarray(1 << 20)].map((part) =>
        zlib.zstdCompressSync(part, { pledgedSrcSize: part.length }),
      ),
    );
    assert.equal(zstdFrameChecksummed(old), false);
    await writeFile(objectPath, old);
    await restoreTo('e', { sha256: s.sha256, size: s.size, storedSha256: sha(old) });
    assert.deepEqual(await readFile(join(dir, 'e')), content);
    await assert.rejects(
      restoreTo('f', { sha256: sha(Buffer.from('y')), size: s.size, storedSha256: sha(old) }),
      mismatch,
    );
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
});

test('restore of lz4 frames of 2 MiB (block maximum 4 MiB) after a frame that leaves a partial page: decoded into larger buffers, byte for byte', async () => {
  // The restore's output buffers hold 2 MiB and a bit (issue 19); an lz4 frame of the stream
  // form declares 4 MiB blocks and asks for that much room, which only larger buffers give.
  const dir = await mkdtemp(join(tmpdir(), 'pgfleet-frames-'));
  try {
    const driver = new PosixDriver(join(dir, 'repo'));
    const io = new ObjectIo(driver);
    const tableLike = (n: number) => {
      const b = Buffer.alloc(n);
      for (let i = 0; i < n; i += 64) randomBytes(16).copy(b, i);
      return b;
    };
    const parts = [tableLike(1_000_001), tableLike(2 << 20), tableLike(2 << 20), tableLike(12_345)];
    const content = Buffer.concat(parts);
    const stored = Buffer.concat(await Promise.all(parts.map((p) => lz4Frame(p))));
    await driver.put('o/l', stored);
    await io.restoreFile(
      'o/l',
      'lz4',
      { sha256: sha(content), size: content.length },
      { path: join(dir, 'r'), mode: 0o600 },
    );
    assert.deepEqual(await readFile(join(dir, 'r')), content);
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
});
