/**
 * Second-round attacks on body decoding (real verifier, SQLite, file keys). The tests assert the
 * secure behaviour; they fail until it is in place.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { encodeBody } from '../src/wire/codec.js';
import { postRaw, startAttackBed, type AttackBed } from './attack-harness.js';

let bed: AttackBed;

beforeAll(async () => {
  bed = await startAttackBed({ store: 'sqlite' });
}, 120_000);

afterAll(async () => {
  await bed?.stop();
});

/** A bank of `n` PCR entries whose indexes are all out of range: well-formed, linear, and far larger than any TPM has. */
function oversizedBank(n: number): Record<string, number> {
  const bank: Record<string, number> = {};
  for (let i = 0; i < n; i++) bank[String(100 + i)] = 0;
  return bank;
}

describe('A body with a huge PCR bank is not refused as bad input', () => {
  // No agent, no challenge, no rate limit: the body is decoded and validated before the route
  // looks at the agent id. zod validates every entry of the record (the schema allows 24 keys,
  // but nothing bounds the count before each key and value is checked), collects two issues per
  // entry and spreads them into the outer record's list with push(...issues), which overflows
  // the stack past ~120k issues. Measured on this machine: ~2 s for this 2 MB body, ~8 s of
  // blocked event loop for a 1M-entry body (8-11 MB, under the 12 MB attestation limit), each
  // ending in 500 ERR_INTERNAL and an "unexpected error" log line.
  for (const format of ['json', 'cbor'] as const) {
    it(`${format}: 200k out-of-range PCR indexes are refused as a 4xx, not a 500`, async () => {
      const body = encodeBody({ pcrs: { sha256: oversizedBank(200_000) } }, format);
      const answer = await postRaw(bed, `/v1/agents/${'0'.repeat(64)}/attestations`, `application/${format}`, body);
      // Before the fix: 500 ERR_INTERNAL (RangeError: Maximum call stack size exceeded in zod).
      expect(answer.body.code).not.toBe('ERR_INTERNAL');
      expect(answer.status).toBe(400);
      expect(['ERR_DECODE', 'ERR_INPUT']).toContain(answer.body.code);
    });
  }
});
