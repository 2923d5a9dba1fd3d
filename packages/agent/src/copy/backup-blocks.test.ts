// The agent's backup-blocks task with XOR deltas (docs/block-incremental.md, "XOR deltas"): a
// chain of block-incrementals of a file on disk, each changed block stored as a delta over the
// version the prior map rebuilds where that is worth it; every link rebuilt by the assemble-blocks
// task equals the file read. A prior version without the prior map's checksum is stored whole.
// Chains begun from a full with an XXH64 map (every new full) and from one with a SHA-1 map (a
// full taken before XXH64): each incremental compares in its prior map's checksum, stores exactly
// the blocks that differ, and its map keeps that checksum.
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { mkdtemp, readFile, rm, truncate, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import {
  BLOCK_CHECKSUM,
  BLOCK_SUM_BYTES,
  BlockMap,
  blockCount,
  DELTA_DEPTH,
  MAP_BLOCK_BYTES as B,
  mergeBlockMap,
  PosixDriver,
  Repository,
  sumBlocks,
  wholeFileMap,
  type BlockChecksum,
  type BlockMapPart,
  type Codec,
} from '@pgfleet/storage';
import { TEST_MANIFEST_KEYS } from '../testing/repository-fixtures.js';
import { runCopyTask, type BackupBlocksResult, type BackupResult } from './tasks.js';

const dirs: string[] = [];
after(async () => {
  for (const d of dirs) await rm(d, { recursive: true, force: true });
});

const REL = 'base/5/16384';

function page(seed: number): Buffer {
  const b = Buffer.alloc(B, seed & 0xff);
  randomBytes(256).copy(b, (seed * 131) % (B - 256));
  return b;
}

function sumsOf(file: Buffer, checksum: BlockChecksum): Uint8Array {
  const sums = new Uint8Array(blockCount(file.length) * BLOCK_SUM_BYTES);
  sumBlocks(file, sums, 0, checksum);
  return sums;
}

for (const fullChecksum of [BLOCK_CHECKSUM, 'sha1-64'] as const)
  test(`backup-blocks stores XOR deltas over the prior versions; every link is rebuilt exactly (full's map: ${fullChecksum})`, async () => {
    const dir = await mkdtemp(join(tmpdir(), 'pgfleet-backup-blocks-'));
    dirs.push(dir);
    const repo = new Repository(new PosixDriver(join(dir, 'repo')), TEST_MANIFEST_KEYS);
    const src = join(dir, 'rel');
    let file = Buffer.concat(Array.from({ length: 64 }, (_, i) => page(i)));
    await writeFile(src, file);
    const fullKey = repo.backupFileKey('c', '20260101T000000F', REL, 'zstd');
    const full = (await runCopyTask(repo, {
      kind: 'backup',
      src,
      key: fullKey,
      codec: 'zstd',
      offset: 0,
      sums: true,
    })) as BackupResult;
    const part: BlockMapPart = {
      backup: '20260101T000000F',
      object: 'file',
      codec: 'zstd',
      size: full.size,
      sha256: full.sha256,
    };
    assert.deepEqual(full.sums, sumsOf(file, BLOCK_CHECKSUM), 'a full checksums its blocks with XXH64');
    // A full taken before XXH64 has SHA-1 checksums in its map.
    const fullSums = fullChecksum === BLOCK_CHECKSUM ? full.sums! : sumsOf(file, fullChecksum);
    let map: BlockMap = wholeFileMap(full.size, [part], [blockCount(full.size)], fullSums, fullChecksum);
    const keyOf = (p: BlockMapPart) => repo.blockPartKey('c', REL, p);
    const codecs: Codec[] = ['zstd', 'lz4', 'none'];
    let deltas = 0;
    for (let i = 1; i <= 9; i++) {
      const before = file;
      file = Buffer.from(file);
      for (let b = 0; b < 64; b++) if ((b + i) % 3 === 0) randomBytes(16).copy(file, b * B + 40 * i); // small edits
      page(1000 + i).copy(file, ((i * 7) % 64) * B); // a page rewritten
      if (i % 4 === 0) file = Buffer.concat([file, page(2000 + i)]);
      await writeFile(src, file);
      const label = `202601${String(i + 1).padStart(2, '0')}T000000I`;
      const codec = codecs[i % 3]!;
      // The prior map's checksum of block 5 made wrong: its rebuilt prior version no longer matches.
      const sums = Uint8Array.from(map.sums);
      if (i === 6) sums[5 * BLOCK_SUM_BYTES]! ^= 1;
      const r = (await runCopyTask(repo, {
        kind: 'backup-blocks',
        src,
        key: repo.blockDataKey('c', label, REL, codec),
        codec,
        prior: { sums, blocks: map.blocks },
        checksum: map.checksum,
        deltas: {
          parts: map.parts.map((p) => ({ key: keyOf(p), codec: p.codec, sha256: p.sha256, size: p.size })),
          part: map.part,
          index: map.index,
          layers: [...map.deltas],
          size: map.size,
        },
      })) as BackupBlocksResult;
      assert.equal(r.delta!.length, r.changed.length);
      deltas += r.delta!.reduce((a, d) => a + d, 0);
      if (i === 6) assert.equal(r.priorMismatches, 1, 'block 5 stored whole');
      else assert.equal(r.priorMismatches, undefined);
      assert.deepEqual(r.sums, sumsOf(file, fullChecksum), `link ${i}: checksums in the prior map's checksum`);
      const differing = Array.from({ length: blockCount(file.length) }, (_, b) => b).filter(
        (b) =>
          (b + 1) * B > before.length || !file.subarray(b * B, (b + 1) * B).equals(before.subarray(b * B, (b + 1) * B)),
      );
      // Link 6 also stores block 5, whose prior checksum the test made wrong.
      const stored = i === 6 ? [...new Set([...differing, 5])].sort((a, b) => a - b) : differing;
      assert.deepEqual([...r.changed], stored, `link ${i}: exactly the blocks that differ are stored`);
      const own: BlockMapPart = { backup: label, object: 'blocks', codec, size: r.data.size, sha256: r.data.sha256 };
      map = mergeBlockMap(map, own, r.size, r.changed, r.sums, r.delta);
      assert.equal(map.checksum, fullChecksum, "the merged map keeps the prior map's checksum");
      assert.equal(BlockMap.decode(map.encode(), 'merged').checksum, fullChecksum);
      for (let b = 0; b < map.blocks; b++) assert.ok(map.depth(b) <= DELTA_DEPTH);
      const dest = join(dir, `restored-${i}`);
      await writeFile(dest, '');
      await truncate(dest, r.size);
      await runCopyTask(repo, {
        kind: 'assemble-blocks',
        dest,
        size: r.size,
        sha256: r.sha256,
        parts: map.parts.map((p) => ({ key: keyOf(p), codec: p.codec, sha256: p.sha256, size: p.size })),
        part: map.part,
        index: map.index,
        deltas: [...map.deltas],
      });
      assert.ok((await readFile(dest)).equals(file), `link ${i}`);
    }
    assert.ok(deltas > 9 * 15, `${deltas} blocks stored as deltas`);
  });
