/**
 * The few pieces of the WebAssembly binary format that pgfleet's small hand-assembled modules
 * need (pg page-checksum-simd.ts, storage block-xxh64.ts): each is a hot loop of a few dozen
 * instructions, assembled in code when first used, so nothing is downloaded, no toolchain is
 * needed to build them, and the bytes are reviewable next to what they compute. Light module:
 * copy worker threads load it.
 */

/** Unsigned LEB128 (section sizes, indexes, counts). */
export function uleb(n: number): number[] {
  const out: number[] = [];
  do {
    let b = n & 0x7f;
    n >>>= 7;
    if (n !== 0) b |= 0x80;
    out.push(b);
  } while (n !== 0);
  return out;
}

/** Signed LEB128 of a 32-bit value (i32.const). */
export function sleb(n: number): number[] {
  const out: number[] = [];
  for (;;) {
    const b = n & 0x7f;
    n >>= 7;
    if ((n === 0 && (b & 0x40) === 0) || (n === -1 && (b & 0x40) !== 0)) return [...out, b];
    out.push(b | 0x80);
  }
}

/** Signed LEB128 of a 64-bit value (i64.const), given as its unsigned or signed BigInt. */
export function sleb64(value: bigint): number[] {
  let n = BigInt.asIntN(64, value);
  const out: number[] = [];
  for (;;) {
    const b = Number(n & 0x7fn);
    n >>= 7n; // arithmetic: keeps the sign
    if ((n === 0n && (b & 0x40) === 0) || (n === -1n && (b & 0x40) !== 0)) return [...out, b];
    out.push(b | 0x80);
  }
}

export const section = (id: number, body: number[]) => [id, ...uleb(body.length), ...body];
export const vec = (items: number[][]) => [...uleb(items.length), ...items.flat()];
export const name = (s: string) => [...uleb(s.length), ...Buffer.from(s, 'latin1')];

/** The module's first 8 bytes: the magic number and version 1. */
export const MODULE_HEADER = [0x00, 0x61, 0x73, 0x6d, 0x01, 0x00, 0x00, 0x00];

export const get = (l: number) => [0x20, ...uleb(l)];
export const set = (l: number) => [0x21, ...uleb(l)];
export const tee = (l: number) => [0x22, ...uleb(l)];
export const i32 = (v: number) => [0x41, ...sleb(v | 0)];
export const i64 = (v: bigint) => [0x42, ...sleb64(v)];

export const BLOCK = [0x02, 0x40];
export const LOOP = [0x03, 0x40];
export const IF = [0x04, 0x40];
export const ELSE = [0x05];
export const END = [0x0b];
export const brIf = (depth: number) => [0x0d, depth];
export const br = (depth: number) => [0x0c, depth];
export const call = (f: number) => [0x10, ...uleb(f)];

/** The few WebAssembly calls used to instantiate a module (the project's TypeScript libs have no DOM types). */
interface WasmApi {
  Module: new (bytes: Uint8Array) => object;
  Instance: new (module: object) => { exports: unknown };
}

/** The exports of a module made of `bytes`, or undefined when this runtime cannot compile it (no WebAssembly, or no SIMD). */
export function instantiate<E>(bytes: Uint8Array): E | undefined {
  try {
    const wasm = (globalThis as unknown as { WebAssembly?: WasmApi }).WebAssembly;
    if (!wasm) return undefined;
    return new wasm.Instance(new wasm.Module(bytes)).exports as E;
  } catch {
    return undefined;
  }
}
