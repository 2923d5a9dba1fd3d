/**
 * The block map of a relation file (docs/block-incremental.md): for each 8 KiB block of the
 * file as one backup read it, a 64-bit checksum of its bytes (XXH64; SHA-1's first 8 bytes in
 * maps written before it) and where those bytes are stored
 * (which object of which backup, and the block's position in that object's content). A
 * block-incremental backup stores only the blocks whose checksum differs from the prior
 * backup's map, and writes a new map that names, for every other block, the object the prior
 * map named: the chain is merged when the backup is taken, so a restore reads one map and then
 * each object it names once, writing every block exactly once.
 *
 * Typed arrays throughout: a 1 GiB segment is 131072 blocks, 14 bytes each here (1.75 MiB),
 * never an array of objects. Light module (no @pgfleet/core index): copy worker threads load it.
 */
import { hash } from 'node:crypto';
import { PgfleetError } from '@pgfleet/core/errors';
import { isBackupLabel } from '@pgfleet/core/names';
import { xxh64Blocks, xxh64Into } from './block-xxh64.js';
import { CODECS, type Codec } from './codec-names.js';

/** PostgreSQL's page size (BLCKSZ); relation files are read and compared in these units. */
export const MAP_BLOCK_BYTES = 8192;
/**
 * Blocks per frame of a block-incremental backup's `data` object (its changed blocks), instead
 * of the 128 of a 1 MiB frame: a chain's restore passes over the frames that hold no block the
 * file still needs without decoding them (docs/block-incremental.md, "Restore"). With changes
 * spread at random, the fraction of a part's frames that must be decoded is 1 - (1 - q)^g for q
 * of its blocks still needed and g blocks a frame, so small frames keep the decode near the
 * file's size; 2 blocks (16 KiB) cost ~10% of compression on table data where 128 KiB frames
 * cost ~2.5% (docs/benchmarks.md): changed blocks are a small part of a repository's bytes.
 */
export const DATA_FRAME_BLOCKS = 2;
/**
 * Blocks per frame of a relation file stored whole with a block map (every full's, and a
 * diff/incr's copy of a file without a usable prior map): after a few incrementals of random
 * changes only a few percent of such an object's blocks are still needed by the newest map, and
 * with 1 MiB frames (128 blocks) nearly every frame held one of them, so a chain's restore
 * decoded the full nearly whole. 16 blocks (128 KiB) cost ~2.5% of compression on table data
 * (docs/benchmarks.md) where 2 would cost ~10%: fulls are most of a repository's bytes.
 */
export const MAPPED_FRAME_BLOCKS = 16;
/** Bytes of each block's checksum (whichever BlockChecksum the map names). */
export const BLOCK_SUM_BYTES = 8;
/**
 * The block checksums a map may name in its header (docs/block-incremental.md, "Block
 * checksums"): `xxh64`, XXH64 (seed 0) of the block as 8 bytes little-endian, what new maps get;
 * `sha1-64`, the first 8 bytes of the block's SHA-1, what maps were written with before. A
 * block-incremental backup compares a file with its prior map in the prior map's checksum and
 * its merged map keeps it, so a chain begun before XXH64 stays SHA-1 until its next full.
 */
export type BlockChecksum = 'xxh64' | 'sha1-64';
const BLOCK_CHECKSUMS: readonly string[] = ['xxh64', 'sha1-64'] satisfies BlockChecksum[];
/** The checksum of every new map (a full's, or a file copied whole again). */
export const BLOCK_CHECKSUM: BlockChecksum = 'xxh64';
const MAGIC = Buffer.from('PGFBMAP1', 'latin1');
/**
 * The magic of a map with XOR delta layers (docs/block-incremental.md, "XOR deltas"): an agent
 * that reads only PGFBMAP1 refuses it ("not a pgfleet block map", PGF-5070) instead of restoring
 * a delta's XOR bytes as if they were the block.
 */
const MAGIC_DELTAS = Buffer.from('PGFBMAP2', 'latin1');
/** At most this many parts (u16 part numbers; a chain that long is refused rather than wrapped). */
const MAX_PARTS = 0xffff;
/** A delta layer's part number for a block without that layer (never a part index: MAX_PARTS parts at most). */
export const NO_PART = 0xffff;
/**
 * At most this many XOR deltas over a block's whole image (D): a block's newest bytes are
 * rebuilt from at most DELTA_DEPTH + 1 parts. A changed block whose prior version is already
 * DELTA_DEPTH deltas deep is stored whole (docs/block-incremental.md).
 */
export const DELTA_DEPTH = 3;
/**
 * A block-incremental backup stores a file whole again, with a new map that names no older
 * backup (a **re-base**, docs/block-incremental.md "Re-base"), when its prior map takes on
 * average this many blocks or more per block of the file from incrementals' parts
 * (`incrementalLoad`): whole images stored by an incremental and XOR delta layers, each of
 * which a restore decodes on top of (or instead of) the base's frames. Half a block: a chain of
 * random changes that touch ~37% of a file's blocks per link re-bases every third link, so a
 * restore decodes at most ~1.5 + one link's share of the file; the first incremental after a
 * full (load 0) never re-bases, whatever it changes.
 */
export const REBASE_LOAD = 0.5;

/**
 * Per block of the file, how many blocks' worth of content a restore of `map` decodes from
 * incrementals' parts (`blocks` objects) besides the base (the whole-file or chunk parts of the
 * backup that last stored the file whole): 1 for a block whose whole image an incremental
 * stored, plus 1 per delta layer.
 */
export function incrementalLoad(map: BlockMap): number {
  if (map.blocks === 0) return 0;
  const incremental = map.parts.map((p) => p.object === 'blocks');
  let n = 0;
  for (let b = 0; b < map.blocks; b++) if (incremental[map.part[b]!]) n++;
  for (const layer of map.deltas) for (let b = 0; b < map.blocks; b++) if (layer.part[b] !== NO_PART) n++;
  return n / map.blocks;
}

/** A map may say at most this many layers (whole image + deltas); maps of older depths stay readable. */
const MAX_LAYERS = 16;

/**
 * A delta layer of a map: for each block, the part holding the XOR of its bytes at this layer
 * against the bytes the layers below rebuild (NO_PART: the block has no such layer), and its
 * position in that part's content. A block's layers are contiguous from layer 1.
 */
export interface DeltaLayer {
  part: Uint16Array;
  index: Uint32Array;
}

/**
 * One stored object a map takes blocks from: a whole file (`pg_data/<path>`), one chunk of a
 * chunked file (`pg_chunks/<path>/<nnnn>`) or the changed blocks a block-incremental backup
 * stored (`pg_blocks/<path>/data`), in the backup `backup`, with the content figures a restore
 * checks while it decodes it.
 */
export interface BlockMapPart {
  backup: string;
  object: 'file' | 'chunk' | 'blocks';
  /** The chunk's index, for object 'chunk'. */
  chunk?: number;
  codec: Codec;
  /** Content bytes and sha256 of the object (what decoding it must give). */
  size: number;
  sha256: string;
}

export class BlockMap {
  constructor(
    /** The file's size in bytes; the last block is shorter when it is not a multiple of the block size. */
    readonly size: number,
    readonly parts: readonly BlockMapPart[],
    /** Per block: index into `parts`. */
    readonly part: Uint16Array,
    /** Per block: the block's position (in blocks) in its part's content. */
    readonly index: Uint32Array,
    /** Per block: BLOCK_SUM_BYTES of checksum (of the block's full bytes, whatever its layers). */
    readonly sums: Uint8Array,
    /** XOR delta layers over `part`/`index` (layer 0, the whole images), in order; none in a map without deltas. */
    readonly deltas: readonly DeltaLayer[] = [],
    /** What `sums` hold. */
    readonly checksum: BlockChecksum = BLOCK_CHECKSUM,
  ) {}

  get blocks(): number {
    return this.part.length;
  }

  /** How many deltas block `b` has over its whole image (0..deltas.length). */
  depth(b: number): number {
    let d = 0;
    while (d < this.deltas.length && this.deltas[d]!.part[b] !== NO_PART) d++;
    return d;
  }

  /** The other backups this map takes blocks from (a restore reads them, an expire keeps them). */
  backupsOtherThan(label: string): string[] {
    return [...new Set(this.parts.map((p) => p.backup).filter((b) => b !== label))].sort();
  }

  /**
   * PGFBMAP1 without delta layers (what every agent reads), PGFBMAP2 with them: the header says
   * `layers` (1 + deltas) and the part and position arrays of each layer follow layer 0's.
   */
  encode(): Buffer {
    const layers = [{ part: this.part, index: this.index }, ...this.deltas];
    const header = Buffer.from(
      JSON.stringify({
        blockSize: MAP_BLOCK_BYTES,
        checksum: this.checksum,
        size: this.size,
        ...(this.deltas.length > 0 ? { layers: layers.length } : {}),
        parts: this.parts,
      }),
    );
    const n = this.blocks;
    const magic = this.deltas.length > 0 ? MAGIC_DELTAS : MAGIC;
    const out = Buffer.allocUnsafe(magic.length + 4 + header.length + n * (layers.length * 6 + BLOCK_SUM_BYTES));
    let at = magic.copy(out, 0);
    at = out.writeUInt32LE(header.length, at);
    at += header.copy(out, at);
    for (const l of layers) for (let b = 0; b < n; b++) at = out.writeUInt16LE(l.part[b]!, at);
    for (const l of layers) for (let b = 0; b < n; b++) at = out.writeUInt32LE(l.index[b]!, at);
    Buffer.from(this.sums.buffer, this.sums.byteOffset, this.sums.byteLength).copy(out, at);
    return out;
  }

  /** Reads a map stored by encode(); `where` names it in errors. Every part and position is checked. */
  static decode(buf: Buffer, where: string): BlockMap {
    const bad = (why: string): never => {
      throw new PgfleetError('BlockMapInvalid', `block map ${where} is invalid: ${why}`);
    };
    const magic = buf.subarray(0, MAGIC.length);
    const withDeltas = magic.equals(MAGIC_DELTAS);
    if (buf.length < MAGIC.length + 4 || !(withDeltas || magic.equals(MAGIC))) bad('not a pgfleet block map');
    const headerBytes = buf.readUInt32LE(MAGIC.length);
    const start = MAGIC.length + 4;
    if (start + headerBytes > buf.length) bad('cut short in its header');
    let header: { blockSize?: unknown; checksum?: unknown; size?: unknown; layers?: unknown; parts?: unknown };
    try {
      header = JSON.parse(buf.subarray(start, start + headerBytes).toString('utf8')) as typeof header;
    } catch {
      return bad('its header is not JSON');
    }
    if (header.blockSize !== MAP_BLOCK_BYTES || !BLOCK_CHECKSUMS.includes(header.checksum as string))
      bad(`block size ${String(header.blockSize)} / checksum ${String(header.checksum)} not supported`);
    const size = header.size;
    if (typeof size !== 'number' || !Number.isSafeInteger(size) || size < 0) bad('no file size');
    if (!Array.isArray(header.parts) || header.parts.length > MAX_PARTS) bad('no part list');
    const parts = (header.parts as unknown[]).map((p, i) => checkPart(p, i, bad));
    const layerCount = withDeltas ? header.layers : 1;
    if (
      !Number.isSafeInteger(layerCount) ||
      (layerCount as number) < (withDeltas ? 2 : 1) ||
      (layerCount as number) > MAX_LAYERS
    )
      bad(`${String(header.layers)} layers`);
    const L = layerCount as number;
    const n = blockCount(size as number);
    const body = start + headerBytes;
    if (buf.length !== body + n * (L * 6 + BLOCK_SUM_BYTES))
      bad(`${buf.length - body} bytes of blocks for ${n} block(s)`);
    const layers = Array.from({ length: L }, () => ({ part: new Uint16Array(n), index: new Uint32Array(n) }));
    for (let l = 0; l < L; l++) {
      const { part } = layers[l]!;
      const at = body + 2 * n * l;
      for (let b = 0; b < n; b++) {
        part[b] = buf.readUInt16LE(at + 2 * b);
        if (part[b]! >= parts.length && !(l > 0 && part[b] === NO_PART))
          bad(`block ${b} names part ${part[b]} of ${parts.length} in layer ${l}`);
        if (l > 1 && part[b] !== NO_PART && layers[l - 1]!.part[b] === NO_PART)
          bad(`block ${b} has a delta in layer ${l} but none in layer ${l - 1}`);
        if (l > 0 && part[b] !== NO_PART && (b + 1) * MAP_BLOCK_BYTES > (size as number))
          bad(`block ${b} is a delta but not a whole block`);
      }
    }
    const idx = body + 2 * n * L;
    for (let l = 0; l < L; l++) {
      const { index } = layers[l]!;
      const at = idx + 4 * n * l;
      for (let b = 0; b < n; b++) index[b] = buf.readUInt32LE(at + 4 * b);
    }
    const sums = new Uint8Array(n * BLOCK_SUM_BYTES);
    const sumsAt = idx + 4 * n * L;
    buf.copy(sums, 0, sumsAt, sumsAt + sums.length);
    const map = new BlockMap(
      size as number,
      parts,
      layers[0]!.part,
      layers[0]!.index,
      sums,
      layers.slice(1),
      header.checksum as BlockChecksum,
    );
    // Positions must fit their parts and grow inside each part with the block number (and layer
    // within a block): a restore reads each part in one sequential pass over its content.
    layerRuns(map, (why) => bad(why));
    return map;
  }
}

function checkPart(p: unknown, i: number, bad: (why: string) => never): BlockMapPart {
  const o = p as Partial<BlockMapPart> | null;
  if (o === null || typeof o !== 'object') return bad(`part ${i} is not an object`);
  if (typeof o.backup !== 'string' || !isBackupLabel(o.backup)) bad(`part ${i} names no backup label`);
  if (o.object !== 'file' && o.object !== 'chunk' && o.object !== 'blocks') bad(`part ${i} has no object kind`);
  if (
    o.object === 'chunk' ? !(Number.isSafeInteger(o.chunk) && o.chunk! >= 0 && o.chunk! < 10000) : o.chunk !== undefined
  )
    bad(`part ${i} has a wrong chunk number`);
  if (!CODECS.includes(o.codec as Codec)) bad(`part ${i} has an unknown codec`);
  if (typeof o.size !== 'number' || !Number.isSafeInteger(o.size) || o.size < 0) bad(`part ${i} has no size`);
  if (typeof o.sha256 !== 'string' || !/^[0-9a-f]{64}$/.test(o.sha256)) bad(`part ${i} has no sha256`);
  return {
    backup: o.backup!,
    object: o.object!,
    ...(o.object === 'chunk' ? { chunk: o.chunk! } : {}),
    codec: o.codec!,
    size: o.size!,
    sha256: o.sha256!,
  };
}

export function blockCount(size: number): number {
  return Math.ceil(size / MAP_BLOCK_BYTES);
}

/**
 * The checksums of the blocks of `data` (block-aligned from its start; only the last block may be
 * short) into `sums` from block `first`; returns how many blocks. XXH64 hashes a whole read in
 * one WebAssembly call (block-xxh64.ts).
 */
export function sumBlocks(data: Uint8Array, sums: Uint8Array, first: number, checksum: BlockChecksum): number {
  if (checksum === 'xxh64') return xxh64Blocks(data, MAP_BLOCK_BYTES, sums, first * BLOCK_SUM_BYTES);
  const n = blockCount(data.length);
  for (let b = 0; b < n; b++)
    sha1Block(data.subarray(b * MAP_BLOCK_BYTES, Math.min(data.length, (b + 1) * MAP_BLOCK_BYTES)), sums, first + b);
  return n;
}

/** The checksum of one block's bytes (a shorter last block: of the bytes it has) into `sums` at block `b`. */
export function sumBlock(
  data: Uint8Array,
  sums: Uint8Array,
  b: number,
  checksum: BlockChecksum = BLOCK_CHECKSUM,
): void {
  if (checksum === 'xxh64') xxh64Into(data, sums, b * BLOCK_SUM_BYTES);
  else sha1Block(data, sums, b);
}

/**
 * SHA-1's first 8 bytes (maps written before XXH64). The digest comes back as a latin1 string
 * (one char per byte, exact) rather than a Buffer: a Buffer is a fresh backing store per 8 KiB
 * block, ~18% of the call's cost (docs/benchmarks.md, "Block-incremental copy path CPU").
 */
function sha1Block(data: Uint8Array, sums: Uint8Array, b: number): void {
  const digest = hash('sha1', data, 'binary'); // latin1: one char per byte
  const at = b * BLOCK_SUM_BYTES;
  for (let i = 0; i < BLOCK_SUM_BYTES; i++) sums[at + i] = digest.charCodeAt(i);
}

/** Whether block `b` (checksum at `sumAt` in `sums`) must be stored: new beyond the prior map, or another checksum. */
export function blockChanged(
  prior: { sums: Uint8Array; blocks: number } | undefined,
  b: number,
  sums: Uint8Array,
  sumAt: number,
): boolean {
  if (!prior || b >= prior.blocks) return true;
  const p = b * BLOCK_SUM_BYTES;
  for (let i = 0; i < BLOCK_SUM_BYTES; i++) if (prior.sums[p + i] !== sums[sumAt + i]) return true;
  return false;
}

/**
 * The map of a file stored whole (as one object or in chunks): every block from its own part,
 * `partBlocks[i]` blocks in part i, in order.
 */
export function wholeFileMap(
  size: number,
  parts: readonly BlockMapPart[],
  partBlocks: readonly number[],
  sums: Uint8Array,
  checksum: BlockChecksum = BLOCK_CHECKSUM,
): BlockMap {
  const n = blockCount(size);
  const part = new Uint16Array(n);
  const index = new Uint32Array(n);
  let b = 0;
  partBlocks.forEach((count, p) => {
    for (let i = 0; i < count && b < n; i++, b++) {
      part[b] = p;
      index[b] = i;
    }
  });
  if (b !== n || sums.length !== n * BLOCK_SUM_BYTES)
    throw new PgfleetError('Internal', `whole-file block map: ${b} block(s) in parts, ${n} in ${size} bytes`);
  return new BlockMap(size, parts, part, index, sums, [], checksum);
}

/**
 * The chain merge, done once when a block-incremental backup is taken: block b comes from `own`
 * (at its rank among `changed`) when b is in `changed`, else from wherever the prior map took it.
 * A changed block flagged in `delta` (per entry of `changed`) was stored as the XOR of its bytes
 * with what the prior map rebuilds for it: it keeps the prior map's layers and gets `own` as one
 * more delta layer on top (the backup flags only blocks less than DELTA_DEPTH deltas deep).
 * Parts no block needs any more are dropped, so the map (and the set of backups a restore reads)
 * only names what is still needed. `sums` are the checksums of the file as this backup read it,
 * which the merged map restores exactly: an unchanged block's bytes have its prior checksum. They
 * are in the prior map's checksum (BackupBlocksTask.checksum), which the merged map keeps.
 */
export function mergeBlockMap(
  prior: BlockMap | undefined,
  own: BlockMapPart,
  size: number,
  changed: Uint32Array,
  sums: Uint8Array,
  delta?: Uint8Array,
): BlockMap {
  const n = blockCount(size);
  if (sums.length !== n * BLOCK_SUM_BYTES)
    throw new PgfleetError('Internal', `block map merge: ${sums.length} checksum bytes for ${n} block(s)`);
  const part = new Uint16Array(n);
  const index = new Uint32Array(n);
  const deltas: DeltaLayer[] = [];
  const layer = (l: number): DeltaLayer => {
    while (deltas.length < l) deltas.push({ part: new Uint16Array(n).fill(NO_PART), index: new Uint32Array(n) });
    return deltas[l - 1]!;
  };
  const used = new Int32Array((prior?.parts.length ?? 0) + 1).fill(-1);
  const parts: BlockMapPart[] = [];
  const partOf = (p: number, src: BlockMapPart): number => {
    if (used[p] === -1) {
      if (parts.length >= MAX_PARTS)
        throw new PgfleetError('BlockMapInvalid', `a block map would name more than ${MAX_PARTS} objects`);
      used[p] = parts.length;
      parts.push(src);
    }
    return used[p]!;
  };
  const ownSlot = prior?.parts.length ?? 0;
  /** Block b's layers as the prior map has them (whole image and deltas). */
  const keepPrior = (b: number): number => {
    if (!prior || b >= prior.blocks)
      throw new PgfleetError('Internal', `block map merge: block ${b} is neither stored nor in the prior map`);
    part[b] = partOf(prior.part[b]!, prior.parts[prior.part[b]!]!);
    index[b] = prior.index[b]!;
    let d = 0;
    for (; d < prior.deltas.length; d++) {
      const src = prior.deltas[d]!;
      const p = src.part[b]!;
      if (p === NO_PART) break;
      const into = layer(d + 1);
      into.part[b] = partOf(p, prior.parts[p]!);
      into.index[b] = src.index[b]!;
    }
    return d;
  };
  let c = 0;
  for (let b = 0; b < n; b++) {
    if (c < changed.length && changed[c] === b) {
      if (delta?.[c]) {
        if ((b + 1) * MAP_BLOCK_BYTES > size || b >= prior!.blocks || (b + 1) * MAP_BLOCK_BYTES > prior!.size)
          throw new PgfleetError('Internal', `block map merge: block ${b} stored as a delta but not a whole block`);
        const into = layer(keepPrior(b) + 1);
        into.part[b] = partOf(ownSlot, own);
        into.index[b] = c++;
      } else {
        part[b] = partOf(ownSlot, own);
        index[b] = c++;
      }
      continue;
    }
    keepPrior(b);
  }
  if (c !== changed.length)
    throw new PgfleetError('Internal', `block map merge: ${changed.length - c} stored block(s) beyond the file's end`);
  // Layers no block uses any more (every deep block was stored whole again) are dropped.
  while (deltas.length > 0 && deltas[deltas.length - 1]!.part.every((p) => p === NO_PART)) deltas.pop();
  return new BlockMap(size, parts, part, index, sums, deltas, prior?.checksum ?? BLOCK_CHECKSUM);
}

/**
 * What a restore writes from each part, per layer: runs[layer][part] = [firstContentBlock,
 * firstFileBlock, count, ...] in content order; layer 0 writes whole images, each later layer is
 * XORed onto what the layers below wrote. Each part's positions grow in (block, layer) order
 * (one sequential pass over its object, checked here). `bad` is told when the map is
 * inconsistent (positions that go back, or lie beyond the part's content).
 */
export function layerRuns(map: BlockMap, bad: (why: string) => never = internalBad): Uint32Array[][] {
  const layers = [{ part: map.part, index: map.index }, ...map.deltas];
  const runs: number[][][] = layers.map(() => map.parts.map(() => []));
  const last = new Float64Array(map.parts.length).fill(-1);
  for (let b = 0; b < map.blocks; b++) {
    const bytes = b === map.blocks - 1 ? map.size - b * MAP_BLOCK_BYTES : MAP_BLOCK_BYTES;
    for (let l = 0; l < layers.length; l++) {
      const p = layers[l]!.part[b]!;
      if (p === NO_PART) break;
      const i = layers[l]!.index[b]!;
      if (i <= last[p]!) bad(`block ${b} goes back in part ${p} (position ${i} after ${last[p]})`);
      const part = map.parts[p]!;
      if (i * MAP_BLOCK_BYTES + bytes > part.size)
        bad(`block ${b} lies beyond the ${part.size} content bytes of part ${p} (position ${i})`);
      last[p] = i;
      const r = runs[l]![p]!;
      const n = r.length;
      if (n > 0 && r[n - 3]! + r[n - 1]! === i && r[n - 2]! + r[n - 1]! === b) r[n - 1]!++;
      else r.push(i, b, 1);
    }
  }
  return runs.map((l) => l.map((r) => Uint32Array.from(r)));
}

/** layerRuns of a map without deltas: what a restore writes from each part. */
export function writeRuns(map: BlockMap, bad: (why: string) => never = internalBad): Uint32Array[] {
  if (map.deltas.length > 0) throw new PgfleetError('Internal', 'writeRuns of a map with deltas: use layerRuns');
  return layerRuns(map, bad)[0]!;
}

/**
 * Whether storing block `b` as a delta is worth it: `x` (its XOR with the prior version, whole
 * 8 KiB) differs in fewer than a quarter of its 32-bit words. A page whose tuples were moved
 * (pruning, VACUUM's compaction) differs nearly everywhere: stored whole, it needs no older part
 * to restore.
 */
export function deltaWorthIt(x: Uint8Array): boolean {
  const words =
    (x.byteOffset & 3) === 0
      ? new Int32Array(x.buffer, x.byteOffset, x.byteLength >> 2)
      : Int32Array.from(new Int32Array(Uint8Array.from(x).buffer));
  const limit = words.length >> 2;
  let differing = 0;
  for (let i = 0; i < words.length; i++) if (words[i] !== 0 && ++differing >= limit) return false;
  return true;
}

/**
 * The XOR delta of a whole block and whether it is worth storing, in one pass: dst[dstAt, +8 KiB)
 * = now[nowAt, +8 KiB) ^ before[0, 8 KiB), and deltaWorthIt of that. It stops at the first word
 * past the quarter when the delta is not worth it, so `dst` then holds only part of the XOR: the
 * caller stores the block whole (copies `now` over it).
 */
export function xorDelta(dst: Uint8Array, dstAt: number, now: Uint8Array, nowAt: number, before: Uint8Array): boolean {
  const da = dst.byteOffset + dstAt;
  const na = now.byteOffset + nowAt;
  if ((da & 3) !== 0 || (na & 3) !== 0 || (before.byteOffset & 3) !== 0) {
    for (let i = 0; i < MAP_BLOCK_BYTES; i++) dst[dstAt + i] = now[nowAt + i]! ^ before[i]!;
    return deltaWorthIt(dst.subarray(dstAt, dstAt + MAP_BLOCK_BYTES));
  }
  const w = MAP_BLOCK_BYTES >> 2;
  const d = new Int32Array(dst.buffer, da, w);
  const n = new Int32Array(now.buffer, na, w);
  const b = new Int32Array(before.buffer, before.byteOffset, w);
  const limit = w >> 2;
  let differing = 0;
  for (let k = 0; k < w; k++) {
    const x = n[k]! ^ b[k]!;
    d[k] = x;
    if (x !== 0 && ++differing >= limit) return false;
  }
  return true;
}

/** dst[dstAt, +n) ^= src[srcAt, +n), a word at a time where both are aligned. */
export function xorInto(dst: Uint8Array, dstAt: number, src: Uint8Array, srcAt: number, n: number): void {
  const da = dst.byteOffset + dstAt;
  const sa = src.byteOffset + srcAt;
  let i = 0;
  if ((da & 3) === 0 && (sa & 3) === 0) {
    const w = n >> 2;
    const d = new Int32Array(dst.buffer, da, w);
    const s = new Int32Array(src.buffer, sa, w);
    for (let k = 0; k < w; k++) d[k]! ^= s[k]!;
    i = w << 2;
  }
  for (; i < n; i++) dst[dstAt + i]! ^= src[srcAt + i]!;
}

function internalBad(why: string): never {
  throw new PgfleetError('BlockMapInvalid', why);
}
