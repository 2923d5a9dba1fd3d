/**
 * Compression codecs as stream stages, plus a pass-through hasher, so a file is read once and
 * hashed (content and stored bytes) in the same pass as it is compressed: hashing is a real cost
 * (~0.5 s/GB) and a second read would double it. zlib streams get 1 MiB chunks: the 16 KiB
 * default slows zstd decompression 2-4x. The block codecs that block I/O drives directly are in
 * codec-blocks.ts; the streams here wrap them for lz4 and for reading zstd. Only the object I/O
 * layer (object-io.ts) puts these stages between content and stored bytes.
 */
import { createHash, type Hash } from 'node:crypto';
import { PassThrough, Transform, type TransformCallback } from 'node:stream';
import zlib from 'node:zlib';
import {
  BLOCK_BYTES,
  blockDecoder,
  DEFAULT_ZSTD_LEVEL,
  lz4Frame,
  MAX_FRAME_CONTENT,
  zstdFrame,
  type BlockCodec,
  type BlockDecoder,
} from './codec-blocks.js';
import { CODEC_LEVELS, type Codec } from './codec-names.js';

export { CODEC_LEVELS, CODECS, compressLevel, type Codec } from './codec-names.js';
export {
  BLOCK_BYTES,
  blockDecoder,
  blockEncoder,
  DEFAULT_ZSTD_LEVEL,
  hasBlockForm,
  MAX_FRAME_CONTENT,
  scanZstdFrames,
  xxh32Small,
  zstdFrameChecksummed,
  type BlockCodec,
  type BlockDecoder,
  type BlockEncoder,
  type FrameScan,
} from './codec-blocks.js';

const CHUNK = 1 << 20;

const EXTENSIONS: Record<Codec, string> = { zstd: '.zst', lz4: '.lz4', gzip: '.gz', none: '' };

export function codecExtension(codec: Codec): string {
  return EXTENSIONS[codec];
}

/** The codec a stored object's file name extension says (WAL archive keys carry it). */
export function codecOfExtension(ext: string | undefined): Codec {
  return ext === '.zst' ? 'zstd' : ext === '.lz4' ? 'lz4' : ext === '.gz' ? 'gzip' : 'none';
}

export function compressor(codec: Codec, level?: number): Transform {
  switch (codec) {
    case 'zstd':
      return new BlockEncodeStream((block) => zstdFrame(block, level ?? DEFAULT_ZSTD_LEVEL));
    case 'lz4':
      return new BlockEncodeStream(lz4Frame);
    case 'gzip':
      return zlib.createGzip({ chunkSize: CHUNK, level: level ?? CODEC_LEVELS.gzip!.default });
    case 'none':
      return new PassThrough({ highWaterMark: CHUNK });
  }
}

export function decompressor(codec: Codec): Transform {
  switch (codec) {
    case 'zstd':
    case 'lz4':
      return new BlockDecodeStream(codec);
    case 'gzip':
      return zlib.createGunzip({ chunkSize: CHUNK });
    case 'none':
      return new PassThrough({ highWaterMark: CHUNK });
  }
}

/** Passes bytes through unchanged while computing their sha256 and count. */
export class HashingStream extends Transform {
  private readonly hash: Hash = createHash('sha256');
  bytes = 0;
  private digestHex: string | undefined;

  constructor() {
    super({ highWaterMark: CHUNK });
  }

  override _transform(chunk: Buffer, _enc: BufferEncoding, cb: TransformCallback): void {
    this.hash.update(chunk);
    this.bytes += chunk.length;
    cb(null, chunk);
  }

  override _flush(cb: TransformCallback): void {
    this.digestHex = this.hash.digest('hex');
    cb();
  }

  /** The hex digest; available once the stream has ended. */
  get sha256(): string {
    if (this.digestHex === undefined) throw new Error('HashingStream read before end');
    return this.digestHex;
  }
}

/**
 * Compresses its input block by block (the block form: a frame per BLOCK_BYTES of content), a
 * few blocks at a time on the libuv threadpool, frames passed on in order. A WAL segment (16
 * blocks) is compressed on both cores instead of one, and the event loop never waits for it.
 */
class BlockEncodeStream extends Transform {
  private block = Buffer.allocUnsafe(BLOCK_BYTES);
  private fill = 0;
  private frames = 0;
  /** Frames being compressed, oldest first. */
  private readonly inflight: Promise<Buffer>[] = [];

  constructor(
    private readonly encode: (block: Uint8Array) => Promise<Buffer>,
    private readonly parallel = 4,
  ) {
    super({ highWaterMark: CHUNK });
  }

  override _transform(chunk: Buffer, _enc: BufferEncoding, cb: TransformCallback): void {
    this.gather(chunk).then(() => cb(), cb);
  }

  override _flush(cb: TransformCallback): void {
    // An empty input still becomes one (empty) frame: a valid object of its codec.
    if (this.fill > 0 || this.frames === 0) this.start();
    this.drain(0).then(() => cb(), cb);
  }

  private async gather(chunk: Buffer): Promise<void> {
    let pos = 0;
    while (pos < chunk.length) {
      const n = Math.min(chunk.length - pos, BLOCK_BYTES - this.fill);
      chunk.copy(this.block, this.fill, pos, pos + n);
      this.fill += n;
      pos += n;
      if (this.fill === BLOCK_BYTES) {
        this.start();
        await this.drain(this.parallel - 1);
      }
    }
  }

  /** Hands the gathered block to the encoder; the next block gathers in a fresh buffer. */
  private start(): void {
    const p = this.encode(this.block.subarray(0, this.fill));
    p.catch(() => {}); // awaited in order by drain()
    this.inflight.push(p);
    this.block = Buffer.allocUnsafe(BLOCK_BYTES);
    this.fill = 0;
    this.frames++;
  }

  /** Passes on finished frames, in order, until at most `keep` are still being compressed. */
  private async drain(keep: number): Promise<void> {
    while (this.inflight.length > keep) this.push(await this.inflight.shift()!);
  }
}

/** Decompresses a block-form or streamed object as a stream stage (codec-blocks.ts decoders). */
class BlockDecodeStream extends Transform {
  private readonly decoder: BlockDecoder;
  private pending: Buffer = Buffer.alloc(0);
  private out = Buffer.allocUnsafe(MAX_FRAME_CONTENT);
  private fill = 0;

  constructor(codec: BlockCodec) {
    super({ highWaterMark: CHUNK });
    this.decoder = blockDecoder(codec);
  }

  override _transform(chunk: Buffer, _enc: BufferEncoding, cb: TransformCallback): void {
    this.pending = this.pending.length === 0 ? chunk : Buffer.concat([this.pending, chunk]);
    try {
      this.drain();
      cb();
    } catch (err) {
      cb(err as Error);
    }
  }

  override _flush(cb: TransformCallback): void {
    try {
      this.drain();
      this.decoder.close();
      if (this.pending.length > 0)
        throw new Error(`the object ends inside a frame (${this.pending.length} bytes left undecoded)`);
      cb();
    } catch (err) {
      cb(err as Error);
    }
  }

  private drain(): void {
    for (;;) {
      const { consumed, produced } = this.decoder.decode(this.pending, this.out, this.fill);
      this.pending = this.pending.subarray(consumed);
      this.fill += produced;
      if (consumed > 0 || produced > 0) {
        if (this.fill === this.out.length) this.pushOut();
        continue;
      }
      if (!this.decoder.needsOutput) break;
      if (this.fill === 0) throw new Error('a frame larger than the decoder accepts');
      this.pushOut();
    }
    if (this.fill > 0) this.pushOut();
  }

  private pushOut(): void {
    // Downstream keeps what it is given: a fresh buffer for the next output.
    this.push(this.out.subarray(0, this.fill));
    this.out = Buffer.allocUnsafe(MAX_FRAME_CONTENT);
    this.fill = 0;
  }
}
