/**
 * Data page checksums, as PostgreSQL computes them when the cluster has data checksums
 * (initdb --data-checksums): src/include/storage/checksum_impl.h. A backup re-computes them
 * while it reads relation files, so storage corruption is found when there is still a good
 * older copy to go back to, not on the day of the restore.
 *
 * The algorithm: the 8 KiB page is a [64][32] array of native-endian uint32 words; each of the
 * 32 columns is folded into its own FNV-1a-like sum (hash = (h ^ v) * FNV_PRIME ^ ((h ^ v) >> 17)),
 * started from a fixed per-column offset basis, then mixed with two rounds of zeros; the sums are
 * xor-ed together, xor-ed with the block number (so a page written at the wrong place fails too)
 * and reduced to 1..65535. pd_checksum itself counts as zero.
 *
 * Everything here works on Int32Array views of whole buffers with word offsets: no per-page or
 * per-byte allocation, and int32 values stay small integers for V8 (a Uint32Array read of a
 * value >= 2^31 would be a heap number). This runs over every byte a backup reads.
 */
import { endianness } from 'node:os';
import { simdPageChecksums } from './page-checksum-simd.js';

export const BLCKSZ = 8192;
/** Blocks per relation segment file (1 GiB / BLCKSZ): segment N's first block is N * RELSEG_SIZE. */
export const RELSEG_SIZE = 131072;

const N_SUMS = 32;
const PAGE_WORDS = BLCKSZ / 4;
const FNV_PRIME = 16777619;
const BASE_OFFSETS = Int32Array.from([
  0x5b1f36e9, 0xb8525960, 0x02ab50aa, 0x1de66d2a, 0x79ff467a, 0x9bb9f8a3, 0x217e7cd2, 0x83e13d2c, 0xf8d4474f,
  0xe39eb970, 0x42c6ae16, 0x993216fa, 0x7b093b5d, 0x98daff3c, 0xf718902a, 0x0b1c9cdb, 0xe58f764b, 0x187636bc,
  0x5d7b3bb1, 0xe73de7de, 0x92bec979, 0xcca6c0b2, 0x304a0979, 0x85aa43d4, 0x783125bb, 0x6ca8eaa2, 0xe407eac6,
  0x4b5cfc3e, 0x9fbf8c76, 0x15ca20be, 0xf2ca9fd3, 0x959bd756,
]);

const LITTLE_ENDIAN = endianness() === 'LE';
/**
 * Word 2 of the page holds pd_checksum (uint16 at byte 8) and pd_flags (uint16 at byte 10): the
 * mask keeps pd_flags and zeroes pd_checksum, in the host's byte order (PostgreSQL writes pages
 * in its host's order, and the agent runs on the database host).
 */
const CHECKSUM_WORD_MASK = LITTLE_ENDIAN ? 0xffff0000 | 0 : 0x0000ffff;

const sums = new Int32Array(N_SUMS);

/** pg_checksum_page for the page starting at word `offset` of `words` (must not be a new, all-zero page). */
export function pageChecksumAt(words: Int32Array, offset: number, blockNumber: number): number {
  sums.set(BASE_OFFSETS);
  // Row 0 with pd_checksum treated as zero, without writing to the caller's buffer.
  for (let j = 0; j < N_SUMS; j++) {
    const v = j === 2 ? words[offset + 2]! & CHECKSUM_WORD_MASK : words[offset + j]!;
    const t = sums[j]! ^ v;
    sums[j] = Math.imul(t, FNV_PRIME) ^ (t >>> 17);
  }
  for (let row = offset + N_SUMS, end = offset + PAGE_WORDS; row < end; row += N_SUMS) {
    for (let j = 0; j < N_SUMS; j++) {
      const t = sums[j]! ^ words[row + j]!;
      sums[j] = Math.imul(t, FNV_PRIME) ^ (t >>> 17);
    }
  }
  let result = 0;
  for (let j = 0; j < N_SUMS; j++) {
    let s = sums[j]!;
    s = Math.imul(s, FNV_PRIME) ^ (s >>> 17);
    s = Math.imul(s, FNV_PRIME) ^ (s >>> 17);
    result ^= s;
  }
  result ^= blockNumber;
  return ((result >>> 0) % 65535) + 1;
}

/** pg_checksum_page of one page given as bytes (copied once when not 4-byte aligned). */
export function pageChecksum(page: Uint8Array, blockNumber: number): number {
  if (page.byteLength < BLCKSZ) throw new RangeError(`a page has ${BLCKSZ} bytes, got ${page.byteLength}`);
  return pageChecksumAt(int32View(page), 0, blockNumber);
}

/** pd_checksum as stored in the page header. */
export function storedPageChecksum(page: Uint8Array): number {
  return LITTLE_ENDIAN ? page[8]! | (page[9]! << 8) : (page[8]! << 8) | page[9]!;
}

/** An Int32Array over the whole 4-byte words of `buf`, sharing memory when aligned. */
export function int32View(buf: Uint8Array): Int32Array {
  const words = buf.byteLength >>> 2;
  if (buf.byteOffset % 4 === 0) return new Int32Array(buf.buffer, buf.byteOffset, words);
  const copy = new Uint8Array(words * 4);
  copy.set(buf.subarray(0, words * 4));
  return new Int32Array(copy.buffer, 0, words);
}

/** Start LSN of a backup split into the page header's two halves, so page checks need no BigInt. */
export interface LsnHalves {
  hi: number;
  lo: number;
}

export function lsnHalves(lsn: bigint): LsnHalves {
  return { hi: Number(lsn >> 32n), lo: Number(lsn & 0xffffffffn) };
}

export type PageVerdict =
  /** checksum matches */
  | 'valid'
  /** never initialised (all zeros): PostgreSQL accepts it without a checksum */
  | 'new'
  /** changed after the backup started: WAL replay from the backup's start rewrites it (full-page image) */
  | 'after-start'
  /** checksum mismatch, or a "new" page that is not all zeros */
  | 'invalid';

/**
 * Verifies the page at word `offset`, as a backup must: pages whose pd_lsn is at or past the
 * backup's start LSN are not judged (they may be torn by a concurrent write, which is legal:
 * replay restores them from the full-page image WAL holds for their first change after the
 * checkpoint), and all-zero pages are valid (relation extension writes them).
 */
export function verifyPageAt(words: Int32Array, offset: number, blockNumber: number, startLsn: LsnHalves): PageVerdict {
  return (
    verdictBeforeChecksum(words, offset, startLsn) ??
    (pageChecksumAt(words, offset, blockNumber) === storedChecksumAt(words, offset) ? 'valid' : 'invalid')
  );
}

/**
 * verifyPageAt for `count` whole pages from word `offset` (block numbers firstBlock, +1, ...),
 * calling `invalid(index)` for each page that fails: the checksums of a batch computed with
 * WebAssembly SIMD (page-checksum-simd.ts) where the runtime has it, the same verdicts.
 */
export function verifyPages(
  words: Int32Array,
  offset: number,
  count: number,
  firstBlock: number,
  startLsn: LsnHalves,
  invalid: (index: number) => void,
): void {
  const bytes = new Uint8Array(words.buffer, words.byteOffset + offset * 4, count * BLCKSZ);
  const batched = simdPageChecksums(bytes, count, firstBlock, (i, checksum) => {
    const at = offset + i * PAGE_WORDS;
    const verdict = verdictBeforeChecksum(words, at, startLsn);
    if (verdict === 'invalid' || (verdict === undefined && checksum !== storedChecksumAt(words, at))) invalid(i);
  });
  if (batched) return;
  for (let i = 0; i < count; i++)
    if (verifyPageAt(words, offset + i * PAGE_WORDS, firstBlock + i, startLsn) === 'invalid') invalid(i);
}

/** The verdict a page gets without its checksum (new, or changed after the start), or undefined: compare checksums. */
function verdictBeforeChecksum(words: Int32Array, offset: number, startLsn: LsnHalves): PageVerdict | undefined {
  // pd_upper (uint16 at byte 14) is 0 only on a page that was never initialised (PageIsNew).
  const word3 = words[offset + 3]!;
  const pdUpper = LITTLE_ENDIAN ? word3 >>> 16 : word3 & 0xffff;
  if (pdUpper === 0) {
    for (let i = offset, end = offset + PAGE_WORDS; i < end; i++) if (words[i] !== 0) return 'invalid';
    return 'new';
  }
  // pd_lsn: xlogid (high half) then xrecoff (low half), each a native uint32.
  const hi = words[offset]! >>> 0;
  const lo = words[offset + 1]! >>> 0;
  if (hi > startLsn.hi || (hi === startLsn.hi && lo >= startLsn.lo)) return 'after-start';
  return undefined;
}

function storedChecksumAt(words: Int32Array, offset: number): number {
  const word2 = words[offset + 2]!;
  return LITTLE_ENDIAN ? word2 & 0xffff : word2 >>> 16;
}

const RELATION_FILE_RE = /^(?:base\/\d+|global|pg_tblspc\/\d+\/[^/]+\/\d+)\/\d+(?:_(?:fsm|vm|init))?(?:\.(\d+))?$/;

/**
 * The segment number of a relation data file (base/<db>/<relfilenode>[_fork][.segment], global/...,
 * pg_tblspc/<oid>/<version dir>/<db>/...), or undefined for every other file in PGDATA (which
 * has no page checksums: pg_control, pg_xact, pg_filenode.map, ...).
 */
export function relationSegmentNumber(path: string): number | undefined {
  const m = RELATION_FILE_RE.exec(path);
  if (!m) return undefined;
  return m[1] === undefined ? 0 : Number(m[1]);
}
