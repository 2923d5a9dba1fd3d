/**
 * Page-checksum validation of relation files while a backup reads them: a stream stage that
 * checks every 8 KiB page in the same pass as hashing and compression (a second read would
 * double the I/O and the hashing cost), then a re-read of the few pages that failed.
 *
 * Why re-read: PostgreSQL may be writing a page while we read it, and a read can see half of the
 * old and half of the new page (a torn read). That is legal during a backup: replay rewrites the
 * page from the full-page image that WAL holds for its first change after the checkpoint. A page
 * whose checksum fails again on a second read (and whose LSN is still before the backup's start)
 * is damaged on disk.
 */
import { open } from 'node:fs/promises';
import { Transform, type TransformCallback } from 'node:stream';
// The page-checksum module alone (no libpq client): copy worker threads load this file.
import { BLCKSZ, int32View, verifyPageAt, verifyPages, type LsnHalves } from '@pgfleet/pg/page-checksum';

/** Checks pages as a relation file's bytes go by (in any chunking), recording pages whose checksum fails. */
export class PageChecker {
  /** Page indexes (within the bytes seen) that failed on the first read. */
  readonly suspects: number[] = [];
  private carry: Buffer | undefined;
  private pageIndex = 0;

  /** `firstBlock`: block number of the first page seen (segment number * RELSEG_SIZE + page offset). */
  constructor(
    private readonly firstBlock: number,
    private readonly startLsn: LsnHalves,
  ) {}

  update(chunk: Buffer): void {
    let pos = 0;
    if (this.carry) {
      // A page split across two reads (rare: reads are 1 MiB, page-aligned).
      const need = BLCKSZ - this.carry.length;
      if (chunk.length < need) {
        this.carry = Buffer.concat([this.carry, chunk]);
        return;
      }
      this.check(int32View(Buffer.concat([this.carry, chunk.subarray(0, need)])), 0);
      this.carry = undefined;
      pos = need;
    }
    const pages = Math.floor((chunk.length - pos) / BLCKSZ);
    if (pages > 0) {
      const words = int32View(chunk.subarray(pos, pos + pages * BLCKSZ));
      const first = this.pageIndex;
      verifyPages(words, 0, pages, this.firstBlock + first, this.startLsn, (i) => this.suspects.push(first + i));
      this.pageIndex += pages;
      pos += pages * BLCKSZ;
    }
    if (pos < chunk.length) this.carry = Buffer.from(chunk.subarray(pos));
  }

  // A partial last page is a relation being extended while we read: it is not judged.

  private check(words: Int32Array, offset: number): void {
    const index = this.pageIndex++;
    if (verifyPageAt(words, offset, this.firstBlock + index, this.startLsn) === 'invalid') this.suspects.push(index);
  }
}

/** PageChecker as a stream stage: passes the bytes through unchanged. */
export class PageChecksumStage extends Transform {
  private readonly checker: PageChecker;

  constructor(firstBlock: number, startLsn: LsnHalves) {
    super({ highWaterMark: 1 << 20 });
    this.checker = new PageChecker(firstBlock, startLsn);
  }

  get suspects(): number[] {
    return this.checker.suspects;
  }

  override _transform(chunk: Buffer, _enc: BufferEncoding, cb: TransformCallback): void {
    this.checker.update(chunk);
    cb(null, chunk);
  }
}

/**
 * `suspects` are page indexes from `byteOffset` (a chunk's offset in the file), `firstBlock` the
 * block number of the page at `byteOffset`.
 * Reads each suspect page once more and returns the block numbers that fail again: the
 * persistent errors. Pages gone (file truncated or dropped meanwhile) or rewritten past the
 * backup's start are not errors: WAL replay takes care of them.
 */
export async function recheckPages(
  file: string,
  suspects: readonly number[],
  firstBlock: number,
  startLsn: LsnHalves,
  byteOffset = 0,
): Promise<number[]> {
  if (suspects.length === 0) return [];
  let fh;
  try {
    fh = await open(file, 'r');
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return [];
    throw err;
  }
  try {
    const page = Buffer.alloc(BLCKSZ);
    const words = int32View(page);
    const bad: number[] = [];
    for (const index of suspects) {
      const { bytesRead } = await fh.read(page, 0, BLCKSZ, byteOffset + index * BLCKSZ);
      if (bytesRead < BLCKSZ) continue;
      const block = firstBlock + index;
      if (verifyPageAt(words, 0, block, startLsn) === 'invalid') bad.push(block);
    }
    return bad;
  } finally {
    await fh.close();
  }
}
