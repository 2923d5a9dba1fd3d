/**
 * S3 repository driver. The driver talks to S3 only through `S3Like` (s3-like.ts), a small
 * bucket-scoped interface of the operations it needs; the AWS SDK is bound to it in
 * s3-client.ts, which `createS3Driver` loads with a dynamic import. Importing '@pgfleet/storage'
 * therefore never loads the SDK: `pgfleet-agent wal-push` runs once per WAL segment and its
 * start-up time counts.
 *
 * Atomicity: an S3 object becomes visible only when PutObject or CompleteMultipartUpload
 * succeeds, so a reader sees the whole object or nothing. A failed streamed upload is aborted
 * (AbortMultipartUpload) so no parts are left behind; if even the abort fails, the incomplete
 * upload stays invisible to GET/LIST and a bucket lifecycle rule
 * (AbortIncompleteMultipartUpload) reclaims its space.
 *
 * Retries: the SDK retries every request (standard mode: exponential backoff with full jitter on
 * 5xx, throttling and transient network errors). That is only correct because every request body
 * we hand the SDK is a Buffer it can resend: a stream is cut into parts of `partSizeBytes` and
 * each part is buffered, so at most ~2 parts (the one uploading, the one filling) sit in memory.
 * A GET's response body is a stream the SDK does not retry once headers have arrived; an error
 * while reading it surfaces as RepoIoFailed (the caller restarts the read; the driver does not
 * resume with a ranged GET). getRange is GetObject with a Range header: a reader that needs only
 * some frames of a large object (object-io.ts RangedReader) fetches just those.
 */
import { Readable } from 'node:stream';
import { PgfleetError } from '@pgfleet/core/errors';
import {
  checkKey,
  checkLevelPrefix,
  checkPrefix,
  checkRange,
  type KeyLevel,
  type ObjectInfo,
  type RepositoryDriver,
} from './driver.js';
import type { CreateS3DriverOptions, S3DeleteFailure, S3DriverOptions, S3Like, S3ListPage } from './s3-like.js';

const MiB = 1024 * 1024;
/** S3's floor for every part but the last. */
export const S3_MIN_PART_SIZE = 5 * MiB;
/** S3's ceiling on parts per upload: with the default 8 MiB parts, objects up to ~78 GiB. */
const S3_MAX_PARTS = 10_000;
/** S3's ceiling on keys per DeleteObjects request. */
const S3_DELETE_BATCH = 1000;

function normalizePrefix(prefix: string | undefined): string {
  const p = (prefix ?? '').replace(/^\/+|\/+$/g, '');
  if (p === '') return '';
  try {
    checkKey(p);
  } catch {
    throw new PgfleetError(
      'InvalidConfig',
      `invalid S3 repository prefix '${prefix}': use '/'-separated names without '.', '..' or empty parts`,
    );
  }
  return `${p}/`;
}

/** Reads `body` in parts of exactly `partSize` bytes (the last one shorter, maybe empty). */
async function* parts(body: Readable | Buffer, partSize: number): AsyncGenerator<Buffer> {
  if (Buffer.isBuffer(body)) {
    if (body.length === 0) yield body;
    for (let off = 0; off < body.length; off += partSize) yield body.subarray(off, off + partSize);
    return;
  }
  let chunks: Buffer[] = [];
  let size = 0;
  let yielded = false;
  for await (const c of body) {
    let chunk: Buffer = Buffer.isBuffer(c) ? c : Buffer.from(c as string);
    while (size + chunk.length >= partSize) {
      const take = partSize - size;
      chunks.push(chunk.subarray(0, take));
      chunk = chunk.subarray(take);
      // concat copies: the part owns its memory and the source's chunks can be collected.
      yield Buffer.concat(chunks, partSize);
      yielded = true;
      chunks = [];
      size = 0;
    }
    if (chunk.length > 0) {
      chunks.push(chunk);
      size += chunk.length;
    }
  }
  // The tail; an empty one only for an empty body (S3 needs no empty last part).
  if (size > 0 || !yielded) yield Buffer.concat(chunks, size);
}

export class S3Driver implements RepositoryDriver {
  readonly kind = 's3' as const;
  readonly bucket: string;
  /** '' or 'some/prefix/' */
  readonly prefix: string;
  readonly partSizeBytes: number;
  readonly listPageSize: number;

  constructor(
    private readonly client: S3Like,
    opts: S3DriverOptions,
  ) {
    this.bucket = opts.bucket;
    this.prefix = normalizePrefix(opts.prefix);
    this.partSizeBytes = opts.partSizeBytes ?? 8 * MiB;
    this.listPageSize = opts.listPageSize ?? 1000;
    if (!Number.isInteger(this.partSizeBytes) || this.partSizeBytes < 1) {
      throw new PgfleetError(
        'InvalidConfig',
        `S3 part size must be a positive integer number of bytes, got ${opts.partSizeBytes}`,
      );
    }
    if (!Number.isInteger(this.listPageSize) || this.listPageSize < 1 || this.listPageSize > 1000) {
      throw new PgfleetError('InvalidConfig', `S3 list page size must be between 1 and 1000, got ${opts.listPageSize}`);
    }
  }

  get location(): string {
    return `s3://${this.bucket}${this.prefix ? `/${this.prefix.slice(0, -1)}` : ''}`;
  }

  private objectKey(key: string): string {
    checkKey(key);
    return this.prefix + key;
  }

  private ioError(what: string, key: string, err: unknown): PgfleetError {
    const e = err as { name?: string; message?: string; $metadata?: { httpStatusCode?: number } };
    const status = e.$metadata?.httpStatusCode ? ` (HTTP ${e.$metadata.httpStatusCode})` : '';
    const detail = e.name && e.name !== 'Error' ? `${e.name}: ${e.message}` : (e.message ?? String(err));
    return new PgfleetError('RepoIoFailed', `cannot ${what} s3://${this.bucket}/${key}${status}: ${detail}`, {
      cause: err,
      hint: 'Check the bucket name, endpoint, region and credentials, and that they allow s3:GetObject, s3:PutObject, s3:ListBucket and s3:DeleteObject.',
    });
  }

  async put(key: string, body: Readable | Buffer): Promise<void> {
    const full = this.objectKey(key);
    const abort = new AbortController();
    let uploadId: string | undefined;
    let inFlight: Promise<void> | undefined;
    const uploaded: { partNumber: number; etag: string }[] = [];
    const uploadPart = (data: Buffer): Promise<void> => {
      const partNumber = uploaded.length + 1;
      if (partNumber > S3_MAX_PARTS) {
        // The same RepoIoFailed "cannot write s3://..." the catch below makes of any other failure.
        throw this.ioError(
          'write',
          full,
          new Error(`object needs more than ${S3_MAX_PARTS} parts of ${this.partSizeBytes} bytes; raise the part size`),
        );
      }
      const p = this.client.uploadPart(full, uploadId!, partNumber, data, abort.signal).then((etag) => {
        uploaded.push({ partNumber, etag });
      });
      p.catch(() => {}); // awaited below or in the catch block: never an unhandled rejection
      return p;
    };
    // Iterated by hand, not with for-await: leaving a for-await on error would first destroy
    // `body` without an error, which a pipeline feeding it can take for success. Below, `body`
    // is destroyed with the reason before the generator is closed.
    const source = parts(body, this.partSizeBytes);
    try {
      let pending: Buffer | undefined;
      for (let next = await source.next(); !next.done; next = await source.next()) {
        const part = next.value;
        if (pending !== undefined) {
          // A second part exists, so the body goes up in parts. `pending` uploads while the
          // next part fills; waiting for the previous upload first bounds memory to ~2 parts.
          uploadId ??= await this.client.createMultipartUpload(full);
          await inFlight;
          inFlight = uploadPart(pending);
        }
        pending = part;
      }
      if (uploadId === undefined) {
        await this.client.putObject(full, pending ?? Buffer.alloc(0));
        return;
      }
      await inFlight;
      await uploadPart(pending!);
      await this.client.completeMultipartUpload(full, uploadId, uploaded);
    } catch (err) {
      const error = err instanceof PgfleetError ? err : this.ioError('write', full, err);
      abort.abort();
      await inFlight?.catch(() => {});
      if (uploadId !== undefined) await this.client.abortMultipartUpload(full, uploadId).catch(() => {});
      // Stop the producer with the reason: a pipeline feeding `body` must fail, not wait forever.
      if (!Buffer.isBuffer(body) && !body.destroyed) body.destroy(error);
      await source.return(undefined).catch(() => {});
      throw error;
    }
  }

  get(key: string): Promise<Readable> {
    return this.read(key);
  }

  /** GetObject with a Range; an empty range (which HTTP cannot express) asks only whether the object exists. */
  async getRange(key: string, start: number, end: number): Promise<Readable> {
    checkRange(start, end);
    if (end > start) return this.read(key, { start, end });
    if (!(await this.stat(key)))
      throw new PgfleetError('RepoFileMissing', `repository file ${key} is missing from ${this.location}`);
    return Readable.from([]);
  }

  private async read(key: string, range?: { start: number; end: number }): Promise<Readable> {
    const full = this.objectKey(key);
    let body: Readable | undefined;
    try {
      body = await this.client.getObject(full, range);
    } catch (err) {
      throw this.ioError('read', full, err);
    }
    if (!body) throw new PgfleetError('RepoFileMissing', `repository file ${key} is missing from ${this.location}`);
    // A connection reset mid-body is reported like any other I/O failure. Destroying the
    // returned stream returns the generator, which destroys the HTTP body.
    const source = body;
    const wrapError = (err: unknown) => this.ioError('read', full, err);
    return Readable.from(
      (async function* () {
        try {
          for await (const chunk of source) yield chunk as Buffer;
        } catch (err) {
          throw wrapError(err);
        }
      })(),
      { objectMode: false, highWaterMark: 1 << 20 },
    );
  }

  async stat(key: string): Promise<ObjectInfo | undefined> {
    const full = this.objectKey(key);
    try {
      const head = await this.client.headObject(full);
      return head ? { key, size: head.size } : undefined;
    } catch (err) {
      throw this.ioError('stat', full, err);
    }
  }

  async *list(prefix: string): AsyncIterable<ObjectInfo> {
    const full = this.prefix + prefix;
    let token: string | undefined;
    do {
      let page: S3ListPage;
      try {
        page = await this.client.listObjects(full, this.listPageSize, token);
      } catch (err) {
        throw this.ioError('list', full, err);
      }
      for (const o of page.objects) {
        if (o.key.startsWith(full)) yield { key: o.key.slice(this.prefix.length), size: o.size };
      }
      token = page.nextToken;
    } while (token);
  }

  /** One delimiter listing (Delimiter '/'), page by page. */
  async listLevel(prefix: string): Promise<KeyLevel> {
    checkLevelPrefix(prefix);
    const full = this.prefix + prefix;
    const out: KeyLevel = { objects: [], levels: [] };
    let token: string | undefined;
    do {
      let page: S3ListPage;
      try {
        page = await this.client.listObjects(full, this.listPageSize, token, '/');
      } catch (err) {
        throw this.ioError('list', full, err);
      }
      for (const o of page.objects) {
        const name = o.key.slice(full.length);
        if (o.key.startsWith(full) && name !== '' && !name.includes('/'))
          out.objects.push({ key: o.key.slice(this.prefix.length), size: o.size });
      }
      for (const p of page.prefixes ?? []) {
        const name = p.slice(full.length, -1);
        if (p.startsWith(full) && name !== '' && !name.includes('/')) out.levels.push(name);
      }
      token = page.nextToken;
    } while (token);
    return out;
  }

  async delete(keys: readonly string[]): Promise<void> {
    const full = keys.map((k) => this.objectKey(k));
    for (let i = 0; i < full.length; i += S3_DELETE_BATCH) {
      const batch = full.slice(i, i + S3_DELETE_BATCH);
      let failures: S3DeleteFailure[];
      try {
        failures = await this.client.deleteObjects(batch);
      } catch (err) {
        throw this.ioError('delete', batch[0]!, err);
      }
      const real = failures.filter((f) => f.code !== 'NoSuchKey');
      if (real.length > 0) {
        const f = real[0]!;
        throw new PgfleetError(
          'RepoIoFailed',
          `cannot delete ${real.length} object(s) in s3://${this.bucket}, first s3://${this.bucket}/${f.key}: ${f.code}: ${f.message}`,
        );
      }
    }
  }

  /** An object store keeps nothing but objects: the listed ones go, a page of keys per delete request. */
  async deletePrefix(prefix: string): Promise<void> {
    checkPrefix(prefix);
    let batch: string[] = [];
    for await (const o of this.list(prefix)) {
      batch.push(o.key);
      if (batch.length === S3_DELETE_BATCH) {
        await this.delete(batch);
        batch = [];
      }
    }
    if (batch.length > 0) await this.delete(batch);
  }

  /** Releases the client's sockets; the driver is unusable afterwards. */
  close(): void {
    this.client.destroy();
  }
}

/**
 * Creates an S3 driver bound to the AWS SDK. Async because the SDK is imported only here, on
 * first use, keeping it out of the start-up path of everything that imports '@pgfleet/storage'.
 */
export async function createS3Driver(opts: CreateS3DriverOptions): Promise<S3Driver> {
  if (!opts.bucket) throw new PgfleetError('InvalidConfig', 'an S3 repository needs a bucket name');
  if (opts.partSizeBytes !== undefined && opts.partSizeBytes < S3_MIN_PART_SIZE) {
    throw new PgfleetError(
      'InvalidConfig',
      `S3 part size must be at least ${S3_MIN_PART_SIZE} bytes (5 MiB), got ${opts.partSizeBytes}`,
    );
  }
  if (opts.maxAttempts !== undefined && (!Number.isInteger(opts.maxAttempts) || opts.maxAttempts < 1)) {
    throw new PgfleetError('InvalidConfig', `S3 maxAttempts must be a positive integer, got ${opts.maxAttempts}`);
  }
  if ((opts.accessKeyId === undefined) !== (opts.secretAccessKey === undefined)) {
    throw new PgfleetError('InvalidConfig', 'S3 accessKeyId and secretAccessKey must be given together');
  }
  const { bindS3Client } = await import('./s3-client.js');
  return new S3Driver(bindS3Client(opts), opts);
}
