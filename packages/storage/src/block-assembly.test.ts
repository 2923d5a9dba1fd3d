// ObjectIo.assembleBlocks, the restore of a block-incremental file in one pass: a chain of real
// stored objects (several frames each, every block codec, plaintext and encrypted) rebuilds the
// file the last backup read; a wrong file checksum or a damaged needed frame fails the restore;
// frames holding only superseded blocks are passed over without decoding, so a long chain
// decodes about the file's size, not every part whole.
import { strict as assert } from 'node:assert';
import { readFile, truncate, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { test } from 'node:test';
import {
  BLOCK_SUM_BYTES,
  blockChanged,
  DATA_FRAME_BLOCKS,
  blockCount,
  MAP_BLOCK_BYTES as B,
  mergeBlockMap,
  wholeFileMap,
  type BlockMap,
  type BlockMapPart,
} from './block-map.js';
import type { Codec } from './codec-names.js';
import type { AssemblyFigures, AssemblyPart } from './object-io.js';
import type { Repository } from './repository.js';
import { page, REL, rejectsWith, sha256, storeContent as store, sumsOf, testRepository } from './test-block-chain.js';

interface Chain {
  r: Repository;
  dir: string;
  file: Buffer;
  map: BlockMap;
  parts: AssemblyPart[];
}

/**
 * A full and block-incrementals (random changes of `changeRate` of the blocks, growth) of a file
 * of ~2.5 MiB; the incrementals' codecs cycle through `codecs`, their changed blocks stored in
 * frames of DATA_FRAME_BLOCKS as a backup stores them.
 */
async function chain(encrypted: boolean, codecs: Codec[] = ['zstd', 'lz4', 'none'], changeRate = 0.3): Promise<Chain> {
  const { r, dir } = await testRepository(encrypted);
  let file = Buffer.concat(Array.from({ length: 300 }, (_, i) => page(i)));
  const objects = new Map<string, AssemblyPart>();
  const full: BlockMapPart = { backup: '20260101T000000F', object: 'file', codec: 'zstd', size: 0, sha256: '' };
  const fullObj = await store(r, r.backupFileKey('c', full.backup, REL, 'zstd'), file, 'zstd');
  Object.assign(full, { size: fullObj.size, sha256: fullObj.sha256 });
  objects.set(full.backup, fullObj);
  let map = wholeFileMap(file.length, [full], [blockCount(file.length)], sumsOf(file));
  for (let i = 0; i < codecs.length; i++) {
    file = Buffer.from(file);
    for (let b = 0; b < blockCount(file.length); b++)
      if (Math.random() < changeRate) page(1000 * (i + 1) + b).copy(file, b * B);
    file = Buffer.concat([file, page(5000 + i), page(6000 + i)]); // the relation grew
    const sums = sumsOf(file);
    const changed: number[] = [];
    for (let b = 0; b < blockCount(file.length); b++)
      if (blockChanged(map, b, sums, b * BLOCK_SUM_BYTES)) changed.push(b);
    const content = Buffer.concat(changed.map((b) => file.subarray(b * B, (b + 1) * B)));
    const label = `202601${String(i + 2).padStart(2, '0')}T000000I`;
    const obj = await store(r, r.blockDataKey('c', label, REL, codecs[i]!), content, codecs[i]!, DATA_FRAME_BLOCKS * B);
    objects.set(label, obj);
    const own: BlockMapPart = {
      backup: label,
      object: 'blocks',
      codec: codecs[i]!,
      size: obj.size,
      sha256: obj.sha256,
    };
    map = mergeBlockMap(map, own, file.length, Uint32Array.from(changed), sums);
  }
  return { r, dir, file, map, parts: map.parts.map((p) => objects.get(p.backup)!) };
}

async function assembleFigures(
  c: Chain,
  parts = c.parts,
  sha = sha256(c.file),
): Promise<{ file: Buffer } & AssemblyFigures> {
  const path = join(c.dir, 'rebuilt');
  await writeFile(path, '');
  await truncate(path, c.file.length);
  const figures = await c.r.objects.assembleBlocks(parts, c.map.part, c.map.index, B, {
    path,
    size: c.file.length,
    sha256: sha,
  });
  return { file: await readFile(path), ...figures };
}

async function assemble(c: Chain, parts = c.parts, sha = sha256(c.file)): Promise<Buffer> {
  return (await assembleFigures(c, parts, sha)).file;
}

for (const encrypted of [false, true]) {
  test(`a chain of block-incrementals is rebuilt in one pass (${encrypted ? 'encrypted' : 'plaintext'})`, async () => {
    const c = await chain(encrypted);
    assert.ok(c.map.parts.length === 4, 'every object of the chain still holds blocks the file needs');
    assert.ok(c.r.objects.canAssemble(c.parts.map((p) => p.codec)));
    assert.ok((await assemble(c)).equals(c.file));
  });
}

test('a chain of 30 incrementals decodes about the file, not every part whole', async () => {
  // 30% of the blocks change at random before each link: the parts still named hold ~3-5x the file,
  // most of them superseded. Only frames with a needed block are decoded.
  const c = await chain(
    false,
    Array.from({ length: 30 }, (_, i) => (['zstd', 'lz4', 'none'] as const)[i % 3]!),
    0.3,
  );
  const partBytes = c.map.parts.reduce((sum, p) => sum + p.size, 0);
  assert.ok(partBytes > 2.5 * c.file.length, `the parts hold ${partBytes} bytes for a ${c.file.length}-byte file`);
  const got = await assembleFigures(c);
  assert.ok(got.file.equals(c.file));
  assert.ok(
    got.decodedBytes < 2 * c.file.length,
    `decoded ${got.decodedBytes} content bytes for a ${c.file.length}-byte file (${got.skippedBytes} passed over)`,
  );
});

test('damage in a frame no needed block lies in does not matter; in a needed one it fails', async () => {
  const c = await chain(false, ['none', 'none'], 0.5);
  // The first incremental (codec none: its stored bytes are its content) is about half superseded
  // by the second. Overwrite one block it holds that the map no longer uses, then one it uses.
  const first = c.map.parts.findIndex((p) => p.backup === '20260102T000000I');
  const used = new Set<number>();
  for (let b = 0; b < c.map.blocks; b++) if (c.map.part[b] === first) used.add(c.map.index[b]!);
  const key = join(c.dir, 'repo', c.parts[first]!.key);
  const stored = await readFile(key);
  const unused = [...Array(stored.length / B).keys()].find((i) => !used.has(i))!;
  assert.ok(unused !== undefined && used.size > 0);
  stored.fill(0x55, unused * B, (unused + 1) * B);
  await writeFile(key, stored);
  assert.ok((await assemble(c)).equals(c.file), 'superseded bytes are not the restored file');
  const needed = [...used][0]!;
  stored.fill(0x55, needed * B, (needed + 1) * B);
  await writeFile(key, stored);
  await rejectsWith(assemble(c), 'RepoChecksumMismatch', 'rebuilt from its block map');
});

test('a rebuilt file that is not the file the backup read fails', async () => {
  const c = await chain(false);
  await rejectsWith(assemble(c, c.parts, 'c'.repeat(64)), 'RepoChecksumMismatch', 'rebuilt from its block map');
});

test('a stored object cut short fails as undecodable or short', async () => {
  const c = await chain(false);
  const last = c.parts[c.parts.length - 1]!; // codec none: cut anywhere
  await truncate(join(c.dir, 'repo', last.key), 100);
  await rejectsWith(assemble(c), 'RepoChecksumMismatch', last.key);
});
