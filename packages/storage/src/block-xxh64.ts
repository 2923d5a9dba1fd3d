/**
 * XXH64 (seed 0; the xxHash specification's 64-bit hash, the one zstd frames carry as their
 * content checksum) of many blocks per call, in WebAssembly: the block checksum of block maps
 * (block-map.ts, docs/block-incremental.md). A map's checksum only has to tell whether a block's
 * bytes changed since the prior backup of the same file; SHA-1 per 8 KiB block cost ~0.74 CPU s
 * per GB (a fifth of a block-incremental copy's CPU) through a native call per block, where this
 * loop hashes a 1 MiB read in one call after one memcpy into its memory (docs/benchmarks.md,
 * "Block checksum: XXH64").
 *
 * The module is assembled below from its instructions (no toolchain, nothing downloaded; core
 * wasm-assembly.ts): `blocks(src, count, bytes, out)` writes XXH64 of the `count` consecutive
 * `bytes`-long blocks at `src` as u64 little-endian at `out`, `out + 8`, ... WebAssembly loads
 * are little-endian on every host, as the specification reads its input, so the digests are the
 * same bytes everywhere.
 */
import { PgfleetError } from '@pgfleet/core/errors';
import {
  BLOCK,
  br,
  brIf,
  call,
  ELSE,
  END,
  get,
  i32,
  i64,
  IF,
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

/** Bytes of one digest. */
export const XXH64_BYTES = 8;
/** The most bytes hashed per call (a copy task's 1 MiB read). */
const BATCH_BYTES = 1 << 20;
/** At most this many blocks per call: their digests fill OUT_BASE..SRC_BASE. */
const BATCH_BLOCKS = 128;
const OUT_BASE = 0;
const SRC_BASE = BATCH_BLOCKS * XXH64_BYTES;
const MEMORY_PAGES = Math.ceil((SRC_BASE + BATCH_BYTES) / 65536);

const P1 = 0x9e3779b185ebca87n;
const P2 = 0xc2b2ae3d27d4eb4fn;
const P3 = 0x165667b19e3779f9n;
const P4 = 0x85ebca77c2b2ae63n;
const P5 = 0x27d4eb2f165667c5n;

const [I32_ADD, I32_SUB, I32_MUL, I32_SHL, I32_LT_U, I32_LE_U, I32_GE_U] = [
  [0x6a],
  [0x6b],
  [0x6c],
  [0x74],
  [0x49],
  [0x4d],
  [0x4f],
];
const [I64_ADD, I64_MUL, I64_XOR, I64_SHR_U, I64_ROTL, I64_EXTEND_I32_U] = [
  [0x7c],
  [0x7e],
  [0x85],
  [0x88],
  [0x89],
  [0xad],
];
const i64Load = (offset: number) => [0x29, 3, ...uleb(offset)];
const i64Load32U = [0x35, 2, 0];
const i64Load8U = [0x31, 0, 0];
const I64_STORE = [0x37, 3, 0];

// xxh64(p, len) -> i64. Locals: params p len, then end limit (i32), then v1 v2 v3 v4 h (i64).
const [P, LEN, END_AT, LIMIT, V1, V2, V3, V4, H] = [0, 1, 2, 3, 4, 5, 6, 7, 8];

/** round(acc, input) = rotl(acc + input * P2, 31) * P1, with the input on the stack above acc. */
const round = [...i64(P2), ...I64_MUL, ...I64_ADD, ...i64(31n), ...I64_ROTL, ...i64(P1), ...I64_MUL];
/** round(0, x) for x on the stack. */
const round0 = [...i64(P2), ...I64_MUL, ...i64(31n), ...I64_ROTL, ...i64(P1), ...I64_MUL];
const stripe = (v: number, offset: number) => [...get(v), ...get(P), ...i64Load(offset), ...round, ...set(v)];
/** h = (h ^ round(0, v)) * P1 + P4 */
const merge = (v: number) => [
  ...get(H),
  ...get(v),
  ...round0,
  ...I64_XOR,
  ...i64(P1),
  ...I64_MUL,
  ...i64(P4),
  ...I64_ADD,
  ...set(H),
];
const rotl = (v: number, r: bigint) => [...get(v), ...i64(r), ...I64_ROTL];
const advance = (n: number) => [...get(P), ...i32(n), ...I32_ADD, ...set(P)];
/** end - p, the bytes left */
const left = [...get(END_AT), ...get(P), ...I32_SUB];

// prettier-ignore
const xxh64Body = [
  ...get(P), ...get(LEN), ...I32_ADD, ...set(END_AT),
  ...get(LEN), ...i32(32), ...I32_GE_U, ...IF,
  ...i64(P1 + P2), ...set(V1),
  ...i64(P2), ...set(V2),
  ...i64(0n), ...set(V3),
  ...i64(-P1), ...set(V4),
  ...get(END_AT), ...i32(32), ...I32_SUB, ...set(LIMIT),
  ...LOOP, // a 32-byte stripe, while p <= end - 32
  ...stripe(V1, 0), ...stripe(V2, 8), ...stripe(V3, 16), ...stripe(V4, 24),
  ...get(P), ...i32(32), ...I32_ADD, ...tee(P), ...get(LIMIT), ...I32_LE_U, ...brIf(0),
  ...END,
  ...rotl(V1, 1n), ...rotl(V2, 7n), ...I64_ADD, ...rotl(V3, 12n), ...I64_ADD, ...rotl(V4, 18n), ...I64_ADD, ...set(H),
  ...merge(V1), ...merge(V2), ...merge(V3), ...merge(V4),
  ...ELSE,
  ...i64(P5), ...set(H),
  ...END,
  ...get(H), ...get(LEN), ...I64_EXTEND_I32_U, ...I64_ADD, ...set(H),
  ...BLOCK, ...LOOP, // 8 bytes at a time: h = rotl(h ^ round(0, word), 27) * P1 + P4
  ...left, ...i32(8), ...I32_LT_U, ...brIf(1),
  ...get(H), ...get(P), ...i64Load(0), ...round0, ...I64_XOR, ...i64(27n), ...I64_ROTL, ...i64(P1), ...I64_MUL,
  ...i64(P4), ...I64_ADD, ...set(H),
  ...advance(8), ...br(0),
  ...END, ...END,
  ...left, ...i32(4), ...I32_GE_U, ...IF, // 4 bytes: h = rotl(h ^ u32 * P1, 23) * P2 + P3
  ...get(H), ...get(P), ...i64Load32U, ...i64(P1), ...I64_MUL, ...I64_XOR, ...i64(23n), ...I64_ROTL, ...i64(P2),
  ...I64_MUL, ...i64(P3), ...I64_ADD, ...set(H),
  ...advance(4),
  ...END,
  ...BLOCK, ...LOOP, // the last bytes: h = rotl(h ^ byte * P5, 11) * P1
  ...get(P), ...get(END_AT), ...I32_GE_U, ...brIf(1),
  ...get(H), ...get(P), ...i64Load8U, ...i64(P5), ...I64_MUL, ...I64_XOR, ...i64(11n), ...I64_ROTL, ...i64(P1),
  ...I64_MUL, ...set(H),
  ...advance(1), ...br(0),
  ...END, ...END,
  // The avalanche: h ^= h >> 33; h *= P2; h ^= h >> 29; h *= P3; h ^= h >> 32.
  ...get(H), ...get(H), ...i64(33n), ...I64_SHR_U, ...I64_XOR, ...i64(P2), ...I64_MUL, ...set(H),
  ...get(H), ...get(H), ...i64(29n), ...I64_SHR_U, ...I64_XOR, ...i64(P3), ...I64_MUL, ...set(H),
  ...get(H), ...get(H), ...i64(32n), ...I64_SHR_U, ...I64_XOR,
  ...END,
];

// blocks(src, count, bytes, out). Locals: params, then i (i32).
const [SRC, COUNT, BYTES, OUT, I] = [0, 1, 2, 3, 4];
// prettier-ignore
const blocksBody = [
  ...BLOCK, ...LOOP,
  ...get(I), ...get(COUNT), ...I32_GE_U, ...brIf(1),
  ...get(OUT), ...get(I), ...i32(3), ...I32_SHL, ...I32_ADD, // the digest's address
  ...get(SRC), ...get(I), ...get(BYTES), ...I32_MUL, ...I32_ADD, ...get(BYTES), ...call(0),
  ...I64_STORE,
  ...get(I), ...i32(1), ...I32_ADD, ...set(I),
  ...br(0),
  ...END, ...END,
  ...END,
];

function moduleBytes(): Uint8Array {
  const xxh64Code = [
    ...vec([
      [2, 0x7f],
      [5, 0x7e],
    ]),
    ...xxh64Body,
  ];
  const blocksCode = [...vec([[1, 0x7f]]), ...blocksBody];
  return new Uint8Array([
    ...MODULE_HEADER,
    ...section(
      1,
      vec([
        [0x60, 2, 0x7f, 0x7f, 1, 0x7e], // (p, len) -> i64
        [0x60, 4, 0x7f, 0x7f, 0x7f, 0x7f, 0], // (src, count, bytes, out)
      ]),
    ),
    ...section(3, vec([[0], [1]])),
    ...section(5, vec([[0, ...uleb(MEMORY_PAGES)]])),
    ...section(
      7,
      vec([
        [...name('memory'), 2, 0],
        [...name('blocks'), 0, 1],
      ]),
    ),
    ...section(
      10,
      vec([
        [...uleb(xxh64Code.length), ...xxh64Code],
        [...uleb(blocksCode.length), ...blocksCode],
      ]),
    ),
  ]);
}

interface Xxh64Module {
  memory: Uint8Array;
  blocks: (src: number, count: number, bytes: number, out: number) => void;
}

let loaded: Xxh64Module | undefined;

function xxh64Module(): Xxh64Module {
  if (loaded) return loaded;
  const exports = instantiate<{ memory: { buffer: ArrayBuffer }; blocks: Xxh64Module['blocks'] }>(moduleBytes());
  // WebAssembly without SIMD is in every Node.js this project runs on: its absence is a broken runtime.
  if (!exports) throw new PgfleetError('Internal', 'the XXH64 WebAssembly module cannot be compiled in this runtime');
  return (loaded = { memory: new Uint8Array(exports.memory.buffer), blocks: exports.blocks });
}

/** XXH64 of all of `data` (at most 1 MiB) as 8 bytes little-endian into `out` at `outAt`. */
export function xxh64Into(data: Uint8Array, out: Uint8Array, outAt: number): void {
  const m = xxh64Module();
  m.memory.set(data, SRC_BASE);
  m.blocks(SRC_BASE, 1, data.length, OUT_BASE);
  out.set(m.memory.subarray(OUT_BASE, OUT_BASE + XXH64_BYTES), outAt);
}

/**
 * XXH64 of each `blockBytes`-long block of `data` (the last may be shorter) as 8 bytes
 * little-endian into `out` from `outAt`, a batch of up to 1 MiB per call; returns how many.
 */
export function xxh64Blocks(data: Uint8Array, blockBytes: number, out: Uint8Array, outAt: number): number {
  if (!Number.isSafeInteger(blockBytes) || blockBytes < 1 || blockBytes > BATCH_BYTES)
    throw new PgfleetError('Internal', `XXH64 blocks of ${blockBytes} bytes`);
  const m = xxh64Module();
  const count = Math.ceil(data.length / blockBytes);
  const per = Math.min(BATCH_BLOCKS, Math.floor(BATCH_BYTES / blockBytes));
  for (let done = 0; done < count;) {
    const from = done * blockBytes;
    const whole = Math.min(per, Math.floor((data.length - from) / blockBytes));
    if (whole === 0) {
      xxh64Into(data.subarray(from), out, outAt + done * XXH64_BYTES);
      done++;
      continue;
    }
    m.memory.set(data.subarray(from, from + whole * blockBytes), SRC_BASE);
    m.blocks(SRC_BASE, whole, blockBytes, OUT_BASE);
    out.set(m.memory.subarray(OUT_BASE, OUT_BASE + whole * XXH64_BYTES), outAt + done * XXH64_BYTES);
    done += whole;
  }
  return count;
}

/** XXH64 of `data` as a number (tests, and comparing with other implementations). */
export function xxh64(data: Uint8Array): bigint {
  const digest = Buffer.allocUnsafe(XXH64_BYTES);
  xxh64Into(data, digest, 0);
  return digest.readBigUInt64LE(0);
}
