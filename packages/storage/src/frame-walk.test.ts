/**
 * The frame walker over the stored forms pgfleet writes (frame-walk.ts): whole objects walk to
 * their end with the content size their frames declare, however the bytes are split and whether
 * they are streamed or read positionally from a local file (headers only); cut,
 * emptied, extended and malformed ones are told apart. Then ObjectIo.walk on a real posix
 * repository, plaintext and encrypted: the first content bytes from the first frame alone, and
 * an encrypted object moved to another key failing authentication.
 */
import { after, test } from 'node:test';
import assert from 'node:assert/strict';
import { createHash, randomBytes } from 'node:crypto';
import { closeSync, openSync, writeFileSync } from 'node:fs';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Readable, Writable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import zlib from 'node:zlib';
import { compressor, type BlockCodec, type Codec } from './codec.js';
import { FrameWalkError, frameWalker, walkLocalFile, type FrameWalk } from './frame-walk.js';
import { encodeFile } from './object-io.js';
import { PosixDriver } from './posix-driver.js';
import { Repository } from './repository.js';
import { TEST_MANIFEST_KEYS } from './driver-suite.js';
import { fixedKeys } from './key-source.js';

const MiB = 1 << 20;

/** 3.5 MiB of varied content (text, bytes no codec shrinks, zeros): four block-form frames, the last one short. */
function content(): Buffer {
  const b = Buffer.alloc(3.5 * MiB);
  for (let at = 0, i = 0; at < 2 * MiB; i++) at += b.write(`record ${i} ${(i * 2654435761) % 1e9};`, at);
  for (let at = 2 * MiB, h = Buffer.from('seed'); at < 2.25 * MiB; at += 32)
    (h = createHash('sha256').update(h).digest()).copy(b, at);
  return b;
}

async function withTemp<T>(use: (dir: string) => Promise<T>): Promise<T> {
  const dir = await mkdtemp(join(tmpdir(), 'pgfleet-walk-'));
  try {
    return await use(dir);
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
}

/** The block form of `data` as the one-pass WAL writer makes it (encodeFile), frame by frame. */
async function blockForm(data: Buffer, codec: BlockCodec): Promise<Buffer[]> {
  return withTemp(async (dir) => {
    await writeFile(join(dir, 'f'), data);
    return (await encodeFile(join(dir, 'f'), codec)).stored;
  });
}

/** `data` through the codec's compressor stream (the stream path: pushWal, adoptWal, gzip). */
async function streamed(data: Buffer, codec: Codec): Promise<Buffer> {
  const out: Buffer[] = [];
  await pipeline(
    Readable.from([data.subarray(0, 1000), data.subarray(1000)]),
    compressor(codec),
    new Writable({
      write(c: Buffer, _e, cb) {
        out.push(c);
        cb();
      },
    }),
  );
  return Buffer.concat(out);
}

const scratch = await mkdtemp(join(tmpdir(), 'pgfleet-walk-file-'));
after(() => rm(scratch, { recursive: true, force: true }));

/** The walk of `stored` as a local file, headers read positionally (walkLocalFile). */
function walkFile(codec: Codec, stored: Buffer): FrameWalk {
  const path = join(scratch, 'object');
  writeFileSync(path, stored);
  const fd = openSync(path, 'r');
  try {
    return walkLocalFile(codec, fd, stored.length);
  } finally {
    closeSync(fd);
  }
}

/** Walks `stored` pushed in pieces of `step` bytes; the positional walk of the same bytes must agree. */
function walk(codec: Codec, stored: Buffer, step = 64 << 10): FrameWalk {
  const w = frameWalker(codec);
  let streamed: FrameWalk | FrameWalkError;
  try {
    for (let i = 0; i < stored.length; i += step) w.push(stored.subarray(i, i + step));
    streamed = w.end();
  } catch (err) {
    if (!(err instanceof FrameWalkError)) throw err;
    streamed = err;
  }
  let local: FrameWalk | FrameWalkError;
  try {
    local = walkFile(codec, stored);
  } catch (err) {
    if (!(err instanceof FrameWalkError)) throw err;
    local = err;
  }
  if (streamed instanceof FrameWalkError) {
    assert.ok(local instanceof FrameWalkError, `the positional walk sees the ${streamed.fault} too`);
    assert.equal(local.fault, streamed.fault);
    throw streamed;
  }
  assert.deepEqual(local, streamed, 'the positional walk gives the same result');
  return streamed;
}

function faultOf(codec: Codec, stored: Buffer): string {
  try {
    walk(codec, stored);
  } catch (err) {
    assert.ok(err instanceof FrameWalkError, String(err));
    return err.fault;
  }
  return 'none';
}

const data = content();

for (const codec of ['zstd', 'lz4'] as const) {
  test(`${codec}: the block form walks to its end with its content size, split anywhere; cut, emptied and extended objects are told apart`, async () => {
    const frames = await blockForm(data, codec);
    assert.equal(frames.length, 4);
    const stored = Buffer.concat(frames);
    // Byte by byte through the first frame (every header split every way), then in larger pieces.
    assert.deepEqual(walk(codec, frames[0]!, 1).contentBytes, MiB);
    for (const step of [7, 4097, stored.length]) {
      const w = walk(codec, stored, step);
      assert.deepEqual([w.bytes, w.frames, w.contentBytes], [stored.length, 4, data.length], `pieces of ${step}`);
      assert.deepEqual(w.first, frames[0], 'the first frame is kept for decoding');
    }
    // The stream path writes the same form: every frame pledges its content size.
    assert.deepEqual(walk(codec, await streamed(data, codec)).contentBytes, data.length);

    assert.equal(faultOf(codec, stored.subarray(0, stored.length >> 1)), 'cut');
    assert.equal(faultOf(codec, stored.subarray(0, stored.length - 1)), 'cut');
    const boundary = walk(codec, Buffer.concat(frames.slice(0, 2)));
    assert.deepEqual(
      [boundary.frames, boundary.contentBytes],
      [2, 2 * MiB],
      'cut at a frame boundary: whole frames, less content',
    );
    assert.deepEqual(walk(codec, Buffer.alloc(0)), { bytes: 0, frames: 0, contentBytes: 0, first: undefined });
    assert.equal(faultOf(codec, Buffer.concat([stored, Buffer.from('appended')])), 'malformed');
    assert.equal(
      faultOf(codec, Buffer.concat([stored, Buffer.from([0x28])])),
      'cut',
      'a byte of a next frame is a cut frame',
    );
    assert.equal(faultOf(codec, randomBytes(1000)), 'malformed');

    // Appended whole frames (another object's) are valid frames: their content is counted.
    assert.equal(walk(codec, Buffer.concat([stored, frames[0]!])).contentBytes, data.length + MiB);
    // A skippable frame (zstd and LZ4 share the magic range) is skipped.
    const skippable = Buffer.concat([Buffer.from([0x50, 0x2a, 0x4d, 0x18, 3, 0, 0, 0, 1, 2, 3]), stored]);
    assert.equal(walk(codec, skippable).contentBytes, data.length);
  });
}

test('zstd: a header or block the codec never writes is malformed; a frame without its content size walks with no size', async () => {
  const [first] = await blockForm(data, 'zstd');
  const bad = Buffer.from(first!);
  bad[4] = bad[4]! | 0x08; // the reserved descriptor bit
  assert.equal(faultOf('zstd', bad), 'malformed');
  // The first block header (after the 4-byte magic, the descriptor and a 4-byte content size): type 3 is reserved.
  const fhd = first![4]!;
  const at = 5 + ((fhd >> 5) & 1 ? 0 : 1) + [0, 2, 4, 8][fhd >> 6]!;
  const reserved = Buffer.from(first!);
  reserved[at] = reserved[at]! | 0x06;
  assert.equal(faultOf('zstd', reserved), 'malformed');
  // A streamed frame (an older agent's form): the walk still checks its blocks, only decoding tells its size.
  const stream = zlib.createZstdCompress();
  const out: Buffer[] = [];
  stream.on('data', (c: Buffer) => out.push(c));
  stream.write(data.subarray(0, MiB));
  stream.end(data.subarray(MiB));
  await new Promise((r) => stream.on('end', r));
  const w = walk('zstd', Buffer.concat(out));
  assert.equal(w.contentBytes, undefined);
  assert.ok(w.frames >= 1);
});

test('lz4: a frame whose header checksum fails is malformed', async () => {
  const [first] = await blockForm(data, 'lz4');
  const bad = Buffer.from(first!);
  bad[6] = bad[6]! ^ 1; // a byte of the declared content size
  assert.equal(faultOf('lz4', bad), 'malformed');
});

test('gzip: the trailer gives the content size, the first stored bytes are kept; short and foreign objects are faults', async () => {
  const stored = await streamed(data, 'gzip');
  const w = walk('gzip', stored, 777);
  assert.deepEqual([w.bytes, w.contentBytes], [stored.length, data.length]);
  assert.deepEqual(w.first, stored.subarray(0, 4096));
  assert.notEqual(walk('gzip', stored.subarray(0, stored.length >> 1)).contentBytes, data.length);
  assert.equal(faultOf('gzip', stored.subarray(0, 10)), 'cut');
  assert.equal(faultOf('gzip', randomBytes(100)), 'malformed');
  assert.equal(walk('gzip', Buffer.alloc(0)).contentBytes, 0);
});

test('ObjectIo.walk: the first content bytes from the first frame alone, plaintext and encrypted; an encrypted object moved to another key fails its first frame', async () => {
  await withTemp(async (dir) => {
    const src = join(dir, 'src');
    await writeFile(src, data);
    for (const encrypted of [false, true]) {
      const root = join(dir, encrypted ? 'enc' : 'plain');
      const repo = new Repository(
        new PosixDriver(root),
        TEST_MANIFEST_KEYS,
        encrypted ? fixedKeys({ c: randomBytes(32) }) : undefined,
      );
      for (const codec of ['zstd', 'lz4', 'none', 'gzip'] as const) {
        const key = repo.backupFileKey('c', 'L', `base/1/${codec}`, codec);
        const stored = await repo.objects.storeFile(key, { path: src, offset: 0 }, codec);
        const w = await repo.objects.walk(key, codec, 40, stored!.storedSize);
        const what = `${codec}${encrypted ? ' encrypted' : ''}`;
        assert.equal(w.fault, undefined, `${what}: ${w.fault?.message}`);
        assert.equal(w.contentBytes, data.length, what);
        assert.deepEqual(w.head, data.subarray(0, 40), what);
      }
      if (!encrypted) continue;
      // The same bytes under another key (a segment's object copied over another's): AES-GCM binds the key.
      const from = repo.backupFileKey('c', 'L', 'base/1/zstd', 'zstd');
      const to = repo.backupFileKey('c', 'L', 'base/1/other', 'zstd');
      await writeFile(join(root, to), await readFile(join(root, from)));
      const moved = await repo.objects.walk(to, 'zstd', 40);
      assert.equal(moved.fault?.kind, 'tampered', JSON.stringify(moved));
      assert.match(moved.fault!.message, /frame 0 fails authentication/);
      const cut = join(root, from);
      await writeFile(cut, (await readFile(cut)).subarray(0, 1000));
      assert.equal((await repo.objects.walk(from, 'zstd', 40)).fault?.kind, 'cut');
    }
  });
});
