// ObjectIo.assembleBlocks, the restore of a block-incremental file in one pass: a chain of real
// stored objects (several frames each, every block codec, plaintext and encrypted) rebuilds the
// file the last backup read; a wrong part or a wrong file checksum fails the restore.
import { strict as assert } from 'node:assert';
import { createHash, randomBytes } from 'node:crypto';
import { mkdtemp, readFile, rm, truncate, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, test } from 'node:test';
import { ErrorCodes, PgfleetError, type ErrorName } from '@pgfleet/core';
import {
  BLOCK_SUM_BYTES,
  blockChanged,
  blockCount,
  MAP_BLOCK_BYTES as B,
  mergeBlockMap,
  sumBlock,
  wholeFileMap,
  type BlockMap,
  type BlockMapPart,
} from './block-map.js';
import type { Codec } from './codec-names.js';
import { TEST_MANIFEST_KEYS } from './driver-suite.js';
import { fixedKeys } from './key-source.js';
import type { AssemblyPart } from './object-io.js';
import { PosixDriver } from './posix-driver.js';
import { Repository } from './repository.js';

const dirs: string[] = [];
after(async () => {
  for (const d of dirs) await rm(d, { recursive: true, force: true });
});

const REL = 'base/5/16384';
const sha256 = (b: Buffer) => createHash('sha256').update(b).digest('hex');

function sumsOf(file: Buffer): Uint8Array {
  const n = blockCount(file.length);
  const sums = new Uint8Array(n * BLOCK_SUM_BYTES);
  for (let b = 0; b < n; b++) sumBlock(file.subarray(b * B, Math.min(file.length, (b + 1) * B)), sums, b);
  return sums;
}

/** Stores `content` as one object, produced in odd-sized reads like a backup's. */
async function store(r: Repository, key: string, content: Buffer, codec: Codec): Promise<AssemblyPart> {
  let at = 0;
  const s = await r.objects.storeProduced(
    key,
    {
      read: (buf: Buffer) => {
        const n = content.copy(buf, 0, at, Math.min(content.length, at + 3 * B));
        at += n;
        return n;
      },
      close: async () => {},
    },
    codec,
  );
  return { key, codec, size: s.size, sha256: s.sha256 };
}

/** A page-like block: compressible, distinct. */
function block(seed: number): Buffer {
  const b = Buffer.alloc(B, seed & 0xff);
  randomBytes(512).copy(b, (seed * 97) % (B - 512));
  return b;
}

interface Chain {
  r: Repository;
  dir: string;
  file: Buffer;
  map: BlockMap;
  parts: AssemblyPart[];
}

/** A full and three block-incrementals (random changes, growth) of a file of ~2.5 MiB. */
async function chain(encrypted: boolean): Promise<Chain> {
  const dir = await mkdtemp(join(tmpdir(), 'pgfleet-assemble-'));
  dirs.push(dir);
  const r = new Repository(
    new PosixDriver(join(dir, 'repo')),
    TEST_MANIFEST_KEYS,
    encrypted ? fixedKeys({ c: randomBytes(32) }) : undefined,
  );
  let file = Buffer.concat(Array.from({ length: 300 }, (_, i) => block(i)));
  const objects = new Map<string, AssemblyPart>();
  const full: BlockMapPart = { backup: '20260101T000000F', object: 'file', codec: 'zstd', size: 0, sha256: '' };
  const fullObj = await store(r, r.backupFileKey('c', full.backup, REL, 'zstd'), file, 'zstd');
  Object.assign(full, { size: fullObj.size, sha256: fullObj.sha256 });
  objects.set(full.backup, fullObj);
  let map = wholeFileMap(file.length, [full], [blockCount(file.length)], sumsOf(file));
  const codecs: Codec[] = ['zstd', 'lz4', 'none'];
  for (let i = 0; i < codecs.length; i++) {
    file = Buffer.from(file);
    for (let b = 0; b < blockCount(file.length); b++)
      if (Math.random() < 0.3) block(1000 * (i + 1) + b).copy(file, b * B);
    file = Buffer.concat([file, block(5000 + i), block(6000 + i)]); // the relation grew
    const sums = sumsOf(file);
    const changed: number[] = [];
    for (let b = 0; b < blockCount(file.length); b++)
      if (blockChanged(map, b, sums, b * BLOCK_SUM_BYTES)) changed.push(b);
    const content = Buffer.concat(changed.map((b) => file.subarray(b * B, (b + 1) * B)));
    const label = `2026010${i + 2}T000000I`;
    const obj = await store(r, r.blockDataKey('c', label, REL, codecs[i]!), content, codecs[i]!);
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

async function assemble(c: Chain, parts = c.parts, sha = sha256(c.file)): Promise<Buffer> {
  const path = join(c.dir, 'rebuilt');
  await writeFile(path, '');
  await truncate(path, c.file.length);
  await c.r.objects.assembleBlocks(parts, c.map.part, c.map.index, B, { path, size: c.file.length, sha256: sha });
  return readFile(path);
}

async function rejectsWith(p: Promise<unknown>, name: ErrorName, mentions: string): Promise<void> {
  await assert.rejects(p, (err: unknown) => {
    assert.ok(err instanceof PgfleetError, `expected ${name}, got ${String(err)}`);
    assert.equal(err.code, ErrorCodes[name].code, `${name} expected, got ${err.errorName}: ${err.message}`);
    assert.ok(err.message.includes(mentions), `'${err.message}' should name ${mentions}`);
    return true;
  });
}

for (const encrypted of [false, true]) {
  test(`a chain of block-incrementals is rebuilt in one pass (${encrypted ? 'encrypted' : 'plaintext'})`, async () => {
    const c = await chain(encrypted);
    assert.ok(c.map.parts.length === 4, 'every object of the chain still holds blocks the file needs');
    assert.ok(c.r.objects.canAssemble(c.parts.map((p) => p.codec)));
    assert.ok((await assemble(c)).equals(c.file));
  });
}

test('a part whose content is not what the map says fails, even where no block of it is used', async () => {
  const c = await chain(false);
  const parts = c.parts.map((p, i) => (i === 0 ? { ...p, sha256: 'b'.repeat(64) } : p));
  await rejectsWith(assemble(c, parts), 'RepoChecksumMismatch', parts[0]!.key);
  const shorter = c.parts.map((p, i) => (i === 1 ? { ...p, size: p.size - 1 } : p));
  await rejectsWith(assemble(c, shorter), 'RepoChecksumMismatch', shorter[1]!.key);
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
