// The block map and the chain merge: a file rebuilt from the runs of a merged map, after a chain
// of random changes, growth and truncation, equals the file as the last backup read it.
import { strict as assert } from 'node:assert';
import { createHash, randomBytes } from 'node:crypto';
import { describe, test } from 'node:test';
import { ErrorCodes } from '@pgfleet/core';
import { xxh64 } from './block-xxh64.js';
import {
  BLOCK_CHECKSUM,
  BLOCK_SUM_BYTES,
  BlockMap,
  blockChanged,
  blockCount,
  deltaWorthIt,
  incrementalLoad,
  MAP_BLOCK_BYTES as B,
  layerRuns,
  mergeBlockMap,
  NO_PART,
  REBASE_LOAD,
  sumBlock,
  sumBlocks,
  wholeFileMap,
  writeRuns,
  xorDelta,
  xorInto,
  type BlockMapPart,
} from './block-map.js';

const SHA = 'a'.repeat(64);

function sumsOf(file: Buffer): Uint8Array {
  const n = blockCount(file.length);
  const sums = new Uint8Array(n * BLOCK_SUM_BYTES);
  for (let b = 0; b < n; b++) sumBlock(file.subarray(b * B, Math.min(file.length, (b + 1) * B)), sums, b);
  return sums;
}

/** One simulated backup: the stored content of each part, by part identity. */
type Store = Map<string, Buffer>;
const partId = (p: BlockMapPart) => `${p.backup}/${p.object}/${p.chunk ?? ''}`;

/** A block-incremental backup of `file` over `prior`: what the agent's backup task and FileCopier do. */
function backup(label: string, file: Buffer, prior: BlockMap | undefined, store: Store): BlockMap {
  const sums = sumsOf(file);
  const n = blockCount(file.length);
  if (!prior) {
    const part: BlockMapPart = { backup: label, object: 'file', codec: 'zstd', size: file.length, sha256: SHA };
    store.set(partId(part), file);
    return wholeFileMap(file.length, [part], [n], sums);
  }
  const changed: number[] = [];
  for (let b = 0; b < n; b++) if (blockChanged(prior, b, sums, b * BLOCK_SUM_BYTES)) changed.push(b);
  const content = Buffer.concat(changed.map((b) => file.subarray(b * B, Math.min(file.length, (b + 1) * B))));
  const own: BlockMapPart = { backup: label, object: 'blocks', codec: 'zstd', size: content.length, sha256: SHA };
  store.set(partId(own), content);
  return mergeBlockMap(prior, own, file.length, Uint32Array.from(changed), sums);
}

/** The restore: every part's runs written into a file of the map's size. */
function restore(map: BlockMap, store: Store): Buffer {
  const out = Buffer.alloc(map.size, 0xee);
  writeRuns(map).forEach((runs, p) => {
    const content = store.get(partId(map.parts[p]!))!;
    for (let r = 0; r < runs.length; r += 3) {
      const [from, to, count] = [runs[r]!, runs[r + 1]!, runs[r + 2]!];
      const end = Math.min(map.size, (to + count) * B);
      content.copy(out, to * B, from * B, from * B + (end - to * B));
    }
  });
  return out;
}

describe('block map', () => {
  test('a chain of 40 backups with changes, growth and truncation restores every link exactly', () => {
    const store: Store = new Map();
    let file = randomBytes(B * 50);
    let map = backup('F', file, undefined, store);
    assert.deepEqual(restore(map, store), file);
    for (let i = 1; i <= 40; i++) {
      file = Buffer.from(file);
      // A few random blocks change; sometimes the file grows (with a new all-zero block), or is truncated.
      for (let k = 0; k < 3; k++) randomBytes(100).copy(file, Math.floor(Math.random() * file.length) & ~(B - 1));
      if (i % 7 === 0) file = Buffer.concat([file, Buffer.alloc(B * 3), randomBytes(B)]);
      if (i % 11 === 0) file = file.subarray(0, file.length - B * 5);
      if (i === 20) file = Buffer.concat([file, randomBytes(100)]); // a shorter last block
      if (i === 21) file = Buffer.concat([file, randomBytes(B - 100)]);
      const next = backup(`I${i}`, file, map, store);
      // Stored: exactly the blocks that differ from what the prior map restores.
      const own = next.parts.findIndex((p) => p.backup === `I${i}`);
      const prior = restore(map, store);
      for (let b = 0; b < next.blocks; b++) {
        const same =
          b * B < prior.length && file.subarray(b * B, (b + 1) * B).equals(prior.subarray(b * B, (b + 1) * B));
        assert.equal(next.part[b] === own, !same, `link ${i} block ${b}`);
      }
      map = BlockMap.decode(next.encode(), `I${i}`);
      assert.deepEqual(restore(map, store), file, `link ${i}`);
    }
    // Parts no block needs are dropped: at most one per backup still contributing.
    assert.ok(map.parts.length <= 41);
    assert.deepEqual(
      map.backupsOtherThan('I40'),
      [...new Set(map.parts.map((p) => p.backup))].filter((b) => b !== 'I40').sort(),
    );
  });

  test('an unchanged file stores nothing and keeps every block where it was', () => {
    const store: Store = new Map();
    const file = randomBytes(B * 8);
    const full = backup('F', file, undefined, store);
    const incr = backup('I1', file, full, store);
    assert.equal(store.get('I1/blocks/')!.length, 0);
    assert.deepEqual(
      incr.parts.map((p) => p.backup),
      ['F'],
    );
    assert.deepEqual(restore(incr, store), file);
  });

  test('incrementalLoad counts, per block, the whole images and delta layers taken from incrementals', () => {
    const store: Store = new Map();
    let file = randomBytes(B * 10);
    const full = backup('F', file, undefined, store);
    // A full (or a re-based file) reads nothing from incrementals: the first incr never re-bases.
    assert.equal(incrementalLoad(full), 0);
    file = Buffer.from(file);
    for (const b of [1, 2, 3]) randomBytes(100).copy(file, b * B);
    const i1 = backup('I1', file, full, store);
    assert.equal(incrementalLoad(i1), 0.3);
    assert.ok(incrementalLoad(i1) < REBASE_LOAD);
    // Blocks 1 and 2 stored as XOR deltas over I1's images, block 5 whole: 3 + 2 + 1 of 10.
    const own: BlockMapPart = { backup: 'I2', object: 'blocks', codec: 'zstd', size: 3 * B, sha256: SHA };
    const i2 = mergeBlockMap(
      i1,
      own,
      file.length,
      Uint32Array.from([1, 2, 5]),
      sumsOf(file),
      Uint8Array.from([1, 1, 0]),
    );
    assert.equal(i2.deltas.length, 1);
    assert.equal(incrementalLoad(i2), 0.6);
    assert.ok(incrementalLoad(i2) >= REBASE_LOAD);
  });

  test('runs group consecutive blocks of one part', () => {
    const parts: BlockMapPart[] = [
      { backup: 'F', object: 'file', codec: 'none', size: 6 * B, sha256: SHA },
      { backup: 'I', object: 'blocks', codec: 'none', size: 2 * B, sha256: SHA },
    ];
    const map = new BlockMap(
      6 * B,
      parts,
      Uint16Array.from([0, 0, 1, 1, 0, 0]),
      Uint32Array.from([0, 1, 0, 1, 4, 5]),
      new Uint8Array(6 * BLOCK_SUM_BYTES),
    );
    assert.deepEqual(
      writeRuns(map).map((r) => [...r]),
      [
        [0, 0, 2, 4, 4, 2],
        [0, 2, 2],
      ],
    );
  });

  test('a map with delta layers is written as PGFBMAP2 (older agents refuse it), one without as PGFBMAP1', () => {
    const parts: BlockMapPart[] = [
      { backup: 'F', object: 'file', codec: 'none', size: 4 * B, sha256: SHA },
      { backup: 'I1', object: 'blocks', codec: 'none', size: 2 * B, sha256: SHA },
      { backup: 'I2', object: 'blocks', codec: 'none', size: 2 * B, sha256: SHA },
    ];
    const sums = new Uint8Array(4 * BLOCK_SUM_BYTES);
    const plain = new BlockMap(
      4 * B,
      parts.slice(0, 1),
      Uint16Array.from([0, 0, 0, 0]),
      Uint32Array.from([0, 1, 2, 3]),
      sums,
    );
    assert.equal(plain.encode().subarray(0, 8).toString('latin1'), 'PGFBMAP1');
    // Block 1: whole in F, a delta in I1, another in I2; block 3: a delta in I1 only.
    const d1 = { part: Uint16Array.from([NO_PART, 1, NO_PART, 1]), index: Uint32Array.from([0, 0, 0, 1]) };
    const d2 = { part: Uint16Array.from([NO_PART, 2, NO_PART, NO_PART]), index: Uint32Array.from([0, 0, 0, 0]) };
    const layered = new BlockMap(4 * B, parts, plain.part, plain.index, sums, [d1, d2]);
    const buf = layered.encode();
    assert.equal(buf.subarray(0, 8).toString('latin1'), 'PGFBMAP2');
    const back = BlockMap.decode(buf, 'x');
    assert.deepEqual(
      [0, 1, 2, 3].map((b) => back.depth(b)),
      [0, 2, 0, 1],
    );
    assert.deepEqual(back.backupsOtherThan('F'), ['I1', 'I2']);
    assert.deepEqual(
      layerRuns(back).map((l) => l.map((r) => [...r])),
      [
        [[0, 0, 4], [], []],
        [[], [0, 1, 1, 1, 3, 1], []],
        [[], [], [0, 1, 1]],
      ],
    );
    assert.throws(() => writeRuns(back), /use layerRuns/);
    const bad = (d: { part: Uint16Array; index: Uint32Array }[], size = 4 * B) =>
      assert.throws(
        () => BlockMap.decode(new BlockMap(size, parts, plain.part, plain.index, sums, d).encode(), 'x'),
        (err: Error & { code?: string }) => err.code === ErrorCodes.BlockMapInvalid.code,
      );
    // A second delta without a first; two layers reading one part backwards; a delta on a short last block.
    bad([{ part: Uint16Array.from([NO_PART, NO_PART, NO_PART, NO_PART]), index: d1.index }, d2]);
    bad([{ part: Uint16Array.from([NO_PART, 1, NO_PART, 1]), index: Uint32Array.from([0, 1, 0, 0]) }]);
    bad([d1], 3 * B + 100);
  });

  test('a damaged map is refused with PGF-5070', () => {
    const store: Store = new Map();
    const good = backup('F', randomBytes(B * 4), undefined, store).encode();
    const cases: [string, Buffer][] = [
      ['cut', good.subarray(0, good.length - 1)],
      ['magic', Buffer.concat([Buffer.from('XXXXXXXX'), good.subarray(8)])],
    ];
    // A block naming a part that does not exist.
    const noPart = Buffer.from(good);
    noPart.writeUInt16LE(7, good.length - 4 * (2 + 4 + BLOCK_SUM_BYTES));
    cases.push(['part', noPart]);
    // Positions beyond the part's content.
    const far = Buffer.from(good);
    far.writeUInt32LE(99, good.length - 4 * (4 + BLOCK_SUM_BYTES));
    cases.push(['position', far]);
    for (const [what, buf] of cases)
      assert.throws(
        () => BlockMap.decode(buf, 'x'),
        (err: Error & { code?: string }) => err.code === ErrorCodes.BlockMapInvalid.code,
        what,
      );
  });
});

test('a restored run is written whole when the filesystem takes fewer bytes per write than asked (writeAllAt)', async () => {
  const { mkdtemp, open: openFile, readFile, rm } = await import('node:fs/promises');
  const { tmpdir } = await import('node:os');
  const { join } = await import('node:path');
  const { writeAllAt } = await import('./object-io.js');
  const dir = await mkdtemp(join(tmpdir(), 'pgfleet-short-write-'));
  try {
    const path = join(dir, 'f');
    const fh = await openFile(path, 'w+');
    const calls: number[] = [];
    // At most 1000 bytes per call, as a short write leaves it.
    const short = {
      write: (buffer: Buffer, offset: number, length: number, position: number) => {
        calls.push(length);
        return fh.write(buffer, offset, Math.min(length, 1000), position);
      },
    } as Parameters<typeof writeAllAt>[0];
    const data = randomBytes(8192);
    await writeAllAt(short, data, 100, 5000, 3000);
    await fh.close();
    const got = await readFile(path);
    assert.equal(got.length, 8000);
    assert.deepEqual(got.subarray(3000), data.subarray(100, 5100));
    assert.deepEqual(got.subarray(0, 3000), Buffer.alloc(3000));
    assert.equal(calls.length, 5);
    // A write that takes nothing fails instead of looping.
    const stuck = { write: async () => ({ bytesWritten: 0, buffer: data }) } as unknown as Parameters<
      typeof writeAllAt
    >[0];
    await assert.rejects(writeAllAt(stuck, data, 0, 10, 0), /wrote nothing/);
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
});

describe('block checksums and XOR deltas (one-pass forms of the copy path)', () => {
  test('sumBlock sha1-64 writes the first 8 bytes of the SHA-1 of the block, whatever its length and content', () => {
    const inputs = [
      Buffer.alloc(0),
      Buffer.alloc(1),
      Buffer.alloc(B),
      Buffer.alloc(B, 0xff),
      Buffer.alloc(B, 0x80), // bytes above 0x7f: the digest's latin1 form must give them back exactly
      randomBytes(B - 1),
      randomBytes(B),
      randomBytes(100),
      ...Array.from({ length: 200 }, () => randomBytes(B)),
    ];
    const sums = new Uint8Array((inputs.length + 1) * BLOCK_SUM_BYTES).fill(0xaa);
    inputs.forEach((data, i) => sumBlock(data, sums, i + 1, 'sha1-64'));
    assert.deepEqual([...sums.subarray(0, BLOCK_SUM_BYTES)], Array(BLOCK_SUM_BYTES).fill(0xaa), 'slot 0 untouched');
    inputs.forEach((data, i) => {
      const want = createHash('sha1').update(data).digest().subarray(0, BLOCK_SUM_BYTES);
      const got = sums.subarray((i + 1) * BLOCK_SUM_BYTES, (i + 2) * BLOCK_SUM_BYTES);
      assert.deepEqual(Buffer.from(got), want, `input ${i} (${data.length} bytes)`);
    });
  });

  test('new maps checksum blocks with XXH64 (8 bytes little-endian); sumBlocks of a read equals sumBlock of each block', () => {
    assert.equal(BLOCK_CHECKSUM, 'xxh64');
    const data = randomBytes(200 * B + 123);
    const n = blockCount(data.length);
    for (const checksum of ['xxh64', 'sha1-64'] as const) {
      const batch = new Uint8Array((n + 3) * BLOCK_SUM_BYTES);
      assert.equal(sumBlocks(data, batch, 3, checksum), n);
      const each = new Uint8Array((n + 3) * BLOCK_SUM_BYTES);
      for (let b = 0; b < n; b++)
        sumBlock(data.subarray(b * B, Math.min(data.length, (b + 1) * B)), each, b + 3, checksum);
      assert.deepEqual(batch, each, checksum);
    }
    const sums = new Uint8Array(BLOCK_SUM_BYTES);
    sumBlock(data.subarray(0, B), sums, 0);
    assert.equal(Buffer.from(sums).readBigUInt64LE(0), xxh64(data.subarray(0, B)));
  });

  test('a map names its checksum: XXH64 for new maps, SHA-1 maps read back as such, another name refused', () => {
    const parts: BlockMapPart[] = [{ backup: 'F', object: 'file', codec: 'none', size: 2 * B, sha256: SHA }];
    const sums = randomBytes(2 * BLOCK_SUM_BYTES);
    const make = (checksum?: 'sha1-64' | 'xxh64') =>
      new BlockMap(2 * B, parts, Uint16Array.from([0, 0]), Uint32Array.from([0, 1]), sums, [], checksum);
    for (const [map, name] of [
      [make(), 'xxh64'],
      [make('sha1-64'), 'sha1-64'],
      [wholeFileMap(2 * B, parts, [2], sums, 'sha1-64'), 'sha1-64'],
    ] as const) {
      const buf = map.encode();
      assert.ok(buf.includes(`"checksum":"${name}"`), name);
      const back = BlockMap.decode(buf, 'x');
      assert.equal(back.checksum, name);
      assert.deepEqual(Buffer.from(back.sums), Buffer.from(sums));
      // An incremental over it keeps its checksum (its sums were taken in it).
      const own: BlockMapPart = { backup: 'I', object: 'blocks', codec: 'none', size: B, sha256: SHA };
      assert.equal(mergeBlockMap(back, own, 2 * B, Uint32Array.from([1]), sums).checksum, name);
    }
    const other = Buffer.from(make().encode().toString('latin1').replace('"xxh64"', '"xxh32"'), 'latin1');
    assert.throws(
      () => BlockMap.decode(other, 'x'),
      (err: Error & { code?: string }) =>
        err.code === ErrorCodes.BlockMapInvalid.code && /checksum xxh32 not supported/.test(err.message),
    );
  });

  /** The old two-pass form: copy, xorInto, deltaWorthIt. */
  function twoPass(now: Buffer, before: Buffer): { x: Buffer; worth: boolean } {
    const x = Buffer.from(now);
    xorInto(x, 0, before, 0, B);
    return { x, worth: deltaWorthIt(x) };
  }

  /** A prior version of `now` with `words` of its 32-bit words changed (at random places). */
  function edited(now: Buffer, words: number): Buffer {
    const before = Buffer.from(now);
    const at = new Set<number>();
    while (at.size < words) at.add(Math.floor(Math.random() * (B / 4)));
    for (const w of at) before.writeInt32LE(before.readInt32LE(w * 4) ^ ((Math.random() * 0x7fffffff) | 1), w * 4);
    return before;
  }

  test('xorDelta gives the XOR and the worth-it answer of xorInto + deltaWorthIt, aligned or not', () => {
    const limit = B / 4 / 4;
    const cases: [Buffer, Buffer][] = [];
    for (const words of [0, 1, 2, 17, limit - 2, limit - 1, limit, limit + 1, 900, B / 4]) {
      const now = randomBytes(B);
      cases.push([now, edited(now, words)]);
    }
    cases.push([Buffer.alloc(B), Buffer.alloc(B)]);
    cases.push([randomBytes(B), randomBytes(B)]);
    for (let i = 0; i < 100; i++) {
      const now = randomBytes(B);
      cases.push([now, edited(now, Math.floor(Math.random() * (B / 4)))]);
    }
    for (const [now, before] of cases) {
      const want = twoPass(now, before);
      // Aligned: the dst and the new block at word offsets of larger buffers.
      const dst = Buffer.alloc(3 * B, 0x55);
      const src = Buffer.concat([randomBytes(B), now]);
      const worth = xorDelta(dst, B, src, B, before);
      assert.equal(worth, want.worth);
      if (worth) assert.ok(dst.subarray(B, 2 * B).equals(want.x));
      assert.ok(dst.subarray(0, B).equals(Buffer.alloc(B, 0x55)) && dst.subarray(2 * B).equals(Buffer.alloc(B, 0x55)));
      // Unaligned (byte offsets 1 and 3): the byte path gives the same.
      const dst1 = new Uint8Array(new ArrayBuffer(B + 4), 1, B + 1);
      const src3 = new Uint8Array(new ArrayBuffer(B + 4), 3, B);
      src3.set(now);
      assert.equal(xorDelta(dst1, 0, src3, 0, before), want.worth);
      if (want.worth) assert.ok(Buffer.from(dst1.subarray(0, B)).equals(want.x));
    }
    assert.ok(cases.some(([n, b]) => twoPass(n, b).worth) && cases.some(([n, b]) => !twoPass(n, b).worth));
  });
});
