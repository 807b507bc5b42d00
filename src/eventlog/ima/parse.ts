import { AsciiCursor } from './parse-ascii.js';
import { BinaryCursor } from './parse-binary.js';
import type { ImaEntry } from './templates.js';

/** The two forms securityfs offers the list in: ascii_ and binary_runtime_measurements. */
export type ImaFormat = 'ascii' | 'binary';

/** Reads a measurement list one entry at a time, so a caller can stop early. */
export interface ImaEntryCursor {
  /** Offset, in the bytes given, of the next unread entry. */
  readonly offset: number;
  /** The next entry, or undefined when the bytes end exactly after the previous one. */
  next(): ImaEntry | undefined;
}

/**
 * A binary list starts with a little-endian u32 PCR index (< 24, so three zero bytes); an
 * ASCII list starts with the PCR index in decimal.
 */
export function detectImaFormat(bytes: Uint8Array): ImaFormat {
  return bytes.length >= 4 && bytes[1] === 0 && bytes[2] === 0 && bytes[3] === 0 ? 'binary' : 'ascii';
}

/** A cursor at `offset` of `bytes`, whose first entry has list index `firstIndex`. */
export function openImaCursor(format: ImaFormat, bytes: Uint8Array, offset = 0, firstIndex = 0): ImaEntryCursor {
  return format === 'ascii' ? new AsciiCursor(bytes, offset, firstIndex) : new BinaryCursor(bytes, offset, firstIndex);
}

/** Every entry of a whole list. */
export function parseImaLog(bytes: Uint8Array, format: ImaFormat = detectImaFormat(bytes)): ImaEntry[] {
  const cursor = openImaCursor(format, bytes);
  const entries: ImaEntry[] = [];
  for (let entry = cursor.next(); entry; entry = cursor.next()) entries.push(entry);
  return entries;
}
