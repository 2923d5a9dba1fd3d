/**
 * CRC-32C (Castagnoli), the checksum of every WAL record (port/pg_crc32c.h). Slicing-by-8 over
 * Int32Array tables: the record check is optional in the decoder and this keeps its cost small.
 */

const POLY = 0x82f63b78;
const TABLES: Int32Array[] = (() => {
  const t: Int32Array[] = [];
  const t0 = new Int32Array(256);
  for (let i = 0; i < 256; i++) {
    let c = i;
    for (let k = 0; k < 8; k++) c = c & 1 ? (c >>> 1) ^ POLY : c >>> 1;
    t0[i] = c;
  }
  t.push(t0);
  for (let j = 1; j < 8; j++) {
    const prev = t[j - 1]!;
    const tj = new Int32Array(256);
    for (let i = 0; i < 256; i++) tj[i] = (prev[i]! >>> 8) ^ t0[prev[i]! & 0xff]!;
    t.push(tj);
  }
  return t;
})();
const [T0, T1, T2, T3, T4, T5, T6, T7] = TABLES as [
  Int32Array,
  Int32Array,
  Int32Array,
  Int32Array,
  Int32Array,
  Int32Array,
  Int32Array,
  Int32Array,
];

/** Continues a CRC-32C over buf[start, end); pass 0xffffffff first, and xor the final value with 0xffffffff. */
export function crc32cUpdate(crc: number, buf: Uint8Array, start: number, end: number): number {
  let c = crc | 0;
  let i = start;
  const end8 = end - ((end - start) & 7);
  while (i < end8) {
    const a = c ^ (buf[i]! | (buf[i + 1]! << 8) | (buf[i + 2]! << 16) | (buf[i + 3]! << 24));
    c =
      T7[a & 0xff]! ^
      T6[(a >>> 8) & 0xff]! ^
      T5[(a >>> 16) & 0xff]! ^
      T4[a >>> 24]! ^
      T3[buf[i + 4]!]! ^
      T2[buf[i + 5]!]! ^
      T1[buf[i + 6]!]! ^
      T0[buf[i + 7]!]!;
    i += 8;
  }
  while (i < end) c = T0[(c ^ buf[i++]!) & 0xff]! ^ (c >>> 8);
  return c;
}

/** CRC-32C of buf[start, end) as an unsigned number. */
export function crc32c(buf: Uint8Array, start = 0, end = buf.length): number {
  return (crc32cUpdate(0xffffffff, buf, start, end) ^ 0xffffffff) >>> 0;
}
