// Changed blocks stored as XOR deltas (docs/block-incremental.md, "XOR deltas"): a chain of 32
// block-incrementals over real stored objects (zstd, lz4 and none, plaintext and encrypted), each
// link's deltas made against the prior versions read back through ObjectIo.blockImages as a
// backup reads them, every link rebuilt exactly by assembleBlocks and by the layered restoreRuns
// fallback; the map of a link with deltas round-trips its encoding; damage fails the restore.
import { strict as assert } from 'node:assert';
import { randomBytes } from 'node:crypto';
import { readFile, truncate, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { after, test } from 'node:test';
import { startS3 } from '@pgfleet/testkit';
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
import type { RepositoryDriver } from './driver.js';
import type { AssemblyFigures, AssemblyPart } from './object-io.js';
import type { Repository } from './repository.js';
import { createS3Driver, type S3Driver } from './s3-driver.js';
import { page, REL, rejectsWith, sha256, storeContent, sumsOf, testRepository } from './test-block-chain.js';

// An S3 bucket on the real test server (fauxqs): the same chains through ranged reads.
const s3 = await startS3();
const BUCKET = 'pgfleet-blocks';
await s3.createBucket(BUCKET);
const s3Drivers: S3Driver[] = [];
after(async () => {
  for (const d of s3Drivers) d.close();
  await s3.stop();
});
let bucketPrefixes = 0;
async function bucket(): Promise<RepositoryDriver> {
  const d = await createS3Driver({
    bucket: BUCKET,
    prefix: `chain${++bucketPrefixes}`,
    endpoint: s3.endpoint,
    region: s3.region,
    forcePathStyle: true,
    accessKeyId: s3.accessKeyId,
    secretAccessKey: s3.secretAccessKey,
  });
  s3Drivers.push(d);
  return d;
}

interface Link {
  file: Buffer;
  map: BlockMap;
  /** Blocks stored in this link, and how many of them as deltas. */
  stored: number;
  deltas: number;
  /** What reading the prior versions cost (ObjectIo.blockImages). */
  read?: AssemblyFigures;
}

class Chain {
  readonly objects = new Map<string, AssemblyPart>();
  readonly links: Link[] = [];
  private constructor(
    readonly r: Repository,
    readonly dir: string,
  ) {}

  /** On `driver` (an S3 bucket) when given, else in a posix repository. */
  static async create(encrypted: boolean, driver?: RepositoryDriver): Promise<Chain> {
    const { r, dir } = await testRepository(encrypted, driver);
    return new Chain(r, dir);
  }

  parts(map: BlockMap): AssemblyPart[] {
    return map.parts.map((p) => this.objects.get(p.backup)!);
  }

  store(key: string, content: Buffer, codec: Codec, frameBytes?: number): Promise<AssemblyPart> {
    return storeContent(this.r, key, content, codec, frameBytes);
  }

  async full(file: Buffer, codec: Codec = 'zstd'): Promise<void> {
    const label = '20260101T000000F';
    const obj = await this.store(this.r.backupFileKey('c', label, REL, codec), file, codec, 16 * B);
    this.objects.set(label, obj);
    const part: BlockMapPart = { backup: label, object: 'file', codec, size: obj.size, sha256: obj.sha256 };
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
    let read: AssemblyFigures;
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
      read = images.figures();
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
    const link = { file, map, stored: changed.length, deltas: delta.filter((d) => d).length, read: read! };
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

/**
 * A full and `links` block-incrementals of changing codecs, each link's deltas made against the
 * prior versions read back as a backup reads them; every link rebuilt exactly in one pass, and
 * every `runsEvery`-th one by the layered restoreRuns too.
 */
async function deltaChain(c: Chain, links: number, runsEvery: number): Promise<void> {
  let file: Buffer = Buffer.concat(Array.from({ length: 120 }, (_, i) => page(i)));
  await c.full(file);
  const codecs: Codec[] = ['zstd', 'lz4', 'none'];
  let deltas = 0;
  let stored = 0;
  for (let i = 1; i <= links; i++) {
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
    if (i % runsEvery === 0) assert.ok((await c.restoreRuns(link)).equals(file), `link ${i} rebuilt by runs`);
  }
  // Most changed blocks were small edits: stored as deltas, up to the depth bound.
  assert.ok(deltas > stored / 3, `${deltas} of ${stored} stored blocks are deltas`);
  // Every earlier link is still rebuilt from its own map (nothing a later link stored touches it).
  for (const link of c.links.slice(1, 6)) assert.ok((await c.assemble(link)).equals(link.file));
}

for (const encrypted of [false, true]) {
  const form = encrypted ? 'encrypted' : 'plaintext';
  test(`a chain of 32 block-incrementals with XOR deltas rebuilds every link exactly (${form})`, async () => {
    await deltaChain(await Chain.create(encrypted), 32, encrypted ? Infinity : 4);
  });

  // On S3 the prior versions are read through ranged reads (ObjectIo.blockImages, RangedReader),
  // an encrypted object sequentially, every frame authenticated.
  test(`a chain of 12 block-incrementals with XOR deltas on S3 rebuilds every link exactly (${form})`, async () => {
    await deltaChain(await Chain.create(encrypted, await bucket()), 12, 4);
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
  await rejectsWith(c.assemble(link), 'RepoChecksumMismatch', /rebuilt from its block map/);
});

// A full of incompressible pages (a frame's stored bytes about its content), 1 MiB frames as an S3
// object is written in, and a few changed blocks far apart: the prior versions are fetched by
// ranges, the frames (lz4) or bytes (none) between them passed over without being fetched.
for (const codec of ['none', 'lz4', 'zstd'] as const) {
  test(`prior versions on S3 are fetched by ranges, passing over what no changed block needs (${codec})`, async (t) => {
    const c = await Chain.create(false, await bucket());
    const blocks = 1024; // 8 MiB, 8 frames
    const file = randomBytes(blocks * B);
    await c.full(file, codec);
    const next = Buffer.from(file);
    for (const b of [3, 1020]) randomBytes(24).copy(next, b * B + 100);
    const link = await c.incr(next, '20260102T000000I', 'zstd');
    assert.equal(link.stored, 2);
    assert.equal(link.deltas, 2);
    assert.ok((await c.assemble(link)).equals(next));
    const storedBytes = (await c.r.driver.stat(c.objects.get('20260101T000000F')!.key))!.size;
    const { fetchedBytes, requests } = link.read!;
    const figures = `${fetchedBytes} of ${storedBytes} stored bytes in ${requests} requests`;
    t.diagnostic(`${codec}: fetched ${figures}`);
    // Every request but the last fetches at least 128 KiB, no byte twice: at most one per 128 KiB stored.
    assert.ok(requests! >= 1 && requests! <= Math.ceil(storedBytes / (128 << 10)) + 1, figures);
    if (codec === 'zstd') {
      // zstd's block headers lie at most 128 KiB of content apart: the gaps are fetched through.
      assert.ok(fetchedBytes! <= storedBytes, figures);
    } else {
      // Two frames (lz4) or two ranges (none) needed of eight MiB: well under the object.
      assert.ok(fetchedBytes! < (codec === 'none' ? 0.1 : 0.6) * storedBytes, figures);
    }
  });
}
