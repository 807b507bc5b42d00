import type { Json, StoredClock } from './store.js';

/*
 * Column values as both drivers return them, mapped to the types of the Store interface.
 * JSON is stored as text in both dialects: PostgreSQL's jsonb would reorder keys, normalize
 * numbers and refuse "\u0000", and nothing queries inside these documents.
 */

/** A BLOB/BYTEA column: a Uint8Array of its own (the drivers' Buffers may share a pooled ArrayBuffer). */
export function bytes(value: unknown): Uint8Array {
  return new Uint8Array(value as Uint8Array);
}

export function bytesOrNull(value: unknown): Uint8Array | null {
  return value === null ? null : bytes(value);
}

export function json<T = Json>(value: unknown): T {
  return JSON.parse(value as string) as T;
}

export function jsonOrNull<T = Json>(value: unknown): T | null {
  return value === null ? null : json<T>(value);
}

/** An INTEGER/BIGINT column (PostgreSQL's BIGINT arrives as a number: see postgres.ts). */
export function int(value: unknown): number {
  return value as number;
}

export function intOrNull(value: unknown): number | null {
  return value === null ? null : int(value);
}

/** A boolean column: BOOLEAN on PostgreSQL, 0/1 on SQLite. */
export function bool(value: unknown): boolean {
  return value === true || value === 1;
}

export function text(value: unknown): string {
  return value as string;
}

export function textOrNull(value: unknown): string | null {
  return value === null ? null : text(value);
}

/** JSON as callers hand it in: readonly arrays and records (labels, PCR selections, clocks) too. */
export type JsonInput = Json | readonly JsonInput[] | { readonly [key: string]: JsonInput };

/** A JSON parameter. */
export function jsonParam(value: JsonInput | StoredClock): string {
  return JSON.stringify(value);
}
