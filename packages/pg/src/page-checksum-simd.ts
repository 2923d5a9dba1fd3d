/**
 * pg_checksum_page (page-checksum.ts) for many pages at once, in WebAssembly SIMD. The algorithm's
 * 32 independent column sums are exactly 8 vectors of 4 x uint32, so a page is 64 rows of 8
 * vector xor/multiply/shift steps: PostgreSQL's own checksum_impl.h is written to be vectorised
 * the same way by C compilers. Measured here (bench/page-checksum.mjs, docs/performance.md):
 * ~11 GB per CPU second against ~4.5 for the plain JavaScript loop, so the check every relation
 * page of a backup gets costs ~1% of the backup's CPU instead of ~3%.
 *
 * The module is assembled below from its instructions (about 1 KB; no toolchain, nothing
 * downloaded): one function `pages(src, n, firstBlock, out)` that writes the checksum of the n
 * pages at `src` (block numbers firstBlock, firstBlock + 1, ...) as uint32 at `out`. Pages are
 * copied into its memory in batches (a memcpy, ~1% of the checksum's cost). WebAssembly is
 * little-endian, so on a big-endian host (whose pages PostgreSQL writes big-endian)
 * `simdPageChecksums` returns false and the callers use the JavaScript loop.
 */
import { endianness } from 'node:os';
import {
  BLOCK,
  br,
  brIf,
  END,
  get,
  i32,
  instantiate,
  LOOP,
  MODULE_HEADER,
  name,
  section,
  set,
  tee,
  uleb,
  vec,
} from '@pgfleet/core/wasm-assembly';

const BLCKSZ = 8192;
/** Pages per call: 1 MiB, a copy task's read. */
const BATCH = 128;
const PAGE_BASE = 1024;
const OUT_BASE = PAGE_BASE + BATCH * BLCKSZ;
const MEMORY_PAGES = Math.ceil((OUT_BASE + BATCH * 4) / 65536);
const FNV_PRIME = 16777619;
const BASE_OFFSETS = [
  0x5b1f36e9, 0xb8525960, 0x02ab50aa, 0x1de66d2a, 0x79ff467a, 0x9bb9f8a3, 0x217e7cd2, 0x83e13d2c, 0xf8d4474f,
  0xe39eb970, 0x42c6ae16, 0x993216fa, 0x7b093b5d, 0x98daff3c, 0xf718902a, 0x0b1c9cdb, 0xe58f764b, 0x187636bc,
  0x5d7b3bb1, 0xe73de7de, 0x92bec979, 0xcca6c0b2, 0x304a0979, 0x85aa43d4, 0x783125bb, 0x6ca8eaa2, 0xe407eac6,
  0x4b5cfc3e, 0x9fbf8c76, 0x15ca20be, 0xf2ca9fd3, 0x959bd756,
];

// Locals: params src n firstBlock out, then p end i (i32), then s0..s7 t acc prime (v128).
const [SRC, N, FIRST, OUT, P, END_AT, I] = [0, 1, 2, 3, 4, 5, 6];
const S = (k: number) => 7 + k;
/** The 8 vectors of sums. */
const EACH = [0, 1, 2, 3, 4, 5, 6, 7];
const T = 15;
const ACC = 16;
const PRIME = 17;

const simd = (op: number, ...imm: number[]) => [0xfd, ...uleb(op), ...imm];
const v128Load = (offset: number) => simd(0x00, 4, ...uleb(offset));
const v128Xor = simd(0x51);
const v128And = simd(0x4e);
const i32x4Mul = simd(0xb5);
const i32x4ShrU = simd(0xad);
const lane = (l: number) => simd(0x1b, l);
const le32 = (words: number[]) =>
  words.flatMap((w) => [w & 0xff, (w >>> 8) & 0xff, (w >>> 16) & 0xff, (w >>> 24) & 0xff]);
const v128Const = (words: number[]) => simd(0x0c, ...le32(words));

/** hash = (s ^ v) * FNV_PRIME ^ ((s ^ v) >> 17), the value v already on the stack above s. */
const mix = (k: number) => [
  ...v128Xor,
  ...tee(T),
  ...get(PRIME),
  ...i32x4Mul,
  ...get(T),
  ...i32(17),
  ...i32x4ShrU,
  ...v128Xor,
  ...set(S(k)),
];

/** One row of 32 words at p: word 2 of row 0 (pd_checksum in its low half) masked as zero. */
const row = (first: boolean) =>
  EACH.flatMap((k) => [
    ...get(S(k)),
    ...get(P),
    ...v128Load(k * 16),
    ...(first && k === 0 ? [...v128Const([-1, -1, 0xffff0000, -1]), ...v128And] : []),
    ...mix(k),
  ]);

const [I32_ADD, I32_SHL, I32_XOR, I32_REM_U, I32_LT_U, I32_GE_U] = [[0x6a], [0x74], [0x73], [0x70], [0x49], [0x4f]];
const I32_STORE = [0x36, 2, 0];
const I32X4_SPLAT = simd(0x11);

// prettier-ignore
const body = [
  ...i32(FNV_PRIME), ...I32X4_SPLAT, ...set(PRIME),
  ...i32(0), ...set(I),
  ...BLOCK, // $done
  ...LOOP, // $page
  ...get(I), ...get(N), ...I32_GE_U, ...brIf(1), // i >= n: done
  ...get(SRC), ...get(I), ...i32(13), ...I32_SHL, ...I32_ADD, ...set(P), // p = src + i * 8192
  ...EACH.flatMap((k) => [...i32(0), ...v128Load(k * 16), ...set(S(k))]), // the base offsets, at address 0
  ...row(true),
  ...get(P), ...i32(BLCKSZ), ...I32_ADD, ...set(END_AT),
  ...get(P), ...i32(128), ...I32_ADD, ...set(P),
  ...LOOP, // $row
  ...row(false),
  ...get(P), ...i32(128), ...I32_ADD, ...tee(P), ...get(END_AT), ...I32_LT_U, ...brIf(0), // p < end: next row
  ...END,
  // Two rounds of zeros: s ^ 0 = s.
  ...EACH.flatMap((k) => [
    ...get(S(k)), ...i32(0), ...I32X4_SPLAT, ...mix(k),
    ...get(S(k)), ...i32(0), ...I32X4_SPLAT, ...mix(k),
  ]),
  ...get(S(0)), ...[1, 2, 3, 4, 5, 6, 7].flatMap((k) => [...get(S(k)), ...v128Xor]), ...set(ACC),
  // out[i] = ((the four lanes xor-ed) ^ (firstBlock + i)) % 65535 + 1
  ...get(OUT), ...get(I), ...i32(2), ...I32_SHL, ...I32_ADD,
  ...get(ACC), ...lane(0), ...get(ACC), ...lane(1), ...I32_XOR, ...get(ACC), ...lane(2), ...I32_XOR, ...get(ACC), ...lane(3), ...I32_XOR,
  ...get(FIRST), ...get(I), ...I32_ADD, ...I32_XOR,
  ...i32(65535), ...I32_REM_U, ...i32(1), ...I32_ADD,
  ...I32_STORE,
  ...get(I), ...i32(1), ...I32_ADD, ...set(I),
  ...br(0), // next page
  ...END, // $page
  ...END, // $done
  ...END, // the function
];

// Locals after the 4 parameters: 3 x i32, 11 x v128.
const code = [
  ...vec([
    [3, 0x7f],
    [11, 0x7b],
  ]),
  ...body,
];

function moduleBytes(): Uint8Array {
  return new Uint8Array([
    ...MODULE_HEADER,
    ...section(1, vec([[0x60, 4, 0x7f, 0x7f, 0x7f, 0x7f, 0]])),
    ...section(3, vec([[0]])),
    ...section(5, vec([[0, ...uleb(MEMORY_PAGES)]])),
    ...section(
      7,
      vec([
        [...name('memory'), 2, 0],
        [...name('pages'), 0, 0],
      ]),
    ),
    ...section(10, vec([[...uleb(code.length), ...code]])),
    ...section(11, vec([[0, ...i32(0), 0x0b, ...uleb(128), ...le32(BASE_OFFSETS)]])),
  ]);
}

interface Simd {
  memory: Uint8Array;
  out: Uint32Array;
  pages: (src: number, n: number, firstBlock: number, out: number) => void;
}

let loaded: Simd | null | undefined;

function load(): Simd | null {
  if (endianness() !== 'LE') return null;
  // No WebAssembly SIMD in this runtime: the JavaScript loop does the work.
  const exports = instantiate<{ memory: { buffer: ArrayBuffer }; pages: Simd['pages'] }>(moduleBytes());
  if (!exports) return null;
  return {
    memory: new Uint8Array(exports.memory.buffer),
    out: new Uint32Array(exports.memory.buffer, OUT_BASE, BATCH),
    pages: exports.pages,
  };
}

/**
 * Calls `each(index, checksum)` with pg_checksum_page of each of the `count` whole pages in
 * `bytes` (index from 0, block number firstBlock + index). Returns false, calling nothing, when
 * this runtime has no WebAssembly SIMD (or the host is big-endian).
 */
export function simdPageChecksums(
  bytes: Uint8Array,
  count: number,
  firstBlock: number,
  each: (index: number, checksum: number) => void,
): boolean {
  if (loaded === undefined) loaded = load();
  if (loaded === null) return false;
  const { memory, out, pages } = loaded;
  for (let done = 0; done < count; done += BATCH) {
    const n = Math.min(BATCH, count - done);
    memory.set(bytes.subarray(done * BLCKSZ, (done + n) * BLCKSZ), PAGE_BASE);
    pages(PAGE_BASE, n, (firstBlock + done) | 0, OUT_BASE);
    for (let i = 0; i < n; i++) each(done + i, out[i]!);
  }
  return true;
}
