/**
 * The per-file work of backups and restores, as plain serialisable tasks: a backup task reads a
 * file (or one chunk of it), hashes the content, validates page checksums, compresses, hashes the
 * stored bytes and writes the object, all in one pass; a restore task fetches, decompresses,
 * verifies and writes; a hash task checksums a file on disk. They run on the main thread and on
 * worker threads (copy-pool.ts), each worker with its own driver for the same posix root; for
 * drivers that cannot be rebuilt in a worker (S3) all on the main thread. Memory stays bounded:
 * a few reused 1-4 MiB buffers per task, never a whole file.
 */
import { createHash } from 'node:crypto';
import {
  closeSync,
  constants as fsc,
  createWriteStream,
  fchmodSync,
  fsync as fsFsync,
  futimesSync,
  openSync,
  readSync,
  write as fsWrite,
} from 'node:fs';
import { chmod, open, utimes, type FileHandle } from 'node:fs/promises';
import { promisify } from 'node:util';
// Light entries only: worker threads load this module, and every MiB of code is RSS per thread.
import { PgfleetError } from '@pgfleet/core/errors';
import type { Codec, Repository } from '@pgfleet/storage';
import {
  BLOCK_BYTES,
  blockDecoder,
  blockEncoder,
  hasBlockForm,
  MAX_FRAME_CONTENT,
  type BlockCodec,
  type BlockDecoder,
  type BlockEncoder,
} from '@pgfleet/storage/codec-blocks';
import { PosixDriver } from '@pgfleet/storage/posix-driver';
import { PageChecker, PageChecksumStage, recheckPages } from '../pgdata/page-verify.js';

const BUF = 1 << 20;

export interface BackupTask {
  kind: 'backup';
  /** Absolute path of the PGDATA file. */
  src: string;
  key: string;
  codec: Codec;
  level?: number;
  /** Byte range: a chunk of a large file; the last chunk (no `length`) reads to the end of the file. */
  offset: number;
  length?: number;
  /** Relation file in a cluster with data checksums: block number of the page at `offset`, and the backup's start LSN. */
  page?: { firstBlock: number; hi: number; lo: number };
}

export interface BackupResult {
  /** The file was dropped before it could be opened (legal during a backup: WAL replay removes it). */
  missing?: true;
  size: number;
  sha256: string;
  storedSize: number;
  storedSha256: string;
  /** Blocks whose checksum failed twice. */
  pageErrors?: number[];
}

export interface RestoreTask {
  kind: 'restore';
  key: string;
  codec: Codec;
  sha256: string;
  size: number;
  dest: string;
  mode: number;
  /** Chunk of a large file: write at this offset into the existing file (created and sized by the caller). */
  offset?: number;
  /** Whole file: chmod after writing (delta restore over an existing file), and set this mtime. */
  chmod?: boolean;
  mtimeMs?: number;
}

export interface HashTask {
  kind: 'hash';
  path: string;
  /** Hash these byte ranges separately (a chunked manifest entry); absent: the whole file. */
  ranges?: { offset: number; size: number }[];
}

export interface HashResult {
  missing?: true;
  /** Size of the file on disk. */
  size: number;
  /** One digest per range, or one for the whole file. */
  sha256s: string[];
}

export type CopyTask = BackupTask | RestoreTask | HashTask;
export type TaskResult<T extends CopyTask> = T extends BackupTask
  ? BackupResult
  : T extends HashTask
    ? HashResult
    : undefined;

/** Reused I/O buffers (a few tasks run at a time per thread): 1000 small files must not mean 1000 fresh buffers. */
const freeBuffers = new Map<number, Buffer[]>();

function takeBuffer(size: number): Buffer {
  return freeBuffers.get(size)?.pop() ?? Buffer.allocUnsafe(size);
}

function giveBuffer(buf: Buffer): void {
  let list = freeBuffers.get(buf.length);
  if (!list) freeBuffers.set(buf.length, (list = []));
  if (list.length < 4) list.push(buf);
}

/**
 * Codec contexts, reused by the tasks of this thread (one per task in flight: an encoder's output
 * stays valid only until its next call, and tasks interleave at every await).
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

const isEnoent = (err: unknown) => (err as NodeJS.ErrnoException)?.code === 'ENOENT';

/**
 * Where tasks read and write: a Repository (main thread), or a worker thread's posix driver. A
 * worker builds a Repository, whose streams pull in the rest of @pgfleet/storage, only for the
 * one codec without a block form (gzip).
 */
export type TaskTarget = Repository | PosixDriver;

let streamRepository: Repository | undefined;

async function repositoryOf(target: TaskTarget): Promise<Repository> {
  if (!(target instanceof PosixDriver)) return target;
  const { Repository } = await import('@pgfleet/storage');
  if (streamRepository?.driver !== target) streamRepository = new Repository(target);
  return streamRepository;
}

function posixOf(target: TaskTarget): PosixDriver | undefined {
  if (target instanceof PosixDriver) return target;
  return target.driver instanceof PosixDriver ? target.driver : undefined;
}

export async function runCopyTask(target: TaskTarget, task: CopyTask): Promise<BackupResult | HashResult | undefined> {
  switch (task.kind) {
    case 'backup':
      return backupTask(target, task);
    case 'restore':
      return restoreTask(target, task);
    case 'hash':
      return hashTask(task);
  }
}

async function backupTask(target: TaskTarget, t: BackupTask): Promise<BackupResult> {
  let fh;
  try {
    fh = await open(t.src, 'r');
  } catch (err) {
    if (isEnoent(err)) return { missing: true, size: 0, sha256: '', storedSize: 0, storedSha256: '' };
    throw err;
  }
  const lsn = t.page ? { hi: t.page.hi, lo: t.page.lo } : undefined;
  let stored;
  let suspects: number[];
  const driver = posixOf(target);
  if (driver && hasBlockForm(t.codec)) {
    const checker = t.page ? new PageChecker(t.page.firstBlock, lsn!) : undefined;
    const codec = t.codec;
    stored = await withEncoder(codec, t.level, (enc) => backupBlocks(driver, t, codec, enc, fh, checker));
    suspects = checker?.suspects ?? [];
  } else {
    const stage = t.page ? new PageChecksumStage(t.page.firstBlock, lsn!) : undefined;
    const source = fh.createReadStream({
      highWaterMark: BUF,
      start: t.offset,
      ...(t.length !== undefined ? { end: t.offset + t.length - 1 } : {}),
      autoClose: true,
    });
    stored = await (
      await repositoryOf(target)
    ).writeObject(t.key, source, t.codec, stage ? [stage] : [], {
      deferDirSync: true,
      ...(t.level !== undefined ? { level: t.level } : {}),
    });
    suspects = stage?.suspects ?? [];
  }
  const out: BackupResult = { ...stored };
  if (suspects.length > 0) {
    const bad = await recheckPages(t.src, suspects, t.page!.firstBlock, lsn!, t.offset);
    if (bad.length > 0) out.pageErrors = bad;
  }
  return out;
}

/** Room for one stored block (the zstd and lz4 bounds of BLOCK_BYTES plus frame headers). */
const STORED_BLOCK_BYTES = BLOCK_BYTES + (BLOCK_BYTES >> 8) + 1024;

/**
 * The block form (codec-blocks.ts): read 1 MiB, hash, check pages, compress it as one frame, hash
 * and append the frame; everything synchronous on this thread except the I/O, which overlaps it:
 * the next block is read while this one is compressed, and a frame is written while the next is
 * made (two buffers each way, reused).
 */
async function backupBlocks(
  driver: PosixDriver,
  t: BackupTask,
  codec: BlockCodec,
  enc: BlockEncoder,
  fh: FileHandle,
  checker: PageChecker | undefined,
) {
  const content = createHash('sha256');
  const stored = createHash('sha256');
  const inBufs = [takeBuffer(BLOCK_BYTES), takeBuffer(BLOCK_BYTES)] as const;
  // The encoder reuses its output: each frame is copied out for the write behind (codec none writes the read buffer).
  const outBufs = [takeBuffer(STORED_BLOCK_BYTES), takeBuffer(STORED_BLOCK_BYTES)] as const;
  const end = t.length === undefined ? Infinity : t.offset + t.length;
  let pos = t.offset;
  let size = 0;
  let storedSize = 0;
  let writer;
  let pendingWrite: Promise<void> | undefined;
  let i = 0;
  // Synchronous reads: PGDATA is mostly in the page cache, where a read costs less than the thread hand-offs of an async one.
  const readAt = (buf: Buffer, at: number) =>
    Promise.resolve({ bytesRead: end - at > 0 ? readSync(fh.fd, buf, 0, Math.min(BLOCK_BYTES, end - at), at) : 0 });
  const put = async (out: Uint8Array) => {
    stored.update(out);
    storedSize += out.length;
    let data = out;
    if (codec !== 'none') {
      data = outBufs[i]!.subarray(0, out.length);
      data.set(out);
    }
    await pendingWrite; // one write in flight: the object is appended in order
    pendingWrite = writer!.write(data);
  };
  let reading = readAt(inBufs[0], pos);
  try {
    writer = await driver.openWriter(t.key);
    for (;;) {
      const { bytesRead } = await reading;
      if (bytesRead === 0) break;
      const data = inBufs[i]!.subarray(0, bytesRead);
      pos += bytesRead;
      size += bytesRead;
      // Codec none writes the read buffer itself: its write must be done before it is read into again.
      if (codec === 'none') await pendingWrite;
      reading = readAt(inBufs[i ^ 1]!, pos);
      content.update(data);
      checker?.update(data);
      await put(await enc.encode(data));
      i ^= 1;
    }
    // An empty file is still a valid object of its codec (one empty frame).
    if (size === 0 && codec !== 'none') await put(await enc.encode(inBufs[0].subarray(0, 0)));
    await pendingWrite;
    await writer.commit({ deferDirSync: true });
  } catch (err) {
    await reading.catch(() => {});
    await pendingWrite?.catch(() => {});
    await writer?.abort();
    throw err;
  } finally {
    for (const b of [...inBufs, ...outBufs]) giveBuffer(b);
    await fh.close().catch(() => {});
  }
  return { size, sha256: content.digest('hex'), storedSize, storedSha256: stored.digest('hex') };
}

async function restoreTask(target: TaskTarget, t: RestoreTask): Promise<undefined> {
  const driver = posixOf(target);
  if (driver && hasBlockForm(t.codec)) {
    const codec = t.codec;
    await withDecoder(codec, (dec) => restoreBlocks(driver, t, dec));
    return undefined;
  }
  const dest =
    t.offset === undefined
      ? createWriteStream(t.dest, { mode: t.mode, highWaterMark: BUF })
      : createWriteStream(t.dest, { flags: 'r+', start: t.offset, highWaterMark: BUF });
  await (await repositoryOf(target)).readObject(t.key, t.codec, { sha256: t.sha256, size: t.size }, dest);
  if (t.offset === undefined) await syncPath(t.dest);
  if (t.chmod) await chmod(t.dest, t.mode); // mode applies only when the file is created
  if (t.mtimeMs !== undefined) await utimes(t.dest, new Date(t.mtimeMs), new Date(t.mtimeMs));
  return undefined;
}

async function syncPath(path: string): Promise<void> {
  const fh = await open(path, 'r');
  try {
    await fh.sync();
  } finally {
    await fh.close();
  }
}

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
/** Output buffer: decoded frames gather here and go out in writes of up to this size. */
const OUT_BYTES = 4 << 20;
/** This thread's filesystem refused O_DIRECT once: write through the page cache from then on. */
let directRefused = false;

// The WebAssembly global of Node (its types are not in this project's lib).
declare const WebAssembly: { Memory: new (d: { initial: number; maximum: number }) => { buffer: ArrayBuffer } };

/** Page-aligned buffers for O_DIRECT (a Buffer's memory has no alignment guarantee; WebAssembly memory is page-mapped). */
const alignedFree: Buffer[] = [];

function takeAligned(): Buffer {
  return (
    alignedFree.pop() ??
    Buffer.from(new WebAssembly.Memory({ initial: OUT_BYTES >> 16, maximum: OUT_BYTES >> 16 }).buffer)
  );
}

function giveAligned(buf: Buffer): void {
  if (alignedFree.length < 8) alignedFree.push(buf);
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
    private readonly t: RestoreTask,
  ) {}

  static open(t: RestoreTask): DestWriter {
    const base = t.offset === undefined ? fsc.O_WRONLY | fsc.O_CREAT | fsc.O_TRUNC : fsc.O_WRONLY;
    const direct = !directRefused && t.size > 0 && t.size % DIRECT_ALIGN === 0 && (t.offset ?? 0) % DIRECT_ALIGN === 0;
    if (direct) {
      try {
        return new DestWriter(openSync(t.dest, base | fsc.O_DIRECT, t.mode), true, t);
      } catch (err) {
        if ((err as NodeJS.ErrnoException).code !== 'EINVAL') throw err;
        directRefused = true; // tmpfs and some FUSE filesystems
      }
    }
    return new DestWriter(openSync(t.dest, base, t.mode), false, t);
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
        this.fd = openSync(this.t.dest, fsc.O_WRONLY);
      }
    }
  }

  /** Whole files: durable (one fsync per file), with their mode and mtime. Chunks: the caller syncs the file once after all of them. */
  async finish(): Promise<void> {
    if (this.t.offset !== undefined) return;
    await fsyncAsync(this.fd);
    if (this.t.chmod) fchmodSync(this.fd, this.t.mode); // mode applies only when the file is created
    if (this.t.mtimeMs !== undefined) futimesSync(this.fd, new Date(this.t.mtimeMs), new Date(this.t.mtimeMs));
  }

  close(): void {
    closeSync(this.fd);
  }
}

/**
 * Restores an object of a block codec (zstd in either form, lz4, none): frames are decoded
 * synchronously into a page-aligned buffer, hashed, and written at their position while the
 * next frames are decoded into a second buffer.
 */
async function restoreBlocks(driver: PosixDriver, t: RestoreTask, dec: BlockDecoder): Promise<void> {
  let src;
  try {
    src = openSync(driver.filePath(t.key), 'r');
  } catch (err) {
    if (isEnoent(err))
      throw new PgfleetError('RepoFileMissing', `repository file ${t.key} is missing from ${driver.root}`, {
        cause: err,
      });
    throw err;
  }
  const win = takeBuffer(WINDOW);
  const bufs = [takeAligned(), takeAligned()] as const;
  let dest: DestWriter | undefined;
  let pendingWrite: Promise<void> | undefined;
  try {
    dest = DestWriter.open(t);
    const out = dest;
    const hash = createHash('sha256');
    const base = t.offset ?? 0;
    let cur = 0;
    let fill = 0;
    let written = 0;
    // Hands the decoded bytes to the device: whole DIRECT_ALIGN units (the remainder moves to the other buffer), or everything at the end.
    const flush = async (final: boolean) => {
      const buf = bufs[cur]!;
      const n = final ? fill : fill - (fill % DIRECT_ALIGN);
      if (written + n > t.size) throw checksumMismatch(t.key, t.sha256, '(longer than the manifest says)', written + n);
      hash.update(buf.subarray(0, n));
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
    let srcPos = 0;
    let eof = false;
    for (;;) {
      if (OUT_BYTES - fill < BLOCK_BYTES) await flush(false);
      let step;
      try {
        step = dec.decode(win.subarray(start, inFill), bufs[cur]!, fill);
      } catch (err) {
        throw undecodable(t.key, (err as Error).message, err);
      }
      start += step.consumed;
      fill += step.produced;
      if (step.consumed > 0 || step.produced > 0) continue;
      if (dec.needsOutput) {
        if (fill === 0) throw undecodable(t.key, `a frame larger than ${OUT_BYTES} bytes`);
        await flush(false);
        continue;
      }
      if (eof) {
        if (inFill > start) throw undecodable(t.key, 'it ends inside a frame');
        break;
      }
      // No complete frame left in the window: read more.
      if (start > 0) {
        win.copyWithin(0, start, inFill);
        inFill -= start;
        start = 0;
      }
      if (inFill === WINDOW) throw undecodable(t.key, `a frame larger than ${WINDOW} bytes`);
      // Synchronous: the repository is read from the page cache mostly, where a read takes less time than the thread hand-offs of an async one.
      const bytesRead = readSync(src, win, inFill, Math.min(READ_BYTES, WINDOW - inFill), srcPos);
      if (bytesRead === 0) eof = true;
      inFill += bytesRead;
      srcPos += bytesRead;
    }
    if (written + fill !== t.size) {
      hash.update(bufs[cur]!.subarray(0, fill));
      throw checksumMismatch(t.key, t.sha256, hash.digest('hex'), written + fill);
    }
    await flush(true);
    const got = hash.digest('hex');
    // The content is on its way to the file before it is verified: a mismatch fails the restore,
    // which then never writes backup_label or recovery.signal, so nothing half-restored can start.
    if (got !== t.sha256) throw checksumMismatch(t.key, t.sha256, got, written);
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

async function hashTask(t: HashTask): Promise<HashResult> {
  let fh;
  try {
    fh = await open(t.path, 'r');
  } catch (err) {
    if (isEnoent(err)) return { missing: true, size: 0, sha256s: [] };
    throw err;
  }
  try {
    const size = (await fh.stat()).size;
    const ranges = t.ranges ?? [{ offset: 0, size: Infinity }];
    const buf = takeBuffer(BUF);
    const sha256s: string[] = [];
    for (const r of ranges) {
      const h = createHash('sha256');
      let pos = r.offset;
      const end = r.offset + r.size;
      while (pos < end) {
        const { bytesRead } = await fh.read(buf, 0, Math.min(BUF, end - pos), pos);
        if (bytesRead === 0) break;
        h.update(buf.subarray(0, bytesRead));
        pos += bytesRead;
      }
      sha256s.push(h.digest('hex'));
    }
    giveBuffer(buf);
    return { size, sha256s };
  } finally {
    await fh.close();
  }
}

// ---- errors across the thread boundary ------------------------------------------------------

export interface SerialisedError {
  message: string;
  stack?: string;
  errorName?: string;
  code?: string;
}

export function serialiseError(err: unknown): SerialisedError {
  const e = err as Error & { errorName?: string; code?: string };
  return {
    message: e?.message ?? String(err),
    ...(e?.stack ? { stack: e.stack } : {}),
    ...(err instanceof PgfleetError ? { errorName: err.errorName } : {}),
    ...(typeof e?.code === 'string' && !(err instanceof PgfleetError) ? { code: e.code } : {}),
  };
}

export function reviveError(s: SerialisedError): Error {
  if (s.errorName) {
    const err = new PgfleetError(s.errorName as ConstructorParameters<typeof PgfleetError>[0], s.message);
    if (s.stack) err.stack = s.stack;
    return err;
  }
  const err = new Error(s.message) as NodeJS.ErrnoException;
  if (s.code) err.code = s.code;
  if (s.stack) err.stack = s.stack;
  return err;
}
