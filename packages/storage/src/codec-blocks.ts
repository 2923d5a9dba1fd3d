/**
 * Block codecs: compression and decompression driven call by call on the caller's buffers, for
 * the copy tasks of backups and restores (and the lz4 streams). Every stored object of a backup
 * is a sequence of independent frames of at most BLOCK_BYTES of content each (the "block form",
 * docs/repository-format.md), so a thread compresses or decompresses one frame at a time with
 * no stream machinery, straight into buffers it reuses.
 *
 * zstd uses node:zlib's native context through the handle its stream objects wrap
 * (`_handle.writeSync`, the call zlib's own *Sync functions make): one context serves every frame
 * of every object, with no allocation per frame. Measured on 345 MB of table data: decompression
 * at ~2 GB/s per core instead of 0.6-1 GB/s with one zstd(De)compressSync call per frame (each
 * of those creates and frees a native context and allocates its output, which also made the
 * threads spend a third of their time in page faults and garbage collection), and compression
 * 10-30% cheaper. Node's public streaming decoder cannot be used instead: it stops at the end of
 * the first frame of a multi-frame object (nodejs/node#64741). Should a future Node drop that
 * handle, the codecs fall back to the one-shot calls (slower, same bytes).
 *
 * lz4 is the LZ4 frame format (what `lz4 -d` reads), one frame per block with its content size in
 * the header. Blocks are compressed by lz4-napi (Rust lz4_flex, prebuilt binaries from npm,
 * ~1 GB/s per core here, asynchronously on the libuv threadpool: its synchronous functions leak
 * their output) and decoded by lz4DecodeBlock below. Its frame functions are not used: they
 * allocate 4 MiB per call and spent 3-10x more time in the kernel than in the work.
 */
import { createRequire } from 'node:module';
import zlib from 'node:zlib';
import { CODEC_LEVELS } from './codec-names.js';
import { freeNow } from './free-now.js';

/** Content bytes per frame of the block form: what a block writer reads and compresses at a time. */
export const BLOCK_BYTES = 1 << 20;

/** Largest frame content the decoders accept from one frame at once (writers here use BLOCK_BYTES). */
export const MAX_FRAME_CONTENT = 2 * BLOCK_BYTES;

/** Codecs with a block form (gzip objects are single streams, decoded by node:zlib). */
export type BlockCodec = 'zstd' | 'lz4' | 'none';

export function hasBlockForm(codec: string): codec is BlockCodec {
  return codec === 'zstd' || codec === 'lz4' || codec === 'none';
}

/**
 * zstd level used when none is given. Measured on pgbench tables and ~3.6x compressible log-like
 * rows (docs/benchmarks.md): level 2 stores slightly less than level 3 on both (2.43% vs 2.56%,
 * 27.6% vs 27.7%) at ~1.5x the speed; level 1 is ~25% cheaper still but ~1.3% larger on real rows.
 */
export const DEFAULT_ZSTD_LEVEL = CODEC_LEVELS.zstd!.default;

export interface BlockEncoder {
  /**
   * The stored bytes of one block (at most MAX_FRAME_CONTENT bytes): a view of the encoder's own
   * buffer, valid until its next call. zstd answers at once; lz4 compresses on the libuv
   * threadpool (and `data` must stay unchanged until it answers).
   */
  encode(data: Uint8Array): Uint8Array | Promise<Uint8Array>;
  close(): void;
}

export interface BlockDecoder {
  /** Starts a new object: forgets whatever a failed or abandoned one left half-decoded. */
  reset(): void;
  /**
   * Decodes from the start of `input` into `out` at `outOffset`; returns the bytes of input used
   * and of output produced. Nothing used and nothing produced: it needs more input, or (when
   * `needsOutput` is set) more room in `out` than is left.
   */
  decode(input: Uint8Array, out: Uint8Array, outOffset: number): { consumed: number; produced: number };
  /** Set by a decode call that stopped because `out` lacked room for the next frame or block. */
  readonly needsOutput: boolean;
  /**
   * Passes over the whole frame at the start of `input` without decoding it, when its content
   * is at most `maxContent` bytes (a reader that needs none of it: a block-incremental restore's
   * superseded blocks): the stored bytes and content bytes passed. Undefined when it cannot (not
   * a whole frame there yet, a frame that does not declare its size, a codec that cannot):
   * decode instead. Only between decode calls that ended at a frame boundary (block form).
   */
  skipFrame?(input: Uint8Array, maxContent: number): { consumed: number; skipped: number } | undefined;
  /**
   * The last decode call ended at a frame boundary (or none was made since reset): the next
   * stored bytes start a frame, which a reader may pass over by other means than skipFrame
   * (object-io.ts, a remote part's frames walked by their headers). False inside a frame and
   * for streamed zstd frames, which are decoded through.
   */
  readonly betweenFrames: boolean;
  /**
   * Every frame decoded since reset() carried a content checksum that the decoder verified
   * (zstd frames written with one); false for codecs without (lz4 as pgfleet writes it, none).
   */
  readonly contentChecked: boolean;
  close(): void;
}

export function blockEncoder(codec: BlockCodec, level?: number): BlockEncoder {
  if (codec === 'zstd') return zstdEncoder(level ?? DEFAULT_ZSTD_LEVEL);
  if (codec === 'lz4') return lz4Encoder();
  return { encode: (data) => data, close: () => {} };
}

export function blockDecoder(codec: BlockCodec): BlockDecoder {
  if (codec === 'zstd') return new ZstdDecoder();
  if (codec === 'lz4') return new Lz4Decoder();
  return new CopyDecoder();
}

// ---- zstd -------------------------------------------------------------------------------------

/** The native handle of a node:zlib stream (lib/zlib.js drives it the same way in processChunkSync). */
interface NativeHandle {
  writeSync(
    flush: number,
    input: Uint8Array,
    inOff: number,
    inLen: number,
    out: Uint8Array,
    outOff: number,
    outLen: number,
  ): void;
  reset(): void;
  close(): void;
}

/** One native zstd context, called synchronously; undefined from open() when this Node does not expose it. */
class ZstdContext {
  private constructor(
    private readonly stream: zlib.ZstdCompress | zlib.ZstdDecompress,
    private readonly handle: NativeHandle,
    private readonly state: Uint32Array,
  ) {}

  static open(stream: zlib.ZstdCompress | zlib.ZstdDecompress): ZstdContext | undefined {
    const s = stream as unknown as { _handle?: Partial<NativeHandle>; _writeState?: unknown };
    if (
      typeof s._handle?.writeSync !== 'function' ||
      typeof s._handle.reset !== 'function' ||
      !(s._writeState instanceof Uint32Array)
    ) {
      stream.destroy();
      return undefined;
    }
    // A native error destroys the stream, which emits 'error' later: nobody else listens.
    stream.on('error', () => {});
    return new ZstdContext(stream, s._handle as NativeHandle, s._writeState);
  }

  /** One call of ZSTD_(de)compressStream(2): returns [input used, output produced]. */
  run(flush: number, input: Uint8Array, out: Uint8Array, outOffset: number): [number, number] {
    if (this.stream.destroyed) throw this.stream.errored ?? new Error('zstd context closed');
    const outLen = out.length - outOffset;
    this.handle.writeSync(flush, input, 0, input.length, out, outOffset, outLen);
    // zlib reports a native error by destroying its stream (synchronously) with the error.
    if (this.stream.destroyed) throw this.stream.errored ?? new Error('zstd failed');
    return [input.length - this.state[1]!, outLen - this.state[0]!];
  }

  reset(): void {
    if (!this.stream.destroyed) this.handle.reset();
  }

  get usable(): boolean {
    return !this.stream.destroyed;
  }

  close(): void {
    this.stream.destroy();
  }
}

const ZSTD_MAGIC = 0xfd2fb528;

/**
 * Every frame carries its content checksum (XXH64, 4 bytes per 1 MiB frame), which zstd's decoder
 * verifies as it decodes: a restore then checks the stored bytes against the manifest (a sixth
 * of the content's bytes) instead of hashing the whole decoded content (ZstdDecoder.contentChecked).
 */
function zstdParams(level: number) {
  const c = zlib.constants;
  return {
    params: {
      [c.ZSTD_c_compressionLevel]: level,
      [c.ZSTD_c_checksumFlag]: 1,
      ...(level === 2 ? { [c.ZSTD_c_minMatch]: ZSTD_LEVEL2_MIN_MATCH } : {}),
    },
  };
}

/**
 * Level 2's shortest match, for frames of every size. zstd's own tables give level 2 a minimum
 * match of 6 bytes for inputs over 256 KiB and 5 below, so the 128 KiB frames of block-mapped
 * relation files (most of a full backup's bytes) and the 16 KiB ones of changed blocks got 5.
 * With 6 they store 0.3% (128 KiB) and 0.6% (16 KiB) fewer bytes on pgbench and log-like rows
 * for the same CPU or a little less (docs/benchmarks.md, "Full backup CPU"); 1 MiB frames are
 * unchanged. Decoders do not depend on it.
 */
const ZSTD_LEVEL2_MIN_MATCH = 6;

/** Whether `head`, an object's first stored bytes, starts a zstd frame that carries its content checksum. */
export function zstdFrameChecksummed(head: Uint8Array): boolean {
  return (
    head.length >= 5 &&
    (head[0]! | (head[1]! << 8) | (head[2]! << 16) | (head[3]! << 24)) >>> 0 === ZSTD_MAGIC &&
    (head[4]! & 4) !== 0
  );
}

function zstdEncoder(level: number): BlockEncoder {
  const ctx = ZstdContext.open(zlib.createZstdCompress(zstdParams(level)));
  if (!ctx) return { encode: (data) => zlib.zstdCompressSync(data, zstdParams(level)), close: () => {} };
  // ZSTD_compressBound plus room for the frame header.
  let out = Buffer.allocUnsafe(BLOCK_BYTES + (BLOCK_BYTES >> 8) + 1024);
  return {
    encode(data: Uint8Array): Uint8Array {
      if (data.length > MAX_FRAME_CONTENT)
        throw new RangeError(`a block holds at most ${MAX_FRAME_CONTENT} bytes, got ${data.length}`);
      const bound = data.length + (data.length >> 8) + 1024;
      if (out.length < bound) out = Buffer.allocUnsafe(bound);
      // ZSTD_e_end with the whole block in one call: exactly one frame, its content size in the header.
      const [used, produced] = ctx.run(zlib.constants.ZSTD_e_end, data, out, 0);
      if (used !== data.length || produced >= out.length) throw new Error('zstd frame larger than its bound');
      return out.subarray(0, produced);
    },
    close: () => ctx.close(),
  };
}

/**
 * Reads both forms a zstd object may have: a sequence of frames that declare their content size
 * (the block form: each is handed over whole, which lets zstd decode it straight into `out`),
 * or one long streamed frame (older agents, WAL), fed through as it comes.
 */
class ZstdDecoder implements BlockDecoder {
  private ctx: ZstdContext | undefined;
  private streamed = false;
  needsOutput = false;
  contentChecked = true;

  private context(): ZstdContext | undefined {
    if (!this.ctx?.usable) this.ctx = ZstdContext.open(zlib.createZstdDecompress());
    return this.ctx;
  }

  /** Block-form frames are decoded whole; a streamed one is fed through from its first bytes on. */
  get betweenFrames(): boolean {
    return !this.streamed;
  }

  reset(): void {
    this.streamed = false;
    this.needsOutput = false;
    this.contentChecked = true;
    this.ctx?.reset();
  }

  skipFrame(input: Uint8Array, maxContent: number): { consumed: number; skipped: number } | undefined {
    if (this.streamed) return undefined;
    // Walks the frame's block headers (3 bytes each), as decode does before it decodes a frame.
    const scan = scanZstdFrames(input, MAX_FRAME_CONTENT, 1);
    if (scan === undefined || scan.length === 0 || scan.contentSize > maxContent) return undefined;
    return { consumed: scan.length, skipped: scan.contentSize };
  }

  decode(input: Uint8Array, out: Uint8Array, outOffset: number): { consumed: number; produced: number } {
    this.needsOutput = false;
    if (!this.streamed) {
      const scan = scanZstdFrames(input, MAX_FRAME_CONTENT, 1);
      if (scan !== undefined) {
        if (scan.length === 0) return { consumed: 0, produced: 0 };
        if (scan.contentSize > out.length - outOffset) {
          this.needsOutput = true;
          return { consumed: 0, produced: 0 };
        }
        const frame = input.subarray(0, scan.length);
        if (!zstdFrameChecksummed(frame)) this.contentChecked = false;
        const ctx = this.context();
        if (!ctx) {
          const d = zlib.zstdDecompressSync(frame, {
            maxOutputLength: Math.max(1, scan.contentSize),
            chunkSize: Math.max(64, scan.contentSize),
          });
          out.set(d, outOffset);
          return { consumed: scan.length, produced: d.length };
        }
        const [used, produced] = ctx.run(0, frame, out, outOffset);
        if (used !== scan.length || produced !== scan.contentSize)
          throw new Error(`zstd frame decoded to ${produced} bytes, its header says ${scan.contentSize}`);
        return { consumed: used, produced };
      }
      this.streamed = true;
      this.contentChecked = false; // a streamed frame is not checked here, whatever its flag
    }
    const ctx = this.context();
    if (!ctx) throw new Error('this Node.js exposes no zstd context to decode a streamed zstd frame block by block');
    if (out.length === outOffset) {
      this.needsOutput = true;
      return { consumed: 0, produced: 0 };
    }
    const [consumed, produced] = ctx.run(0, input, out, outOffset);
    return { consumed, produced };
  }

  close(): void {
    this.ctx?.close();
  }
}

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

// ---- lz4 --------------------------------------------------------------------------------------

interface Lz4Binding {
  /** Async, on the libuv threadpool: lz4-napi 2.10's compressSync and compressFrameSync leak their whole output (~0.5-1 MB per call). */
  compress(data: Uint8Array): Promise<Buffer>;
}

let lz4Binding: Lz4Binding | undefined;

/** lz4-napi, loaded on first use: only lz4 repositories pay for the native module. */
function lz4(): Lz4Binding {
  lz4Binding ??= createRequire(import.meta.url)('lz4-napi') as Lz4Binding;
  return lz4Binding;
}

const LZ4_MAGIC = 0x184d2204;
/** FLG: version 01, independent blocks, content size present. */
const LZ4_FLG = 0x68;
const LZ4_HEADER = 15;
const LZ4_UNCOMPRESSED = 0x80000000;

/** BD byte and block maximum for `size` content bytes (64 KiB, 256 KiB, 1 MiB or 4 MiB). */
function lz4BlockMax(code: number): number {
  return 1 << (8 + 2 * code);
}

/** The 4-7 code of the smallest LZ4 block maximum that holds `size` bytes. */
function lz4BlockCode(size: number): number {
  for (let code = 4; code < 7; code++) if (size <= lz4BlockMax(code)) return code;
  return 7;
}

/** One block as one LZ4 frame, in a buffer of its own (compressed on the libuv threadpool). */
export async function lz4Frame(data: Uint8Array): Promise<Buffer> {
  const packed = await lz4Pack(data);
  const frame = lz4FrameOf(data, packed, Buffer.allocUnsafe(lz4FrameBytes(data, packed)));
  if (packed) freeNow(packed); // Rust's memory, V8 does not count it towards its heap
  return frame;
}

/**
 * The block encoder of lz4: frames built in one output buffer it keeps (the view it returns is
 * valid until its next call, as BlockEncoder says). A fresh output per 1 MiB frame besides
 * lz4-napi's own made a backup's agent peak at 286-330 MB of RSS (docs/benchmarks.md).
 */
function lz4Encoder(): BlockEncoder {
  let out = Buffer.allocUnsafe(0);
  return {
    async encode(data: Uint8Array): Promise<Uint8Array> {
      const packed = await lz4Pack(data);
      const bytes = lz4FrameBytes(data, packed);
      if (out.length < bytes) out = Buffer.allocUnsafe(Math.max(bytes, BLOCK_BYTES + (BLOCK_BYTES >> 8) + 64));
      const frame = lz4FrameOf(data, packed, out.subarray(0, bytes));
      if (packed) freeNow(packed); // Rust's memory, V8 does not count it towards its heap
      return frame;
    },
    close: () => {},
  };
}

/** lz4-napi's block of `data` (its content size first, u32 LE), or undefined for an empty block. */
async function lz4Pack(data: Uint8Array): Promise<Buffer | undefined> {
  if (data.length > MAX_FRAME_CONTENT)
    throw new RangeError(`a block holds at most ${MAX_FRAME_CONTENT} bytes, got ${data.length}`);
  return data.length > 0 ? await lz4().compress(data) : undefined;
}

/** Whether the block goes in raw: LZ4 would not make it smaller. */
const lz4Raw = (data: Uint8Array, packed: Buffer | undefined) =>
  packed === undefined || packed.length - 4 >= data.length;

function lz4FrameBytes(data: Uint8Array, packed: Buffer | undefined): number {
  const body = lz4Raw(data, packed) ? data.length : packed!.length - 4;
  return LZ4_HEADER + (data.length > 0 ? 4 + body : 0) + 4;
}

/** Writes the frame of `data` (compressed to `packed`) into `out`, exactly lz4FrameBytes long. */
function lz4FrameOf(data: Uint8Array, packed: Buffer | undefined, out: Buffer): Buffer {
  const raw = lz4Raw(data, packed);
  const body = raw ? data.length : packed!.length - 4;
  out.writeUInt32LE(LZ4_MAGIC, 0);
  out[4] = LZ4_FLG;
  out[5] = lz4BlockCode(data.length) << 4;
  out.writeUInt32LE(data.length, 6);
  out.writeUInt32LE(0, 10);
  out[14] = (xxh32Small(out, 4, 10) >>> 8) & 0xff;
  let pos = LZ4_HEADER;
  if (data.length > 0) {
    out.writeUInt32LE(raw ? (body | LZ4_UNCOMPRESSED) >>> 0 : body, pos);
    pos += 4;
    if (raw) out.set(data, pos);
    else packed!.copy(out, pos, 4);
    pos += body;
  }
  out.writeUInt32LE(0, pos); // EndMark
  return out;
}

/** One block as one zstd frame with its content size, compressed on the libuv threadpool (a context per call). */
export function zstdFrame(data: Uint8Array, level = DEFAULT_ZSTD_LEVEL): Promise<Buffer> {
  // pledgedSrcSize: the frame header then declares its content size (the block form).
  return new Promise((resolve, reject) =>
    zlib.zstdCompress(data, { ...zstdParams(level), pledgedSrcSize: data.length }, (err, out) =>
      err ? reject(err) : resolve(out),
    ),
  );
}

/**
 * Reads LZ4 frames (any block maximum, with or without content size, checksums skipped: the
 * caller verifies sha256 of the content) block by block. Linked blocks and dictionaries are
 * refused: pgfleet never writes them.
 */
class Lz4Decoder implements BlockDecoder {
  readonly contentChecked = false;
  private inFrame = false;
  private blockMax = 0;
  private blockChecksum = false;
  private contentChecksum = false;
  needsOutput = false;

  get betweenFrames(): boolean {
    return !this.inFrame;
  }

  reset(): void {
    this.inFrame = false;
    this.needsOutput = false;
  }

  decode(input: Uint8Array, out: Uint8Array, outOffset: number): { consumed: number; produced: number } {
    this.needsOutput = false;
    const view = new DataView(input.buffer, input.byteOffset, input.byteLength);
    let pos = 0;
    let produced = 0;
    for (;;) {
      if (!this.inFrame) {
        const used = this.readHeader(input, view, pos);
        if (used === 0) break;
        pos += used;
        continue;
      }
      if (pos + 4 > input.length) break;
      const word = view.getUint32(pos, true);
      if (word === 0) {
        // EndMark, then the content checksum when the frame has one.
        const end = pos + 4 + (this.contentChecksum ? 4 : 0);
        if (end > input.length) break;
        pos = end;
        this.inFrame = false;
        // One frame's content per call: a reader that passes over frames (skipFrame) decides
        // about the next one before it is decoded.
        if (produced > 0) break;
        continue;
      }
      const size = word & 0x7fffffff;
      if (size > this.blockMax)
        throw new Error(`lz4 block of ${size} bytes exceeds the frame's block maximum ${this.blockMax}`);
      const end = pos + 4 + size + (this.blockChecksum ? 4 : 0);
      if (end > input.length) break;
      const room = out.length - outOffset - produced;
      if (room < (word & LZ4_UNCOMPRESSED ? size : this.blockMax)) {
        this.needsOutput = produced === 0;
        break;
      }
      if (word & LZ4_UNCOMPRESSED) {
        out.set(input.subarray(pos + 4, pos + 4 + size), outOffset + produced);
        produced += size;
      } else {
        const at = outOffset + produced;
        produced += lz4DecodeBlock(input, pos + 4, pos + 4 + size, out, at, Math.min(out.length, at + this.blockMax));
      }
      pos = end;
    }
    return { consumed: pos, produced };
  }

  /** Walks a whole frame that declares its content size: its header, then the 4-byte block sizes to the EndMark. */
  skipFrame(input: Uint8Array, maxContent: number): { consumed: number; skipped: number } | undefined {
    if (this.inFrame || input.length < LZ4_HEADER) return undefined;
    const view = new DataView(input.buffer, input.byteOffset, input.byteLength);
    if (view.getUint32(0, true) !== LZ4_MAGIC) return undefined; // skippable frames and errors: decode says
    const flg = input[4]!;
    if (!(flg & 0x08) || flg >> 6 !== 1) return undefined;
    if (((xxh32Small(input, 4, LZ4_HEADER - 5) >>> 8) & 0xff) !== input[LZ4_HEADER - 1]) return undefined;
    const content = view.getUint32(6, true) + view.getUint32(10, true) * 2 ** 32;
    if (content > maxContent) return undefined;
    const blockChecksum = (flg & 0x10) !== 0;
    let pos = LZ4_HEADER;
    for (;;) {
      if (pos + 4 > input.length) return undefined;
      const word = view.getUint32(pos, true);
      if (word === 0) {
        const end = pos + 4 + (flg & 0x04 ? 4 : 0);
        return end > input.length ? undefined : { consumed: end, skipped: content };
      }
      pos += 4 + (word & 0x7fffffff) + (blockChecksum ? 4 : 0);
    }
  }

  /** Parses a frame header at `pos`; returns its length, or 0 when it is not all there yet. */
  private readHeader(input: Uint8Array, view: DataView, pos: number): number {
    if (pos + 7 > input.length) return 0;
    const magic = view.getUint32(pos, true);
    if ((magic & 0xfffffff0) === 0x184d2a50) {
      // A skippable frame: its length follows the magic.
      if (pos + 8 > input.length) return 0;
      const len = 8 + view.getUint32(pos + 4, true);
      return pos + len > input.length ? 0 : len;
    }
    if (magic !== LZ4_MAGIC) throw new Error('not an lz4 frame (bad magic number)');
    const flg = input[pos + 4]!;
    if (flg >> 6 !== 1) throw new Error(`unsupported lz4 frame version ${flg >> 6}`);
    if (!(flg & 0x20)) throw new Error('lz4 frames with linked blocks are not supported');
    if (flg & 0x01) throw new Error('lz4 frames with a dictionary are not supported');
    const len = 7 + (flg & 0x08 ? 8 : 0);
    if (pos + len > input.length) return 0;
    // HC: the second byte of XXH32 over the descriptor (FLG through the content size).
    if (((xxh32Small(input, pos + 4, len - 5) >>> 8) & 0xff) !== input[pos + len - 1])
      throw new Error('lz4 frame header checksum mismatch');
    const code = (input[pos + 5]! >> 4) & 7;
    if (code < 4) throw new Error(`invalid lz4 block maximum code ${code}`);
    this.blockMax = lz4BlockMax(code);
    this.blockChecksum = (flg & 0x10) !== 0;
    this.contentChecksum = (flg & 0x04) !== 0;
    this.inFrame = true;
    return len;
  }

  close(): void {}
}

/**
 * Decodes one LZ4 block (src[s..sEnd)) into dst from `d`, never past `dEnd`; returns the bytes
 * written. In JavaScript on purpose: ~1.7 GB/s here, straight into the caller's buffer, where
 * lz4-napi's uncompressSync (~3-5 GB/s) returns a fresh buffer per block that must be copied and
 * that V8 frees late (a restore of 637 MB peaked at 277 MB of RSS with it, 137 MB without).
 */
export function lz4DecodeBlock(
  src: Uint8Array,
  s: number,
  sEnd: number,
  dst: Uint8Array,
  d: number,
  dEnd: number,
): number {
  const d0 = d;
  const bad = () => new Error('corrupt lz4 block');
  while (s < sEnd) {
    const token = src[s++]!;
    let lit = token >>> 4;
    if (lit === 15) {
      let b;
      do {
        if (s >= sEnd) throw bad();
        b = src[s++]!;
        lit += b;
      } while (b === 255);
    }
    if (s + lit > sEnd || d + lit > dEnd) throw bad();
    if (lit < 32) for (let i = 0; i < lit; i++) dst[d + i] = src[s + i]!;
    else dst.set(src.subarray(s, s + lit), d);
    s += lit;
    d += lit;
    if (s === sEnd) break; // the last sequence has literals only
    if (s + 2 > sEnd) throw bad();
    const offset = src[s]! | (src[s + 1]! << 8);
    s += 2;
    let len = token & 15;
    if (len === 15) {
      let b;
      do {
        if (s >= sEnd) throw bad();
        b = src[s++]!;
        len += b;
      } while (b === 255);
    }
    len += 4;
    if (offset === 0 || offset > d - d0 || d + len > dEnd) throw bad();
    let m = d - offset;
    if (offset >= len && len >= 32) {
      dst.copyWithin(d, m, m + len);
      d += len;
    } else {
      // Overlapping (a run): byte by byte, each copied byte may be the source of a later one.
      const end = d + len;
      while (d < end) dst[d++] = dst[m++]!;
    }
  }
  return d - d0;
}

const P1 = 0x9e3779b1 | 0;
const P2 = 0x85ebca77 | 0;
const P3 = 0xc2b2ae3d | 0;
const P4 = 0x27d4eb2f | 0;
const P5 = 0x165667b1 | 0;
const rotl = (x: number, r: number) => (x << r) | (x >>> (32 - r));

/** XXH32 (seed 0) of fewer than 16 bytes: the LZ4 frame descriptor checksum. */
export function xxh32Small(buf: Uint8Array, offset: number, length: number): number {
  if (length >= 16) throw new RangeError('xxh32Small hashes fewer than 16 bytes');
  let h = (P5 + length) | 0;
  let p = offset;
  const end = offset + length;
  for (; p + 4 <= end; p += 4) {
    const v = buf[p]! | (buf[p + 1]! << 8) | (buf[p + 2]! << 16) | (buf[p + 3]! << 24);
    h = Math.imul(rotl((h + Math.imul(v, P3)) | 0, 17), P4);
  }
  for (; p < end; p++) h = Math.imul(rotl((h + Math.imul(buf[p]!, P5)) | 0, 11), P1);
  h ^= h >>> 15;
  h = Math.imul(h, P2);
  h ^= h >>> 13;
  h = Math.imul(h, P3);
  h ^= h >>> 16;
  return h >>> 0;
}

// ---- none -------------------------------------------------------------------------------------

class CopyDecoder implements BlockDecoder {
  readonly contentChecked = false;
  /** No frames: any stored byte starts what follows. */
  readonly betweenFrames = true;
  needsOutput = false;

  reset(): void {
    this.needsOutput = false;
  }

  /** Stored bytes are content bytes: any number of them can be passed over. */
  skipFrame(input: Uint8Array, maxContent: number): { consumed: number; skipped: number } | undefined {
    const n = Math.min(input.length, maxContent);
    return n > 0 ? { consumed: n, skipped: n } : undefined;
  }

  decode(input: Uint8Array, out: Uint8Array, outOffset: number): { consumed: number; produced: number } {
    const n = Math.min(input.length, out.length - outOffset);
    this.needsOutput = n === 0 && input.length > 0;
    out.set(input.subarray(0, n), outOffset);
    return { consumed: n, produced: n };
  }

  close(): void {}
}
