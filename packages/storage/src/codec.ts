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

export function codecExtension(codec: Codec): string {
  return codec === 'zstd' ? '.zst' : codec === 'gzip' ? '.gz' : '';
}

export function compressor(codec: Codec, level?: number): Transform {
  switch (codec) {
    case 'zstd':
      return zlib.createZstdCompress({ chunkSize: CHUNK, params: { [zlib.constants.ZSTD_c_compressionLevel]: level ?? 3 } });
    case 'gzip':
      return zlib.createGzip({ chunkSize: CHUNK, level: level ?? 6 });
    case 'none':
      return new PassThrough({ highWaterMark: CHUNK });
  }
}

export function decompressor(codec: Codec): Transform {
  switch (codec) {
    case 'zstd':
      return zlib.createZstdDecompress({ chunkSize: CHUNK });
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
