/**
 * Compression codecs as stream stages, plus a pass-through hasher, so a file is read once and
 * hashed (content and stored bytes) in the same pass as it is compressed: hashing is a real cost
 * (~1 s/GB) and a second read would double it. zlib streams get 1 MiB chunks: the 16 KiB
 * default slows zstd decompression 2-4x.
 */
import { createHash, type Hash } from 'node:crypto';
import { PassThrough, Transform, type TransformCallback } from 'node:stream';
import zlib from 'node:zlib';
import type { Codec } from './codec-names.js';

export { CODECS, type Codec } from './codec-names.js';

const CHUNK = 1 << 20;

/**
 * zstd level used when none is given. Measured on pgbench tables and ~3.6x compressible log-like
 * rows (docs/benchmarks.md): level 2 stores slightly less than level 3 on both (2.43% vs 2.56%,
 * 27.6% vs 27.7%) at ~1.5x the speed; level 1 is a little faster still but larger on real rows.
 */
export const DEFAULT_ZSTD_LEVEL = 2;

/** Content bytes per frame/block of the block form (compressBlock): what a block writer reads at a time. */
export const BLOCK_BYTES = CHUNK;

export function codecExtension(codec: Codec): string {
  return codec === 'zstd' ? '.zst' : codec === 'gzip' ? '.gz' : '';
}

export function compressor(codec: Codec, level?: number): Transform {
  switch (codec) {
    case 'zstd':
      return zlib.createZstdCompress({ chunkSize: CHUNK, params: { [zlib.constants.ZSTD_c_compressionLevel]: level ?? DEFAULT_ZSTD_LEVEL } });
    case 'gzip':
      return zlib.createGzip({ chunkSize: CHUNK, level: level ?? 6 });
    case 'none':
      return new PassThrough({ highWaterMark: CHUNK });
  }
}

export function decompressor(codec: Codec): Transform {
  switch (codec) {
    case 'zstd':
      return new ZstdDecoder();
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

// ---- block form ---------------------------------------------------------------------------
// A stored object may be a sequence of self-contained zstd frames, one per <= 1 MiB of content
// (each with its content size in the header), instead of one long frame. It is still plain
// zstd (`zstd -d` and every streaming decoder read concatenated frames), compresses the same
// (zstd levels 1-3 have windows of 0.5-2 MiB anyway), and lets a worker thread compress and
// decompress synchronously, block by block, with no stream machinery and no threadpool hops.

/** Codecs with a block form: zstd (a frame per block) and none (the bytes themselves). */
export function hasBlockForm(codec: Codec): codec is 'zstd' | 'none' {
  return codec === 'zstd' || codec === 'none';
}

/** One block of content as stored bytes (zstd: a frame with its content size). */
export function compressBlock(codec: 'zstd' | 'none', data: Uint8Array, level?: number): Uint8Array {
  if (codec === 'none') return data;
  return zlib.zstdCompressSync(data, { params: { [zlib.constants.ZSTD_c_compressionLevel]: level ?? DEFAULT_ZSTD_LEVEL } });
}

/**
 * Decompresses exactly one whole zstd frame of `contentSize` bytes, into one buffer of that size.
 * One frame per call: node:zlib's zstd decoders (sync and streaming) stop at the end of the
 * first frame unless its output happened to fill their buffer exactly, so several frames must
 * never be handed to one call or one stream.
 */
export function decompressFrame(frame: Uint8Array, contentSize: number): Buffer {
  return zlib.zstdDecompressSync(frame, { maxOutputLength: Math.max(1, contentSize), chunkSize: Math.max(64, contentSize) });
}

/** Largest frame content the frame decoder accepts (writers here use BLOCK_BYTES). */
export const MAX_FRAME_CONTENT = 2 * BLOCK_BYTES;

/**
 * zstd decompression as a stream stage that reads both forms: frame by frame (synchronously)
 * when frames declare their content size (the block form), else through node:zlib's streaming
 * decoder (one long streamed frame, as older agents and WAL archiving write).
 */
class ZstdDecoder extends Transform {
  private pending: Buffer = Buffer.alloc(0);
  private inner: Transform | undefined;

  constructor() {
    super({ highWaterMark: CHUNK });
  }

  override _transform(chunk: Buffer, _enc: BufferEncoding, cb: TransformCallback): void {
    if (this.inner) {
      this.inner.write(chunk, (err) => cb(err ?? null));
      return;
    }
    this.pending = this.pending.length === 0 ? chunk : Buffer.concat([this.pending, chunk]);
    try {
      for (;;) {
        const scan = scanZstdFrames(this.pending, MAX_FRAME_CONTENT, 1);
        if (scan === undefined) {
          if (this.pending.length < 18) break; // a frame header may still be incomplete: can't tell yet
          // A streamed frame: hand everything to node:zlib's decoder from here on.
          const inner = zlib.createZstdDecompress({ chunkSize: CHUNK });
          inner.on('data', (d: Buffer) => this.push(d));
          inner.on('error', (err) => this.destroy(err));
          this.inner = inner;
          const rest = this.pending;
          this.pending = Buffer.alloc(0);
          inner.write(rest, (err) => cb(err ?? null));
          return;
        }
        if (scan.length === 0) break;
        this.push(decompressFrame(this.pending.subarray(0, scan.length), scan.contentSize));
        this.pending = this.pending.subarray(scan.length);
      }
      cb();
    } catch (err) {
      cb(err as Error);
    }
  }

  override _flush(cb: TransformCallback): void {
    if (this.inner) {
      this.inner.once('end', () => cb());
      this.inner.end();
      return;
    }
    if (this.pending.length > 0) {
      // A short object that never looked like complete frames: let the streaming decoder judge it.
      const out: Buffer[] = [];
      try {
        out.push(zlib.zstdDecompressSync(this.pending));
      } catch (err) {
        cb(err as Error);
        return;
      }
      for (const o of out) this.push(o);
    }
    cb();
  }
}

const ZSTD_MAGIC = 0xfd2fb528;
const FCS_BYTES = [0, 2, 4, 8];
const DICT_BYTES = [0, 1, 2, 4];

export interface FrameScan {
  /** Bytes at the start of the buffer that form complete frames. */
  length: number;
  /** Their total content size. */
  contentSize: number;
}

/**
 * Finds the complete zstd frames at the start of `buf` (by walking frame and block headers, no
 * decoding), at most `maxFrames` of them. Returns undefined when a frame does not declare a content size of at most
 * `maxFrameContent` bytes (a long streamed frame: decode it with a stream instead) or is not zstd.
 */
export function scanZstdFrames(buf: Uint8Array, maxFrameContent: number, maxFrames = Infinity): FrameScan | undefined {
  const view = new DataView(buf.buffer, buf.byteOffset, buf.byteLength);
  let pos = 0;
  let contentSize = 0;
  for (let frames = 0; frames < maxFrames; frames++) {
    const start = pos;
    if (pos + 5 > buf.length) break;
    if (view.getUint32(pos, true) !== ZSTD_MAGIC) return undefined;
    const fhd = buf[pos + 4]!;
    const fcsFlag = fhd >> 6;
    const single = (fhd >> 5) & 1;
    const checksum = (fhd >> 2) & 1;
    const fcsBytes = fcsFlag === 0 ? single : FCS_BYTES[fcsFlag]!;
    pos += 5 + (single ? 0 : 1) + DICT_BYTES[fhd & 3]!;
    if (fcsBytes === 0) return undefined; // unknown content size: a streamed frame
    if (pos + fcsBytes > buf.length) {
      pos = start;
      break;
    }
    let fcs: number;
    if (fcsBytes === 1) fcs = buf[pos]!;
    else if (fcsBytes === 2) fcs = view.getUint16(pos, true) + 256;
    else if (fcsBytes === 4) fcs = view.getUint32(pos, true);
    else fcs = view.getUint32(pos, true) + view.getUint32(pos + 4, true) * 2 ** 32;
    if (fcs > maxFrameContent) return undefined;
    pos += fcsBytes;
    let complete = false;
    for (;;) {
      if (pos + 3 > buf.length) break;
      const h = buf[pos]! | (buf[pos + 1]! << 8) | (buf[pos + 2]! << 16);
      const type = (h >> 1) & 3;
      if (type === 3) return undefined;
      pos += 3 + (type === 1 ? 1 : h >>> 3);
      if (pos > buf.length) break;
      if (h & 1) {
        pos += checksum ? 4 : 0;
        complete = pos <= buf.length;
        break;
      }
    }
    if (!complete) {
      pos = start;
      break;
    }
    contentSize += fcs;
  }
  return { length: pos, contentSize };
}
