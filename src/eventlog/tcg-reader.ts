import { ParseError, type ErrorCode } from '../errors.js';
import type { TpmReader } from '../tpm/reader.js';

/*
 * The event log is little-endian (PFP §10.2: "all multi-byte integers are little-endian").
 * It is read with the project's one bounded reader (TpmReader, whose u16le/u32le exist for
 * this); these functions add the UINT64 fields the PFP structures use and give the reader's
 * errors the event log's own codes.
 */

/** A UINT64 that is an address or a length not used to index (ImageLocationInMemory, BlobBase). */
export function u64le(r: TpmReader, field: string): bigint {
  const low = r.u32le(field);
  const high = r.u32le(field);
  return (BigInt(high) << 32n) | BigInt(low);
}

/**
 * A UINT64 that counts bytes or elements of what follows: it can never exceed the bytes
 * left, so anything above 2^32 is refused before it reaches arithmetic or a loop.
 */
export function count64le(r: TpmReader, field: string): number {
  const low = r.u32le(field);
  const high = r.u32le(field);
  if (high !== 0) {
    throw new ParseError('ERR_TPM_TRUNCATED', `${r.what}: ${field} exceeds the ${r.remaining} bytes left`);
  }
  return low;
}

/** Runs a read over TpmReader and reports its failures (ERR_TPM_*) under `code`. */
export function withCode<T>(code: ErrorCode, read: () => T): T {
  try {
    return read();
  } catch (e) {
    if (e instanceof ParseError && e.code.startsWith('ERR_TPM_')) throw new ParseError(code, e.message, { cause: e });
    throw e;
  }
}
