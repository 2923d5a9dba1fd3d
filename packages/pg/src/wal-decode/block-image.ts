/**
 * Full-page images in WAL records, rebuilt as the 8 KiB page (xlogreader.c, RestoreBlockImage):
 * the image omits the page's "hole" (the free space between line pointers and tuples) and may be
 * compressed (wal_compression = pglz | lz4 | zstd). pglz is PostgreSQL's own format and is
 * expanded here; zstd goes through node:zlib; lz4 images are raw LZ4 blocks (LZ4_compress_default,
 * no frame), expanded by storage's JavaScript block decoder (the one the lz4 repository codec uses,
 * no native module). Every expansion is bounded by the page: a damaged or crafted image gives
 * undefined (an unknown page), never a larger allocation, an over-read or a throw.
 */
import * as zlib from 'node:zlib';
import { lz4DecodeBlock } from '@pgfleet/storage/codec-blocks';
import {
  BKPIMAGE_COMPRESS_LZ4,
  BKPIMAGE_COMPRESS_PGLZ,
  BKPIMAGE_COMPRESS_ZSTD,
  BKPIMAGE_COMPRESSED,
} from './wal-format.js';

export interface BlockImageRef {
  bimgInfo: number;
  holeOffset: number;
  holeLength: number;
  imageOffset: number;
  imageLength: number;
}

/** The page the image `b` (stored in `buf`) stands for, or undefined when its bytes do not make a page. */
export function rebuildBlockImage(buf: Buffer, b: BlockImageRef, blockSize: number): Buffer | undefined {
  const stored = buf.subarray(b.imageOffset, b.imageOffset + b.imageLength);
  const want = blockSize - b.holeLength;
  let raw: Buffer | undefined;
  if ((b.bimgInfo & BKPIMAGE_COMPRESSED) === 0) raw = stored;
  else if (b.bimgInfo & BKPIMAGE_COMPRESS_PGLZ) raw = pglzDecompress(stored, want);
  else if (b.bimgInfo & BKPIMAGE_COMPRESS_ZSTD) {
    try {
      // Capped at the page: a crafted image must not make zstd allocate more than a block.
      raw = zlib.zstdDecompressSync(stored, { maxOutputLength: blockSize });
    } catch {
      raw = undefined;
    }
  } else if (b.bimgInfo & BKPIMAGE_COMPRESS_LZ4) raw = lz4Decompress(stored, want);
  // A compression method this decoder does not know (a later PostgreSQL): raw stays undefined and
  // the page is unknown, so RelationNames and the search go on without it.
  if (raw === undefined || raw.length !== want) return undefined;
  if (b.holeLength === 0) return raw;
  const page = Buffer.alloc(blockSize);
  raw.copy(page, 0, 0, b.holeOffset);
  raw.copy(page, b.holeOffset + b.holeLength, b.holeOffset);
  return page;
}

/** One raw LZ4 block expected to expand to exactly `rawSize` bytes (LZ4_decompress_safe), or undefined. */
export function lz4Decompress(src: Uint8Array, rawSize: number): Buffer | undefined {
  const dst = Buffer.allocUnsafe(rawSize);
  try {
    return lz4DecodeBlock(src, 0, src.length, dst, 0, rawSize) === rawSize ? dst : undefined;
  } catch {
    // lz4DecodeBlock checks every read and write against its bounds and throws on corrupt input.
    return undefined;
  }
}

/**
 * pglz decompression (common/pg_lzcompress.c): a control byte announces 8 items, each a literal
 * byte (bit 0) or a back-reference of 2-3 bytes (bit 1: length 3..273, offset 1..4095).
 * Returns undefined on corrupt input instead of reading or writing out of bounds.
 */
export function pglzDecompress(src: Uint8Array, rawSize: number): Buffer | undefined {
  const dst = Buffer.allocUnsafe(rawSize);
  let sp = 0;
  let dp = 0;
  const srcEnd = src.length;
  while (sp < srcEnd && dp < rawSize) {
    let ctrl = src[sp++]!;
    for (let bit = 0; bit < 8 && sp < srcEnd && dp < rawSize; bit++) {
      if (ctrl & 1) {
        if (sp + 1 >= srcEnd) return undefined;
        let len = (src[sp]! & 0x0f) + 3;
        const off = ((src[sp]! & 0xf0) << 4) | src[sp + 1]!;
        sp += 2;
        if (len === 18) {
          if (sp >= srcEnd) return undefined;
          len += src[sp++]!;
        }
        if (off === 0 || off > dp) return undefined;
        len = Math.min(len, rawSize - dp);
        // Byte by byte: the source may overlap what is being written (run-length repeats).
        for (let i = 0; i < len; i++, dp++) dst[dp] = dst[dp - off]!;
      } else {
        dst[dp++] = src[sp++]!;
      }
      ctrl >>= 1;
    }
  }
  return dp === rawSize ? dst : undefined;
}
