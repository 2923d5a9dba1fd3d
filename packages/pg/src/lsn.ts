/**
 * Log sequence numbers. PostgreSQL prints an LSN as two hex halves "hi/lo" of a 64-bit WAL
 * position; comparing the strings is wrong (0/A0000000 > 1/0 as text), so every comparison goes
 * through the 64-bit value.
 */
import { PgfleetError } from '@pgfleet/core';

export class Lsn {
  private constructor(readonly value: bigint) {}

  static readonly ZERO = new Lsn(0n);

  static parse(text: string): Lsn {
    const m = /^([0-9A-Fa-f]{1,8})\/([0-9A-Fa-f]{1,8})$/.exec(text.trim());
    if (!m) throw new PgfleetError('InvalidArgument', `'${text}' is not an LSN (expected hex like 0/3000060)`);
    return new Lsn((BigInt(`0x${m[1]}`) << 32n) | BigInt(`0x${m[2]}`));
  }

  static isValid(text: string): boolean {
    return /^[0-9A-Fa-f]{1,8}\/[0-9A-Fa-f]{1,8}$/.test(text.trim());
  }

  static fromBigInt(value: bigint): Lsn {
    return new Lsn(value);
  }

  toString(): string {
    const hi = (this.value >> 32n).toString(16).toUpperCase();
    const lo = (this.value & 0xffffffffn).toString(16).toUpperCase();
    return `${hi}/${lo}`;
  }

  compare(other: Lsn): number {
    return this.value < other.value ? -1 : this.value > other.value ? 1 : 0;
  }

  /** Number of the WAL segment holding this position. */
  segmentNumber(segmentSize: number): bigint {
    return this.value / BigInt(segmentSize);
  }

  /** Offset inside that segment. */
  segmentOffset(segmentSize: number): number {
    return Number(this.value % BigInt(segmentSize));
  }
}
