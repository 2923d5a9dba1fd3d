/**
 * Walks the structure of a stored object without decompressing it: verify's default check of
 * archived WAL (agent verify/verify.ts). A stored object of a block codec is a sequence of frames
 * (codec-blocks.ts, docs/repository-format.md), each declaring its content size in its header;
 * walking the frame and block headers to the end of the object says, for the cost of reading the
 * bytes, whether the object ends exactly at the end of its last frame (a cut object does not,
 * and one with bytes appended does not either) and how much content its frames hold (an object
 * cut at a frame boundary holds less than a segment). No entropy decoding is done: zstd blocks
 * carry 3-byte headers with their sizes, LZ4 blocks 4-byte ones, and the bodies are skipped.
 *
 * - zstd (RFC 8878): frame header (magic, descriptor, window, dictionary id, content size), then
 *   blocks until Last_Block, then the optional 4-byte checksum; skippable frames are skipped.
 *   Each block is at most 128 KiB (Block_Maximum_Size), so a frame's declared content size must
 *   fit its blocks, and raw and RLE blocks (whose sizes are content sizes) must fit the frame.
 * - lz4 (the LZ4 frame format): frame descriptor with its header checksum, blocks until the
 *   EndMark, optional block and content checksums.
 * - gzip has no block form: the object is one deflate stream whose trailer holds the content size
 *   (ISIZE, modulo 2^32); the walk takes that (a cut object's last 4 bytes are arbitrary, so a
 *   cut is seen as a wrong size except with probability 2^-32) and keeps the first bytes.
 * - none: the content size is the stored size.
 *
 * The first frame's stored bytes are kept so the caller can decode that frame alone (the page
 * header of a WAL segment is in it): ObjectIo.walk.
 */
import { readSync } from 'node:fs';
import { MAX_FRAME_CONTENT, xxh32Small } from './codec-blocks.js';
import type { Codec } from './codec-names.js';

/** Why the stored bytes are not a whole object of their codec. */
export class FrameWalkError extends Error {
  constructor(
    /** 'cut': the bytes end inside a frame; 'malformed': a header is not one the codec writes (or bytes follow the last frame). */
    readonly fault: 'cut' | 'malformed',
    message: string,
  ) {
    super(message);
    this.name = 'FrameWalkError';
  }
}

export interface FrameWalk {
  /** Stored bytes walked (after opening, for an encrypted object: the codec's bytes). */
  bytes: number;
  frames: number;
  /** Content bytes the frames declare; undefined when a frame does not declare its size (not the block form). */
  contentBytes: number | undefined;
  /**
   * What the caller decodes for the first content bytes: the first frame's stored bytes (zstd,
   * lz4; undefined when it is larger than a block-form frame can be), the first stored bytes
   * (gzip, none).
   */
  first: Buffer | undefined;
}

export interface FrameWalker {
  /** The next stored bytes; throws FrameWalkError('malformed') at the first header that is not valid. */
  push(chunk: Uint8Array): void;
  /** The object ended: its walk, or FrameWalkError('cut') when it ended inside a frame. */
  end(): FrameWalk;
}

export function frameWalker(codec: Codec): FrameWalker {
  if (codec === 'zstd') return new HeaderWalker(zstdFrames);
  if (codec === 'lz4') return new HeaderWalker(lz4Frames);
  if (codec === 'gzip') return new GzipWalker();
  return new PlainWalker();
}

/** Largest stored first frame kept for decoding: a block-form frame of MAX_FRAME_CONTENT stored raw, with its headers. */
const MAX_FIRST_FRAME = MAX_FRAME_CONTENT + (MAX_FRAME_CONTENT >> 7) + 4096;

/**
 * What a frame parser asks for next: `read` bytes handed to it (a header), or `skip` bytes
 * (a body). `boundary` marks the read that starts a frame: the object may end there.
 */
type Want = { read: number; boundary?: boolean } | { skip: number };

/** What a frame parser reports to its walker. */
interface FrameSink {
  /** Stored bytes consumed so far (for messages). */
  readonly offset: number;
  /** A frame's header is read: the content it declares (undefined: none), before its blocks are walked. */
  header?(contentSize: number | undefined): void;
  frame(contentSize: number | undefined): void;
}

/** A parser of one codec's frames: a generator that yields what it wants and is given the bytes it asked to read. */
type FrameParser = (sink: FrameSink) => Generator<Want, never, Uint8Array>;

const EMPTY = new Uint8Array(0);

const u32 = (b: Uint8Array, at = 0) => (b[at]! | (b[at + 1]! << 8) | (b[at + 2]! << 16) | (b[at + 3]! << 24)) >>> 0;

const malformed = (message: string) => new FrameWalkError('malformed', message);

/** Drives a FrameParser over stored bytes arriving in chunks of any size. */
class HeaderWalker implements FrameWalker, FrameSink {
  private readonly parser: Generator<Want, never, Uint8Array>;
  private want: Want;
  private readonly carry = new Uint8Array(32);
  private have = 0;
  offset = 0;
  private frames = 0;
  private contentBytes: number | undefined = 0;
  /** The stored bytes up to the end of the first frame, while it is kept. */
  private firstParts: Buffer[] | undefined = [];
  private firstBytes = 0;
  private firstEnd: number | undefined;

  constructor(parse: FrameParser) {
    this.parser = parse(this);
    this.want = this.parser.next(EMPTY).value;
  }

  frame(contentSize: number | undefined): void {
    if (this.frames === 0) this.firstEnd = this.offset;
    this.frames++;
    this.contentBytes =
      contentSize === undefined || this.contentBytes === undefined ? undefined : this.contentBytes + contentSize;
  }

  push(chunk: Uint8Array): void {
    if (this.firstParts && this.firstEnd === undefined) {
      this.firstParts.push(Buffer.from(chunk));
      this.firstBytes += chunk.length;
      // Larger than a block-form frame can be: not kept (the caller decodes such an object whole).
      if (this.firstBytes - chunk.length > MAX_FIRST_FRAME) this.firstParts = undefined;
    }
    let pos = 0;
    while (pos < chunk.length) {
      const w = this.want;
      if ('skip' in w) {
        const n = Math.min(w.skip, chunk.length - pos);
        pos += n;
        this.offset += n;
        w.skip -= n;
        if (w.skip === 0) this.advance(EMPTY);
      } else {
        const n = Math.min(w.read - this.have, chunk.length - pos);
        this.carry.set(chunk.subarray(pos, pos + n), this.have);
        this.have += n;
        pos += n;
        this.offset += n;
        if (this.have === w.read) {
          this.have = 0;
          this.advance(this.carry.subarray(0, w.read));
        }
      }
    }
  }

  private advance(given: Uint8Array): void {
    let next = this.parser.next(given).value;
    while ('skip' in next && next.skip === 0) next = this.parser.next(EMPTY).value;
    this.want = next;
  }

  end(): FrameWalk {
    const w = this.want;
    if (!('read' in w && w.boundary && this.have === 0)) throw this.cut();
    let first: Buffer | undefined;
    if (this.firstParts && this.firstEnd !== undefined && this.firstEnd <= MAX_FIRST_FRAME)
      first = Buffer.concat(this.firstParts).subarray(0, this.firstEnd);
    return { bytes: this.offset, frames: this.frames, contentBytes: this.contentBytes, first };
  }

  private cut(): FrameWalkError {
    return new FrameWalkError(
      'cut',
      `it ends inside a frame (after ${this.offset} bytes, ${this.frames} whole frames)`,
    );
  }

  /** The whole walk over a local file, reading only the headers (bodies are skipped by their sizes), then the first frame. */
  walkFile(file: LocalFile): FrameWalk {
    this.firstParts = undefined;
    for (;;) {
      const w = this.want;
      if ('skip' in w) {
        if (this.offset + w.skip > file.size) {
          this.offset = file.size;
          throw this.cut();
        }
        this.offset += w.skip;
        this.advance(EMPTY);
      } else {
        if (w.boundary && this.offset === file.size) break;
        if (this.offset + w.read > file.size) {
          this.offset = file.size;
          throw this.cut();
        }
        const bytes = file.view(this.offset, w.read);
        this.offset += w.read;
        this.advance(bytes);
      }
    }
    const first =
      this.firstEnd !== undefined && this.firstEnd <= MAX_FIRST_FRAME ? file.copy(0, this.firstEnd) : undefined;
    return { bytes: this.offset, frames: this.frames, contentBytes: this.contentBytes, first };
  }
}

/**
 * A local file read positionally through a small window: a walk reads a header every block
 * (at most 128 KiB of zstd content, one LZ4 block) and a page around it is all it needs.
 */
class LocalFile {
  private readonly window = Buffer.alloc(WINDOW_BYTES);
  private windowAt = 0;
  private windowBytes = 0;

  constructor(
    private readonly fd: number,
    readonly size: number,
  ) {}

  /** `n` (at most a window) bytes at `pos`, valid until the next call. */
  view(pos: number, n: number): Uint8Array {
    if (pos < this.windowAt || pos + n > this.windowAt + this.windowBytes) {
      this.windowAt = pos;
      this.windowBytes = this.readInto(this.window, pos, Math.min(WINDOW_BYTES, this.size - pos));
    }
    return this.window.subarray(pos - this.windowAt, pos - this.windowAt + n);
  }

  copy(pos: number, n: number): Buffer {
    const out = Buffer.allocUnsafe(n);
    return out.subarray(0, this.readInto(out, pos, n));
  }

  private readInto(buf: Buffer, pos: number, n: number): number {
    let got = 0;
    while (got < n) {
      const r = readSync(this.fd, buf, got, n - got, pos + got);
      if (r === 0) break;
      got += r;
    }
    return got;
  }
}

const WINDOW_BYTES = 4096;

/**
 * Walks a local file of `size` bytes (open as `fd`) without reading it whole: zstd and lz4 read
 * their headers only (a page around each), gzip its first bytes and trailer, none its first bytes.
 * The same checks and result as a frameWalker fed the whole file.
 */
export function walkLocalFile(codec: Codec, fd: number, size: number): FrameWalk {
  const file = new LocalFile(fd, size);
  if (codec === 'zstd') return new HeaderWalker(zstdFrames).walkFile(file);
  if (codec === 'lz4') return new HeaderWalker(lz4Frames).walkFile(file);
  if (codec === 'gzip')
    return gzipWalk(size, file.copy(0, Math.min(size, GZIP_KEEP)), file.copy(Math.max(0, size - 8), 8));
  return { bytes: size, frames: size > 0 ? 1 : 0, contentBytes: size, first: file.copy(0, Math.min(size, PLAIN_KEEP)) };
}

/**
 * One frame's extent, learnt from its headers alone: `view(offset, n)` gives the `n` stored bytes
 * at `offset` from the frame's start (fewer only where the object ends), asked for in growing
 * offsets, and the frame's bodies are never asked for. Before any block header is asked for,
 * `header` is told the content the frame declares: when it answers false (the frame is not one to
 * pass over) the walk stops there and gives undefined. A reader of a remote object that passes
 * over frames holding no needed block (object-io.ts, RangedReader) walks them with this and
 * fetches only their headers, or nothing of them where the headers are far apart. Throws
 * FrameWalkError for a header its codec never writes or bytes that end inside the frame.
 */
export async function walkFrame(
  codec: 'zstd' | 'lz4',
  view: (offset: number, n: number) => Uint8Array | Promise<Uint8Array>,
  header: (contentSize: number | undefined) => boolean,
): Promise<{ length: number; contentSize: number | undefined } | undefined> {
  // Set by the parser's calls (closures: an object, so the loop below sees them change).
  const seen = { stop: false, done: false, contentSize: undefined as number | undefined, offset: 0 };
  const sink: FrameSink = {
    get offset() {
      return seen.offset;
    },
    header: (contentSize) => {
      if (!header(contentSize)) seen.stop = true;
    },
    frame: (contentSize) => {
      seen.done = true;
      seen.contentSize = contentSize;
    },
  };
  const parser = (codec === 'zstd' ? zstdFrames : lz4Frames)(sink);
  let want = parser.next(EMPTY).value;
  for (;;) {
    if (seen.stop) return undefined;
    if (seen.done) return { length: seen.offset, contentSize: seen.contentSize };
    if ('skip' in want) {
      seen.offset += want.skip;
      want = parser.next(EMPTY).value;
      continue;
    }
    const bytes = await view(seen.offset, want.read);
    if (bytes.length < want.read)
      throw new FrameWalkError('cut', `it ends inside a frame (a header at byte ${seen.offset} is cut)`);
    seen.offset += want.read;
    want = parser.next(bytes).value;
  }
}

/** Skippable frames of zstd and LZ4: magic 0x184D2A5?, then their length. */
const SKIPPABLE_MASK = 0xfffffff0;
const SKIPPABLE_MAGIC = 0x184d2a50;

/** The magic number and offset of the next frame, skippable frames skipped (the object may end before it). */
function* nextFrame(sink: FrameSink): Generator<Want, { magic: number; at: number }, Uint8Array> {
  for (;;) {
    const at = sink.offset;
    const magic = u32(yield { read: 4, boundary: true });
    if ((magic & SKIPPABLE_MASK) !== SKIPPABLE_MAGIC) return { magic, at };
    yield { skip: u32(yield { read: 4 }) };
  }
}

// ---- zstd -------------------------------------------------------------------------------------

const ZSTD_MAGIC = 0xfd2fb528;
const FCS_BYTES = [0, 2, 4, 8];
const DICT_BYTES = [0, 1, 2, 4];
/** Block_Maximum_Size (RFC 8878 3.1.1.2): no block holds more content, nor more stored bytes. */
const ZSTD_BLOCK_MAX = 128 << 10;

function* zstdFrames(sink: FrameSink): Generator<Want, never, Uint8Array> {
  for (;;) {
    const { magic, at } = yield* nextFrame(sink);
    if (magic !== ZSTD_MAGIC) throw malformed(`there is no zstd frame at byte ${at} (magic 0x${magic.toString(16)})`);
    const fhd = (yield { read: 1 })[0]!;
    if (fhd & 0x08) throw malformed(`the zstd frame at byte ${at} sets the reserved descriptor bit`);
    const single = (fhd >> 5) & 1;
    const fcsBytes = fhd >> 6 === 0 ? single : FCS_BYTES[fhd >> 6]!;
    const skipped = (single ? 0 : 1) + DICT_BYTES[fhd & 3]!;
    const header = skipped + fcsBytes > 0 ? yield { read: skipped + fcsBytes } : EMPTY;
    let fcs: number | undefined;
    if (fcsBytes === 1) fcs = header[skipped]!;
    else if (fcsBytes === 2) fcs = (header[skipped]! | (header[skipped + 1]! << 8)) + 256;
    else if (fcsBytes === 4) fcs = u32(header, skipped);
    else if (fcsBytes === 8) fcs = u32(header, skipped) + u32(header, skipped + 4) * 2 ** 32;
    sink.header?.(fcs);
    let blocks = 0;
    let regenerated = 0;
    for (;;) {
      const b = yield { read: 3 };
      const h = b[0]! | (b[1]! << 8) | (b[2]! << 16);
      const type = (h >> 1) & 3;
      const size = h >>> 3;
      if (type === 3) throw malformed(`the zstd frame at byte ${at} has a block of the reserved type`);
      if (size > ZSTD_BLOCK_MAX)
        throw malformed(`the zstd frame at byte ${at} has a block of ${size} bytes (at most ${ZSTD_BLOCK_MAX})`);
      blocks++;
      // Raw: size content bytes stored; RLE: one byte repeated size times; compressed: size stored bytes.
      if (type !== 2) regenerated += size;
      yield { skip: type === 1 ? 1 : size };
      if (h & 1) break;
    }
    if ((fhd >> 2) & 1) yield { skip: 4 };
    if (fcs !== undefined && (regenerated > fcs || blocks * ZSTD_BLOCK_MAX < fcs))
      throw malformed(
        `the zstd frame at byte ${at} declares ${fcs} content bytes, which its ${blocks} blocks cannot hold`,
      );
    sink.frame(fcs);
  }
}

// ---- lz4 --------------------------------------------------------------------------------------

const LZ4_MAGIC = 0x184d2204;
const LZ4_UNCOMPRESSED = 0x80000000;

function* lz4Frames(sink: FrameSink): Generator<Want, never, Uint8Array> {
  for (;;) {
    const { magic, at } = yield* nextFrame(sink);
    if (magic !== LZ4_MAGIC) throw malformed(`there is no lz4 frame at byte ${at} (magic 0x${magic.toString(16)})`);
    // A copy: the walker reuses the bytes it hands over for the next read.
    const fb = Buffer.from(yield { read: 2 });
    const flg = fb[0]!;
    const bd = fb[1]!;
    if (flg >> 6 !== 1 || flg & 0x02 || bd & 0x8f)
      throw malformed(`the lz4 frame at byte ${at} has an invalid descriptor`);
    const code = (bd >> 4) & 7;
    if (code < 4) throw malformed(`the lz4 frame at byte ${at} has an invalid block maximum code ${code}`);
    const sized = (flg & 0x08) !== 0;
    const rest = yield { read: (sized ? 8 : 0) + (flg & 0x01 ? 4 : 0) + 1 };
    const descriptor = Buffer.concat([fb, rest.subarray(0, rest.length - 1)]);
    if (((xxh32Small(descriptor, 0, descriptor.length) >>> 8) & 0xff) !== rest[rest.length - 1])
      throw malformed(`the lz4 frame at byte ${at} fails its header checksum`);
    const contentSize = sized ? u32(rest) + u32(rest, 4) * 2 ** 32 : undefined;
    sink.header?.(contentSize);
    const blockMax = 1 << (8 + 2 * code);
    const blockChecksum = (flg & 0x10) !== 0;
    let raw = 0;
    for (;;) {
      const word = u32(yield { read: 4 });
      if (word === 0) break;
      const size = (word & ~LZ4_UNCOMPRESSED) >>> 0;
      if (size > blockMax)
        throw malformed(`the lz4 frame at byte ${at} has a block of ${size} bytes (its maximum is ${blockMax})`);
      if (word & LZ4_UNCOMPRESSED) raw += size;
      yield { skip: size + (blockChecksum ? 4 : 0) };
    }
    if (flg & 0x04) yield { skip: 4 };
    if (contentSize !== undefined && raw > contentSize)
      throw malformed(`the lz4 frame at byte ${at} declares ${contentSize} content bytes, it stores more`);
    sink.frame(contentSize);
  }
}

// ---- gzip and none ----------------------------------------------------------------------------

/** Stored bytes of a gzip object kept for decoding its first content bytes. */
const GZIP_KEEP = 4 << 10;
const GZIP_MIN = 18; // 10-byte header, an empty deflate block (2 bytes), 8-byte trailer

/** One deflate stream: its first bytes kept, its trailer's ISIZE taken as the content size. */
class GzipWalker implements FrameWalker {
  private readonly head = Buffer.alloc(GZIP_KEEP);
  private readonly tail = Buffer.alloc(8);
  private bytes = 0;

  push(chunk: Uint8Array): void {
    if (this.bytes < GZIP_KEEP) this.head.set(chunk.subarray(0, GZIP_KEEP - this.bytes), this.bytes);
    if (chunk.length >= 8) this.tail.set(chunk.subarray(chunk.length - 8));
    else {
      this.tail.copyWithin(0, chunk.length);
      this.tail.set(chunk, 8 - chunk.length);
    }
    this.bytes += chunk.length;
  }

  end(): FrameWalk {
    return gzipWalk(this.bytes, this.head.subarray(0, Math.min(this.bytes, GZIP_KEEP)), this.tail);
  }
}

/** A gzip object of `bytes` stored bytes, from its first bytes and its last 8 (CRC32, ISIZE). */
function gzipWalk(bytes: number, head: Buffer, tail: Buffer): FrameWalk {
  if (bytes === 0) return { bytes: 0, frames: 0, contentBytes: 0, first: undefined };
  if (bytes < GZIP_MIN) throw new FrameWalkError('cut', `it is ${bytes} bytes, shorter than a gzip header and trailer`);
  if (head[0] !== 0x1f || head[1] !== 0x8b || head[2] !== 8) throw malformed('it does not start with a gzip header');
  return { bytes, frames: 1, contentBytes: u32(tail, 4), first: head };
}

/** Stored bytes of an uncompressed object kept as its first content bytes. */
const PLAIN_KEEP = 4 << 10;

class PlainWalker implements FrameWalker {
  private readonly head = Buffer.alloc(PLAIN_KEEP);
  private bytes = 0;

  push(chunk: Uint8Array): void {
    if (this.bytes < PLAIN_KEEP) this.head.set(chunk.subarray(0, PLAIN_KEEP - this.bytes), this.bytes);
    this.bytes += chunk.length;
  }

  end(): FrameWalk {
    const first = this.head.subarray(0, Math.min(this.bytes, PLAIN_KEEP));
    return { bytes: this.bytes, frames: this.bytes > 0 ? 1 : 0, contentBytes: this.bytes, first };
  }
}
