/**
 * The encrypted stored form of one object (docs/repository-format.md, "Encryption"): AES-256-GCM
 * in frames, so objects of any size stream through a bounded buffer and every frame is
 * authenticated before a byte of it is passed on.
 *
 *   header  "PGFE" | version 1 | data key id (8 bytes) | salt (16 bytes)
 *   frame   plaintext length (u32 BE) | flags (1: last) | ciphertext | GCM tag (16)
 *
 * Each object gets its own AES key, HKDF-SHA256(data key, salt, object key): nonces are then the
 * frame index and can never repeat under one AES key (random 96-bit nonces would bound a data key
 * to ~2^32 frames). Every frame's AAD is header | object key | frame index | length | flags, so a
 * frame moved to another position or object, an object copied to another key, a changed header
 * and a dropped last frame all fail authentication. Every object ends with a frame flagged last
 * (the last content frame when the writer knows it is the last, else an empty one), so a
 * truncation at a frame boundary is seen too.
 *
 * Light module (node:crypto and core's errors entry): copy worker threads load it.
 */
import {
  type Cipheriv,
  createCipheriv,
  createDecipheriv,
  createSecretKey,
  type Decipheriv,
  hkdfSync,
  type KeyObject,
  randomFillSync,
} from 'node:crypto';
import { Transform, type TransformCallback } from 'node:stream';
import { PgfleetError } from '@pgfleet/core/errors';
import { freeNow } from './free-now.js';

const MAGIC = Buffer.from('PGFE', 'latin1');
const VERSION = 1;
export const DATA_KEY_ID_BYTES = 8;
const SALT_BYTES = 16;
export const HEADER_BYTES = MAGIC.length + 1 + DATA_KEY_ID_BYTES + SALT_BYTES;
export const FRAME_HEAD = 5;
export const TAG_BYTES = 16;
const LAST = 1;
/** Stream writes gather content into frames of this size (block I/O seals each codec frame as one). */
export const STREAM_FRAME_BYTES = 1 << 20;
/** A reader refuses a frame that claims more (a damaged length must not make it allocate gigabytes). */
const MAX_FRAME_BYTES = 16 << 20;

/** The stored bytes begin with the encrypted form's magic (a cheap check before asking for keys). */
export function isEncryptedForm(head: Uint8Array): boolean {
  return head.length >= MAGIC.length && Buffer.from(head.buffer, head.byteOffset, MAGIC.length).equals(MAGIC);
}

export function tampered(key: string, why: string, cause?: unknown): PgfleetError {
  return new PgfleetError(
    'RepoObjectTampered',
    `encrypted repository object ${key} is damaged, truncated or was altered: ${why}`,
    cause === undefined ? undefined : { cause },
  );
}

/**
 * Data keys as KeyObjects, made once per data key: hkdfSync imports a Buffer key anew on every
 * call, half of its cost, and a backup derives a key per file.
 */
const dataKeyObjects = new WeakMap<Buffer, KeyObject>();

/**
 * The object's AES key, as a KeyObject: createCipheriv/createDecipheriv import a Buffer key anew
 * for every frame (measured ~60 us a call against ~12 us with a KeyObject), and every object
 * has at least one frame, most small ones exactly one.
 */
function objectKeyMaterial(dataKey: Buffer, salt: Buffer, objectKey: string): KeyObject {
  let ikm = dataKeyObjects.get(dataKey);
  if (!ikm) dataKeyObjects.set(dataKey, (ikm = createSecretKey(dataKey)));
  return createSecretKey(Buffer.from(hkdfSync('sha256', ikm, salt, `pgfleet object ${objectKey}`, 32)));
}

/**
 * Salts come from a pool filled 4 KiB at a time: randomBytes(16) per object measured ~20 us,
 * about as much as the rest of an object's key set-up.
 */
const saltPool = Buffer.alloc(SALT_BYTES * 256);
let saltAt = saltPool.length;

function freshSalt(): Buffer {
  if (saltAt === saltPool.length) {
    randomFillSync(saltPool);
    saltAt = 0;
  }
  saltAt += SALT_BYTES;
  return Buffer.from(saltPool.subarray(saltAt - SALT_BYTES, saltAt));
}

/**
 * Cipher input is fed in slices of this size and each slice's output copied to its place: one
 * update over a whole frame returns a fresh frame-sized buffer (fresh pages, then a
 * Buffer.concat to frame it), which measured at half the speed of AES-GCM itself; slices this
 * small come from malloc's reused memory, and each is freed as soon as it is copied (freeNow).
 */
const SLICE_BYTES = 64 << 10;

type FrameCipher = Pick<Cipheriv, 'update'> | Pick<Decipheriv, 'update'>;

/** Runs `parts` through `cipher` into `out` at `at` (GCM: output length = input length); returns where it ends. */
function cryptInto(cipher: FrameCipher, parts: readonly Uint8Array[], out: Buffer, at: number): number {
  for (const part of parts) {
    for (let o = 0; o < part.length; o += SLICE_BYTES) {
      const slice = cipher.update(part.subarray(o, o + SLICE_BYTES));
      at += slice.copy(out, at);
      freeNow(slice); // else 55-70 MB of dead slices per thread until a garbage collection
    }
  }
  return at;
}

function byteLength(parts: readonly Uint8Array[]): number {
  let n = 0;
  for (const p of parts) n += p.length;
  return n;
}

/**
 * A frame's nonce and AAD (header | object key | frame index | length | flags), in buffers
 * reused for every frame of one object (the cipher copies both when it takes them).
 */
class FrameParams {
  readonly nonce = Buffer.alloc(12);
  private readonly aad: Buffer;
  private readonly tail: number;

  constructor(header: Buffer, objectKey: string) {
    const key = Buffer.from(objectKey, 'utf8');
    this.tail = header.length + key.length;
    this.aad = Buffer.alloc(this.tail + 8 + 4 + 1);
    header.copy(this.aad, 0);
    key.copy(this.aad, header.length);
  }

  set(index: number, length: number, flags: number): Buffer {
    this.nonce.writeUIntBE(index, 6, 6);
    this.aad.writeUIntBE(index, this.tail + 2, 6);
    this.aad.writeUInt32BE(length, this.tail + 8);
    this.aad[this.tail + 12] = flags;
    return this.aad;
  }
}

/** The id of a data key is part of every object's header: readers find its key object by it. */
export interface DataKey {
  id: string;
  key: Buffer;
}

/** Stored bytes a frame adds to its content (length and flags before, GCM tag after). */
export const FRAME_OVERHEAD = FRAME_HEAD + TAG_BYTES;

/** Seals one object's content, frame by frame; `finish` gives the closing last frame. */
export class FrameSealer {
  private readonly header: Buffer;
  private readonly aesKey: KeyObject;
  private readonly params: FrameParams;
  private index = 0;
  private headerDue = true;
  private isClosed = false;

  constructor(dataKey: DataKey, objectKey: string) {
    const salt = freshSalt();
    this.header = Buffer.concat([MAGIC, Buffer.from([VERSION]), Buffer.from(dataKey.id, 'hex'), salt]);
    this.aesKey = objectKeyMaterial(dataKey.key, salt, objectKey);
    this.params = new FrameParams(this.header, objectKey);
  }

  /** The stored bytes of the next frame for `contentBytes` of content (the object's header included before the first). */
  sealedBytes(contentBytes: number): number {
    return (this.headerDue ? HEADER_BYTES : 0) + FRAME_OVERHEAD + contentBytes;
  }

  /**
   * Writes the stored bytes of one frame of content (the parts, in order) into `out` at `at`;
   * returns where they end. `last`: nothing follows (saves the empty closing frame, a cipher
   * set-up that is most of the cost of a small object).
   */
  sealInto(content: Uint8Array | readonly Uint8Array[], out: Buffer, at = 0, last = false): number {
    return this.frameInto(content instanceof Uint8Array ? [content] : content, last ? LAST : 0, out, at);
  }

  /** The stored bytes of one frame of content, in a buffer of their own. */
  seal(content: Uint8Array | readonly Uint8Array[], last = false): Buffer {
    const parts = content instanceof Uint8Array ? [content] : content;
    const out = Buffer.allocUnsafe(this.sealedBytes(byteLength(parts)));
    this.frameInto(parts, last ? LAST : 0, out, 0);
    return out;
  }

  /** Whether the last frame is sealed (nothing more may be). */
  get closed(): boolean {
    return this.isClosed;
  }

  /** The empty last frame, for a writer that learns only after its last content frame that it was the last. */
  finish(): Buffer {
    const out = Buffer.allocUnsafe(this.sealedBytes(0));
    this.frameInto([], LAST, out, 0);
    return out;
  }

  private frameInto(parts: readonly Uint8Array[], flags: number, out: Buffer, at: number): number {
    if (this.isClosed) throw new PgfleetError('Internal', 'a frame sealed after the last frame of an object');
    if (flags & LAST) this.isClosed = true;
    const length = byteLength(parts);
    if (this.headerDue) {
      at += this.header.copy(out, at);
      this.headerDue = false;
    }
    at = out.writeUInt32BE(length, at);
    out[at++] = flags;
    const aad = this.params.set(this.index, length, flags);
    const cipher = createCipheriv('aes-256-gcm', this.aesKey, this.params.nonce);
    cipher.setAAD(aad);
    at = cryptInto(cipher, parts, out, at);
    cipher.final();
    this.index++;
    return at + cipher.getAuthTag().copy(out, at);
  }
}

/** What an object's header says: which data key sealed it. */
export function parseHeader(key: string, head: Buffer): { dataKeyId: string; salt: Buffer } {
  if (head.length < HEADER_BYTES) throw tampered(key, `it is shorter than the ${HEADER_BYTES}-byte header`);
  if (!isEncryptedForm(head))
    throw tampered(key, 'it is not in the encrypted form (this cluster is encrypted: a plaintext object was put here)');
  if (head[MAGIC.length] !== VERSION) throw tampered(key, `unknown encrypted-form version ${head[MAGIC.length]}`);
  const idAt = MAGIC.length + 1;
  return {
    dataKeyId: head.subarray(idAt, idAt + DATA_KEY_ID_BYTES).toString('hex'),
    salt: Buffer.from(head.subarray(idAt + DATA_KEY_ID_BYTES, HEADER_BYTES)),
  };
}

/** A frame's length and flags, from the FRAME_HEAD bytes before it. */
export interface FrameHead {
  length: number;
  flags: number;
}

/**
 * Opens one object's frames (after its header), in order. Two ways in: `push` takes stored
 * bytes as they come (streams) and returns the content of every frame completed and
 * authenticated; `frameHead` + `openInto` open one frame a caller has read whole (block I/O).
 * `end` fails unless the last frame was seen, and anything after the last frame is refused.
 */
export class FrameOpener {
  private readonly aesKey: KeyObject;
  private readonly params: FrameParams;
  private index = 0;
  private done = false;
  private pending: Buffer[] = [];
  private pendingBytes = 0;

  constructor(
    private readonly key: string,
    header: Buffer,
    dataKey: Buffer,
  ) {
    const { salt } = parseHeader(key, header);
    this.aesKey = objectKeyMaterial(dataKey, salt, key);
    this.params = new FrameParams(Buffer.from(header.subarray(0, HEADER_BYTES)), key);
  }

  /** Checks the FRAME_HEAD bytes of the next frame (nothing may follow the last one). */
  frameHead(head: Uint8Array): FrameHead {
    if (this.done) throw tampered(this.key, 'bytes follow its last frame');
    const length = Buffer.from(head.buffer, head.byteOffset, FRAME_HEAD).readUInt32BE(0);
    const flags = head[4]!;
    if (length > MAX_FRAME_BYTES || (flags & ~LAST) !== 0)
      throw tampered(this.key, `frame ${this.index} has an impossible header`);
    return { length, flags };
  }

  /**
   * Authenticates the next frame (its ciphertext in `body`, in order, and its tag) and writes
   * its content into `out` at `at`. The content is there before the tag is checked: a caller
   * must use none of it unless this returns.
   */
  openInto(head: FrameHead, body: readonly Uint8Array[], tag: Uint8Array, out: Buffer, at = 0): void {
    const aad = this.params.set(this.index, head.length, head.flags);
    const decipher = createDecipheriv('aes-256-gcm', this.aesKey, this.params.nonce);
    decipher.setAAD(aad);
    decipher.setAuthTag(tag);
    try {
      cryptInto(decipher, body, out, at);
      decipher.final();
    } catch (err) {
      throw tampered(this.key, `frame ${this.index} fails authentication`, err);
    }
    this.index++;
    if (head.flags & LAST) this.done = true;
  }

  push(stored: Uint8Array): Buffer[] {
    if (stored.length > 0) {
      this.pending.push(Buffer.from(stored.buffer, stored.byteOffset, stored.length));
      this.pendingBytes += stored.length;
    }
    const out: Buffer[] = [];
    for (;;) {
      if (this.pendingBytes === 0) return out;
      if (this.done) throw tampered(this.key, 'bytes follow its last frame');
      if (this.pendingBytes < FRAME_HEAD) return out;
      const head = this.frameHead(this.peek(FRAME_HEAD));
      if (this.pendingBytes < FRAME_HEAD + head.length + TAG_BYTES) return out;
      this.take(FRAME_HEAD);
      const body = this.take(head.length);
      const tag = Buffer.concat(this.take(TAG_BYTES), TAG_BYTES);
      const content = Buffer.allocUnsafe(head.length);
      this.openInto(head, body, tag, content);
      out.push(content);
    }
  }

  /** The error for stored bytes that stop short of their frame (or continue past the last one). */
  cut(): PgfleetError {
    return tampered(this.key, this.done ? 'bytes follow its last frame' : `it ends inside frame ${this.index}`);
  }

  end(): void {
    if (!this.done) {
      throw tampered(
        this.key,
        this.pendingBytes > 0
          ? `it ends inside frame ${this.index}`
          : `it ends before its last frame (truncated after frame ${this.index - 1})`,
      );
    }
  }

  private peek(n: number): Buffer {
    const first = this.pending[0]!;
    return first.length >= n ? first : Buffer.concat(this.pending, n);
  }

  /** The next `n` pending bytes as views of the chunks they arrived in (no copy). */
  private take(n: number): Buffer[] {
    const parts: Buffer[] = [];
    this.pendingBytes -= n;
    while (n > 0) {
      const first = this.pending[0]!;
      if (first.length <= n) {
        parts.push(first);
        this.pending.shift();
        n -= first.length;
      } else {
        parts.push(first.subarray(0, n));
        this.pending[0] = first.subarray(n);
        n = 0;
      }
    }
    return parts;
  }
}

/** Streams: content in, sealed frames of STREAM_FRAME_BYTES out. */
export class SealStage extends Transform {
  private readonly sealer: FrameSealer;
  private gathered: Buffer[] = [];
  private gatheredBytes = 0;

  constructor(dataKey: DataKey, objectKey: string) {
    super({ highWaterMark: STREAM_FRAME_BYTES });
    this.sealer = new FrameSealer(dataKey, objectKey);
  }

  override _transform(chunk: Buffer, _enc: BufferEncoding, cb: TransformCallback): void {
    // Frames are sealed from the chunks as they came, never concatenated first.
    let rest = chunk;
    while (this.gatheredBytes + rest.length >= STREAM_FRAME_BYTES) {
      const take = STREAM_FRAME_BYTES - this.gatheredBytes;
      this.gathered.push(rest.subarray(0, take));
      this.push(this.sealer.seal(this.gathered));
      this.gathered = [];
      this.gatheredBytes = 0;
      rest = rest.subarray(take);
    }
    if (rest.length > 0) {
      this.gathered.push(rest);
      this.gatheredBytes += rest.length;
    }
    cb();
  }

  override _flush(cb: TransformCallback): void {
    this.push(this.gatheredBytes > 0 ? this.sealer.seal(this.gathered, true) : this.sealer.finish());
    cb();
  }
}

/** Streams: stored bytes in, authenticated content out; the data key is looked up from the header. */
export class OpenStage extends Transform {
  private opener: FrameOpener | undefined;
  private head: Buffer[] = [];
  private headBytes = 0;

  constructor(
    private readonly key: string,
    private readonly dataKey: (id: string) => Promise<Buffer>,
  ) {
    super({ highWaterMark: STREAM_FRAME_BYTES });
  }

  override _transform(chunk: Buffer, _enc: BufferEncoding, cb: TransformCallback): void {
    if (this.opener) {
      this.emit_(chunk, cb);
      return;
    }
    this.head.push(chunk);
    this.headBytes += chunk.length;
    if (this.headBytes < HEADER_BYTES) {
      cb();
      return;
    }
    const all = Buffer.concat(this.head, this.headBytes);
    this.head = [];
    let id: string;
    try {
      id = parseHeader(this.key, all).dataKeyId;
    } catch (err) {
      cb(err as Error);
      return;
    }
    this.dataKey(id).then(
      (dk) => {
        try {
          this.opener = new FrameOpener(this.key, all, dk);
        } catch (err) {
          cb(err as Error);
          return;
        }
        this.emit_(all.subarray(HEADER_BYTES), cb);
      },
      (err: unknown) => cb(err as Error),
    );
  }

  override _flush(cb: TransformCallback): void {
    if (!this.opener) {
      cb(tampered(this.key, `it is shorter than the ${HEADER_BYTES}-byte header`));
      return;
    }
    try {
      this.opener.end();
      cb();
    } catch (err) {
      cb(err as Error);
    }
  }

  private emit_(stored: Buffer, cb: TransformCallback): void {
    try {
      for (const content of this.opener!.push(stored)) this.push(content);
      cb();
    } catch (err) {
      cb(err as Error);
    }
  }
}
