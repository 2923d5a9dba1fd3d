// Changed blocks stored as XOR deltas (docs/block-incremental.md, "XOR deltas"): a chain of 32
// block-incrementals over real stored objects (zstd, lz4 and none, plaintext and encrypted), each
// link's deltas made against the prior versions read back through ObjectIo.blockImages as a
// backup reads them, every link rebuilt exactly by assembleBlocks and by the layered restoreRuns
// fallback; the map of a link with deltas round-trips its encoding; damage fails the restore.
import { strict as assert } from 'node:assert';
import { createHash, randomBytes } from 'node:crypto';
import { mkdtemp, readFile, rm, truncate, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, test } from 'node:test';
import { ErrorCodes, PgfleetError } from '@pgfleet/core';
import {
  BLOCK_SUM_BYTES,
  BlockMap,
  blockChanged,
  blockCount,
  DATA_FRAME_BLOCKS,
  DELTA_DEPTH,
  deltaWorthIt,
  layerRuns,
  MAP_BLOCK_BYTES as B,
  mergeBlockMap,
  sumBlock,
  wholeFileMap,
  xorInto,
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

/** A page-like block: mostly one byte value, some random bytes. */
function page(seed: number): Buffer {
  const b = Buffer.alloc(B, seed & 0xff);
  randomBytes(512).copy(b, (seed * 97) % (B - 512));
  return b;
}

interface Link {
  file: Buffer;
  map: BlockMap;
  /** Blocks stored in this link, and how many of them as deltas. */
  stored: number;
  deltas: number;
}

class Chain {
  readonly objects = new Map<string, AssemblyPart>();
  readonly links: Link[] = [];
  private constructor(
    readonly r: Repository,
    readonly dir: string,
  ) {}

  static async create(encrypted: boolean): Promise<Chain> {
    const dir = await mkdtemp(join(tmpdir(), 'pgfleet-delta-'));
    dirs.push(dir);
    const r = new Repository(
      new PosixDriver(join(dir, 'repo')),
      TEST_MANIFEST_KEYS,
      encrypted ? fixedKeys({ c: randomBytes(32) }) : undefined,
    );
    return new Chain(r, dir);
  }

  parts(map: BlockMap): AssemblyPart[] {
    return map.parts.map((p) => this.objects.get(p.backup)!);
  }

  async store(key: string, content: Buffer, codec: Codec, frameBytes?: number): Promise<AssemblyPart> {
    let at = 0;
    const s = await this.r.objects.storeProduced(
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
      frameBytes !== undefined ? { frameBytes } : {},
    );
    return { key, codec, size: s.size, sha256: s.sha256 };
  }

  async full(file: Buffer): Promise<void> {
    const label = '20260101T000000F';
    const obj = await this.store(this.r.backupFileKey('c', label, REL, 'zstd'), file, 'zstd', 16 * B);
    this.objects.set(label, obj);
    const part: BlockMapPart = { backup: label, object: 'file', codec: 'zstd', size: obj.size, sha256: obj.sha256 };
    this.links.push({
      file,
      map: wholeFileMap(file.length, [part], [blockCount(file.length)], sumsOf(file)),
      stored: 0,
      deltas: 0,
    });
  }

  /** A block-incremental of `file` as the agent's backup-blocks task makes it (copy/tasks.ts ChangedBlocks). */
  async incr(file: Buffer, label: string, codec: Codec): Promise<Link> {
    const prior = this.links[this.links.length - 1]!.map;
    const sums = sumsOf(file);
    const changed: number[] = [];
    const delta: number[] = [];
    const content: Buffer[] = [];
    const images = this.r.objects.blockImages(this.parts(prior), prior.part, prior.index, prior.deltas, B);
    const before = Buffer.alloc(B);
    const got = new Uint8Array(BLOCK_SUM_BYTES);
    try {
      for (let b = 0; b < blockCount(file.length); b++) {
        if (!blockChanged(prior, b, sums, b * BLOCK_SUM_BYTES)) continue;
        changed.push(b);
        const data = Buffer.from(file.subarray(b * B, Math.min(file.length, (b + 1) * B)));
        let d = 0;
        if (data.length === B && (b + 1) * B <= prior.size && prior.depth(b) < DELTA_DEPTH) {
          await images.take(b, B, before, 0);
          sumBlock(before, got, 0);
          assert.deepEqual(got, prior.sums.subarray(b * BLOCK_SUM_BYTES, (b + 1) * BLOCK_SUM_BYTES));
          xorInto(data, 0, before, 0, B);
          if (deltaWorthIt(data)) d = 1;
          else file.copy(data, 0, b * B, (b + 1) * B);
        }
        delta.push(d);
        content.push(data);
      }
    } finally {
      images.close();
    }
    const obj = await this.store(
      this.r.blockDataKey('c', label, REL, codec),
      Buffer.concat(content),
      codec,
      DATA_FRAME_BLOCKS * B,
    );
    this.objects.set(label, obj);
    const own: BlockMapPart = { backup: label, object: 'blocks', codec, size: obj.size, sha256: obj.sha256 };
    const map = mergeBlockMap(prior, own, file.length, Uint32Array.from(changed), sums, Uint8Array.from(delta));
    const link = { file, map, stored: changed.length, deltas: delta.filter((d) => d).length };
    this.links.push(link);
    return link;
  }

  async assemble(link: Link, sha = sha256(link.file)): Promise<Buffer> {
    const path = join(this.dir, 'rebuilt');
    await writeFile(path, '');
    await truncate(path, link.file.length);
    const { map } = link;
    await this.r.objects.assembleBlocks(
      this.parts(map),
      map.part,
      map.index,
      B,
      { path, size: map.size, sha256: sha },
      undefined,
      map.deltas,
    );
    return readFile(path);
  }

  /** The restore of objects that cannot be read block by block (S3, gzip): part by part, layer by layer. */
  async restoreRuns(link: Link): Promise<Buffer> {
    const path = join(this.dir, 'rebuilt-runs');
    await writeFile(path, '');
    await truncate(path, link.file.length);
    const parts = this.parts(link.map);
    for (const [layer, runs] of layerRuns(link.map).entries())
      for (const [i, p] of parts.entries())
        if (runs[i]!.length > 0)
          await this.r.objects.restoreRuns(
            p.key,
            p.codec,
            p,
            path,
            runs[i]!,
            B,
            link.file.length,
            undefined,
            layer > 0,
          );
    return readFile(path);
  }
}

/** Changes like a table's: small edits of some pages (deltas), a few pages rewritten whole, growth, truncation. */
function nextFile(file: Buffer, i: number): Buffer {
  let next = Buffer.from(file);
  const n = blockCount(next.length);
  for (let b = 0; b < n; b++) {
    const r = Math.random();
    if (r < 0.3)
      randomBytes(24).copy(next, b * B + Math.floor(Math.random() * (B - 24))); // a tuple's header
    else if (r < 0.33) page(7000 * i + b).copy(next, b * B); // a page rewritten
  }
  if (i % 5 === 0) next = Buffer.concat([next, page(9000 + i), page(9100 + i)]);
  if (i % 9 === 0) next = next.subarray(0, next.length - 3 * B);
  return next;
}

for (const encrypted of [false, true]) {
  test(`a chain of 32 block-incrementals with XOR deltas rebuilds every link exactly (${encrypted ? 'encrypted' : 'plaintext'})`, async () => {
    const c = await Chain.create(encrypted);
    let file: Buffer = Buffer.concat(Array.from({ length: 120 }, (_, i) => page(i)));
    await c.full(file);
    const codecs: Codec[] = ['zstd', 'lz4', 'none'];
    let deltas = 0;
    let stored = 0;
    for (let i = 1; i <= 32; i++) {
      file = nextFile(file, i);
      const link = await c.incr(
        file,
        `20260${1 + Math.floor(i / 20)}${String((i % 20) + 2).padStart(2, '0')}T000000I`,
        codecs[i % 3]!,
      );
      deltas += link.deltas;
      stored += link.stored;
      // A block's newest bytes come from at most DELTA_DEPTH + 1 parts.
      assert.ok(link.map.deltas.length <= DELTA_DEPTH, `${link.map.deltas.length} delta layers`);
      for (let b = 0; b < link.map.blocks; b++) assert.ok(link.map.depth(b) <= DELTA_DEPTH);
      // The map with its layers survives its encoding.
      const decoded = BlockMap.decode(link.map.encode(), 'test');
      assert.deepEqual(decoded.deltas, link.map.deltas);
      assert.deepEqual(decoded.part, link.map.part);
      assert.ok((await c.assemble(link)).equals(file), `link ${i} rebuilt`);
      if (!encrypted && i % 4 === 0) assert.ok((await c.restoreRuns(link)).equals(file), `link ${i} rebuilt by runs`);
    }
    // Most changed blocks were small edits: stored as deltas, up to the depth bound.
    assert.ok(deltas > stored / 3, `${deltas} of ${stored} stored blocks are deltas`);
    // Every earlier link is still rebuilt from its own map (nothing a later link stored touches it).
    for (const link of c.links.slice(1, 6)) assert.ok((await c.assemble(link)).equals(link.file));
  });
}

test('deltas store far fewer bytes than the whole changed blocks', async () => {
  const c = await Chain.create(false);
  const file = Buffer.concat(Array.from({ length: 200 }, (_, i) => page(i)));
  await c.full(file);
  const next = Buffer.from(file);
  for (let b = 0; b < 200; b += 2) randomBytes(24).copy(next, b * B + 100);
  const link = await c.incr(next, '20260102T000000I', 'zstd');
  assert.equal(link.stored, 100);
  assert.equal(link.deltas, 100);
  const whole = await c.store(
    'whole',
    Buffer.concat(Array.from({ length: 100 }, (_, i) => next.subarray(2 * i * B, (2 * i + 1) * B))),
    'zstd',
    DATA_FRAME_BLOCKS * B,
  );
  const deltaObj = c.objects.get('20260102T000000I')!;
  const storedOf = async (a: AssemblyPart) => (await readFile(join(c.dir, 'repo', a.key))).length;
  const [d, w] = [await storedOf(deltaObj), await storedOf(whole)];
  assert.ok(d * 5 < w, `deltas ${d} stored bytes, whole blocks ${w}`);
  assert.ok((await c.assemble(link)).equals(next));
});

test('a damaged delta frame fails the restore (PGF-5002)', async () => {
  const c = await Chain.create(false);
  let file = Buffer.concat(Array.from({ length: 40 }, (_, i) => page(i)));
  await c.full(file);
  file = Buffer.from(file);
  for (let b = 0; b < 40; b++) randomBytes(24).copy(file, b * B + 300);
  const link = await c.incr(file, '20260102T000000I', 'none');
  assert.equal(link.deltas, 40);
  // Codec none: the stored bytes are the deltas; a flipped byte in one changes the rebuilt block.
  const key = join(c.dir, 'repo', c.objects.get('20260102T000000I')!.key);
  const stored = Buffer.from(await readFile(key));
  stored[5 * B + 4000]! ^= 0x40;
  await writeFile(key, stored);
  await assert.rejects(c.assemble(link), (err: unknown) => {
    assert.ok(err instanceof PgfleetError);
    assert.equal(err.code, ErrorCodes.RepoChecksumMismatch.code);
    assert.match(err.message, /rebuilt from its block map/);
    return true;
  });
});
