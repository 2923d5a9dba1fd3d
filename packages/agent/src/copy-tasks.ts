/**
 * The per-file work of backups and restores, as plain serialisable tasks: a backup task reads a
 * file (or one chunk of it), hashes the content, validates page checksums, compresses, hashes the
 * stored bytes and writes the object, all in one pass; a restore task fetches, decompresses,
 * verifies and writes; a hash task checksums a file on disk. They run in worker threads
 * (copy-pool.ts), each worker with its own Repository on the same posix root, or on the main
 * thread for drivers that cannot be rebuilt in a worker (S3). Memory stays bounded: 1 MiB
 * buffers, streams, never a whole file.
 */
import { createHash } from 'node:crypto';
import { createWriteStream } from 'node:fs';
import { chmod, open, utimes, type FileHandle } from 'node:fs/promises';
import { PgfleetError } from '@pgfleet/core';
import { BLOCK_BYTES, compressBlock, decompressFrame, hasBlockForm, MAX_FRAME_CONTENT, PosixDriver, scanZstdFrames, type Codec, type Repository } from '@pgfleet/storage';
import { PageChecker, PageChecksumStage, recheckPages } from './page-verify.js';

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
export type TaskResult<T extends CopyTask> = T extends BackupTask ? BackupResult : T extends HashTask ? HashResult : undefined;

let gcHook: (() => void) | undefined;
let allocated = 0;
let calls = 0;
const GC_EVERY_BYTES = 16 << 20;
const GC_EVERY_CALLS = 128;

/** Worker threads install a GC here (copy-worker.ts), run every GC_EVERY_BYTES of block output or GC_EVERY_CALLS (de)compressions. */
export function setGcHook(hook: (() => void) | undefined): void {
  gcHook = hook;
}

function allocatedBytes(n: number): void {
  allocated += n;
  calls++;
  if (allocated >= GC_EVERY_BYTES || calls >= GC_EVERY_CALLS) {
    allocated = 0;
    calls = 0;
    gcHook?.();
  }
}

/** Reused I/O buffers (a few tasks run at a time per thread): 1000 small files must not mean 1000 fresh 2 MiB buffers. */
const freeBuffers = new Map<number, Buffer[]>();

function takeBuffer(size: number): Buffer {
  return freeBuffers.get(size)?.pop() ?? Buffer.allocUnsafe(size);
}

function giveBuffer(buf: Buffer): void {
  let list = freeBuffers.get(buf.length);
  if (!list) freeBuffers.set(buf.length, (list = []));
  if (list.length < 4) list.push(buf);
}

const isEnoent = (err: unknown) => (err as NodeJS.ErrnoException)?.code === 'ENOENT';

export async function runCopyTask(repo: Repository, task: CopyTask): Promise<BackupResult | HashResult | undefined> {
  switch (task.kind) {
    case 'backup':
      return backupTask(repo, task);
    case 'restore':
      return restoreTask(repo, task);
    case 'hash':
      return hashTask(task);
  }
}

async function backupTask(repo: Repository, t: BackupTask): Promise<BackupResult> {
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
  if (repo.driver instanceof PosixDriver && hasBlockForm(t.codec)) {
    const checker = t.page ? new PageChecker(t.page.firstBlock, lsn!) : undefined;
    stored = await backupBlocks(repo.driver, t, t.codec, fh, checker);
    suspects = checker?.suspects ?? [];
  } else {
    const stage = t.page ? new PageChecksumStage(t.page.firstBlock, lsn!) : undefined;
    const source = fh.createReadStream({ highWaterMark: BUF, start: t.offset, ...(t.length !== undefined ? { end: t.offset + t.length - 1 } : {}), autoClose: true });
    stored = await repo.writeObject(t.key, source, t.codec, stage ? [stage] : [], { deferDirSync: true, ...(t.level !== undefined ? { level: t.level } : {}) });
    suspects = stage?.suspects ?? [];
  }
  const out: BackupResult = { ...stored };
  if (suspects.length > 0) {
    const bad = await recheckPages(t.src, suspects, t.page!.firstBlock, lsn!, t.offset);
    if (bad.length > 0) out.pageErrors = bad;
  }
  return out;
}

/**
 * The block form (codec.ts): read 1 MiB, hash, check pages, compress it as one frame, hash and
 * append the frame; one reused buffer, everything synchronous on this worker thread except the I/O.
 */
async function backupBlocks(driver: PosixDriver, t: BackupTask, codec: 'zstd' | 'none', fh: FileHandle, checker: PageChecker | undefined) {
  const content = createHash('sha256');
  const stored = createHash('sha256');
  const buf = takeBuffer(BLOCK_BYTES);
  const end = t.length === undefined ? Infinity : t.offset + t.length;
  let pos = t.offset;
  let size = 0;
  let storedSize = 0;
  let writer;
  try {
    writer = await driver.openWriter(t.key);
    for (;;) {
      const want = Math.min(BLOCK_BYTES, end - pos);
      if (want <= 0) break;
      const { bytesRead } = await fh.read(buf, 0, want, pos);
      if (bytesRead === 0) break;
      const data = buf.subarray(0, bytesRead);
      content.update(data);
      checker?.update(data);
      const out = compressBlock(codec, data, t.level);
      if (codec !== 'none') allocatedBytes(out.length);
      stored.update(out);
      storedSize += out.length;
      await writer.write(out); // before the next read reuses buf (codec none writes buf itself)
      pos += bytesRead;
      size += bytesRead;
    }
    if (size === 0 && codec === 'zstd') {
      // An empty file is still a valid zstd object (one empty frame).
      const out = compressBlock(codec, Buffer.alloc(0), t.level);
      stored.update(out);
      storedSize += out.length;
      await writer.write(out);
    }
    await writer.commit({ deferDirSync: true });
  } catch (err) {
    await writer?.abort();
    throw err;
  } finally {
    giveBuffer(buf);
    await fh.close().catch(() => {});
  }
  return { size, sha256: content.digest('hex'), storedSize, storedSha256: stored.digest('hex') };
}

async function restoreTask(repo: Repository, t: RestoreTask): Promise<undefined> {
  if (repo.driver instanceof PosixDriver && hasBlockForm(t.codec) && (await restoreBlocks(repo.driver, t, t.codec))) return undefined;
  const dest =
    t.offset === undefined
      ? createWriteStream(t.dest, { mode: t.mode, highWaterMark: BUF })
      : createWriteStream(t.dest, { flags: 'r+', start: t.offset, highWaterMark: BUF });
  await repo.readObject(t.key, t.codec, { sha256: t.sha256, size: t.size }, dest);
  if (t.chmod) await chmod(t.dest, t.mode); // mode applies only when the file is created
  if (t.mtimeMs !== undefined) await utimes(t.dest, new Date(t.mtimeMs), new Date(t.mtimeMs));
  return undefined;
}

/** Holds at least one whole frame of MAX_FRAME_CONTENT incompressible bytes plus a read. */
const WINDOW = MAX_FRAME_CONTENT + BLOCK_BYTES + (64 << 10);

function checksumMismatch(key: string, expected: string, got: string, bytes: number): PgfleetError {
  return new PgfleetError('RepoChecksumMismatch', `repository file ${key} does not match its checksum (expected sha256 ${expected}, got ${got}, ${bytes} bytes)`);
}

/**
 * Restores an object in block form: whole frames are decompressed synchronously and written at
 * their position. Returns false, having written nothing, when the object is one long streamed
 * frame (written by an older agent): the caller then decodes it as a stream.
 */
async function restoreBlocks(driver: PosixDriver, t: RestoreTask, codec: 'zstd' | 'none'): Promise<boolean> {
  let src;
  try {
    src = await open(driver.filePath(t.key), 'r');
  } catch (err) {
    if (isEnoent(err)) throw new PgfleetError('RepoFileMissing', `repository file ${t.key} is missing from ${driver.root}`, { cause: err });
    throw err;
  }
  let dest: FileHandle | undefined;
  const win = takeBuffer(WINDOW);
  try {
    let fill = 0;
    let start = 0;
    let srcPos = 0;
    let eof = false;
    const readMore = async () => {
      const { bytesRead } = await src.read(win, fill, Math.min(BLOCK_BYTES, WINDOW - fill), srcPos);
      if (bytesRead === 0) eof = true;
      fill += bytesRead;
      srcPos += bytesRead;
    };
    await readMore();
    if (codec === 'zstd' && fill > 0 && scanZstdFrames(win.subarray(0, fill), MAX_FRAME_CONTENT, 1) === undefined) return false;
    dest = t.offset === undefined ? await open(t.dest, 'w', t.mode) : await open(t.dest, 'r+');
    const hash = createHash('sha256');
    let written = 0;
    const base = t.offset ?? 0;
    for (;;) {
      let out: Buffer | undefined;
      let used = 0;
      const avail = win.subarray(start, fill);
      if (codec === 'none') {
        out = avail;
        used = avail.length;
      } else {
        const scan = scanZstdFrames(avail, MAX_FRAME_CONTENT, 1);
        if (scan === undefined) throw new PgfleetError('RepoChecksumMismatch', `repository file ${t.key} cannot be decoded: not a sequence of zstd frames`);
        if (scan.length > 0) {
          try {
            out = decompressFrame(avail.subarray(0, scan.length), scan.contentSize);
            allocatedBytes(out.length);
          } catch (err) {
            throw new PgfleetError('RepoChecksumMismatch', `repository file ${t.key} cannot be decoded: ${(err as Error).message}`, { cause: err });
          }
          used = scan.length;
        }
      }
      if (out && out.length > 0) {
        if (written + out.length > t.size) throw checksumMismatch(t.key, t.sha256, hash.digest('hex'), written + out.length);
        hash.update(out);
        let done = 0;
        while (done < out.length) done += (await dest.write(out, done, out.length - done, base + written + done)).bytesWritten;
        written += out.length;
      }
      start += used;
      if (used > 0) continue;
      // No complete frame left in the window: read more, or stop at the end of the object.
      if (eof) {
        if (fill > start) throw new PgfleetError('RepoChecksumMismatch', `repository file ${t.key} cannot be decoded: it ends inside a frame`);
        break;
      }
      if (start > 0) {
        win.copyWithin(0, start, fill);
        fill -= start;
        start = 0;
      }
      if (fill === WINDOW) throw new PgfleetError('RepoChecksumMismatch', `repository file ${t.key} cannot be decoded: a frame larger than ${WINDOW} bytes`);
      await readMore();
    }
    const got = hash.digest('hex');
    if (got !== t.sha256 || written !== t.size) throw checksumMismatch(t.key, t.sha256, got, written);
    if (t.chmod) await dest.chmod(t.mode); // mode applies only when the file is created
    if (t.mtimeMs !== undefined) await dest.utimes(new Date(t.mtimeMs), new Date(t.mtimeMs));
    return true;
  } finally {
    giveBuffer(win);
    await src.close().catch(() => {});
    await dest?.close().catch(() => {});
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
