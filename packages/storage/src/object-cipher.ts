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
 * and a dropped last frame all fail authentication. Writers always end with an empty last frame,
 * so a truncation at a frame boundary is seen too.
 *
 * Light module (node:crypto and core's errors entry): copy worker threads load it.
 */
import { createCipheriv, createDecipheriv, hkdfSync, randomBytes } from 'node:crypto';
import { Transform, type TransformCallback } from 'node:stream';
import { PgfleetError } from '@pgfleet/core/errors';

const MAGIC = Buffer.from('PGFE', 'latin1');
const VERSION = 1;
export const DATA_KEY_ID_BYTES = 8;
const SALT_BYTES = 16;
export const HEADER_BYTES = MAGIC.length + 1 + DATA_KEY_ID_BYTES + SALT_BYTES;
const FRAME_HEAD = 5;
const TAG_BYTES = 16;
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

function objectKeyMaterial(dataKey: Buffer, salt: Buffer, objectKey: string): Buffer {
  return Buffer.from(hkdfSync('sha256', dataKey, salt, `pgfleet object ${objectKey}`, 32));
}

function nonce(index: number): Buffer {
  const n = Buffer.alloc(12);
  n.writeUIntBE(index, 6, 6);
  return n;
}

function frameAad(header: Buffer, objectKey: Buffer, index: number, length: number, flags: number): Buffer {
  const tail = Buffer.alloc(8 + 4 + 1);
  tail.writeUIntBE(index, 2, 6);
  tail.writeUInt32BE(length, 8);
  tail[12] = flags;
  return Buffer.concat([header, objectKey, tail]);
}

/** The id of a data key is part of every object's header: readers find its key object by it. */
export interface DataKey {
  id: string;
  key: Buffer;
}

/** Seals one object's content, frame by frame; `finish` gives the closing last frame. */
export class FrameSealer {
  private readonly header: Buffer;
  private readonly aesKey: Buffer;
  private readonly keyBytes: Buffer;
  private index = 0;
  private headerDue = true;

  constructor(dataKey: DataKey, objectKey: string) {
    const salt = randomBytes(SALT_BYTES);
    this.header = Buffer.concat([MAGIC, Buffer.from([VERSION]), Buffer.from(dataKey.id, 'hex'), salt]);
    this.aesKey = objectKeyMaterial(dataKey.key, salt, objectKey);
    this.keyBytes = Buffer.from(objectKey, 'utf8');
  }

  /** The stored bytes of one frame of content (the object's header before the first). */
  seal(content: Uint8Array): Buffer {
    return this.frame(content, 0);
  }

  finish(): Buffer {
    return this.frame(new Uint8Array(0), LAST);
  }

  private frame(content: Uint8Array, flags: number): Buffer {
    const head = Buffer.alloc(FRAME_HEAD);
    head.writeUInt32BE(content.length, 0);
    head[4] = flags;
    const cipher = createCipheriv('aes-256-gcm', this.aesKey, nonce(this.index));
    cipher.setAAD(frameAad(this.header, this.keyBytes, this.index, content.length, flags));
    const body = content.length > 0 ? cipher.update(content) : Buffer.alloc(0);
    cipher.final();
    this.index++;
    const parts: Buffer[] = [head, body, cipher.getAuthTag()];
    if (this.headerDue) {
      parts.unshift(this.header);
      this.headerDue = false;
    }
    return Buffer.concat(parts);
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

/**
 * Opens one object's frames (after its header), incrementally: `push` takes stored bytes as they
 * come and returns the content of every frame completed and authenticated; `end` fails unless
 * the last frame was seen, and anything after the last frame is refused.
 */
export class FrameOpener {
  private readonly header: Buffer;
  private readonly aesKey: Buffer;
  private readonly keyBytes: Buffer;
  private index = 0;
  private done = false;
  private pending: Buffer[] = [];
  private pendingBytes = 0;

  /** `ownsInput`: stored bytes pushed stay untouched (streams); otherwise a partial frame is copied out (a reused read buffer). */
  constructor(
    private readonly key: string,
    header: Buffer,
    dataKey: Buffer,
    private readonly ownsInput = true,
  ) {
    const { salt } = parseHeader(key, header);
    this.header = Buffer.from(header.subarray(0, HEADER_BYTES));
    this.aesKey = objectKeyMaterial(dataKey, salt, key);
    this.keyBytes = Buffer.from(key, 'utf8');
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
      if (this.pendingBytes < FRAME_HEAD) {
        if (!this.ownsInput) this.pending = [Buffer.concat(this.pending, this.pendingBytes)];
        return out;
      }
      const head = this.peek(FRAME_HEAD);
      const length = head.readUInt32BE(0);
      const flags = head[4]!;
      if (length > MAX_FRAME_BYTES || (flags & ~LAST) !== 0)
        throw tampered(this.key, `frame ${this.index} has an impossible header`);
      const total = FRAME_HEAD + length + TAG_BYTES;
      if (this.pendingBytes < total) {
        if (!this.ownsInput) this.pending = [Buffer.concat(this.pending, this.pendingBytes)];
        return out;
      }
      const frame = this.take(total);
      out.push(this.open(frame, length, flags));
    }
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

  private open(frame: Buffer, length: number, flags: number): Buffer {
    const decipher = createDecipheriv('aes-256-gcm', this.aesKey, nonce(this.index));
    decipher.setAAD(frameAad(this.header, this.keyBytes, this.index, length, flags));
    decipher.setAuthTag(frame.subarray(FRAME_HEAD + length));
    let content: Buffer;
    try {
      content = length > 0 ? decipher.update(frame.subarray(FRAME_HEAD, FRAME_HEAD + length)) : Buffer.alloc(0);
      decipher.final();
    } catch (err) {
      throw tampered(this.key, `frame ${this.index} fails authentication`, err);
    }
    this.index++;
    if (flags & LAST) this.done = true;
    return content;
  }

  private peek(n: number): Buffer {
    const first = this.pending[0]!;
    return first.length >= n ? first : Buffer.concat(this.pending, n);
  }

  private take(n: number): Buffer {
    let out: Buffer;
    const first = this.pending[0]!;
    if (first.length >= n) {
      out = first.subarray(0, n);
      if (first.length === n) this.pending.shift();
      else this.pending[0] = first.subarray(n);
    } else {
      const all = Buffer.concat(this.pending);
      out = all.subarray(0, n);
      this.pending = all.length > n ? [all.subarray(n)] : [];
    }
    this.pendingBytes -= n;
    return out;
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
    this.gathered.push(chunk);
    this.gatheredBytes += chunk.length;
    while (this.gatheredBytes >= STREAM_FRAME_BYTES) {
      const all = Buffer.concat(this.gathered, this.gatheredBytes);
      this.push(this.sealer.seal(all.subarray(0, STREAM_FRAME_BYTES)));
      const rest = all.subarray(STREAM_FRAME_BYTES);
      this.gathered = rest.length > 0 ? [rest] : [];
      this.gatheredBytes = rest.length;
    }
    cb();
  }

  override _flush(cb: TransformCallback): void {
    if (this.gatheredBytes > 0) this.push(this.sealer.seal(Buffer.concat(this.gathered, this.gatheredBytes)));
    this.push(this.sealer.finish());
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
