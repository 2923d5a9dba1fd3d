/**
 * The object I/O layer: the one place where content becomes stored bytes and stored bytes become
 * content again, for every driver. A write hashes the content, compresses it and hashes the
 * stored bytes in one pass (hashing is a real cost: never a second read); a read decodes and
 * checks the content's size and sha256 as it goes, so a damaged object fails loudly instead of
 * restoring silent garbage. Callers above (Repository, the agent's copy tasks, verify) name keys
 * and files, never codecs' stages or drivers' paths.
 *
 * The same bytes take one of two routes, chosen here from the driver's capabilities:
 * - block I/O, for drivers whose objects are local files (RepositoryDriver.localFiles, posix) and
 *   the block codecs: 1 MiB blocks read, encoded and written with positional I/O on the calling
 *   thread (a copy worker), reused buffers, no stream machinery (codec-blocks.ts has the figures);
 * - streams, for every driver and codec: stages piped into driver.put or out of driver.get.
 *
 * Stored bytes take one of two forms on their way to and from the driver, chosen per cluster by
 * RepositoryKeys (repository-keys.ts): the codec's output as it is, or that output sealed in
 * AES-256-GCM frames (object-cipher.ts) after compression and opened before decompression. The
 * stored sha256 covers what the driver holds either way (ciphertext, when encrypted).
 *
 * Light module (no @pgfleet/core index, no S3 SDK): copy worker threads load it.
 */
import { createHash, type Hash } from 'node:crypto';
import {
  closeSync,
  constants as fsc,
  createReadStream,
  fchmodSync,
  fstatSync,
  fsync as fsFsync,
  futimesSync,
  openSync,
  readSync,
  write as fsWrite,
} from 'node:fs';
import { chmod, open, utimes, type FileHandle } from 'node:fs/promises';
import { Readable, Transform, type TransformCallback, Writable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { promisify } from 'node:util';
import zlib from 'node:zlib';
import { PgfleetError } from '@pgfleet/core/errors';
import { fsyncPath } from '@pgfleet/core/fsync';
import {
  BLOCK_BYTES,
  blockDecoder,
  blockEncoder,
  hasBlockForm,
  MAX_FRAME_CONTENT,
  type BlockCodec,
  type BlockDecoder,
  type BlockEncoder,
  zstdFrameChecksummed,
} from './codec-blocks.js';
import { NO_PART, xorInto, type DeltaLayer } from './block-map.js';
import { compressor, decompressor, HashingStream } from './codec.js';
import type { Codec } from './codec-names.js';
import { type FrameWalk, FrameWalkError, frameWalker, walkFrame, walkLocalFile } from './frame-walk.js';
import { freeNow } from './free-now.js';
import type { LocalObjectFiles, PutOptions, RepositoryDriver } from './driver.js';
import {
  type DataKey,
  FRAME_HEAD,
  FRAME_OVERHEAD,
  FrameOpener,
  FrameSealer,
  HEADER_BYTES,
  OpenStage,
  parseHeader,
  SealStage,
  TAG_BYTES,
  tampered,
} from './object-cipher.js';
import { isKeyError, type RepositoryKeys } from './repository-keys.js';

/** What a write stored: the content's size and sha256, and those of the stored bytes. */
export interface StoredFile {
  size: number;
  sha256: string;
  storedSize: number;
  storedSha256: string;
}

export interface StoreOptions extends PutOptions {
  /** Compression level (codec default when absent). */
  level?: number;
  /**
   * Sees the content in the same pass, block by block, before it is encoded (e.g. page-checksum
   * validation); must not change it.
   */
  inspect?: (content: Buffer) => void;
  /** Waits until `bytes` more content may be read (the agent's --max-rate); called before each block or chunk is read on. */
  pace?: Pace;
  /**
   * Content bytes per frame of the block form (BLOCK_BYTES when absent, at most that). Smaller
   * frames let a reader skip what it does not need without decoding it (the changed blocks of a
   * block-incremental file, docs/block-incremental.md); any reader of the block form reads them.
   */
  frameBytes?: number;
}

/** A rate limit's gate: resolves when `bytes` more content may pass (agent copy/rate-limit.ts). */
export type Pace = (bytes: number) => Promise<void>;

/** A byte range of a local file: the whole file from `offset` when `length` is absent. */
export interface FileRange {
  path: string;
  offset: number;
  length?: number;
}

/** Where a restored object's content goes: a whole file (created) or a range of an existing one. */
export interface RestoreDestination {
  path: string;
  mode: number;
  /** A chunk of a large file: written at this offset into the existing file (created and sized by the caller), not synced. */
  offset?: number;
  /** Whole file: chmod after writing (over an existing file, whose mode open() keeps). */
  chmod?: boolean;
  mtimeMs?: number;
  /** Whole file: it must not exist yet (O_EXCL); the restore removed whatever was there. */
  exclusive?: boolean;
}

/**
 * How a restored file is opened: never through a symbolic link at its own name (O_NOFOLLOW), and
 * created new where the caller says so, so neither a planted link nor a hard link can make a
 * restore write to a file outside its target (agent restore/confined-path.ts checks the parents).
 */
export function restoreOpenFlags(d: RestoreDestination): number {
  if (d.offset !== undefined) return fsc.O_WRONLY | fsc.O_NOFOLLOW;
  return fsc.O_WRONLY | fsc.O_CREAT | fsc.O_NOFOLLOW | (d.exclusive ? fsc.O_EXCL : fsc.O_TRUNC);
}

export interface ExpectedContent {
  sha256: string;
  size?: number;
}

/**
 * What a restore checks an object against: its content's size and sha256 and, when known, its
 * stored bytes' sha256 (the manifest's storedSha256). With the latter, a plaintext object whose
 * zstd frames carry their content checksums is verified by hashing its stored bytes, while zstd
 * checks every frame's content as it decodes it (restoreBlocks).
 */
export interface RestoreExpected {
  sha256: string;
  size: number;
  storedSha256?: string;
}

/** An object's stored figures and, when decoded, its content's (verify). */
export interface ObjectMeasure {
  storedBytes: number;
  storedSha256: string;
  contentBytes?: number;
  contentSha256?: string;
  /** The first bytes of the content, as many as asked for. */
  head?: Buffer;
  /** Decoding failed (the stored figures are still measured). */
  decodeError?: string;
}

/** What walking an object's stored structure found (ObjectIo.walk). */
export interface ObjectWalk {
  frames: number;
  /** Content bytes its frames declare; undefined when one does not (not the block form: only decoding tells). */
  contentBytes: number | undefined;
  /** The first content bytes, as many as asked for (fewer when the content is shorter), from its first frame alone. */
  head?: Buffer;
  /**
   * Why the object is not whole: 'cut' (it ends inside a frame, or before the encrypted form's
   * last frame), 'malformed' (a header its codec never writes, or bytes after the last frame),
   * 'tampered' (an encrypted frame fails authentication), 'undecodable' (its first frame).
   */
  fault?: { kind: 'cut' | 'malformed' | 'tampered' | 'undecodable'; message: string };
  /** The object's stored size, learnt by the walk (a caller that listed without sizes gets it here); undefined after a fault. */
  storedBytes?: number;
}

/** Looks up the data key an encrypted object's header names (RepositoryKeys.forRead). */
type DataKeyLookup = (id: string) => Promise<Buffer>;

const BUF = 1 << 20;

/** Reused I/O buffers (a few tasks run at a time per thread): 1000 small files must not mean 1000 fresh buffers. */
const freeBuffers = new Map<number, Buffer[]>();

export function takeBuffer(size: number): Buffer {
  return freeBuffers.get(size)?.pop() ?? Buffer.allocUnsafe(size);
}

/** Kept per size: two tasks in flight per thread, each holding up to three of one size (an encrypted store). */
const KEEP_PER_SIZE = 6;

export function giveBuffer(buf: Buffer): void {
  let list = freeBuffers.get(buf.length);
  if (!list) freeBuffers.set(buf.length, (list = []));
  if (list.length < KEEP_PER_SIZE) list.push(buf);
}

/**
 * What this thread's pools hold idle: buffers (takeBuffer's and the restores' page-aligned
 * ones), codec contexts, and their bytes (the contexts' native tables not counted).
 */
export interface PooledMemory {
  buffers: number;
  alignedBuffers: number;
  encoders: number;
  decoders: number;
  bytes: number;
}

export function pooledMemory(): PooledMemory {
  let buffers = 0;
  let alignedBuffers = 0;
  let bytes = 0;
  for (const list of freeBuffers.values()) {
    buffers += list.length;
    for (const b of list) bytes += b.length;
  }
  for (const list of alignedFree.values()) {
    alignedBuffers += list.length;
    for (const b of list) bytes += b.length;
  }
  let encoderCount = 0;
  for (const list of encoders.values()) encoderCount += list.length;
  let decoderCount = 0;
  for (const list of decoders.values()) decoderCount += list.length;
  return { buffers, alignedBuffers, encoders: encoderCount, decoders: decoderCount, bytes };
}

/**
 * Frees everything this thread's pools hold idle (what they held is returned): called when a
 * job ends, so that what a backup pooled on the agent's main thread (1 MiB read and frame
 * buffers, zstd compression contexts: ~15-25 MB) is not still resident under the next job
 * (issue 19: a restore on the agent that just made a backup peaked ~30 MB above one on a fresh
 * agent). Buffers and contexts in use stay with their task and come back to the (then empty)
 * pools when it ends; the pools fill again as the next job needs them. Buffers are freed at
 * once (freeNow) rather than at some later garbage collection; the page-aligned ones are
 * WebAssembly memories, which only the collector frees.
 */
export function releasePooledMemory(): PooledMemory {
  const held = pooledMemory();
  for (const list of freeBuffers.values()) for (const b of list.splice(0)) freeNow(b);
  alignedFree.clear();
  for (const list of encoders.values()) for (const e of list.splice(0)) e.close();
  for (const list of decoders.values()) for (const d of list.splice(0)) d.close();
  return held;
}

/**
 * Codec contexts, reused by the writes and reads of this thread (one per object in flight: an
 * encoder's output stays valid only until its next call, and objects interleave at every await;
 * a fresh zstd context is ~1 MB of tables paid for in page faults).
 */
const encoders = new Map<string, BlockEncoder[]>();
const decoders = new Map<BlockCodec, BlockDecoder[]>();

async function withEncoder<T>(
  codec: BlockCodec,
  level: number | undefined,
  use: (e: BlockEncoder) => Promise<T>,
): Promise<T> {
  const id = `${codec}:${level ?? ''}`;
  let list = encoders.get(id);
  if (!list) encoders.set(id, (list = []));
  const e = list.pop() ?? blockEncoder(codec, level);
  try {
    return await use(e);
  } finally {
    list.push(e);
  }
}

async function withDecoder<T>(codec: BlockCodec, use: (d: BlockDecoder) => Promise<T>): Promise<T> {
  let list = decoders.get(codec);
  if (!list) decoders.set(codec, (list = []));
  const d = list.pop() ?? blockDecoder(codec);
  d.reset();
  try {
    return await use(d);
  } finally {
    list.push(d);
  }
}

/**
 * The block form of one object, block by block: content in, stored bytes out, both hashed. The
 * stored bytes a call returns are a view valid until the next call (the encoder reuses its
 * output); a synchronous encoder (zstd, none) answers synchronously, so a caller that copies
 * them at once never sees them overwritten by another object sharing the encoder.
 */
class BlockObjectEncoder {
  private readonly content = createHash('sha256');
  private readonly stored = createHash('sha256');
  /**
   * The sealed frame, rewritten for every block (the stored bytes' view the encoder promises);
   * from the shared buffers and given back by `release`: a fresh 1 MiB per object, for a
   * thousand small files, measured as much GC as the copy itself.
   */
  private sealedFrame: Buffer | undefined;
  size = 0;
  storedSize = 0;
  /**
   * Codec none without encryption stores the content itself: its stored sha256 is the content's,
   * taken once instead of hashing the same bytes twice (a third of codec none's backup CPU).
   */
  private readonly storedIsContent: boolean;

  /** `sealer`: the encrypted form (each encoded frame sealed as one cipher frame). */
  constructor(
    private readonly encoder: BlockEncoder,
    codec: BlockCodec,
    private readonly sealer?: FrameSealer,
  ) {
    this.storedIsContent = codec === 'none' && !sealer;
  }

  get sealed(): boolean {
    return this.sealer !== undefined;
  }

  /** `last`: the caller knows no block follows (the encrypted form then needs no closing frame). */
  block(data: Uint8Array, last = false): Uint8Array | Promise<Uint8Array> {
    this.content.update(data);
    this.size += data.length;
    const frame = this.encoder.encode(data);
    return frame instanceof Uint8Array ? this.seal(frame, last) : frame.then((f) => this.seal(f, last));
  }

  /** The stored bytes that close the object (the encrypted form's last frame), if any are still due. */
  finish(): Uint8Array | undefined {
    return this.sealer && !this.sealer.closed ? this.hashed(this.sealer.finish()) : undefined;
  }

  private seal(frame: Uint8Array, last: boolean): Uint8Array {
    if (!this.sealer) return this.hashed(frame);
    const need = this.sealer.sealedBytes(frame.length);
    this.sealedFrame ??= takeBuffer(SEALED_BLOCK_BYTES);
    if (this.sealedFrame.length < need) this.sealedFrame = Buffer.allocUnsafe(need);
    return this.hashed(this.sealedFrame.subarray(0, this.sealer.sealInto(frame, this.sealedFrame, 0, last)));
  }

  private hashed(stored: Uint8Array): Uint8Array {
    if (!this.storedIsContent) this.stored.update(stored);
    this.storedSize += stored.length;
    return stored;
  }

  /** Gives the sealing buffer back (the object is done, or failed). */
  release(): void {
    if (this.sealedFrame?.length === SEALED_BLOCK_BYTES) giveBuffer(this.sealedFrame);
    this.sealedFrame = undefined;
  }

  result(): StoredFile {
    const sha256 = this.content.digest('hex');
    return {
      size: this.size,
      sha256,
      storedSize: this.storedSize,
      storedSha256: this.storedIsContent ? sha256 : this.stored.digest('hex'),
    };
  }
}

/**
 * Reads a local file once and returns the sha256 and size of its content and its stored bytes in
 * the block form. Holds the stored bytes in memory: for small files (WAL segments;
 * Repository.archiveWal). Synchronous reads and zstd (one reused context, ~1 ms per block, the
 * event loop runs between blocks): measured on 16 MiB segments, a stream pipeline with
 * compression on the threadpool took ~40% longer, in thread hand-offs and fresh allocations.
 */
export async function encodeFile(
  path: string,
  codec: BlockCodec,
  level?: number,
): Promise<{ sha256: string; size: number; stored: Buffer[] }> {
  return withEncoder(codec, level, async (encoder) => {
    const object = new BlockObjectEncoder(encoder, codec);
    const stored: Buffer[] = [];
    const block = takeBuffer(BLOCK_BYTES);
    const fd = openSync(path, 'r');
    try {
      for (;;) {
        const n = readSync(fd, block, 0, BLOCK_BYTES, object.size);
        if (n === 0 && object.size > 0) break;
        // The encoder reuses its output: each frame is copied out before the next block.
        stored.push(Buffer.from(await object.block(block.subarray(0, n))));
        if (n === 0) break; // an empty file: one empty frame
        await new Promise<void>((r) => setImmediate(r)); // let the event loop run between blocks
      }
    } finally {
      closeSync(fd);
      giveBuffer(block);
    }
    const r = object.result();
    return { sha256: r.sha256, size: r.size, stored };
  });
}

/** A whole object's stored bytes, its frames sealed into one buffer (a frame per element of `frames`). */
function sealAll(sealer: FrameSealer, frames: readonly Uint8Array[]): Buffer {
  let total = HEADER_BYTES + FRAME_OVERHEAD;
  for (const f of frames) total += FRAME_OVERHEAD + f.length;
  const out = Buffer.allocUnsafe(total);
  let at = 0;
  frames.forEach((f, i) => (at = sealer.sealInto(f, out, at, i === frames.length - 1)));
  if (!sealer.closed) at += sealer.finish().copy(out, at);
  return out.subarray(0, at);
}

const isEnoent = (err: unknown) => (err as NodeJS.ErrnoException)?.code === 'ENOENT';

/** Objects of one driver, written and read (see the module comment). Repository.objects is one. */
export class ObjectIo {
  /** `keys`: the stored form per cluster (absent: every object plaintext, as format 1). */
  constructor(
    private readonly driver: RepositoryDriver,
    readonly keys?: RepositoryKeys,
  ) {}

  /** The data key sealing a new object at `key`, or undefined when its cluster is plaintext. */
  private sealing(key: string): Promise<DataKey | undefined> {
    return this.keys ? this.keys.forWrite(key) : Promise.resolve(undefined);
  }

  private opening(key: string): Promise<DataKeyLookup | undefined> {
    return this.keys ? this.keys.forRead(key) : Promise.resolve(undefined);
  }

  private async openStages(key: string): Promise<Transform[]> {
    const lookup = await this.opening(key);
    return lookup ? [new OpenStage(key, lookup)] : [];
  }

  /** Stores a small object (a manifest, cluster.json) held in memory, in its cluster's stored form. */
  async storeSmall(key: string, content: Buffer): Promise<void> {
    const dataKey = await this.sealing(key);
    if (!dataKey) {
      await this.driver.put(key, content);
      return;
    }
    await this.driver.put(key, sealAll(new FrameSealer(dataKey, key), [content]));
  }

  /** The content of a small object stored with storeSmall; RepoFileMissing when it does not exist. */
  async readSmall(key: string): Promise<Buffer> {
    const stages = await this.openStages(key);
    const chunks: Buffer[] = [];
    await pipeline([
      await this.driver.get(key),
      ...stages,
      new Writable({
        write(chunk: Buffer, _enc, cb) {
          chunks.push(chunk);
          cb();
        },
      }),
    ]);
    return Buffer.concat(chunks);
  }

  /**
   * Stores an object made piece by piece (a manifest written as a stream, manifest-stream.ts) in
   * its cluster's stored form, like storeSmall without holding it: the driver writes it as it comes.
   */
  async storePieces(key: string, pieces: AsyncIterable<Buffer>): Promise<void> {
    const dataKey = await this.sealing(key);
    const source = Readable.from(pieces, { objectMode: false });
    if (!dataKey) {
      await this.driver.put(key, source);
      return;
    }
    const sealed = new SealStage(dataKey, key);
    const packed = pipeline(source, sealed);
    const put = this.driver.put(key, sealed);
    try {
      await Promise.all([packed, put]);
    } catch (err) {
      if (!sealed.destroyed) sealed.destroy(err as Error);
      await Promise.allSettled([packed, put]);
      throw err;
    }
  }

  /** The content of an object stored with storeSmall or storePieces, chunk by chunk (never held whole). */
  async readPieces(key: string, onChunk: (chunk: Buffer) => void | Promise<void>): Promise<void> {
    const stages = await this.openStages(key);
    await pipeline([
      await this.driver.get(key),
      ...stages,
      new Writable({
        write(chunk: Buffer, _enc, cb) {
          Promise.resolve(onChunk(chunk)).then(() => cb(), cb);
        },
      }),
    ]);
  }

  /**
   * Stores a stream: content hashed, compressed, stored bytes hashed, all in one pass. `inspect`
   * stages see the content in the same pass and must pass it on unchanged; `content` is the
   * stage that hashes it (one that fails at the end, before the driver can commit, refuses it).
   */
  async storeStream(
    key: string,
    source: Readable,
    codec: Codec,
    options: { level?: number; inspect?: readonly Transform[]; content?: HashingStream } & PutOptions = {},
  ): Promise<StoredFile> {
    const content = options.content ?? new HashingStream();
    let dataKey;
    try {
      dataKey = await this.sealing(key);
    } catch (err) {
      source.destroy();
      throw err;
    }
    // Codec none without encryption stores the content itself: the content's hash is the stored
    // bytes' too, so it is taken once (as the block path does, BlockObjectEncoder.storedIsContent)
    // instead of a second sha256 over the same bytes (the S3 path of issue 19).
    const storedIsContent = codec === 'none' && !dataKey;
    const stored = storedIsContent ? content : new HashingStream();
    const packed = pipeline([
      source,
      ...(options.inspect ?? []),
      content,
      ...(storedIsContent
        ? []
        : [compressor(codec, options.level), ...(dataKey ? [new SealStage(dataKey, key)] : []), stored]),
    ]);
    const put = this.driver.put(key, stored, options.deferDirSync ? { deferDirSync: true } : undefined);
    try {
      await Promise.all([packed, put]);
    } catch (err) {
      // Let the driver finish failing (temp file removed, multipart upload aborted) before
      // reporting: the caller may retry or inspect the repository right away.
      if (!stored.destroyed) stored.destroy(err as Error);
      await Promise.allSettled([packed, put]);
      throw err;
    }
    return { size: content.bytes, sha256: content.sha256, storedSize: stored.bytes, storedSha256: stored.sha256 };
  }

  /** Stores stored bytes made by encodeFile (one pass over a small local file, held in memory). */
  async storeEncoded(key: string, stored: readonly Buffer[]): Promise<void> {
    const dataKey = await this.sealing(key);
    if (!dataKey) {
      await this.driver.put(key, Buffer.concat(stored));
      return;
    }
    // Sealed here, not in encodeFile: the key (which names the content's checksum) is known only now.
    await this.driver.put(key, sealAll(new FrameSealer(dataKey, key), stored));
  }

  /**
   * Stores a range of a local file; undefined when the file does not exist (a PGDATA file dropped
   * before it could be opened: legal during a backup). Block I/O where the driver has local files
   * and the codec a block form, streams otherwise.
   */
  async storeFile(
    key: string,
    file: FileRange,
    codec: Codec,
    options: StoreOptions = {},
  ): Promise<StoredFile | undefined> {
    const dataKey = await this.sealing(key);
    let fh;
    try {
      fh = await open(file.path, 'r');
    } catch (err) {
      if (isEnoent(err)) return undefined;
      throw err;
    }
    const local = this.driver.localFiles;
    if (local && hasBlockForm(codec)) {
      const handle = fh;
      const sealer = dataKey && new FrameSealer(dataKey, key);
      return withEncoder(codec, options.level, (enc) =>
        storeBlocks(
          local,
          key,
          codec,
          new BlockObjectEncoder(enc, codec, sealer),
          fileRangeSource(handle, file),
          options,
        ),
      );
    }
    const source = fh.createReadStream({
      highWaterMark: BUF,
      start: file.offset,
      ...(file.length !== undefined ? { end: file.offset + file.length - 1 } : {}),
      autoClose: true,
    });
    const inspect = options.inspect;
    const stages = [
      ...(options.pace ? [new PaceStage(options.pace)] : []),
      ...(inspect ? [new InspectStage(inspect)] : []),
    ];
    return this.storeStream(key, source, codec, {
      ...(stages.length > 0 ? { inspect: stages } : {}),
      ...(options.level !== undefined ? { level: options.level } : {}),
      ...(options.deferDirSync ? { deferDirSync: true } : {}),
    });
  }

  /**
   * Stores content a ContentSource produces (e.g. the changed blocks of a relation file, picked
   * as it is read): hashed, compressed and stored in one pass, like storeFile. No `pace` or
   * `inspect` here: the source sees the content it reads and meters it itself (it may read far
   * more than it produces).
   */
  async storeProduced(
    key: string,
    source: ContentSource,
    codec: Codec,
    options: Pick<StoreOptions, 'level' | 'deferDirSync' | 'frameBytes'> = {},
  ): Promise<StoredFile> {
    let dataKey;
    try {
      dataKey = await this.sealing(key);
    } catch (err) {
      await source.close().catch(() => {});
      throw err;
    }
    const local = this.driver.localFiles;
    if (local && hasBlockForm(codec)) {
      const sealer = dataKey && new FrameSealer(dataKey, key);
      return withEncoder(codec, options.level, (enc) =>
        storeBlocks(local, key, codec, new BlockObjectEncoder(enc, codec, sealer), source, options),
      );
    }
    async function* produce(): AsyncGenerator<Buffer> {
      try {
        for (;;) {
          const buf = Buffer.allocUnsafe(BLOCK_BYTES);
          const n = await source.read(buf);
          if (n === 0) return;
          yield buf.subarray(0, n);
        }
      } finally {
        await source.close();
      }
    }
    return this.storeStream(key, Readable.from(produce(), { objectMode: false }), codec, {
      ...(options.level !== undefined ? { level: options.level } : {}),
      ...(options.deferDirSync ? { deferDirSync: true } : {}),
    });
  }

  /**
   * Decodes an object (checked against `expected` like readStream) and writes only the blocks
   * `runs` name into the existing file at `path` (created and sized by the caller, synced by it
   * once after all its objects): one sequential pass over the object, each block written once.
   * `pace` meters the bytes written (not the content skipped). With `xor` the blocks are a delta
   * layer (block-map.ts): each is XORed onto the bytes the file already holds there.
   */
  async restoreRuns(
    key: string,
    codec: Codec,
    expected: Required<ExpectedContent>,
    path: string,
    runs: Uint32Array,
    blockBytes: number,
    fileSize: number,
    pace?: Pace,
    xor = false,
  ): Promise<void> {
    const fh = await open(path, (xor ? fsc.O_RDWR : fsc.O_WRONLY) | fsc.O_NOFOLLOW);
    try {
      await this.readStream(key, codec, expected, new RunWriter(fh, runs, blockBytes, fileSize, pace, xor));
    } finally {
      await fh.close();
    }
  }

  /** Whether assembleBlocks can read objects of these codecs here: local object files, block codecs. */
  canAssemble(codecs: Iterable<Codec>): boolean {
    if (!this.driver.localFiles) return false;
    for (const c of codecs) if (!hasBlockForm(c)) return false;
    return true;
  }

  /**
   * Whether blockImages can read objects of these codecs: block codecs, on any driver (local
   * object files are read positionally, others through ranged reads).
   */
  canReadBlocks(codecs: Iterable<Codec>): boolean {
    for (const c of codecs) if (!hasBlockForm(c)) return false;
    return true;
  }

  /**
   * A forward-only reader of the blocks a block map rebuilds (canReadBlocks must hold): take(b)
   * gives block b's bytes (its whole image from `part`/`index`, with each delta layer XORed on),
   * for growing b, any of them left out. Only the frames of each part that hold a taken block are
   * decoded (PartCursor); a part is closed after its last block. Restores (assembleBlocks) take
   * every block; a backup that stores deltas takes the prior versions of its changed blocks.
   * Objects that are not local files (S3) are read through ranged reads (RangedReader), which
   * fetch what the frames to decode need and pass over what they can without fetching it.
   */
  blockImages(
    parts: readonly AssemblyPart[],
    part: Uint16Array,
    index: Uint32Array,
    deltas: readonly DeltaLayer[],
    blockBytes: number,
  ): BlockImages {
    if (!this.canReadBlocks(parts.map((p) => p.codec)))
      throw new PgfleetError('Internal', 'reading blocks needs objects of block codecs');
    const local = this.driver.localFiles;
    return new BlockImages(parts, part, index, deltas, blockBytes, async (p) => {
      const lookup = await this.opening(p.key);
      return local
        ? PartCursor.open(local, this.driver.location, p, lookup)
        : PartCursor.openRemote(this.driver, p, lookup);
    });
  }

  /**
   * Rebuilds a block-incremental file in one pass in block order (canAssemble must hold): block
   * b is the `index[b]`-th block of the content of `parts[part[b]]`. Every part a block comes
   * from is read as a sequential stream (a block map's positions grow with the block number
   * inside each part), so the parts advance together like a k-way merge; each is opened at its
   * first block and closed after its last one, and only its frames that hold a needed block are
   * decoded (PartCursor): a chain's restore decodes about the file's size, not every part whole.
   * The parts' own sha256 are not checked (that would need every frame decoded); the file's is,
   * which covers every byte taken from them. The file is written in large
   * aligned writes (O_DIRECT where it can, see DIRECT_ALIGN) instead of one write per run of
   * blocks, and hashed as it is assembled: the sha256 of the bytes written, in file order, is the
   * file's sha256, as strong a check as reading the file back (which cost a second pass).
   * `path` exists (the caller created it at its size); it is not synced here.
   */
  async assembleBlocks(
    parts: readonly AssemblyPart[],
    part: Uint16Array,
    index: Uint32Array,
    blockBytes: number,
    file: { path: string; size: number; sha256: string },
    pace?: Pace,
    deltas: readonly DeltaLayer[] = [],
  ): Promise<AssemblyFigures> {
    const blocks = part.length;
    if (index.length !== blocks || blocks !== Math.ceil(file.size / blockBytes))
      throw new PgfleetError('Internal', `assembleBlocks: ${blocks} block(s) for ${file.size} bytes`);
    const images = this.blockImages(parts, part, index, deltas, blockBytes);
    const bufs = [takeAligned(), takeAligned()] as const;
    let dest: DestWriter | undefined;
    let pendingWrite: Promise<void> | undefined;
    try {
      dest = DestWriter.open({ path: file.path, mode: 0o600, offset: 0 }, file.size);
      const out = dest;
      const hash = createHash('sha256');
      let cur = 0;
      let fill = 0;
      let written = 0;
      const flush = async (final: boolean) => {
        const buf = bufs[cur]!;
        const n = final ? fill : fill - (fill % DIRECT_ALIGN);
        hash.update(buf.subarray(0, n));
        if (pace && n > 0) await pace(n);
        await pendingWrite; // the other buffer is free again
        pendingWrite = n > 0 ? out.write(buf, n, written) : undefined;
        written += n;
        const next = bufs[cur ^ 1]!;
        if (fill > n) next.set(buf.subarray(n, fill), 0);
        fill -= n;
        cur ^= 1;
      };
      for (let b = 0; b < blocks; b++) {
        const n = b === blocks - 1 ? file.size - b * blockBytes : blockBytes;
        if (OUT_BYTES - fill < n) await flush(false);
        await images.take(b, n, bufs[cur]!, fill);
        fill += n;
      }
      await flush(true);
      await pendingWrite;
      pendingWrite = undefined;
      const got = hash.digest('hex');
      if (written !== file.size || got !== file.sha256)
        throw new PgfleetError(
          'RepoChecksumMismatch',
          `${file.path} rebuilt from its block map does not match the file the backup read (expected sha256 ${file.sha256}, ${file.size} bytes; got ${got}, ${written} bytes)`,
        );
      return images.figures();
    } finally {
      await pendingWrite?.catch(() => {});
      for (const b of bufs) giveAligned(b);
      images.close();
      try {
        dest?.close();
      } catch {
        // already failed: the restore reports the first error
      }
    }
  }

  /**
   * Streams an object's content into `dest`, verifying the content checksum (and the size) at the
   * end: a damaged repository file fails loudly instead of restoring silent garbage.
   */
  async readStream(key: string, codec: Codec, expected: ExpectedContent, dest: Writable, pace?: Pace): Promise<void> {
    const content = new HashingStream();
    try {
      const stages = await this.openStages(key);
      const paced = pace ? [new PaceStage(pace)] : [];
      await pipeline([await this.driver.get(key), ...stages, decompressor(codec), content, ...paced, dest]);
    } catch (err) {
      // Internal too is wrapped: an invalid key (checkKey) read from a manifest is a damaged file, not a bug.
      if (err instanceof PgfleetError && err.errorName !== 'Internal') throw err;
      throw new PgfleetError(
        'RepoChecksumMismatch',
        `repository file ${key} cannot be decoded: ${(err as Error).message}`,
        { cause: err },
      );
    }
    if (content.sha256 !== expected.sha256 || (expected.size !== undefined && content.bytes !== expected.size)) {
      throw checksumMismatch(key, expected.sha256, content.sha256, content.bytes);
    }
  }

  /**
   * Restores an object's content into a local file (see RestoreDestination), checked against
   * `expected`; a whole file is durable (fsynced) when this returns. Block I/O where the driver has
   * local files and the codec a block form, streams otherwise. `pace` meters the content written.
   */
  async restoreFile(
    key: string,
    codec: Codec,
    expected: RestoreExpected,
    dest: RestoreDestination,
    pace?: Pace,
  ): Promise<void> {
    const local = this.driver.localFiles;
    if (local && hasBlockForm(codec)) {
      const lookup = await this.opening(key);
      await withDecoder(codec, (dec) =>
        restoreBlocks(local, this.driver.location, key, codec, expected, dest, dec, lookup, pace),
      );
      return;
    }
    const fh = await open(dest.path, restoreOpenFlags(dest), dest.mode);
    const out = fh.createWriteStream({
      highWaterMark: BUF,
      ...(dest.offset !== undefined ? { start: dest.offset } : {}),
    });
    await this.readStream(key, codec, expected, out, pace);
    if (dest.offset === undefined) await fsyncPath(dest.path);
    if (dest.chmod) await chmod(dest.path, dest.mode); // mode applies only when the file is created
    if (dest.mtimeMs !== undefined) await utimes(dest.path, new Date(dest.mtimeMs), new Date(dest.mtimeMs));
  }

  /**
   * Hashes an object's stored bytes and, when `decode`, its content, in one read, keeping the
   * first `keepHead` content bytes (verify). A decoding failure is reported in the result, with
   * the stored figures measured again without decoding.
   */
  async measure(key: string, codec: Codec, decode: boolean, keepHead = 0): Promise<ObjectMeasure> {
    const stored = new HashingStream();
    if (!decode) {
      await pipeline(await this.driver.get(key), stored, new HeadSink());
      return { storedBytes: stored.bytes, storedSha256: stored.sha256 };
    }
    const content = new HashingStream();
    const sink = new HeadSink(keepHead);
    const stages = await this.openStages(key);
    try {
      await pipeline([await this.driver.get(key), stored, ...stages, decompressor(codec), content, sink]);
    } catch (err) {
      // A tampered object is this object's fault (reported with it); a wrong key fails the whole measure.
      if (err instanceof PgfleetError && err.errorName !== 'Internal' && err.errorName !== 'RepoObjectTampered')
        throw err;
      const again = await this.measure(key, codec, false);
      return { ...again, decodeError: (err as Error).message };
    }
    return {
      storedBytes: stored.bytes,
      storedSha256: stored.sha256,
      contentBytes: content.bytes,
      contentSha256: content.sha256,
      head: sink.head,
    };
  }

  /**
   * Walks an object's stored structure to its end without decompressing it (frame-walk.ts) and
   * decodes its first frame only, keeping the first `keepHead` content bytes: verify's default
   * check of archived WAL. A plaintext local object (posix) has only its headers read; others
   * are read through the driver's stream, and an encrypted one is opened frame by frame (AES-GCM,
   * every frame authenticated: an object moved to another key fails at its first frame).
   * `storedSize`, the size a listing gave: a plaintext object of codec none is then read only
   * for its head. Faults of the object are in the result; a missing object, an I/O failure or a
   * key error are thrown.
   */
  async walk(key: string, codec: Codec, keepHead: number, storedSize?: number): Promise<ObjectWalk> {
    const lookup = await this.opening(key);
    const local = this.driver.localFiles;
    if (!lookup && !local && codec === 'none' && storedSize !== undefined) {
      const head = await readHead(await this.driver.get(key), keepHead);
      return { frames: storedSize > 0 ? 1 : 0, contentBytes: storedSize, head, storedBytes: storedSize };
    }
    let walked: FrameWalk & { stored: number };
    try {
      walked = !lookup && local ? this.walkLocal(local, key, codec) : await this.walkStored(key, codec, lookup);
    } catch (err) {
      const fault = walkFault(key, err);
      if (!fault) throw err;
      return { frames: 0, contentBytes: undefined, fault };
    }
    const out: ObjectWalk = { frames: walked.frames, contentBytes: walked.contentBytes, storedBytes: walked.stored };
    if (walked.contentBytes === undefined || walked.first === undefined || keepHead === 0) return out;
    try {
      out.head = await decodeHead(codec, walked.first, keepHead);
    } catch (err) {
      out.fault = {
        kind: 'undecodable',
        message: `its first frame cannot be decoded (${codec}): ${(err as Error).message}`,
      };
    }
    return out;
  }

  /**
   * A plaintext local object: positional reads of its headers only (frame-walk.ts walkLocalFile),
   * a few percent of its bytes, where a stream would read them all. Synchronous, like restoreBlocks.
   */
  private walkLocal(local: LocalObjectFiles, key: string, codec: Codec): FrameWalk & { stored: number } {
    const fd = openLocal(local, this.driver.location, key);
    try {
      const stored = fstatSync(fd).size;
      return { ...walkLocalFile(codec, fd, stored), stored };
    } finally {
      closeSync(fd);
    }
  }

  /** Any object through the driver's stream: every stored byte read (and, encrypted, authenticated). */
  private async walkStored(
    key: string,
    codec: Codec,
    lookup: DataKeyLookup | undefined,
  ): Promise<FrameWalk & { stored: number }> {
    const walker = frameWalker(codec);
    const opening = lookup && new WalkOpening(key, lookup);
    const source = await this.driver.get(key);
    let stored = 0;
    try {
      for await (const chunk of source as AsyncIterable<Buffer>) {
        stored += chunk.length;
        if (!opening) walker.push(chunk);
        else for (const content of await opening.push(chunk)) walker.push(content);
      }
      opening?.end();
      return { ...walker.end(), stored };
    } finally {
      source.destroy();
    }
  }
}

/** The first `keep` bytes of a stream (fewer when it is shorter); the rest is not read. */
async function readHead(source: Readable, keep: number): Promise<Buffer> {
  const parts: Buffer[] = [];
  let n = 0;
  for await (const chunk of source as AsyncIterable<Buffer>) {
    if (n >= keep) break;
    parts.push(chunk);
    n += chunk.length;
  }
  source.destroy();
  return Buffer.concat(parts).subarray(0, keep);
}

/** Output room for decoding one first frame: its content, plus the largest LZ4 block a decoder wants room for. */
const FIRST_FRAME_OUT = MAX_FRAME_CONTENT + (4 << 20);
/** Stored bytes of a gzip object's start given to inflate: at most ~1000x that in content (deflate's limit). */
const GZIP_HEAD_INPUT = 4 << 10;

/** The first `keep` content bytes of an object whose first frame (zstd, lz4) or first stored bytes (gzip, none) are `first`. */
async function decodeHead(codec: Codec, first: Buffer, keep: number): Promise<Buffer> {
  if (codec === 'none') return Buffer.from(first.subarray(0, keep));
  if (codec === 'gzip') {
    // Z_SYNC_FLUSH: the input is only the start of the stream; inflate returns what it decoded.
    const content = zlib.gunzipSync(first.subarray(0, GZIP_HEAD_INPUT), { finishFlush: zlib.constants.Z_SYNC_FLUSH });
    return Buffer.from(content.subarray(0, keep));
  }
  return withDecoder(codec, async (d) => {
    const out = takeBuffer(FIRST_FRAME_OUT);
    try {
      let used = 0;
      let produced = 0;
      while (used < first.length && produced < keep) {
        const r = d.decode(first.subarray(used), out, produced);
        if (r.consumed === 0 && r.produced === 0) break;
        used += r.consumed;
        produced += r.produced;
      }
      return Buffer.from(out.subarray(0, Math.min(produced, keep)));
    } finally {
      giveBuffer(out);
    }
  });
}

/** An encrypted object's stored bytes in, its authenticated content out, for a walk (ObjectIo.walk). */
class WalkOpening {
  private opener: FrameOpener | undefined;
  private head: Buffer[] = [];
  private headBytes = 0;

  constructor(
    private readonly key: string,
    private readonly lookup: DataKeyLookup,
  ) {}

  async push(stored: Buffer): Promise<Buffer[]> {
    if (this.opener) return this.opener.push(stored);
    this.head.push(stored);
    this.headBytes += stored.length;
    if (this.headBytes < HEADER_BYTES) return [];
    const all = Buffer.concat(this.head, this.headBytes);
    this.head = [];
    const { dataKeyId } = parseHeader(this.key, all);
    let dataKey: Buffer;
    try {
      dataKey = await this.lookup(dataKeyId);
    } catch (err) {
      // The key itself (missing, wrong) fails the caller; a data key this object's place lacks is this object's fault.
      if (isKeyError(err)) throw err;
      throw tampered(
        this.key,
        `the data key its header names (${dataKeyId}) cannot be read: ${(err as Error).message}`,
        err,
      );
    }
    this.opener = new FrameOpener(this.key, all, dataKey);
    return this.opener.push(all.subarray(HEADER_BYTES));
  }

  end(): void {
    if (!this.opener) {
      if (this.headBytes === 0) return;
      throw new FrameWalkError('cut', `it is ${this.headBytes} bytes, shorter than the encrypted form's header`);
    }
    try {
      this.opener.end();
    } catch (err) {
      throw new FrameWalkError('cut', (err as Error).message);
    }
  }
}

/** The fault of walked object `key` an error stands for; undefined for errors that are not the object's (thrown on). */
function walkFault(key: string, err: unknown): ObjectWalk['fault'] {
  // The caller names the object: its key once is enough.
  const message = (err as Error).message.replace(`encrypted repository object ${key} is`, 'the encrypted object is');
  if (err instanceof FrameWalkError) return { kind: err.fault, message };
  if (PgfleetError.is(err, 'RepoObjectTampered')) return { kind: 'tampered', message };
  return undefined;
}

/** A stream stage that shows the content to StoreOptions.inspect and passes it on. */
class InspectStage extends Transform {
  constructor(private readonly inspect: (content: Buffer) => void) {
    super({ highWaterMark: BUF });
  }

  override _transform(chunk: Buffer, _enc: BufferEncoding, cb: TransformCallback): void {
    this.inspect(chunk);
    cb(null, chunk);
  }
}

/** A stream stage that lets content through no faster than its pace admits it. */
class PaceStage extends Transform {
  constructor(private readonly pace: Pace) {
    super({ highWaterMark: BUF });
  }

  override _transform(chunk: Buffer, _enc: BufferEncoding, cb: TransformCallback): void {
    this.pace(chunk.length).then(() => cb(null, chunk), cb);
  }
}

/** Drops what it is given, keeping the first `keep` bytes. */
class HeadSink extends Writable {
  head = Buffer.alloc(0);
  constructor(private readonly keep = 0) {
    super({ highWaterMark: BUF });
  }
  override _write(chunk: Buffer, _enc: BufferEncoding, cb: (err?: Error | null) => void): void {
    if (this.head.length < this.keep)
      this.head = Buffer.concat([this.head, chunk.subarray(0, this.keep - this.head.length)]);
    cb();
  }
}

// ---- block I/O: writing ----------------------------------------------------------------------

/** Room for one stored block (the zstd and lz4 bounds of BLOCK_BYTES plus frame headers). */
const STORED_BLOCK_BYTES = BLOCK_BYTES + (BLOCK_BYTES >> 8) + 1024;
/** The same, sealed (the encrypted form's header and one frame's length, flags and tag). */
const SEALED_BLOCK_BYTES = STORED_BLOCK_BYTES + HEADER_BYTES + FRAME_OVERHEAD;

/**
 * Stored bytes gathered into one write: frames of small content (the 16 KiB frames of changed
 * blocks, the 128 KiB ones of a mapped relation file) compress to a few KiB, sometimes a few
 * hundred bytes (an XOR delta), and a write per frame was a thread-pool round trip per frame.
 */
const WRITE_BYTES = BLOCK_BYTES;

/**
 * The block form (codec-blocks.ts): read 1 MiB, hash, inspect, compress it as one frame, hash and
 * append the frame; everything synchronous on this thread except the I/O, which overlaps it: the
 * next block is read while this one is compressed, and stored bytes are written while the next
 * frames are made (two buffers each way, reused; small frames are gathered into writes of about
 * WRITE_BYTES).
 */
async function storeBlocks(
  local: LocalObjectFiles,
  key: string,
  codec: BlockCodec,
  object: BlockObjectEncoder,
  source: ContentSource,
  options: StoreOptions,
): Promise<StoredFile> {
  const frameBytes = options.frameBytes ?? BLOCK_BYTES;
  if (!Number.isSafeInteger(frameBytes) || frameBytes < 1 || frameBytes > BLOCK_BYTES)
    throw new PgfleetError('Internal', `a frame holds 1..${BLOCK_BYTES} content bytes, not ${frameBytes}`);
  const inBufs = [takeBuffer(BLOCK_BYTES), takeBuffer(BLOCK_BYTES)] as const;
  // The encoder reuses its output: each frame is copied out for the write behind (codec none writes the read buffer).
  const outBufs = [takeBuffer(SEALED_BLOCK_BYTES), takeBuffer(SEALED_BLOCK_BYTES)] as const;
  let writer;
  let pendingWrite: Promise<void> | undefined;
  let i = 0;
  let o = 0;
  /** Stored bytes gathered in outBufs[o], not yet written. */
  let gathered = 0;
  // Each read is one frame: a source fills the buffer it is given (fewer bytes only at its end).
  const readAt = async (buf: Buffer) => ({ bytesRead: await source.read(buf.subarray(0, frameBytes)) });
  const flush = async () => {
    if (gathered === 0) return;
    const data = outBufs[o]!.subarray(0, gathered);
    o ^= 1;
    gathered = 0;
    await pendingWrite; // one write in flight: the object is appended in order (and outBufs[o] is free again)
    pendingWrite = writer!.write(data);
  };
  const put = async (out: Uint8Array) => {
    if (codec === 'none' && !object.sealed && gathered === 0 && out.length >= WRITE_BYTES) {
      // Codec none writes a whole read buffer itself, without a copy.
      await pendingWrite;
      pendingWrite = writer!.write(out);
      return;
    }
    // The encoder reuses its output: the frame is copied out (an empty file's frame and the
    // closing sealed frame are two puts after the last block).
    if (gathered + out.length > outBufs[o]!.length) await flush();
    outBufs[o]!.set(out, gathered);
    gathered += out.length;
    if (gathered >= WRITE_BYTES) await flush();
  };
  let reading = readAt(inBufs[0]);
  try {
    writer = await local.openWriter(key);
    for (;;) {
      const { bytesRead } = await reading;
      if (bytesRead === 0) break;
      const data = inBufs[i]!.subarray(0, bytesRead);
      // Codec none writes the read buffer itself: its write must be done before it is read into again.
      if (codec === 'none') await pendingWrite;
      reading = readAt(inBufs[i ^ 1]!);
      if (options.pace) await options.pace(bytesRead);
      options.inspect?.(data);
      // The next block is read already (synchronously): an empty one makes this the last frame.
      await put(await object.block(data, (await reading).bytesRead === 0));
      i ^= 1;
    }
    // An empty file is still a valid object of its codec (one empty frame).
    if (object.size === 0 && codec !== 'none') await put(await object.block(inBufs[0].subarray(0, 0), true));
    const last = object.finish();
    if (last) await put(last);
    await flush();
    await pendingWrite;
    await writer.commit(options.deferDirSync ? { deferDirSync: true } : undefined);
  } catch (err) {
    await reading.catch(() => {});
    await pendingWrite?.catch(() => {});
    await writer?.abort();
    throw err;
  } finally {
    for (const b of [...inBufs, ...outBufs]) giveBuffer(b);
    object.release();
    await source.close().catch(() => {});
  }
  return object.result();
}

/**
 * Content to store, produced a buffer at a time: `read` fills up to the buffer's length (fewer
 * only at the end) and answers 0 after the last byte; `close` releases what it holds.
 */
export interface ContentSource {
  read(buf: Buffer): Promise<number> | number;
  close(): Promise<void>;
}

/** A range of an open local file as a ContentSource (synchronous reads: PGDATA is mostly in the page cache, where a read costs less than the thread hand-offs of an async one). */
function fileRangeSource(fh: FileHandle, file: FileRange): ContentSource {
  const end = file.length === undefined ? Infinity : file.offset + file.length;
  let pos = file.offset;
  return {
    read(buf) {
      const n = end - pos > 0 ? readSync(fh.fd, buf, 0, Math.min(buf.length, end - pos), pos) : 0;
      pos += n;
      return n;
    },
    close: () => fh.close(),
  };
}

/**
 * Writes `length` bytes of `buffer` from `offset` at file position `position`, however many
 * calls it takes: a positional write may write fewer bytes than asked (a signal, a full quota
 * crossed mid-write), and what it leaves out would be a hole of zeros in a restored file.
 */
export async function writeAllAt(
  fh: Pick<FileHandle, 'write'>,
  buffer: Buffer,
  offset: number,
  length: number,
  position: number,
): Promise<void> {
  let done = 0;
  while (done < length) {
    const { bytesWritten } = await fh.write(buffer, offset + done, length - done, position + done);
    if (bytesWritten <= 0)
      throw new PgfleetError(
        'RepoIoFailed',
        `a restored file's write at ${position + done} wrote nothing (${length - done} bytes left)`,
      );
    done += bytesWritten;
  }
}

/**
 * Writes the parts of a decoded object's content that `runs` ([firstContentBlock,
 * firstFileBlock, count, ...], in content order, blocks of `blockBytes`) name into an existing
 * file, at their blocks, never past `fileSize`; everything else of the content is skipped.
 */
class RunWriter extends Writable {
  private pos = 0;
  private r = 0;

  constructor(
    private readonly fh: FileHandle,
    private readonly runs: Uint32Array,
    private readonly blockBytes: number,
    private readonly fileSize: number,
    private readonly pace: Pace | undefined,
    private readonly xor = false,
  ) {
    super({ highWaterMark: BUF });
  }

  override _write(chunk: Buffer, _enc: BufferEncoding, cb: (err?: Error | null) => void): void {
    this.place(chunk).then(() => cb(), cb);
  }

  private async place(chunk: Buffer): Promise<void> {
    const start = this.pos;
    const end = start + chunk.length;
    this.pos = end;
    const B = this.blockBytes;
    while (this.r < this.runs.length) {
      const from = this.runs[this.r]! * B;
      const to = this.runs[this.r + 1]! * B;
      const length = Math.min(this.runs[this.r + 2]! * B, this.fileSize - to);
      if (from >= end) return;
      const a = Math.max(from, start);
      const b = Math.min(from + length, end);
      if (b > a) {
        if (this.pace) await this.pace(b - a);
        if (this.xor) {
          const onDisk = Buffer.alloc(b - a);
          await this.fh.read(onDisk, 0, b - a, to + (a - from));
          xorInto(onDisk, 0, chunk, a - start, b - a);
          await writeAllAt(this.fh, onDisk, 0, b - a, to + (a - from));
        } else await writeAllAt(this.fh, chunk, a - start, b - a, to + (a - from));
      }
      if (from + length > end) return;
      this.r += 3;
    }
  }

  override _final(cb: (err?: Error | null) => void): void {
    cb(
      this.r < this.runs.length
        ? new Error(`the content ends at ${this.pos} bytes, before the blocks the map names`)
        : null,
    );
  }
}

// ---- block I/O: reading ----------------------------------------------------------------------

/** Input window: at least one whole frame of MAX_FRAME_CONTENT incompressible bytes plus a read. */
const WINDOW = MAX_FRAME_CONTENT + BLOCK_BYTES + (64 << 10);
const READ_BYTES = BLOCK_BYTES;

/**
 * Restored files are written with O_DIRECT when their size and offset allow it (multiples of
 * DIRECT_ALIGN: every relation file): the data goes from our buffer to the device, skipping the
 * page cache. On the 2-core VMs this runs on, a buffered write costs ~1-2 s of kernel CPU per GB
 * (page-cache pages allocated and copied into), as much as the decompression itself; O_DIRECT
 * costs ~0.1 s/GB. The restored cluster reads its files from disk when it starts, which it
 * would mostly do anyway after a restore larger than memory.
 */
const DIRECT_ALIGN = 4096;
/**
 * Output buffer: decoded frames gather here and go out in writes of 1-2 MiB. Room for one frame
 * of the largest content a writer puts in one (MAX_FRAME_CONTENT) after the partial DIRECT_ALIGN
 * unit a flush leaves; a whole page of WebAssembly memory more. Two per restore task, a few tasks
 * per thread: at 4 MiB they were ~26 MB of the agent's RSS during a restore (issue 19). At
 * BLOCK_BYTES + 64 KiB (a write per frame) a restore's peak fell by another 8-15 MB, but an lz4
 * restore took ~30-50% more CPU in three interleaved pairs (bench/copy-path.mjs, not explained
 * yet: docs/benchmarks.md, "Agent peak RSS after a job"), so they stay at this size.
 */
const OUT_BYTES = MAX_FRAME_CONTENT + (64 << 10);
/** For a frame that asks for more room than OUT_BYTES (an lz4 frame whose block maximum is 4 MiB). */
const LARGE_OUT_BYTES = 2 * MAX_FRAME_CONTENT + (64 << 10);
/** This thread's filesystem refused O_DIRECT once: write through the page cache from then on. */
let directRefused = false;

// The WebAssembly global of Node (its types are not in this project's lib).
declare const WebAssembly: { Memory: new (d: { initial: number; maximum: number }) => { buffer: ArrayBuffer } };

/**
 * Page-aligned buffers for O_DIRECT (a Buffer's memory has no alignment guarantee; WebAssembly
 * memory is page-mapped), kept per size: OUT_BYTES for two tasks in flight per thread, two of
 * LARGE_OUT_BYTES (rare).
 */
const alignedFree = new Map<number, Buffer[]>();

function takeAligned(bytes = OUT_BYTES): Buffer {
  return (
    alignedFree.get(bytes)?.pop() ??
    Buffer.from(new WebAssembly.Memory({ initial: bytes >> 16, maximum: bytes >> 16 }).buffer)
  );
}

function giveAligned(buf: Buffer): void {
  let list = alignedFree.get(buf.length);
  if (!list) alignedFree.set(buf.length, (list = []));
  if (list.length < (buf.length === OUT_BYTES ? 4 : 2)) list.push(buf);
}

function checksumMismatch(key: string, expected: string, got: string, bytes: number): PgfleetError {
  return new PgfleetError(
    'RepoChecksumMismatch',
    `repository file ${key} does not match its checksum (expected sha256 ${expected}, got ${got}, ${bytes} bytes)`,
  );
}

function undecodable(key: string, why: string, cause?: unknown): PgfleetError {
  return new PgfleetError(
    'RepoChecksumMismatch',
    `repository file ${key} cannot be decoded: ${why}`,
    cause === undefined ? undefined : { cause },
  );
}

const writeAsync = promisify(fsWrite);
const fsyncAsync = promisify(fsFsync);

/**
 * The restored file (or chunk range) as a positional writer that falls back from O_DIRECT to
 * buffered writes. Opening, closing and setting attributes are synchronous (quick metadata calls
 * that would cost more in thread hand-offs than they take); writes and the fsync wait for the
 * device, so they are asynchronous and the thread decodes meanwhile.
 */
class DestWriter {
  private constructor(
    private fd: number,
    private direct: boolean,
    private readonly d: RestoreDestination,
  ) {}

  static open(d: RestoreDestination, size: number): DestWriter {
    const base = restoreOpenFlags(d);
    const direct = !directRefused && size > 0 && size % DIRECT_ALIGN === 0 && (d.offset ?? 0) % DIRECT_ALIGN === 0;
    if (direct) {
      try {
        return new DestWriter(openSync(d.path, base | fsc.O_DIRECT, d.mode), true, d);
      } catch (err) {
        if ((err as NodeJS.ErrnoException).code !== 'EINVAL') throw err;
        directRefused = true; // tmpfs and some FUSE filesystems
      }
    }
    return new DestWriter(openSync(d.path, base, d.mode), false, d);
  }

  async write(buf: Buffer, length: number, position: number): Promise<void> {
    let done = 0;
    while (done < length) {
      try {
        done += (await writeAsync(this.fd, buf, done, length - done, position + done)).bytesWritten;
      } catch (err) {
        // A device whose blocks are larger than DIRECT_ALIGN: reopen without O_DIRECT and go on.
        if (!this.direct || (err as NodeJS.ErrnoException).code !== 'EINVAL') throw err;
        directRefused = true;
        this.direct = false;
        closeSync(this.fd);
        this.fd = openSync(this.d.path, fsc.O_WRONLY | fsc.O_NOFOLLOW);
      }
    }
  }

  /** Whole files: durable (one fsync per file), with their mode and mtime. Chunks: the caller syncs the file once after all of them. */
  async finish(): Promise<void> {
    if (this.d.offset !== undefined) return;
    await fsyncAsync(this.fd);
    if (this.d.chmod) fchmodSync(this.fd, this.d.mode); // mode applies only when the file is created
    if (this.d.mtimeMs !== undefined) futimesSync(this.fd, new Date(this.d.mtimeMs), new Date(this.d.mtimeMs));
  }

  close(): void {
    closeSync(this.fd);
  }
}

/** Opens a local object for reading: RepoFileMissing when it is not there. */
function openLocal(local: LocalObjectFiles, location: string, key: string): number {
  try {
    return openSync(local.filePath(key), 'r');
  } catch (err) {
    if (isEnoent(err))
      throw new PgfleetError('RepoFileMissing', `repository file ${key} is missing from ${location}`, {
        cause: err,
      });
    // EACCES and the like: the repository's fault (an object not owned by this agent's user), not a bug.
    throw new PgfleetError('RepoIoFailed', `cannot read ${key} in repository ${location}: ${(err as Error).message}`, {
      cause: err,
    });
  }
}

/**
 * Restores an object of a block codec (zstd in either form, lz4, none): frames are decoded
 * synchronously into a page-aligned buffer, and written at their position while the next frames
 * are decoded into a second buffer.
 *
 * What is hashed, so that every byte is verified once (the content size is checked either way):
 * - a zstd object whose frames carry content checksums, with its stored sha256 known (the
 *   manifest's storedSha256; every object a current agent writes): the stored bytes as they are
 *   read from the repository, against `expected.storedSha256`, which proves they are the bytes
 *   the backup wrote; zstd verifies each frame's content checksum (XXH64 of the content the
 *   backup compressed) as it decodes it, which proves the decoding gave that content back. The
 *   stored bytes are a fifth to a tenth of the content on table data. In the encrypted form the
 *   stored bytes are the ciphertext (what storedSha256 covers): AES-GCM authenticates every frame
 *   before a byte of it is decoded, and the object's end (object-cipher.ts), besides;
 * - anything else (lz4 and none, which carry no content checksum as pgfleet writes them; zstd
 *   objects of older agents): the decoded content, against `expected.sha256`.
 * The agent's CPU profile of a restore had sha256 of the content as its largest cost, above the
 * decompression (docs/performance.md).
 */
async function restoreBlocks(
  local: LocalObjectFiles,
  location: string,
  key: string,
  codec: BlockCodec,
  expected: RestoreExpected,
  d: RestoreDestination,
  dec: BlockDecoder,
  lookup: DataKeyLookup | undefined,
  pace: Pace | undefined,
): Promise<void> {
  const src = openLocal(local, location, key);
  const win = takeBuffer(WINDOW);
  let bufs = [takeAligned(), takeAligned()];
  let dest: DestWriter | undefined;
  let pendingWrite: Promise<void> | undefined;
  try {
    // The stored bytes, hashed as they are read (before the encrypted form is opened) while
    // they may be what is checked; dropped at the first read if the object's frames carry no
    // content checksum (then the content is hashed instead).
    let storedHash = codec === 'zstd' && expected.storedSha256 !== undefined ? createHash('sha256') : undefined;
    const plain = plainReader(src);
    const stored: EncodedReader = (buf, at, max) => {
      const n = plain(buf, at, max);
      storedHash?.update(buf.subarray(at, at + n));
      return n;
    };
    const readStored = lookup ? await openedReader(key, stored, lookup) : stored;
    dest = DestWriter.open(d, expected.size);
    const out = dest;
    // Decided at the first read, from the first frame's header.
    let decided = false;
    let contentHash: Hash | undefined;
    const base = d.offset ?? 0;
    let cur = 0;
    let fill = 0;
    let written = 0;
    // Hands the decoded bytes to the device: whole DIRECT_ALIGN units (the remainder moves to the other buffer), or everything at the end.
    const flush = async (final: boolean) => {
      const buf = bufs[cur]!;
      const n = final ? fill : fill - (fill % DIRECT_ALIGN);
      if (written + n > expected.size)
        throw checksumMismatch(key, expected.sha256, '(longer than the manifest says)', written + n);
      contentHash?.update(buf.subarray(0, n));
      if (pace && n > 0) await pace(n);
      await pendingWrite; // the other buffer is free again
      pendingWrite = n > 0 ? out.write(buf, n, base + written) : undefined;
      written += n;
      const next = bufs[cur ^ 1]!;
      if (fill > n) next.set(buf.subarray(n, fill), 0);
      fill -= n;
      cur ^= 1;
    };
    let start = 0;
    let inFill = 0;
    let eof = false;
    for (;;) {
      if (bufs[cur]!.length - fill < BLOCK_BYTES) await flush(false);
      let step;
      try {
        step = dec.decode(win.subarray(start, inFill), bufs[cur]!, fill);
      } catch (err) {
        throw undecodable(key, (err as Error).message, err);
      }
      start += step.consumed;
      fill += step.produced;
      if (step.consumed > 0 || step.produced > 0) continue;
      if (dec.needsOutput) {
        // A flush frees all but the partial DIRECT_ALIGN unit at the end; with only that left, the frame needs larger buffers.
        if (fill >= DIRECT_ALIGN) {
          await flush(false);
          continue;
        }
        if (bufs[cur]!.length >= LARGE_OUT_BYTES)
          throw undecodable(key, `a frame larger than ${LARGE_OUT_BYTES} bytes`);
        await pendingWrite; // neither buffer is being written
        const large = [takeAligned(LARGE_OUT_BYTES), takeAligned(LARGE_OUT_BYTES)];
        large[cur]!.set(bufs[cur]!.subarray(0, fill), 0);
        for (const b of bufs) giveAligned(b);
        bufs = large;
        continue;
      }
      if (eof) {
        if (inFill > start) throw undecodable(key, 'it ends inside a frame');
        break;
      }
      // No complete frame left in the window: read more.
      if (start > 0) {
        win.copyWithin(0, start, inFill);
        inFill -= start;
        start = 0;
      }
      if (inFill === WINDOW) throw undecodable(key, `a frame larger than ${WINDOW} bytes`);
      // Synchronous: the repository is read from the page cache mostly, where a read takes less time than the thread hand-offs of an async one.
      const bytesRead = await readStored(win, inFill, Math.min(READ_BYTES, WINDOW - inFill));
      if (bytesRead === 0) eof = true;
      if (!decided) {
        decided = true;
        if (!storedHash || !zstdFrameChecksummed(win.subarray(0, inFill + bytesRead))) {
          storedHash = undefined;
          contentHash = createHash('sha256');
        }
      }
      inFill += bytesRead;
    }
    if (written + fill !== expected.size)
      throw checksumMismatch(key, expected.sha256, '(another size than the manifest says)', written + fill);
    await flush(true);
    // The content is on its way to the file before it is verified: a mismatch fails the restore,
    // which then never writes backup_label or recovery.signal, so nothing half-restored can start.
    if (storedHash) {
      const got = storedHash.digest('hex');
      if (got !== expected.storedSha256)
        throw checksumMismatch(key, `${expected.storedSha256!} of its stored bytes`, got, expected.size);
      // The writer flags every frame of an object or none: a frame without is not what it wrote.
      if (!dec.contentChecked) throw undecodable(key, 'a zstd frame without its content checksum');
    } else {
      const got = (contentHash ?? createHash('sha256')).digest('hex');
      if (got !== expected.sha256) throw checksumMismatch(key, expected.sha256, got, written);
    }
    await pendingWrite;
    pendingWrite = undefined;
    await out.finish();
  } finally {
    await pendingWrite?.catch(() => {});
    for (const b of bufs) giveAligned(b);
    giveBuffer(win);
    closeSync(src);
    try {
      dest?.close();
    } catch {
      // already failed: the restore reports the first error
    }
  }
}

/**
 * What assembleBlocks or a BlockImages did: content bytes of the parts it decoded, and passed
 * over without decoding; for parts read through ranged reads (not local files), the stored bytes
 * fetched and the requests made.
 */
export interface AssemblyFigures {
  decodedBytes: number;
  skippedBytes: number;
  fetchedBytes?: number;
  requests?: number;
}

/** One object a block map takes blocks from, as assembleBlocks reads it: its key and content figures. */
export interface AssemblyPart {
  key: string;
  codec: Codec;
  sha256: string;
  size: number;
}

function addFigures(to: AssemblyFigures, f: AssemblyFigures): void {
  to.decodedBytes += f.decodedBytes;
  to.skippedBytes += f.skippedBytes;
  if (f.requests !== undefined) {
    to.requests = (to.requests ?? 0) + f.requests;
    to.fetchedBytes = (to.fetchedBytes ?? 0) + (f.fetchedBytes ?? 0);
  }
}

/** ObjectIo.blockImages: the blocks a block map rebuilds, in growing block order. */
export class BlockImages {
  private readonly cursors: (PartCursor | undefined)[];
  /** Per part: the last block that needs it (its cursor is closed after that block). */
  private readonly last: Int32Array;
  private readonly layers: readonly { part: Uint16Array; index: Uint32Array }[];
  private readonly scratch: Buffer;
  private readonly counted: AssemblyFigures = { decodedBytes: 0, skippedBytes: 0 };

  constructor(
    private readonly parts: readonly AssemblyPart[],
    part: Uint16Array,
    index: Uint32Array,
    deltas: readonly DeltaLayer[],
    private readonly blockBytes: number,
    private readonly openPart: (p: AssemblyPart) => Promise<PartCursor>,
  ) {
    this.layers = [{ part, index }, ...deltas];
    this.cursors = parts.map(() => undefined);
    this.last = new Int32Array(parts.length).fill(-1);
    for (const l of this.layers)
      for (let b = 0; b < l.part.length; b++) if (l.part[b] !== NO_PART) this.last[l.part[b]!] = b;
    this.scratch = Buffer.allocUnsafeSlow(deltas.length > 0 ? blockBytes : 0);
  }

  /** Block b's `n` bytes into `dest` at `destAt` (b above the last block taken). */
  async take(b: number, n: number, dest: Buffer, destAt: number): Promise<void> {
    for (let l = 0; l < this.layers.length; l++) {
      const p = this.layers[l]!.part[b]!;
      if (p === NO_PART) break;
      let c = this.cursors[p];
      if (!c) c = this.cursors[p] = await this.openPart(this.parts[p]!);
      const at = this.layers[l]!.index[b]! * this.blockBytes;
      if (l === 0) await c.take(at, n, dest, destAt);
      else {
        await c.take(at, n, this.scratch, 0);
        xorInto(dest, destAt, this.scratch, 0, n);
      }
    }
    // Nothing after a part's last needed block is read (see PartCursor).
    for (let l = 0; l < this.layers.length; l++) {
      const p = this.layers[l]!.part[b]!;
      if (p === NO_PART) break;
      if (b === this.last[p]) this.release(p);
    }
  }

  /** Content bytes decoded, and passed over, so far (parts still open included); remote parts' fetches. */
  figures(): AssemblyFigures {
    const f = { ...this.counted };
    for (const c of this.cursors) if (c) addFigures(f, c.figures());
    return f;
  }

  close(): void {
    for (let p = 0; p < this.cursors.length; p++) this.release(p);
  }

  private release(p: number): void {
    const c = this.cursors[p];
    if (!c) return;
    addFigures(this.counted, c.figures());
    c.close();
    this.cursors[p] = undefined;
  }
}

/**
 * The content of one object as a forward-only cursor (assembleBlocks, BlockImages): blocks are
 * taken at growing content positions; what lies between is passed over. A whole frame with
 * nothing to take is passed over without decoding it, so a part most of whose blocks later
 * backups superseded costs little more than reading it; a frame holding a needed block is
 * decoded. A local object is read sequentially (an encrypted one opened frame by frame); a
 * remote one (S3) through ranged reads (RangedReader) that, in plaintext, also pass over frames
 * without fetching them where their headers say how long they are and the gap is worth a request
 * (`jump`). Nothing checks the part's own sha256 (that needs all of it decoded): the file
 * assembled from the parts is checked against the sha256 of the file the backup read, and a
 * backup's prior versions against the prior map's block checksums, which cover every byte taken
 * from every part. Verify checks parts whole.
 */
class PartCursor {
  private readonly win = takeBuffer(WINDOW);
  /** Decoded content not yet taken is out[pos, len); out[pos] is at content position `at`. */
  private readonly out = takeBuffer(2 * MAX_FRAME_CONTENT);
  private pos = 0;
  private len = 0;
  private at = 0;
  private start = 0;
  private inFill = 0;
  private eof = false;
  /** Content bytes produced by decoding, and passed over without it. */
  private decoded = 0;
  private skipped = 0;
  private closed = false;

  private constructor(
    private readonly part: AssemblyPart,
    private readonly readStored: EncodedReader,
    private readonly dec: BlockDecoder,
    private readonly release: () => void,
    /** Remote plaintext: stored bytes passed over without being fetched (RangedReader.skip). */
    private readonly remote?: RangedReader,
  ) {}

  static async open(
    local: LocalObjectFiles,
    location: string,
    part: AssemblyPart,
    lookup: DataKeyLookup | undefined,
  ): Promise<PartCursor> {
    const fd = openLocal(local, location, part.key);
    try {
      const readStored = lookup ? await openedReader(part.key, plainReader(fd), lookup) : plainReader(fd);
      return new PartCursor(part, readStored, takeDecoder(part.codec as BlockCodec), () => closeSync(fd));
    } catch (err) {
      closeSync(fd);
      throw err;
    }
  }

  /**
   * A part that is not a local file, read through ranged reads. An encrypted one is read
   * sequentially and every frame authenticated before its bytes are used: its AES-GCM frames
   * (object-cipher.ts) seal the codec's output in 1 MiB pieces that do not line up with the
   * codec's frames, so which cipher frames hold no needed block is only known by opening them.
   */
  static async openRemote(
    driver: RepositoryDriver,
    part: AssemblyPart,
    lookup: DataKeyLookup | undefined,
  ): Promise<PartCursor> {
    const ranged = new RangedReader(driver, part.key);
    try {
      const readStored = lookup ? await openedReader(part.key, ranged.read, lookup) : ranged.read;
      return new PartCursor(
        part,
        readStored,
        takeDecoder(part.codec as BlockCodec),
        () => ranged.close(),
        lookup ? undefined : ranged,
      );
    } catch (err) {
      ranged.close();
      throw err;
    }
  }

  /** Content bytes decoded and passed over without decoding; a remote part's fetches (AssemblyFigures). */
  figures(): AssemblyFigures {
    const f: AssemblyFigures = { decodedBytes: this.decoded, skippedBytes: this.skipped };
    if (this.remote) {
      f.requests = this.remote.requests;
      f.fetchedBytes = this.remote.fetched;
    }
    return f;
  }

  /**
   * Copies the `n` content bytes at `position` (not before what was taken last) into `dest` at
   * `destAt`. Synchronous when they are decoded already (most blocks of a frame).
   */
  take(position: number, n: number, dest: Buffer, destAt: number): void | Promise<void> {
    if (this.at === position && this.len - this.pos >= n) {
      this.out.copy(dest, destAt, this.pos, this.pos + n);
      this.pos += n;
      this.at += n;
      return;
    }
    return this.takeLater(position, n, dest, destAt);
  }

  private async takeLater(position: number, n: number, dest: Buffer, destAt: number): Promise<void> {
    while (this.at < position) {
      if (this.len === this.pos) {
        if (await this.skipFrame(position - this.at)) continue;
        if (!(await this.more())) throw this.short(position + n);
      }
      const skip = Math.min(this.len - this.pos, position - this.at);
      this.pos += skip;
      this.at += skip;
    }
    if (this.at > position)
      throw new PgfleetError('Internal', `${this.part.key}: content position ${position} taken twice`);
    while (this.len - this.pos < n) if (!(await this.more(n - (this.len - this.pos)))) throw this.short(position + n);
    this.out.copy(dest, destAt, this.pos, this.pos + n);
    this.pos += n;
    this.at += n;
  }

  close(): void {
    if (this.closed) return;
    this.closed = true;
    giveBuffer(this.win);
    giveBuffer(this.out);
    this.release();
    giveDecoder(this.part.codec as BlockCodec, this.dec);
  }

  private short(needed: number): PgfleetError {
    return checksumMismatch(this.part.key, this.part.sha256, '(shorter than its block map says)', needed);
  }

  /**
   * Passes over the next frame when all its content lies before the next block to take (at most
   * `max` bytes): true when it did. Called only with no decoded content buffered, so the decoder
   * is between frames.
   */
  private async skipFrame(max: number): Promise<boolean> {
    if (!this.dec.skipFrame) return false;
    if (this.remote && this.dec.betweenFrames) return this.jump(max);
    for (;;) {
      const step = this.dec.skipFrame(this.win.subarray(this.start, this.inFill), max);
      if (step) {
        this.start += step.consumed;
        this.passed(step.skipped);
        return true;
      }
      // Not a whole frame in the window yet (a stored frame is at most a little over BLOCK_BYTES):
      // read more; past that, the frame is not one to pass over and more() decodes it.
      if (this.eof || this.inFill - this.start > BLOCK_BYTES + (64 << 10)) return false;
      await this.readInput();
    }
  }

  /**
   * skipFrame of a remote plaintext part: what lies before the next needed byte is passed over
   * by stored positions, fetched only where it is nearer than JUMP_BYTES (passStored). Codec
   * none: stored bytes are content bytes. zstd and lz4: a frame at a time, its length learnt by
   * walking its headers (frame-walk.ts walkFrame) once its header says all its content lies
   * before the next needed byte; the zstd block headers inside a frame are at most 128 KiB of
   * content apart, so only frames whose blocks compress poorly leave gaps worth a jump.
   */
  private async jump(max: number): Promise<boolean> {
    if (this.part.codec === 'none') {
      // Past the end of a cut object, reads give nothing and more() says it is short.
      this.passStored(max);
      this.passed(max);
      return true;
    }
    if (this.inFill === this.start && !this.eof) await this.readInput();
    if (this.inFill === this.start) return false; // the end of the object: more() says so
    /** Stored bytes of this frame already passed over (before win[start]). */
    let passed = 0;
    let passing = false;
    let walked;
    try {
      walked = await walkFrame(
        this.part.codec as 'zstd' | 'lz4',
        async (offset, n) => {
          if (passing) {
            this.passStored(offset - passed);
            passed = offset;
          }
          const rel = offset - passed;
          while (this.inFill - this.start < rel + n && !this.eof) await this.readInput();
          return this.win.subarray(this.start + rel, Math.min(this.inFill, this.start + rel + n));
        },
        (contentSize) => (passing = contentSize !== undefined && contentSize <= max),
      );
    } catch (err) {
      if (err instanceof FrameWalkError) throw undecodable(this.part.key, err.message, err);
      throw err;
    }
    if (!walked) return false;
    this.passStored(walked.length - passed);
    this.passed(walked.contentSize!);
    return true;
  }

  /** `n` content bytes passed over without decoding them. */
  private passed(n: number): void {
    this.at += n;
    this.skipped += n;
    this.checkLength();
  }

  /**
   * Passes over the next `n` stored bytes: those in the window, the rest by the remote reader
   * (RangedReader.skip: fetched with what follows when near, not fetched at all when far).
   */
  private passStored(n: number): void {
    const buffered = this.inFill - this.start;
    if (n <= buffered) {
      this.start += n;
      return;
    }
    this.start = this.inFill = 0;
    this.remote!.skip(n - buffered);
  }

  private checkLength(): void {
    if (this.decoded + this.skipped > this.part.size)
      throw checksumMismatch(
        this.part.key,
        this.part.sha256,
        '(longer than its block map says)',
        this.decoded + this.skipped,
      );
  }

  /**
   * Decodes more content after out[len]; false at the end of the object. `want`: the content
   * bytes needed next; codec none (whose stored bytes are its content, in no frames) copies just
   * those, so what follows stays stored bytes that skipFrame can pass over.
   */
  private async more(want = Infinity): Promise<boolean> {
    for (;;) {
      if (this.out.length - this.len < MAX_FRAME_CONTENT) {
        this.out.copyWithin(0, this.pos, this.len);
        this.len -= this.pos;
        this.pos = 0;
      }
      let step;
      try {
        const end = this.part.codec === 'none' ? Math.min(this.inFill, this.start + want) : this.inFill;
        step = this.dec.decode(this.win.subarray(this.start, end), this.out, this.len);
      } catch (err) {
        throw undecodable(this.part.key, (err as Error).message, err);
      }
      this.start += step.consumed;
      if (step.produced > 0) {
        this.len += step.produced;
        this.decoded += step.produced;
        this.checkLength();
        return true;
      }
      if (step.consumed > 0) continue;
      if (this.dec.needsOutput) throw undecodable(this.part.key, `a frame larger than ${MAX_FRAME_CONTENT} bytes`);
      if (this.eof) {
        if (this.inFill > this.start) throw undecodable(this.part.key, 'it ends inside a frame');
        return false;
      }
      await this.readInput();
    }
  }

  /** Reads more stored bytes into the window (after moving what is left to its start); sets eof at the end. */
  private async readInput(): Promise<void> {
    if (this.start > 0) {
      this.win.copyWithin(0, this.start, this.inFill);
      this.inFill -= this.start;
      this.start = 0;
    }
    if (this.inFill === WINDOW) throw undecodable(this.part.key, `a frame larger than ${WINDOW} bytes`);
    const bytesRead = await this.readStored(this.win, this.inFill, Math.min(READ_BYTES, WINDOW - this.inFill));
    if (bytesRead === 0) this.eof = true;
    this.inFill += bytesRead;
  }
}

function takeDecoder(codec: BlockCodec): BlockDecoder {
  const dec = decoders.get(codec)?.pop() ?? blockDecoder(codec);
  dec.reset();
  return dec;
}

function giveDecoder(codec: BlockCodec, dec: BlockDecoder): void {
  let list = decoders.get(codec);
  if (!list) decoders.set(codec, (list = []));
  list.push(dec);
}

/**
 * The first request of a RangedReader, and its first after passing over stored bytes: small,
 * since it may be for a frame's headers only. Each further request in a row doubles, up to
 * RANGE_MAX (a frame being decoded is read on as a stream would be, a request per MiB); at most
 * RANGE_MAX is fetched beyond what is used.
 */
const RANGE_FIRST = 128 << 10;
const RANGE_MAX = 1 << 20;
/**
 * Stored bytes passed over that are fetched anyway, with what follows, rather than skipped by
 * starting the next request past them: under this, a gap costs less transfer than a request's
 * latency saves. It also bounds the requests: every request but the object's last fetches at
 * least RANGE_FIRST bytes, none of them fetched twice, so a part of S stored bytes costs at most
 * S / RANGE_FIRST + 1 requests, however its frames are passed over.
 */
const JUMP_BYTES = 256 << 10;

/**
 * A remote object's stored bytes read forward through ranged reads (RepositoryDriver.getRange):
 * each request is fetched whole into memory (at most JUMP_BYTES + RANGE_MAX), so no connection
 * is held open between reads: a cursor per part of a long chain, all open at once, would
 * otherwise each hold a socket and could exhaust the client's pool. `skip` passes over bytes:
 * those already fetched, then the next request starts past them or, when they are near, fetches
 * them with what follows (JUMP_BYTES).
 */
class RangedReader {
  requests = 0;
  fetched = 0;
  /** Stored offset of rest[0], or of the next byte to fetch when rest is empty. */
  private pos = 0;
  /** Fetched bytes not read yet. */
  private rest: Buffer = Buffer.alloc(0);
  /** Bytes at `pos` the next request fetches only to pass over (a near gap). */
  private gap = 0;
  private size = RANGE_FIRST;
  private ended = false;

  constructor(
    private readonly driver: RepositoryDriver,
    private readonly key: string,
  ) {}

  readonly read = async (buf: Buffer, at: number, max: number): Promise<number> => {
    if (this.rest.length === 0) {
      if (this.ended || max === 0) return 0;
      await this.fetch();
      if (this.rest.length === 0) return 0;
    }
    const n = Math.min(max, this.rest.length);
    this.rest.copy(buf, at, 0, n);
    this.rest = this.rest.subarray(n);
    this.pos += n;
    return n;
  };

  /** Passes over the next `n` stored bytes (past the end of the object, reads then give nothing). */
  skip(n: number): void {
    const held = Math.min(n, this.rest.length);
    this.rest = this.rest.subarray(held);
    this.pos += held;
    n -= held;
    if (n === 0) return;
    if (this.gap + n < JUMP_BYTES) this.gap += n;
    else {
      this.pos += this.gap + n;
      this.gap = 0;
    }
    this.size = RANGE_FIRST;
  }

  close(): void {
    this.rest = Buffer.alloc(0);
  }

  private async fetch(): Promise<void> {
    const want = this.gap + this.size;
    this.requests++;
    const got = await readStream(await this.driver.getRange(this.key, this.pos, this.pos + want));
    this.fetched += got.length;
    // A shorter answer: the object ends there.
    if (got.length < want) this.ended = true;
    const drop = Math.min(this.gap, got.length);
    this.rest = got.subarray(drop);
    this.pos += drop;
    this.gap = 0;
    this.size = Math.min(this.size * 2, RANGE_MAX);
  }
}

/** A stream's bytes as one buffer (a ranged read's, at most RANGE_MAX). */
async function readStream(stream: Readable): Promise<Buffer> {
  const chunks: Buffer[] = [];
  for await (const c of stream as AsyncIterable<Buffer>) chunks.push(c);
  return chunks.length === 1 ? chunks[0]! : Buffer.concat(chunks);
}

/**
 * Reads stored bytes of an object forward into `buf` at `at`, up to `max`; 0 at its end.
 * Synchronous for local files (positional reads of the page cache cost less than the hand-offs
 * of async ones), a promise for ranged reads.
 */
type EncodedReader = (buf: Buffer, at: number, max: number) => number | Promise<number>;

function plainReader(fd: number): (buf: Buffer, at: number, max: number) => number {
  let pos = 0;
  return (buf, at, max) => {
    const n = readSync(fd, buf, at, max, pos);
    pos += n;
    return n;
  };
}

/**
 * The encrypted form read forward from `source` (a local file or ranged reads), a frame at a
 * time, through one read-ahead buffer: a small object (most of a PGDATA) is its header, one
 * frame and its tag, all taken by one read; a large one is read a block at a time. Each frame is
 * authenticated straight into the caller's buffer when it has room for the whole frame (a
 * restore's window mostly: stored codec frames of 1 MiB of content are smaller than that), else
 * into a buffer of its own that hands it out in pieces; either way none of it is handed out
 * before its tag is checked. The end is checked (no truncation, nothing after the last frame).
 * The data key is looked up from the header.
 */
async function openedReader(key: string, source: EncodedReader, lookup: DataKeyLookup): Promise<EncodedReader> {
  let stored = takeBuffer(SEALED_BLOCK_BYTES);
  /** A frame too large for the caller's room, opened here and handed out in pieces; taken when first needed. */
  let plain: Buffer | undefined;
  /** stored[0, filled) holds the object's next bytes; `at` is the next unread one. */
  let filled = 0;
  let at = 0;
  let eof = false;
  /** At least `n` bytes from `at` in the buffer, fewer only at the end of the object; returns how many. */
  const ensure = async (n: number): Promise<number> => {
    if (filled - at >= n || eof) return Math.min(n, filled - at);
    if (stored.length < n) {
      const bigger = Buffer.allocUnsafe(n); // a stream-written frame larger than a block
      stored.copy(bigger, 0, at, filled);
      if (stored.length === SEALED_BLOCK_BYTES) giveBuffer(stored);
      stored = bigger;
    } else if (at > 0) stored.copy(stored, 0, at, filled);
    filled -= at;
    at = 0;
    while (filled < n) {
      const r = await source(stored, filled, stored.length - filled);
      if (r === 0) {
        eof = true;
        break;
      }
      filled += r;
    }
    return Math.min(n, filled);
  };
  if ((await ensure(HEADER_BYTES)) < HEADER_BYTES) parseHeader(key, stored.subarray(0, filled)); // throws: too short
  const header = Buffer.from(stored.subarray(0, HEADER_BYTES));
  const { dataKeyId } = parseHeader(key, header);
  const opener = new FrameOpener(key, header, await lookup(dataKeyId));
  at = HEADER_BYTES;
  let have = 0;
  let given = 0;
  let ended = false;
  /** Opens the next frame with content: into buf at `to` when it fits in `max` (returns its length), else into `plain` (returns 0); -1 after the last. */
  const nextFrame = async (buf: Buffer, to: number, max: number): Promise<number> => {
    for (;;) {
      const headBytes = await ensure(FRAME_HEAD);
      if (headBytes === 0) {
        opener.end();
        ended = true;
        giveBuffer(stored);
        if (plain?.length === SEALED_BLOCK_BYTES) giveBuffer(plain);
        return -1;
      }
      if (headBytes < FRAME_HEAD) throw opener.cut();
      const frame = opener.frameHead(stored.subarray(at, at + FRAME_HEAD));
      const sealed = frame.length + TAG_BYTES;
      if ((await ensure(FRAME_HEAD + sealed)) < FRAME_HEAD + sealed) throw opener.cut();
      const body = at + FRAME_HEAD;
      const direct = frame.length <= max;
      if (!direct && (plain?.length ?? 0) < frame.length)
        plain = frame.length <= SEALED_BLOCK_BYTES ? takeBuffer(SEALED_BLOCK_BYTES) : Buffer.allocUnsafe(frame.length);
      opener.openInto(
        frame,
        [stored.subarray(body, body + frame.length)],
        stored.subarray(body + frame.length, body + sealed),
        direct ? buf : plain!,
        direct ? to : 0,
      );
      at = body + sealed;
      if (frame.length === 0) continue;
      if (direct) return frame.length;
      have = frame.length;
      given = 0;
      return 0;
    }
  };
  const give = (buf: Buffer, to: number, max: number) => {
    const n = Math.min(max, have - given);
    plain!.copy(buf, to, given, given + n);
    given += n;
    return n;
  };
  return async (buf, to, max) => {
    if (given < have) return give(buf, to, max);
    if (ended) return 0;
    const n = await nextFrame(buf, to, max);
    if (n < 0) return 0;
    return n > 0 ? n : give(buf, to, max);
  };
}

/** A local file as a stream of 1 MiB reads (for callers that pipe a whole file into storeStream). */
export function fileStream(path: string): Readable {
  return createReadStream(path, { highWaterMark: BUF });
}
