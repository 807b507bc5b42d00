import { ParseError } from '../errors.js';

/**
 * The one bounded reader over TPM wire bytes (big-endian, TPM 2.0 Part 1 §18 "Canonical
 * form"). Every read checks the remaining length first and throws a typed ParseError, so no
 * parser built on it can read out of bounds, loop on attacker-chosen sizes or return partial
 * structures.
 */
export class TpmReader {
  private offset = 0;

  constructor(
    private readonly bytes: Uint8Array,
    /** Names the structure in error messages ("TPMS_ATTEST", ...). */
    readonly what: string,
  ) {}

  get position(): number {
    return this.offset;
  }

  get remaining(): number {
    return this.bytes.length - this.offset;
  }

  private need(n: number, field: string): void {
    if (n > this.remaining) {
      throw new ParseError(
        'ERR_TPM_TRUNCATED',
        `${this.what}: ${field} needs ${n} bytes at offset ${this.offset}, ${this.remaining} left`,
      );
    }
  }

  // Byte arithmetic rather than a DataView: quote verification is on the verifier's hot path.
  u8(field: string): number {
    this.need(1, field);
    return this.bytes[this.offset++]!;
  }

  u16(field: string): number {
    this.need(2, field);
    const b = this.bytes;
    const o = this.offset;
    this.offset += 2;
    return (b[o]! << 8) | b[o + 1]!;
  }

  u32(field: string): number {
    this.need(4, field);
    const b = this.bytes;
    const o = this.offset;
    this.offset += 4;
    return b[o]! * 0x1000000 + ((b[o + 1]! << 16) | (b[o + 2]! << 8) | b[o + 3]!);
  }

  u64(field: string): bigint {
    const high = this.u32(field);
    const low = this.u32(field);
    // One BigInt conversion while the value is a safe integer (clocks are); shifts otherwise.
    return high < 0x200000 ? BigInt(high * 0x100000000 + low) : (BigInt(high) << 32n) | BigInt(low);
  }

  /** Little-endian reads, for the host-order files tpm2-tools writes and TCG event logs. */
  u16le(field: string): number {
    this.need(2, field);
    const b = this.bytes;
    const o = this.offset;
    this.offset += 2;
    return b[o]! | (b[o + 1]! << 8);
  }

  u32le(field: string): number {
    this.need(4, field);
    const b = this.bytes;
    const o = this.offset;
    this.offset += 4;
    return b[o + 3]! * 0x1000000 + ((b[o + 2]! << 16) | (b[o + 1]! << 8) | b[o]!);
  }

  /** A view (no copy) of the next n bytes. */
  bytesOf(n: number, field: string): Uint8Array {
    this.need(n, field);
    const out = this.bytes.subarray(this.offset, this.offset + n);
    this.offset += n;
    return out;
  }

  /** TPM2B_*: UINT16 size followed by that many bytes; `max` is the structure's own limit. */
  tpm2b(field: string, max = 0xffff): Uint8Array {
    // The size's field name is built only for the error: quotes are read on the hot path.
    if (this.remaining < 2) this.need(2, `${field}.size`);
    const size = this.u16(field);
    if (size > max) {
      throw new ParseError('ERR_TPM_BAD_VALUE', `${this.what}: ${field}.size ${size} exceeds ${max}`);
    }
    return this.bytesOf(size, field);
  }

  /** Bytes from `start` up to the current position (for hashing what was just parsed). */
  slice(start: number): Uint8Array {
    return this.bytes.subarray(start, this.offset);
  }

  /** Structures on the wire have no slack: trailing bytes mean the caller fed the wrong thing. */
  end(): void {
    if (this.remaining !== 0) {
      throw new ParseError(
        'ERR_TPM_TRAILING_BYTES',
        `${this.what}: ${this.remaining} unexpected bytes after offset ${this.offset}`,
      );
    }
  }
}
