/**
 * The per-file work of backups and restores, as plain serialisable tasks: a backup task stores a
 * file (or one chunk of it), its page checksums validated in the same pass; a restore task
 * restores an object into a file; a hash task checksums a file on disk. Bytes, hashes and codecs
 * are the object I/O layer's (storage object-io.ts, Repository.objects); a task adds what is
 * PostgreSQL's (page checksums). They run on the main thread and on worker threads (copy/pool.ts),
 * each worker with the Repository it opened from the main thread's spec. Memory stays bounded: a
 * few reused 1-4 MiB buffers per task, never a whole file.
 */
import { createHash } from 'node:crypto';
import { open } from 'node:fs/promises';
// Light entries only: worker threads load this module, and every MiB of code is RSS per thread.
import { PgfleetError } from '@pgfleet/core/errors';
import type { Codec, Repository } from '@pgfleet/storage';
import type { RepositorySpec } from '@pgfleet/storage/repository-url';
import { giveBuffer, takeBuffer } from '@pgfleet/storage/object-io';
import { PageChecker, recheckPages } from '../pgdata/page-verify.js';

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
  /** Whole file: created new (O_EXCL); the restore removed whatever was at its name (restore/confined-path.ts). */
  exclusive?: boolean;
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

/** What a copy worker thread is started with: the repository as specs, which it opens itself (copy/worker.ts). */
export interface CopyWorkerData {
  specs: RepositorySpec[];
  /** Key-encryption keys of the encrypted clusters the parent opened (Repository.threadKeys). */
  keys: Record<string, Uint8Array>;
}
export type TaskResult<T extends CopyTask> = T extends BackupTask
  ? BackupResult
  : T extends HashTask
    ? HashResult
    : undefined;

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
  const lsn = t.page ? { hi: t.page.hi, lo: t.page.lo } : undefined;
  const checker = t.page ? new PageChecker(t.page.firstBlock, lsn!) : undefined;
  const stored = await repo.objects.storeFile(
    t.key,
    { path: t.src, offset: t.offset, ...(t.length !== undefined ? { length: t.length } : {}) },
    t.codec,
    {
      deferDirSync: true,
      ...(t.level !== undefined ? { level: t.level } : {}),
      ...(checker ? { inspect: (content: Buffer) => checker.update(content) } : {}),
    },
  );
  if (!stored) return { missing: true, size: 0, sha256: '', storedSize: 0, storedSha256: '' };
  const out: BackupResult = { ...stored };
  const suspects = checker?.suspects ?? [];
  if (suspects.length > 0) {
    const bad = await recheckPages(t.src, suspects, t.page!.firstBlock, lsn!, t.offset);
    if (bad.length > 0) out.pageErrors = bad;
  }
  return out;
}

async function restoreTask(repo: Repository, t: RestoreTask): Promise<undefined> {
  await repo.objects.restoreFile(
    t.key,
    t.codec,
    { sha256: t.sha256, size: t.size },
    {
      path: t.dest,
      mode: t.mode,
      ...(t.offset !== undefined ? { offset: t.offset } : {}),
      ...(t.chmod ? { chmod: true } : {}),
      ...(t.mtimeMs !== undefined ? { mtimeMs: t.mtimeMs } : {}),
      ...(t.exclusive ? { exclusive: true } : {}),
    },
  );
  return undefined;
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
