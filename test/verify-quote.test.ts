import { readFileSync } from 'node:fs';
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { checkQuoteProgress } from '../src/appraisal/quote-progress.js';
import { verifyQuote, type QuoteEvidence, type QuotePolicy } from '../src/appraisal/verify-quote.js';
import { AttestorError } from '../src/errors.js';
import { TPMA_OBJECT, TPM_ALG } from '../src/tpm/constants.js';
import { parsePcrFile } from '../src/tpm/pcr-file.js';
import { parseTpm2bPublic, parseTpmtPublic, type TpmPublic } from '../src/tpm/public.js';
import { codeOf } from './helpers/code-of.js';
import { AK_ATTRIBUTES, buildCertify, buildQuote, pcrValue, pcrValuesOf, softAk, type QuoteSpec } from './helpers/tpm-builders.js';
import { vector, vectorsDir } from './vectors.js';
import { hex } from '../src/bytes.js';

const KEYLIME = 'quote-bundles/keylime-tpm2-tools/';
const keylime = {
  ak: parseTpm2bPublic(vector(`${KEYLIME}ak.pub`)),
  evidence: {
    quote: vector(`${KEYLIME}quote.out`),
    signature: vector(`${KEYLIME}quotesig.out`),
    pcrs: parsePcrFile(vector(`${KEYLIME}quotepcr.out`)),
  },
  policy: { qualifyingData: Buffer.from('db1db298db6d60e6385b7231743e9c3056a18003', 'hex') },
};

function loadGce() {
  const j = JSON.parse(readFileSync(`${vectorsDir}/quote-bundles/windows_gcp_shielded_vm.json`, 'utf8'));
  const b64 = (s: string) => new Uint8Array(Buffer.from(s, 'base64'));
  const sha1: Record<number, Uint8Array> = {};
  // go-attestation names hashes by Go's crypto.Hash: 3 is SHA-1.
  for (const p of j.Log.PCRs as Array<{ Index: number; Digest: string; DigestAlg: number }>) {
    expect(p.DigestAlg).toBe(3);
    sha1[p.Index] = b64(p.Digest);
  }
  return {
    // go-attestation stores the TPMT_PUBLIC without the TPM2B size.
    ak: parseTpmtPublic(b64(j.AK.Public)),
    evidence: { quote: b64(j.Quote.Quote), signature: b64(j.Quote.Signature), pcrs: { sha1 } },
    policy: { qualifyingData: b64(j.Quote.Nonce) },
  };
}

describe('real quote bundles', () => {
  it('verifies the tpm2-tools bundle and returns exactly the signed PCRs', () => {
    const v = verifyQuote(keylime.ak, keylime.evidence, keylime.policy);
    expect(Object.keys(v.pcrs)).toEqual(['sha256']);
    expect(Object.keys(v.pcrs.sha256!).map(Number)).toEqual([15, 16, 22]);
    expect(hex(v.pcrs.sha256![22]!)).toBe('ff'.repeat(32));
    expect(v.clockInfo.clock).toBe(5994n);
  });

  it('verifies the GCE Windows quote (RSASSA-SHA1, SHA-1 bank, empty nonce) only when SHA-1 is allowed', () => {
    const gce = loadGce();
    expect(codeOf(() => verifyQuote(gce.ak, gce.evidence, gce.policy))).toBe('ERR_QUOTE_SHA1_NOT_ALLOWED');
    const v = verifyQuote(gce.ak, gce.evidence, { ...gce.policy, allowSha1: true });
    expect(Object.keys(v.pcrs.sha1!)).toHaveLength(24);
  });

  it('rejects mutated copies of the GCE quote', () => {
    const gce = loadGce();
    const policy = { ...gce.policy, allowSha1: true };
    const pcr7 = new Uint8Array(gce.evidence.pcrs.sha1[7]!);
    pcr7[0]! ^= 1;
    const pcrs = { sha1: { ...gce.evidence.pcrs.sha1, 7: pcr7 } };
    expect(codeOf(() => verifyQuote(gce.ak, { ...gce.evidence, pcrs }, policy))).toBe('ERR_QUOTE_PCR_DIGEST_MISMATCH');
    expect(codeOf(() => verifyQuote(gce.ak, gce.evidence, { ...policy, qualifyingData: Uint8Array.of(1) }))).toBe(
      'ERR_QUOTE_NONCE_MISMATCH',
    );
  });
});

describe('quote invariants (each check has its own code)', () => {
  const nonce = new Uint8Array(32).fill(9);
  const spec = (over: Partial<QuoteSpec> = {}): QuoteSpec => ({
    extraData: nonce,
    pcrs: [
      { bank: 'sha256', values: new Map([0, 1, 7].map((i) => [i, pcrValue('sha256', i)])) },
      { bank: 'sha1', values: new Map([7].map((i) => [i, pcrValue('sha1', i)])) },
    ],
    ...over,
  });
  const ecc = softAk('ecc');
  const rsa = softAk('rsa');
  const akOf = (k = ecc): TpmPublic => parseTpm2bPublic(k.public);
  const evidence = (s: QuoteSpec, k = ecc, signOpts?: Parameters<typeof ecc.sign>[1]): QuoteEvidence => {
    const quote = buildQuote(s);
    return { quote, signature: k.sign(quote, signOpts), pcrs: pcrValuesOf(s) };
  };
  const policy: QuotePolicy = { qualifyingData: nonce, requiredPcrs: { sha256: [0, 7] } };

  it('accepts a well-formed quote from ECC and RSA AKs', () => {
    for (const k of [ecc, rsa]) {
      const v = verifyQuote(akOf(k), evidence(spec(), k), policy);
      expect(Object.keys(v.pcrs.sha256!).map(Number)).toEqual([0, 1, 7]);
      expect(Object.keys(v.pcrs.sha1!).map(Number)).toEqual([7]);
    }
  });

  it('ERR_QUOTE_MAGIC: a signed structure without TPM_GENERATED_VALUE', () => {
    expect(codeOf(() => verifyQuote(akOf(), evidence(spec({ magic: 0xff544348 })), policy))).toBe('ERR_QUOTE_MAGIC');
  });

  it('ERR_QUOTE_TYPE: a certify (or any non-quote) attestation offered as a quote', () => {
    const certify = buildCertify({ extraData: nonce, name: new Uint8Array(34) });
    const ev = { quote: certify, signature: ecc.sign(certify), pcrs: pcrValuesOf(spec()) };
    expect(codeOf(() => verifyQuote(akOf(), ev, policy))).toBe('ERR_QUOTE_TYPE');
  });

  it('ERR_SIGNATURE_INVALID: signed by another key than the enrolled AK', () => {
    const other = softAk('ecc');
    expect(codeOf(() => verifyQuote(akOf(), evidence(spec(), other), policy))).toBe('ERR_SIGNATURE_INVALID');
  });

  it('ERR_SIGNATURE_SCHEME_MISMATCH: a scheme the AK does not use, or of the wrong key type', () => {
    // RSAPSS signature with an AK whose scheme is RSASSA: valid math, wrong scheme.
    expect(codeOf(() => verifyQuote(akOf(rsa), evidence(spec(), rsa, { sigAlg: TPM_ALG.RSAPSS }), policy))).toBe(
      'ERR_SIGNATURE_SCHEME_MISMATCH',
    );
    // An ECDSA signature offered for an RSA AK.
    const q = buildQuote(spec());
    expect(codeOf(() => verifyQuote(akOf(rsa), { quote: q, signature: ecc.sign(q), pcrs: pcrValuesOf(spec()) }, policy))).toBe(
      'ERR_SIGNATURE_SCHEME_MISMATCH',
    );
    // A hash other than the AK scheme's.
    const sha384Ak = softAk('ecc', { schemeHash: TPM_ALG.SHA384 });
    expect(codeOf(() => verifyQuote(akOf(sha384Ak), evidence(spec(), sha384Ak), policy))).toBe('ERR_SIGNATURE_SCHEME_MISMATCH');
  });

  it('verifies RSAPSS for an RSAPSS AK; an AK without a signing scheme is no attestation key', () => {
    const pss = softAk('rsa', { scheme: TPM_ALG.RSAPSS });
    expect(() => verifyQuote(akOf(pss), evidence(spec(), pss, { sigAlg: TPM_ALG.RSAPSS }), policy)).not.toThrow();
    // A TPM refuses to create a restricted signing key with a NULL scheme (TPM_RC_SCHEME).
    const open = softAk('rsa', { scheme: null });
    expect(codeOf(() => verifyQuote(akOf(open), evidence(spec(), open, { sigAlg: TPM_ALG.RSAPSS }), policy))).toBe('ERR_AK_ATTRIBUTES');
  });

  it('ERR_AK_ATTRIBUTES: a key that is not a restricted signing key cannot vouch for a quote', () => {
    const loose = softAk('ecc', { attributes: AK_ATTRIBUTES & ~TPMA_OBJECT.restricted });
    expect(codeOf(() => verifyQuote(akOf(loose), evidence(spec(), loose), policy))).toBe('ERR_AK_ATTRIBUTES');
  });

  it('ERR_QUOTE_SHA1_NOT_ALLOWED: a SHA-1 signature by default', () => {
    const s = spec({ digestHash: 'sha1' });
    const quote = buildQuote(s);
    const ak = softAk('rsa', { schemeHash: TPM_ALG.SHA1 });
    const ev = { quote, signature: ak.sign(quote, { hash: 'sha1' }), pcrs: pcrValuesOf(s) };
    expect(codeOf(() => verifyQuote(akOf(ak), ev, policy))).toBe('ERR_QUOTE_SHA1_NOT_ALLOWED');
    expect(() => verifyQuote(akOf(ak), ev, { ...policy, allowSha1: true })).not.toThrow();
  });

  it('ERR_QUOTE_NONCE_MISMATCH: qualifying data other than the issued challenge', () => {
    expect(codeOf(() => verifyQuote(akOf(), evidence(spec({ extraData: new Uint8Array(32) })), policy))).toBe(
      'ERR_QUOTE_NONCE_MISMATCH',
    );
    expect(codeOf(() => verifyQuote(akOf(), evidence(spec({ extraData: nonce.subarray(0, 31) })), policy))).toBe(
      'ERR_QUOTE_NONCE_MISMATCH',
    );
  });

  it('ERR_QUOTE_PCR_NOT_SIGNED: a PCR the baseline needs is outside the signed selection', () => {
    expect(codeOf(() => verifyQuote(akOf(), evidence(spec()), { ...policy, requiredPcrs: { sha256: [0, 4] } }))).toBe(
      'ERR_QUOTE_PCR_NOT_SIGNED',
    );
    // Present in another bank is not present: sha1 PCR 0 is not signed.
    expect(codeOf(() => verifyQuote(akOf(), evidence(spec()), { ...policy, requiredPcrs: { sha1: [0] }, allowSha1: true }))).toBe(
      'ERR_QUOTE_PCR_NOT_SIGNED',
    );
  });

  it('ERR_QUOTE_PCR_MISSING: a signed PCR without a supplied value (or of the wrong size)', () => {
    const ev = evidence(spec());
    const { 1: _dropped, ...rest } = ev.pcrs.sha256!;
    expect(codeOf(() => verifyQuote(akOf(), { ...ev, pcrs: { ...ev.pcrs, sha256: rest } }, policy))).toBe('ERR_QUOTE_PCR_MISSING');
    // The sha1 bank's value supplied under sha256 has the wrong size.
    const swapped = { ...ev.pcrs, sha256: { ...ev.pcrs.sha256, 7: ev.pcrs.sha1![7]! } };
    expect(codeOf(() => verifyQuote(akOf(), { ...ev, pcrs: swapped }, policy))).toBe('ERR_QUOTE_PCR_MISSING');
  });

  it('a renewal under the same AK: the same values pass without a hash, other values under the same signed digest are still refused', () => {
    const ak = akOf();
    const ev = evidence(spec());
    for (let i = 0; i < 2; i++) expect(verifyQuote(ak, ev, policy).pcrs).toEqual(verifyQuote(akOf(), ev, policy).pcrs);
    const changed = new Uint8Array(ev.pcrs.sha256![7]!);
    changed[0]! ^= 1;
    expect(codeOf(() => verifyQuote(ak, { ...ev, pcrs: { ...ev.pcrs, sha256: { ...ev.pcrs.sha256, 7: changed } } }, policy))).toBe('ERR_QUOTE_PCR_DIGEST_MISMATCH');
    // The values remembered are the AK's own: they do not vouch for another quote's digest.
    expect(codeOf(() => verifyQuote(ak, evidence(spec({ pcrDigest: new Uint8Array(32) })), policy))).toBe('ERR_QUOTE_PCR_DIGEST_MISMATCH');
    expect(verifyQuote(ak, ev, policy).pcrs).toBeDefined();
  });

  it('ERR_QUOTE_PCR_DIGEST_MISMATCH: supplied values that do not hash to the signed digest', () => {
    const ev = evidence(spec());
    const changed = new Uint8Array(ev.pcrs.sha256![7]!);
    changed[31]! ^= 0x80;
    expect(codeOf(() => verifyQuote(akOf(), { ...ev, pcrs: { ...ev.pcrs, sha256: { ...ev.pcrs.sha256, 7: changed } } }, policy))).toBe(
      'ERR_QUOTE_PCR_DIGEST_MISMATCH',
    );
    // Two values exchanged between indexes: same multiset, different order.
    const s = ev.pcrs.sha256!;
    expect(codeOf(() => verifyQuote(akOf(), { ...ev, pcrs: { ...ev.pcrs, sha256: { ...s, 0: s[1]!, 1: s[0]! } } }, policy))).toBe(
      'ERR_QUOTE_PCR_DIGEST_MISMATCH',
    );
    expect(codeOf(() => verifyQuote(akOf(), evidence(spec({ pcrDigest: new Uint8Array(32) })), policy))).toBe(
      'ERR_QUOTE_PCR_DIGEST_MISMATCH',
    );
  });

  it('maps values by the signed selection only: extra supplied values are never reported', () => {
    const ev = evidence(spec());
    const extra = { ...ev.pcrs, sha256: { ...ev.pcrs.sha256, 10: pcrValue('sha256', 10) }, sha384: { 0: new Uint8Array(48) } };
    const v = verifyQuote(akOf(), { ...ev, pcrs: extra }, policy);
    expect(Object.keys(v.pcrs).sort()).toEqual(['sha1', 'sha256']);
    expect(v.pcrs.sha256![10]).toBeUndefined();
  });

  it('ERR_QUOTE_CLOCK_ROLLBACK: clock going back without a reset, or resetCount going back', () => {
    const prev = { clock: 5000n, resetCount: 3, restartCount: 0, safe: true };
    expect(codeOf(() => checkQuoteProgress(prev, { ...prev, clock: 4999n }))).toBe('ERR_QUOTE_CLOCK_ROLLBACK');
    // A Restart (resume) saves the clock: it cannot go back either.
    expect(codeOf(() => checkQuoteProgress(prev, { ...prev, clock: 10n, restartCount: 1 }))).toBe('ERR_QUOTE_CLOCK_ROLLBACK');
    // A cleared TPM or a restored older state.
    expect(codeOf(() => checkQuoteProgress(prev, { ...prev, clock: 9000n, resetCount: 2 }))).toBe('ERR_QUOTE_CLOCK_ROLLBACK');
    expect(codeOf(() => checkQuoteProgress(prev, { ...prev, clock: 10n, resetCount: 0 }))).toBe('ERR_QUOTE_CLOCK_ROLLBACK');
    expect(() => checkQuoteProgress(prev, { ...prev, clock: 5001n, restartCount: 1 })).not.toThrow();
    expect(() => checkQuoteProgress(prev, { ...prev, clock: 10n, resetCount: 4 })).not.toThrow();
    // Obfuscated counters keep their order modulo 2^32.
    const high = { ...prev, resetCount: 0xffffffff };
    expect(() => checkQuoteProgress(high, { ...high, clock: 10n, resetCount: 0 })).not.toThrow();
    expect(() => checkQuoteProgress(undefined, prev)).not.toThrow();
    // Through verifyQuote: the counters used are the signed ones.
    const v = verifyQuote(akOf(), evidence(spec({ clock: 4000n, resetCount: 3 })), policy);
    expect(codeOf(() => checkQuoteProgress(prev, v.clockInfo))).toBe('ERR_QUOTE_CLOCK_ROLLBACK');
  });
});

describe('mutations never verify', () => {
  const flips = (bytes: Uint8Array) =>
    Array.from({ length: bytes.length * 8 }, (_, bit) => {
      const copy = new Uint8Array(bytes);
      copy[bit >> 3]! ^= 1 << (bit & 7);
      return copy;
    });

  it('every single-bit flip of the tpm2-tools quote and of its signature is rejected with a typed error', () => {
    for (const quote of flips(keylime.evidence.quote)) {
      expect(() => verifyQuote(keylime.ak, { ...keylime.evidence, quote }, keylime.policy)).toThrow(AttestorError);
    }
    for (const signature of flips(keylime.evidence.signature)) {
      expect(() => verifyQuote(keylime.ak, { ...keylime.evidence, signature }, keylime.policy)).toThrow(AttestorError);
    }
  });

  it('a changed bit in any signed PCR value is rejected', () => {
    fc.assert(
      fc.property(fc.constantFrom(15, 16, 22), fc.integer({ min: 0, max: 255 }), (index, bit) => {
        const value = new Uint8Array(keylime.evidence.pcrs.sha256![index]!);
        value[bit >> 3]! ^= 1 << (bit & 7);
        const pcrs = { sha256: { ...keylime.evidence.pcrs.sha256, [index]: value } };
        expect(codeOf(() => verifyQuote(keylime.ak, { ...keylime.evidence, pcrs }, keylime.policy))).toBe(
          'ERR_QUOTE_PCR_DIGEST_MISMATCH',
        );
      }),
    );
  });

  it('values supplied under another bank are rejected', () => {
    const pcrs = { sha1: keylime.evidence.pcrs.sha256! };
    expect(codeOf(() => verifyQuote(keylime.ak, { ...keylime.evidence, pcrs }, keylime.policy))).toBe('ERR_QUOTE_PCR_MISSING');
  });

  it('random mutations of quote, signature and AK only ever produce typed errors', () => {
    const mutate = fc
      .tuple(fc.integer({ min: 0, max: 2 }), fc.nat(), fc.nat({ max: 255 }), fc.boolean())
      .map(([which, pos, value, truncate]) => ({ which, pos, value, truncate }));
    fc.assert(
      fc.property(mutate, ({ which, pos, value, truncate }) => {
        const parts = [keylime.evidence.quote, keylime.evidence.signature, vector(`${KEYLIME}ak.pub`)];
        const target = new Uint8Array(parts[which]!);
        const at = pos % target.length;
        const bytes = truncate ? target.subarray(0, at) : (target.fill(value, at, at + 1), target);
        const run = () => {
          const ak = which === 2 ? parseTpm2bPublic(bytes) : keylime.ak;
          const ev = { ...keylime.evidence, ...(which === 0 ? { quote: bytes } : which === 1 ? { signature: bytes } : {}) };
          return verifyQuote(ak, ev, keylime.policy);
        };
        const unchanged = !truncate && parts[which]![at] === value;
        if (unchanged) expect(run).not.toThrow();
        else if (which < 2) expect(run).toThrow(AttestorError);
        else {
          // Some AK bits (userWithAuth, noDA, ...) do not bear on a quote: such a change may verify.
          try {
            run();
          } catch (e) {
            expect(e).toBeInstanceOf(AttestorError);
          }
        }
      }),
      { numRuns: 2000 },
    );
  });
});
