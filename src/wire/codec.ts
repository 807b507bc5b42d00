import { Decoder, Encoder } from 'cbor-x';
import { AttestorError } from '../errors.js';
import { scanCbor } from './cbor-scan.js';

/*
 * Body encodings of the v1 wire contract: JSON (bytes as base64url) and CBOR (RFC 8949; bytes
 * as byte strings). Decoding is bounded: the caller caps the body's size, and decodeBody
 * refuses values nested deeper than MAX_DEPTH, so no body turns into unbounded recursion in the
 * schemas that read it.
 */

export type BodyFormat = 'json' | 'cbor';

export const JSON_TYPE = 'application/json';
export const CBOR_TYPE = 'application/cbor';
export const PROBLEM_TYPE = 'application/problem+json';

/** Deepest nesting a body may have: the deepest schema (a baseline document) needs far fewer. */
export const MAX_DEPTH = 32;

/**
 * Entries an array or map may have. Agent bodies need a few dozen at most (PCRs of a bank,
 * labels): their large parts are byte strings. Operator bodies (an IMA allowlist) need more,
 * and come authenticated. The cap keeps validation linear and small: a schema that reports
 * every bad entry of a million-entry map blocks the event loop for seconds.
 */
export const MAX_ENTRIES = { agent: 256, operator: 100_000 } as const;

// Plain maps and no shared structures or records: what other CBOR implementations read too.
const cborDecoder = new Decoder({ mapsAsObjects: true, useRecords: false });
const cborEncoder = new Encoder({ useRecords: false, mapsAsObjects: true, tagUint8Array: false } as ConstructorParameters<typeof Encoder>[0]);

/** The format of a Content-Type or Accept value; undefined for anything else. */
export function formatOf(mediaType: string | undefined): BodyFormat | undefined {
  const type = mediaType?.split(';', 1)[0]?.trim().toLowerCase();
  if (type === JSON_TYPE) return 'json';
  if (type === CBOR_TYPE) return 'cbor';
  return undefined;
}

/** Decodes a request or response body; ERR_DECODE for anything malformed, nested too deep or too wide. */
export function decodeBody(body: Uint8Array, format: BodyFormat, maxEntries: number = MAX_ENTRIES.operator): unknown {
  if (format === 'cbor') scanCbor(body, MAX_DEPTH, maxEntries);
  let value: unknown;
  try {
    value = format === 'json' ? JSON.parse(Buffer.from(body.buffer, body.byteOffset, body.byteLength).toString('utf8')) : cborDecoder.decode(body);
  } catch {
    // The parser's message may quote the body: keep it out of errors and logs.
    throw new AttestorError('ERR_DECODE', `the body is not well-formed ${format === 'json' ? 'JSON' : 'CBOR'}`);
  }
  checkShape(value, maxEntries);
  return value;
}

/** Encodes a body: in JSON every Uint8Array becomes base64url; CBOR keeps byte strings. */
export function encodeBody(value: unknown, format: BodyFormat): Buffer {
  return format === 'json' ? Buffer.from(JSON.stringify(toJsonValue(value))) : Buffer.from(cborEncoder.encode(value));
}

/** The value with byte arrays as base64url strings (and undefined members dropped), for JSON. */
export function toJsonValue(value: unknown): unknown {
  if (value instanceof Uint8Array) return Buffer.from(value.buffer, value.byteOffset, value.byteLength).toString('base64url');
  if (Array.isArray(value)) return value.map(toJsonValue);
  if (value !== null && typeof value === 'object') {
    const out: Record<string, unknown> = {};
    for (const [k, v] of Object.entries(value)) if (v !== undefined) out[k] = toJsonValue(v);
    return out;
  }
  return value;
}

/** Depth and width of a decoded JSON value; iterative, so a hostile depth cannot overflow the stack here either. */
function checkShape(root: unknown, maxEntries: number): void {
  const stack: Array<[unknown, number]> = [[root, 1]];
  while (stack.length > 0) {
    const [value, depth] = stack.pop()!;
    if (value === null || typeof value !== 'object' || value instanceof Uint8Array) continue;
    if (depth > MAX_DEPTH) throw new AttestorError('ERR_DECODE', `the body is nested deeper than ${MAX_DEPTH} levels`);
    const children = Array.isArray(value) ? value : Object.values(value);
    if (children.length > maxEntries) throw new AttestorError('ERR_DECODE', `the body has a list or map of more than ${maxEntries} entries`);
    for (const child of children) stack.push([child, depth + 1]);
  }
}
