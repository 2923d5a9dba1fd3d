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
import { readSync } from 'node:fs';
import { open } from 'node:fs/promises';
import { Writable } from 'node:stream';
// Light entries only: worker threads load this module, and every MiB of code is RSS per thread.
import { PgfleetError } from '@pgfleet/core/errors';
import type { AssemblyPart, Codec, Repository } from '@pgfleet/storage';
import type { RepositorySpec } from '@pgfleet/storage/repository-url';
import { giveBuffer, takeBuffer, type ContentSource, type StoredFile } from '@pgfleet/storage/object-io';
import type { BlockImages } from '@pgfleet/storage/object-io';
import {
  BLOCK_CHECKSUM,
  BLOCK_SUM_BYTES,
  blockChanged,
  blockCount,
  DATA_FRAME_BLOCKS,
  DELTA_DEPTH,
  NO_PART,
  xorDelta,
  type DeltaLayer,
  MAPPED_FRAME_BLOCKS,
  MAP_BLOCK_BYTES,
  sumBlock,
  sumBlocks,
  type BlockChecksum,
} from '@pgfleet/storage/block-map';
import { PageChecker, recheckPages } from '../pgdata/page-verify.js';
import { taskPace, type RateLimiter, type SharedRate } from './rate-limit.js';

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
  /** Also return the per-block checksums (BLOCK_CHECKSUM) of what was stored (a relation file's block map, storage block-map.ts). */
  sums?: boolean;
}

/**
 * A block-incremental copy of a relation file (docs/block-incremental.md): the whole file is
 * read, hashed and page-checked as by a backup task, but only the blocks whose checksum differs
 * from the prior map's (or that lie beyond it) are stored, in block order, at `key`.
 */
export interface BackupBlocksTask {
  kind: 'backup-blocks';
  src: string;
  key: string;
  codec: Codec;
  level?: number;
  page?: { firstBlock: number; hi: number; lo: number };
  /** The prior map's checksums and block count. */
  prior: { sums: Uint8Array; blocks: number };
  /** The prior map's checksum: the file's blocks are checksummed the same way (the merged map keeps it). */
  checksum: BlockChecksum;
  /**
   * The prior map's parts and layers (block-map.ts), when changed blocks may be stored as XOR
   * deltas against the versions it rebuilds (docs/block-incremental.md, "XOR deltas"): only for
   * parts of block codecs (ObjectIo.canReadBlocks; on S3 they are read through ranged reads).
   */
  deltas?: {
    parts: AssemblyPart[];
    part: Uint16Array;
    index: Uint32Array;
    layers: DeltaLayer[];
    /** The prior map's file size (only its whole blocks get deltas). */
    size: number;
  };
}

export interface BackupBlocksResult {
  missing?: true;
  /** The file as read: its size and sha256. */
  size: number;
  sha256: string;
  /** Every block's checksum (as read) and the block numbers stored, ascending. */
  sums: Uint8Array;
  changed: Uint32Array;
  /** Per entry of `changed`: 1 when stored as an XOR delta over the prior version (BackupBlocksTask.deltas). */
  delta?: Uint8Array;
  /** Changed blocks whose prior version, rebuilt from the prior map, did not have the prior map's checksum (stored whole). */
  priorMismatches?: number;
  /** The stored object of the changed blocks. */
  data: StoredFile;
  pageErrors?: number[];
  /** Content bytes read from the file that the agent's rate limit admitted (0 without --max-rate). */
  paced: number;
}

/** Writes the blocks of one object a block map names into a file the caller created (restore of a block-incremental file). */
export interface RestoreRunsTask {
  kind: 'restore-runs';
  key: string;
  codec: Codec;
  /** The object's content size and sha256 (from the block map). */
  sha256: string;
  size: number;
  dest: string;
  /** [firstContentBlock, firstFileBlock, count, ...] in content order (block-map.ts writeRuns). */
  runs: Uint32Array;
  fileSize: number;
  /** The runs are a delta layer: XORed onto what the file holds (written by the layers below first). */
  xor?: true;
}

/**
 * Rebuilds a whole block-incremental file in block order from the objects its block map names
 * (storage ObjectIo.assembleBlocks): one task per file, each part checked whole and the file
 * hashed as it is written. Where the repository cannot (objects not local files, or a codec
 * without a block form), the restore uses a restore-runs task per part and a hash task instead.
 */
export interface AssembleBlocksTask {
  kind: 'assemble-blocks';
  dest: string;
  /** The file as the backup read it. */
  size: number;
  sha256: string;
  parts: AssemblyPart[];
  /** Per block of the file: its part and its position (in blocks) in that part's content (storage block-map.ts). */
  part: Uint16Array;
  index: Uint32Array;
  /** The map's XOR delta layers over part/index (block-map.ts), when it has any. */
  deltas?: DeltaLayer[];
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
  /** BackupTask.sums: BLOCK_SUM_BYTES per block of the range stored. */
  sums?: Uint8Array;
  /** Content bytes the agent's rate limit admitted for this task (0 without --max-rate). */
  paced: number;
}

export interface RestoreResult {
  /** Content bytes the agent's rate limit admitted for this task (0 without --max-rate). */
  paced: number;
}

export interface RestoreTask {
  kind: 'restore';
  key: string;
  codec: Codec;
  sha256: string;
  size: number;
  /** The stored bytes' sha256 (manifest): lets a restore check those instead of hashing the content (storage restoreBlocks). */
  storedSha256?: string;
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

/**
 * An object read whole into memory, decompressed and checked against its content checksum: what
 * `wal search` decodes. On a worker thread the read, the decompression and the sha256 leave the
 * main thread to the decoder, and the bytes come back without a copy (their buffer is transferred).
 */
export interface ReadObjectTask {
  kind: 'read-object';
  key: string;
  codec: Codec;
  sha256: string;
  /** The most bytes the content may have (a WAL segment's size): more is an error. */
  maxSize: number;
}

export interface ReadObjectResult {
  /** The content; its buffer holds nothing else (so it can be transferred between threads). */
  bytes: Uint8Array;
}

export type CopyTask =
  BackupTask | BackupBlocksTask | RestoreTask | RestoreRunsTask | AssembleBlocksTask | HashTask | ReadObjectTask;

/** What a copy worker thread is started with: the repository as specs, which it opens itself (copy/worker.ts). */
export interface CopyWorkerData {
  specs: RepositorySpec[];
  /** Key-encryption keys of the encrypted clusters the parent opened (Repository.threadKeys). */
  keys: Record<string, Uint8Array>;
  /** The agent's --max-rate bucket, shared with every thread (copy/rate-limit.ts); absent: no limit. */
  rate?: SharedRate;
}
export type TaskResult<T extends CopyTask> = T extends BackupTask
  ? BackupResult
  : T extends BackupBlocksTask
    ? BackupBlocksResult
    : T extends HashTask
      ? HashResult
      : T extends ReadObjectTask
        ? ReadObjectResult
        : RestoreResult;

const isEnoent = (err: unknown) => (err as NodeJS.ErrnoException)?.code === 'ENOENT';

/** Runs one task; backup and restore tasks go through `limiter` (the agent's --max-rate) when there is one. */
export async function runCopyTask(
  repo: Repository,
  task: CopyTask,
  limiter?: RateLimiter,
): Promise<BackupResult | BackupBlocksResult | HashResult | RestoreResult | ReadObjectResult> {
  switch (task.kind) {
    case 'backup':
      return backupTask(repo, task, limiter);
    case 'backup-blocks':
      return backupBlocksTask(repo, task, limiter);
    case 'restore':
      return restoreTask(repo, task, limiter);
    case 'restore-runs':
      return restoreRunsTask(repo, task, limiter);
    case 'assemble-blocks':
      return assembleBlocksTask(repo, task, limiter);
    case 'hash':
      return hashTask(task);
    case 'read-object':
      return readObjectTask(repo, task);
  }
}

async function readObjectTask(repo: Repository, t: ReadObjectTask): Promise<ReadObjectResult> {
  // Its own ArrayBuffer (not a slice of Node's pool), so the worker can transfer it.
  const buf = new Uint8Array(new ArrayBuffer(t.maxSize));
  let at = 0;
  await repo.readObject(
    t.key,
    t.codec,
    { sha256: t.sha256 },
    new Writable({
      write(chunk: Buffer, _enc, cb) {
        if (at + chunk.length > t.maxSize)
          return cb(new PgfleetError('RepoChecksumMismatch', `${t.key} holds more than ${t.maxSize} bytes`));
        buf.set(chunk, at);
        at += chunk.length;
        cb();
      },
    }),
  );
  return { bytes: at === t.maxSize ? buf : buf.subarray(0, at) };
}

async function backupTask(repo: Repository, t: BackupTask, limiter: RateLimiter | undefined): Promise<BackupResult> {
  const { pace, paced } = taskPace(limiter);
  const lsn = t.page ? { hi: t.page.hi, lo: t.page.lo } : undefined;
  const checker = t.page ? new PageChecker(t.page.firstBlock, lsn!) : undefined;
  const summer = t.sums ? new BlockSummer() : undefined;
  const inspect =
    checker || summer
      ? (content: Buffer) => {
          checker?.update(content);
          summer?.update(content);
        }
      : undefined;
  const stored = await repo.objects.storeFile(
    t.key,
    { path: t.src, offset: t.offset, ...(t.length !== undefined ? { length: t.length } : {}) },
    t.codec,
    {
      deferDirSync: true,
      // A file with a block map: frames small enough for a chain's restore to pass over the
      // ones whose blocks later backups superseded (storage block-map.ts).
      ...(summer ? { frameBytes: MAPPED_FRAME_BLOCKS * MAP_BLOCK_BYTES } : {}),
      ...(t.level !== undefined ? { level: t.level } : {}),
      ...(pace ? { pace } : {}),
      ...(inspect ? { inspect } : {}),
    },
  );
  if (!stored) return { missing: true, size: 0, sha256: '', storedSize: 0, storedSha256: '', paced: paced() };
  const out: BackupResult = { ...stored, paced: paced(), ...(summer ? { sums: summer.finish() } : {}) };
  const suspects = checker?.suspects ?? [];
  if (suspects.length > 0) {
    const bad = await recheckPages(t.src, suspects, t.page!.firstBlock, lsn!, t.offset);
    if (bad.length > 0) out.pageErrors = bad;
  }
  return out;
}

/** Growing typed arrays (a file may grow while it is read: its size is known only at the end). */
class Grow<T extends Uint8Array | Uint32Array> {
  length = 0;
  constructor(private arr: T) {}
  reserve(n: number): T {
    if (this.length + n > this.arr.length) {
      const next = new (this.arr.constructor as new (n: number) => T)(Math.max(this.arr.length * 2, this.length + n));
      next.set(this.arr.subarray(0, this.length));
      this.arr = next;
    }
    return this.arr;
  }
  finish(): T {
    return this.arr.slice(0, this.length) as T;
  }
}

/** Per-block checksums (BLOCK_CHECKSUM) of content seen in order (block-aligned from its start; only the last block may be short). */
class BlockSummer {
  private readonly sums = new Grow(new Uint8Array(BLOCK_SUM_BYTES * 128));
  private readonly carry = Buffer.allocUnsafe(MAP_BLOCK_BYTES);
  private carried = 0;
  private blocks = 0;

  update(content: Buffer): void {
    let at = 0;
    if (this.carried > 0) {
      const n = Math.min(MAP_BLOCK_BYTES - this.carried, content.length);
      content.copy(this.carry, this.carried, 0, n);
      this.carried += n;
      at = n;
      if (this.carried < MAP_BLOCK_BYTES) return;
      this.sum(this.carry);
      this.carried = 0;
    }
    // Every whole block of the chunk in one call (XXH64 hashes a batch in one WebAssembly call).
    const whole = Math.floor((content.length - at) / MAP_BLOCK_BYTES);
    if (whole > 0) {
      const sums = this.sums.reserve(whole * BLOCK_SUM_BYTES);
      sumBlocks(content.subarray(at, at + whole * MAP_BLOCK_BYTES), sums, this.blocks, BLOCK_CHECKSUM);
      this.blocks += whole;
      this.sums.length += whole * BLOCK_SUM_BYTES;
      at += whole * MAP_BLOCK_BYTES;
    }
    this.carried = content.copy(this.carry, 0, at);
  }

  private sum(block: Uint8Array): void {
    const sums = this.sums.reserve(BLOCK_SUM_BYTES);
    sumBlock(block, sums, this.blocks++, BLOCK_CHECKSUM);
    this.sums.length += BLOCK_SUM_BYTES;
  }

  finish(): Uint8Array {
    if (this.carried > 0) this.sum(this.carry.subarray(0, this.carried));
    this.carried = 0;
    return this.sums.finish();
  }
}

/**
 * The changed blocks of a file as a ContentSource: reads the file in 1 MiB steps (hashing the
 * whole content, checksumming its blocks in the prior map's checksum and showing it to
 * `inspect`) and hands out only the blocks blockChanged says must be stored. `pace` meters every
 * byte read, stored or not: --max-rate bounds the I/O on the database host, and the whole file
 * is read.
 */
class ChangedBlocks implements ContentSource {
  readonly content = createHash('sha256');
  size = 0;
  readonly sums = new Grow(new Uint8Array(BLOCK_SUM_BYTES * 128));
  readonly changed = new Grow(new Uint32Array(128));
  private readonly input = takeBuffer(BUF);
  private inPos = 0;
  private inLen = 0;
  private eof = false;
  private block = 0;
  readonly delta = new Grow(new Uint8Array(128));
  priorMismatches = 0;
  private images?: BlockImages;
  private priorOf?: NonNullable<BackupBlocksTask['deltas']>;
  private readonly before = Buffer.allocUnsafeSlow(MAP_BLOCK_BYTES);
  private readonly beforeSum = new Uint8Array(BLOCK_SUM_BYTES);

  constructor(
    private readonly fh: Awaited<ReturnType<typeof open>>,
    private readonly prior: { sums: Uint8Array; blocks: number },
    private readonly checksum: BlockChecksum,
    private readonly inspect?: (content: Buffer) => void,
    private readonly pace?: (bytes: number) => Promise<void>,
  ) {}

  async read(out: Buffer): Promise<number> {
    let fill = 0;
    while (fill + MAP_BLOCK_BYTES <= out.length) {
      if (this.inPos >= this.inLen) {
        if (this.eof || !(await this.refill())) break;
      }
      const n = Math.min(MAP_BLOCK_BYTES, this.inLen - this.inPos);
      const data = this.input.subarray(this.inPos, this.inPos + n);
      // This block's checksum was taken with the others of its read (refill).
      if (blockChanged(this.prior, this.block, this.sums.reserve(0), this.block * BLOCK_SUM_BYTES)) {
        const asDelta = n === MAP_BLOCK_BYTES && (await this.priorVersion(this.block));
        // XOR and worth-it count in one pass; a block not worth a delta is stored whole.
        const isDelta = asDelta && xorDelta(out, fill, this.input, this.inPos, this.before) ? 1 : 0;
        if (!isDelta) data.copy(out, fill);
        if (this.images) this.delta.reserve(1)[this.delta.length++] = isDelta;
        fill += n;
        this.changed.reserve(1)[this.changed.length++] = this.block;
      }
      this.inPos += n;
      this.block++;
    }
    return fill;
  }

  /**
   * Changed blocks become XOR deltas over their prior versions where that is worth it
   * (block-map.ts deltaWorthIt) and the prior version is fewer than DELTA_DEPTH deltas deep.
   */
  withDeltas(images: BlockImages, prior: NonNullable<BackupBlocksTask['deltas']>): void {
    this.images = images;
    this.priorOf = prior;
  }

  /**
   * Block b's bytes as the prior map rebuilds them, into `before`: false when b gets no delta (not
   * a whole block of the prior file, already DELTA_DEPTH deltas deep, or rebuilt bytes that lack
   * the prior map's checksum, which would make every later restore of the block fail).
   */
  private async priorVersion(b: number): Promise<boolean> {
    const p = this.priorOf;
    if (!this.images || !p || (b + 1) * MAP_BLOCK_BYTES > p.size) return false;
    let depth = 0;
    while (depth < p.layers.length && p.layers[depth]!.part[b] !== NO_PART) depth++;
    if (depth >= DELTA_DEPTH) return false;
    await this.images.take(b, MAP_BLOCK_BYTES, this.before, 0);
    sumBlock(this.before, this.beforeSum, 0, this.checksum);
    for (let i = 0; i < BLOCK_SUM_BYTES; i++)
      if (this.beforeSum[i] !== this.prior.sums[b * BLOCK_SUM_BYTES + i]) {
        this.priorMismatches++;
        return false;
      }
    return true;
  }

  /** The next 1 MiB (fewer only at the end of the file, so blocks stay aligned). */
  private async refill(): Promise<boolean> {
    let got = 0;
    // Synchronous reads, as for a whole file (object-io fileRangeSource): PGDATA is mostly in the
    // page cache, where an asynchronous read cost ~5x the CPU of a synchronous one in thread hand-offs.
    while (got < BUF) {
      const bytesRead = readSync(this.fh.fd, this.input, got, BUF - got, this.size + got);
      if (bytesRead === 0) break;
      got += bytesRead;
    }
    if (got < BUF) this.eof = true;
    if (got === 0) return false;
    if (this.pace) await this.pace(got);
    const content = this.input.subarray(0, got);
    this.content.update(content);
    // Every block of the read checksummed in one call; a read is block-aligned (1 MiB, or the file's end).
    const blocks = blockCount(got);
    sumBlocks(content, this.sums.reserve(blocks * BLOCK_SUM_BYTES), this.size / MAP_BLOCK_BYTES, this.checksum);
    this.sums.length += blocks * BLOCK_SUM_BYTES;
    this.inspect?.(content);
    this.size += got;
    this.inPos = 0;
    this.inLen = got;
    return true;
  }

  async close(): Promise<void> {
    giveBuffer(this.input);
    await this.fh.close();
  }
}

async function backupBlocksTask(
  repo: Repository,
  t: BackupBlocksTask,
  limiter: RateLimiter | undefined,
): Promise<BackupBlocksResult> {
  const { pace, paced } = taskPace(limiter);
  let fh;
  try {
    fh = await open(t.src, 'r');
  } catch (err) {
    if (isEnoent(err))
      return {
        missing: true,
        size: 0,
        sha256: '',
        sums: new Uint8Array(0),
        changed: new Uint32Array(0),
        data: { size: 0, sha256: '', storedSize: 0, storedSha256: '' },
        paced: 0,
      };
    throw err;
  }
  const lsn = t.page ? { hi: t.page.hi, lo: t.page.lo } : undefined;
  const checker = t.page ? new PageChecker(t.page.firstBlock, lsn!) : undefined;
  const d = t.deltas;
  const images = d ? repo.objects.blockImages(d.parts, d.part, d.index, d.layers, MAP_BLOCK_BYTES) : undefined;
  const source = new ChangedBlocks(fh, t.prior, t.checksum, checker ? (c) => checker.update(c) : undefined, pace);
  if (d && images) source.withDeltas(images, d);
  let data;
  try {
    data = await repo.objects.storeProduced(t.key, source, t.codec, {
      deferDirSync: true,
      frameBytes: DATA_FRAME_BLOCKS * MAP_BLOCK_BYTES,
      ...(t.level !== undefined ? { level: t.level } : {}),
    });
  } finally {
    images?.close();
  }
  const out: BackupBlocksResult = {
    size: source.size,
    sha256: source.content.digest('hex'),
    sums: source.sums.finish(),
    changed: source.changed.finish(),
    data,
    paced: paced(),
  };
  if (d) {
    out.delta = source.delta.finish();
    if (source.priorMismatches > 0) out.priorMismatches = source.priorMismatches;
  }
  const suspects = checker?.suspects ?? [];
  if (suspects.length > 0) {
    const bad = await recheckPages(t.src, suspects, t.page!.firstBlock, lsn!, 0);
    if (bad.length > 0) out.pageErrors = bad;
  }
  return out;
}

async function restoreTask(repo: Repository, t: RestoreTask, limiter: RateLimiter | undefined): Promise<RestoreResult> {
  const { pace, paced } = taskPace(limiter);
  await repo.objects.restoreFile(
    t.key,
    t.codec,
    { sha256: t.sha256, size: t.size, ...(t.storedSha256 !== undefined ? { storedSha256: t.storedSha256 } : {}) },
    {
      path: t.dest,
      mode: t.mode,
      ...(t.offset !== undefined ? { offset: t.offset } : {}),
      ...(t.chmod ? { chmod: true } : {}),
      ...(t.mtimeMs !== undefined ? { mtimeMs: t.mtimeMs } : {}),
      ...(t.exclusive ? { exclusive: true } : {}),
    },
    pace,
  );
  return { paced: paced() };
}

/** A block-incremental file's part: `pace` meters the blocks written into the file, not the content it skips. */
async function restoreRunsTask(
  repo: Repository,
  t: RestoreRunsTask,
  limiter: RateLimiter | undefined,
): Promise<RestoreResult> {
  const { pace, paced } = taskPace(limiter);
  await repo.objects.restoreRuns(
    t.key,
    t.codec,
    { sha256: t.sha256, size: t.size },
    t.dest,
    t.runs,
    MAP_BLOCK_BYTES,
    t.fileSize,
    pace,
    t.xor === true,
  );
  return { paced: paced() };
}

/** A block-incremental file in one pass: `pace` meters the bytes written into the file. */
async function assembleBlocksTask(
  repo: Repository,
  t: AssembleBlocksTask,
  limiter: RateLimiter | undefined,
): Promise<RestoreResult> {
  const { pace, paced } = taskPace(limiter);
  await repo.objects.assembleBlocks(
    t.parts,
    t.part,
    t.index,
    MAP_BLOCK_BYTES,
    { path: t.dest, size: t.size, sha256: t.sha256 },
    pace,
    t.deltas ?? [],
  );
  return { paced: paced() };
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
