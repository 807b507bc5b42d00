/**
 * Finding "CBOR value sharing and packing: a body of a few hundred bytes decodes into an
 * exponential or 10,000-fold larger value" (critical, unauthenticated DoS).
 *
 * cbor-x decodes, whatever the Decoder options, tag 28/29 (value sharing: one object referenced
 * many times), tag 51 + tags 216..255 (packed prefix/suffix tables: each reference copies an
 * array) and tag 6 (packed references). decodeBody then walks the value as a tree
 * (checkDepth), so a DAG of 24 levels of two references each (221 bytes) costs 2^24 visits,
 * and every further level doubles it: with 3 references a level and 30 levels (~300 bytes) the
 * event loop never comes back. A 25 KB packed-prefix body became 376 MB of heap and 8 s of CPU;
 * the 256 KB the enrollment route takes is enough to run the verifier out of memory. All agent
 * routes decode CBOR before anything else, unauthenticated.
 *
 * Finding "CBOR bignums (tags 2/3) decode in super-linear time" (critical, unauthenticated
 * DoS): cbor-x builds a bignum one byte at a time by BigInt shifts. Measured on one core: 50 KB
 * 0.4 s, 100 KB 1.3 s, 150 KB 64 s, 196 KB 238 s of a blocked event loop; the enrollment route
 * takes 256 KB and the attestation route 12 MB.
 *
 * A fix that holds for both: refuse every tag in request bodies (the wire contract uses none:
 * bytes are byte strings, numbers are plain integers), before cbor-x acts on it, or decode
 * with a small strict decoder of the few major types the contract uses; and bound the visit by
 * the body's size (a decoded value can never have more nodes than the body has bytes).
 */
import fc from 'fast-check';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { bootstrapCa } from '../src/client/api-client.js';
import { isAttestorError } from '../src/errors.js';
import { CBOR_TYPE, decodeBody } from '../src/wire/codec.js';
import { postRaw, type AttackBed } from './attack-harness.js';
import { startTestVerifier, type TestVerifier } from './helpers/verifier.js';

/** CBOR head of major type `major` with argument `n`. */
function head(out: number[], major: number, n: number): void {
  if (n < 24) out.push((major << 5) | n);
  else if (n < 0x100) out.push((major << 5) | 24, n);
  else if (n < 0x10000) out.push((major << 5) | 25, n >> 8, n & 0xff);
  else out.push((major << 5) | 26, (n >>> 24) & 0xff, (n >>> 16) & 0xff, (n >>> 8) & 0xff, n & 0xff);
}

const TAG_SHAREABLE = [0xd8, 28];
const TAG_SHARED_REF = [0xd8, 29];

/**
 * [ 28([]), 28([29(0) x width]), 28([29(1) x width]), ... ]: level i holds `width` references
 * to level i-1, so the last level unfolds into width^levels leaves.
 */
function sharedDag(width: number, levels: number): Buffer {
  const out: number[] = [];
  head(out, 4, levels + 1);
  out.push(...TAG_SHAREABLE);
  head(out, 4, 0);
  for (let level = 1; level <= levels; level++) {
    out.push(...TAG_SHAREABLE);
    head(out, 4, width);
    for (let j = 0; j < width; j++) {
      out.push(...TAG_SHARED_REF);
      head(out, 0, level - 1);
    }
  }
  return Buffer.from(out);
}

/** 51([ [0], [0, [1 x prefixLength]], [], [225([]) x references] ]): each tag 225 copies the prefix array. */
function packedPrefixes(prefixLength: number, references: number): Buffer {
  const out: number[] = [0xd8, 51, 0x84];
  head(out, 4, 1);
  out.push(0x00);
  head(out, 4, 2);
  out.push(0x00);
  head(out, 4, prefixLength);
  for (let i = 0; i < prefixLength; i++) out.push(0x01);
  head(out, 4, 0);
  head(out, 4, references);
  for (let i = 0; i < references; i++) out.push(0xd8, 225, 0x80);
  return Buffer.from(out);
}

/** 51([ [0 x 16, [1 x size]], [], [], [6(0) x references] ]): every tag 6 is the one packed array again. */
function packedReferences(size: number, references: number): Buffer {
  const out: number[] = [0xd8, 51, 0x84];
  head(out, 4, 17);
  for (let i = 0; i < 16; i++) out.push(0x00);
  head(out, 4, size);
  for (let i = 0; i < size; i++) out.push(0x01);
  head(out, 4, 0);
  head(out, 4, 0);
  head(out, 4, references);
  for (let i = 0; i < references; i++) out.push(0xc6, 0x00);
  return Buffer.from(out);
}

/** 2(h'ff...'): a positive bignum of `size` bytes. */
function bignum(size: number): Buffer {
  const out: number[] = [0xc2];
  head(out, 2, size);
  return Buffer.concat([Buffer.from(out), Buffer.alloc(size, 0xff)]);
}

/** Nodes of `value` walked as a tree (what checkDepth and zod do), counting no further than `cap`. */
function treeNodes(value: unknown, cap: number): number {
  let n = 0;
  const stack: unknown[] = [value];
  while (stack.length > 0 && n <= cap) {
    const v = stack.pop();
    n++;
    if (v !== null && typeof v === 'object' && !(v instanceof Uint8Array)) stack.push(...(Array.isArray(v) ? v : Object.values(v)));
  }
  return n;
}

/** decodeBody refuses `bytes` with ERR_DECODE, or gives a value no larger than the body (as a tree). */
function boundedOrRefused(bytes: Buffer): boolean {
  let value: unknown;
  try {
    value = decodeBody(bytes, 'cbor');
  } catch (e) {
    return isAttestorError(e) && e.code === 'ERR_DECODE';
  }
  return treeNodes(value, bytes.length) <= bytes.length;
}

describe('CBOR value sharing and packing, and bignums: a few hundred bytes decode into an exponential or 10,000-fold larger value, a bignum in super-linear time', () => {
  it('value sharing (tags 28/29) is refused with ERR_DECODE', () => {
    // 6 levels of two references: 38 bytes that unfold into 2^6 leaves (24 levels: 2.3 s; 30 levels of three: never).
    const body = sharedDag(2, 6);
    expect(body.length).toBeLessThan(64);
    expect(() => decodeBody(body, 'cbor')).toThrow(expect.objectContaining({ code: 'ERR_DECODE' }));
  });

  it('packed prefix tables (tags 51, 225) are refused with ERR_DECODE', () => {
    expect(() => decodeBody(packedPrefixes(100, 100), 'cbor')).toThrow(expect.objectContaining({ code: 'ERR_DECODE' }));
  });

  it('packed references (tags 51, 6) are refused with ERR_DECODE', () => {
    expect(() => decodeBody(packedReferences(100, 100), 'cbor')).toThrow(expect.objectContaining({ code: 'ERR_DECODE' }));
  });

  it('bignums (tags 2/3) are refused with ERR_DECODE', () => {
    // 2 KB decodes in milliseconds; 150 KB of the same blocks the event loop for a minute.
    expect(() => decodeBody(bignum(2048), 'cbor')).toThrow(expect.objectContaining({ code: 'ERR_DECODE' }));
  });

  it('property: no CBOR body decodes into a value with more nodes than it has bytes', () => {
    const bodies = fc.oneof(
      fc.tuple(fc.integer({ min: 2, max: 3 }), fc.integer({ min: 1, max: 9 })).map(([w, l]) => sharedDag(w, l)),
      fc.tuple(fc.integer({ min: 1, max: 200 }), fc.integer({ min: 1, max: 50 })).map(([p, r]) => packedPrefixes(p, r)),
      fc.tuple(fc.integer({ min: 1, max: 200 }), fc.integer({ min: 1, max: 50 })).map(([s, r]) => packedReferences(s, r)),
    );
    fc.assert(fc.property(bodies, boundedOrRefused), { numRuns: 200 });
  });
});

describe('CBOR amplification over HTTPS: refused as ERR_DECODE before any schema or rate limit', () => {
  let v: TestVerifier;
  let bed: Pick<AttackBed, 'v' | 'caPem'>;

  beforeAll(async () => {
    v = await startTestVerifier();
    bed = { v, caPem: await bootstrapCa(v.url, v.caFingerprint) };
  });
  afterAll(async () => {
    await v?.stop();
  });

  // Small instances of each: today they are decoded and walked in full, then the schema refuses
  // them (ERR_INPUT); the same bodies grown a little hang or crash the verifier.
  for (const [name, body] of [
    ['value sharing', sharedDag(2, 8)],
    ['packed prefixes', packedPrefixes(50, 50)],
    ['packed references', packedReferences(50, 50)],
    ['a bignum', bignum(2048)],
  ] as const) {
    it(`POST /v1/enrollments with ${name}: ERR_DECODE`, async () => {
      const answer = await postRaw(bed as AttackBed, '/v1/enrollments', CBOR_TYPE, body);
      expect(answer.status).toBe(400);
      expect(answer.body.code).toBe('ERR_DECODE');
    });
  }
});
