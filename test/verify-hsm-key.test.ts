import { createHash, generateKeyPairSync, randomBytes, sign, type KeyObject } from 'node:crypto';
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { AttestorError } from '../src/errors.js';
import {
  CKK_EC,
  HSM_KEY_FLAGS,
  canonicalKeyEvidence,
  keyEvidenceDigest,
  keyEvidenceMessage,
  parseHsmKeyReport,
  type HsmKeyEvidence,
  type HsmKeyReport,
} from '../src/appraisal/hsm-key-report.js';
import { verifyHsmKey, type HsmKeyRequirements } from '../src/appraisal/verify-hsm-key.js';
import { codeOf } from './helpers/code-of.js';
import { hex } from '../src/bytes.js';

// Pure appraisal: reports here are signed by software keys; test/pkcs11-key.test.ts checks
// reports a SoftHSM token made, test/agent-hsm-key-binding.test.ts one bound to a swtpm quote.

const p256 = generateKeyPairSync('ec', { namedCurve: 'P-256' });
const spkiOf = (k: KeyObject) => new Uint8Array(k.export({ type: 'spki', format: 'der' }));

const goodEvidence: HsmKeyEvidence = {
  publicKey: spkiOf(p256.publicKey),
  attributes: {
    token: true,
    private: true,
    sensitive: true,
    extractable: false,
    neverExtractable: true,
    alwaysSensitive: true,
    local: true,
    keyType: CKK_EC,
  },
  token: { manufacturer: 'Example HSM Corp', model: 'HSM-9000', serial: '0011223344', label: 'agents' },
  alg: 'ES256',
};

const NONCE = randomBytes(32);

/**
 * verifyHsmKey of a report whose quote (already verified) carried keyEvidenceDigest(nonce,
 * report): a host that is honest about the binding, so what is under test is the report.
 */
function verifyBound(report: HsmKeyReport, nonce: Uint8Array = NONCE, requirements?: HsmKeyRequirements) {
  return verifyHsmKey(report, { nonce, quotedQualifyingData: keyEvidenceDigest(nonce, report), requirements });
}

/** Evidence with `changes` applied, signed as the agent does (ES256 over keyEvidenceMessage). */
function signed(
  changes: {
    attributes?: Partial<HsmKeyEvidence['attributes']>;
    token?: Partial<HsmKeyEvidence['token']>;
    publicKey?: Uint8Array;
  } = {},
  signer: KeyObject = p256.privateKey,
  nonce: Uint8Array = NONCE,
): HsmKeyReport {
  const evidence: HsmKeyEvidence = {
    ...goodEvidence,
    publicKey: changes.publicKey ?? goodEvidence.publicKey,
    attributes: { ...goodEvidence.attributes, ...changes.attributes },
    token: { ...goodEvidence.token, ...changes.token },
  };
  const signature = sign('sha256', keyEvidenceMessage(nonce, evidence), { key: signer, dsaEncoding: 'ieee-p1363' });
  return { ...evidence, signature: new Uint8Array(signature) };
}

describe('canonicalKeyEvidence', () => {
  it('is the documented length-prefixed encoding (known answer)', () => {
    const field = (b: Uint8Array | string) => {
      const bytes = typeof b === 'string' ? Buffer.from(b, 'utf8') : Buffer.from(b);
      const len = Buffer.alloc(4);
      len.writeUInt32BE(bytes.length);
      return Buffer.concat([len, bytes]);
    };
    const evidence: HsmKeyEvidence = {
      ...goodEvidence,
      publicKey: Uint8Array.from([0xaa, 0xbb]),
      token: { manufacturer: 'M', model: 'mod', serial: '', label: 'é' },
    };
    const expected = Buffer.concat([
      field('attestor/hsm-key-evidence/v1'),
      field('ES256'),
      field(Uint8Array.from([0xaa, 0xbb])),
      field('M'),
      field('mod'),
      field(''),
      field(Uint8Array.from([0xc3, 0xa9])),
      field(Uint8Array.from([1, 1, 1, 0, 1, 1, 1])),
      field(Uint8Array.from([0, 0, 0, 3])),
    ]);
    expect(hex(canonicalKeyEvidence(evidence))).toBe(hex(expected));
  });

  it('does not depend on property order or unknown properties', () => {
    const shuffled = {
      extra: 'ignored',
      alg: 'ES256' as const,
      token: { label: 'agents', serial: '0011223344', model: 'HSM-9000', manufacturer: 'Example HSM Corp' },
      attributes: { ...goodEvidence.attributes },
      publicKey: goodEvidence.publicKey,
    };
    expect(Buffer.from(canonicalKeyEvidence(shuffled)).equals(canonicalKeyEvidence(goodEvidence))).toBe(true);
  });

  it('keeps field boundaries: moving text between fields changes the encoding', () => {
    const a = canonicalKeyEvidence({ ...goodEvidence, token: { ...goodEvidence.token, model: 'ab', serial: 'c' } });
    const b = canonicalKeyEvidence({ ...goodEvidence, token: { ...goodEvidence.token, model: 'a', serial: 'bc' } });
    expect(Buffer.from(a).equals(b)).toBe(false);
  });

  it('keyEvidenceDigest = SHA-256(nonce || SHA-256(canonical evidence)), the quote qualifying data', () => {
    const inner = createHash('sha256').update(canonicalKeyEvidence(goodEvidence)).digest();
    const expected = createHash('sha256').update(NONCE).update(inner).digest();
    expect(Buffer.from(keyEvidenceMessage(NONCE, goodEvidence)).equals(Buffer.concat([NONCE, inner]))).toBe(true);
    expect(Buffer.from(keyEvidenceDigest(NONCE, goodEvidence)).equals(expected)).toBe(true);
  });

  it('refuses an empty nonce with ERR_INPUT', () => {
    expect(codeOf(() => keyEvidenceDigest(new Uint8Array(0), goodEvidence))).toBe('ERR_INPUT');
  });
});

describe('parseHsmKeyReport', () => {
  const good = signed();
  it.each<[string, unknown]>([
    ['not an object', null],
    ['an array', [good]],
    ['another alg', { ...good, alg: 'ES384' }],
    ['publicKey not bytes', { ...good, publicKey: 'MFkw' }],
    ['publicKey empty', { ...good, publicKey: new Uint8Array(0) }],
    ['publicKey too long', { ...good, publicKey: new Uint8Array(4096) }],
    ['attributes missing', { ...good, attributes: undefined }],
    ['an attribute not boolean', { ...good, attributes: { ...good.attributes, sensitive: 1 } }],
    ['keyType negative', { ...good, attributes: { ...good.attributes, keyType: -1 } }],
    ['keyType fractional', { ...good, attributes: { ...good.attributes, keyType: 3.5 } }],
    ['keyType above UINT32', { ...good, attributes: { ...good.attributes, keyType: 2 ** 32 } }],
    ['token missing', { ...good, token: null }],
    ['a token field not text', { ...good, token: { ...good.token, serial: 42 } }],
    ['a token label of 33 bytes', { ...good, token: { ...good.token, label: 'x'.repeat(33) } }],
    ['a model of 17 UTF-8 bytes', { ...good, token: { ...good.token, model: 'é'.repeat(8) + 'x' } }],
    ['a lone surrogate', { ...good, token: { ...good.token, label: 'a\ud800' } }],
    ['signature missing', { ...good, signature: undefined }],
    ['signature empty', { ...good, signature: new Uint8Array(0) }],
  ])('refuses %s with ERR_HSM_KEY_REPORT_MALFORMED', (_what, value) => {
    expect(codeOf(() => parseHsmKeyReport(value))).toBe('ERR_HSM_KEY_REPORT_MALFORMED');
    const quotedQualifyingData = new Uint8Array(32);
    expect(codeOf(() => verifyHsmKey(value as HsmKeyReport, { nonce: NONCE, quotedQualifyingData }))).toBe('ERR_HSM_KEY_REPORT_MALFORMED');
  });

  it('accepts the limits of CK_TOKEN_INFO', () => {
    const token = { manufacturer: 'm'.repeat(32), model: 'é'.repeat(8), serial: 's'.repeat(16), label: '😀'.repeat(8) };
    const value = { ...good, token };
    expect(parseHsmKeyReport(value).token).toEqual(value.token);
  });
});

describe('verifyHsmKey', () => {
  it('accepts a report signed over the nonce and bound to the quote; returns the key and, apart, what the host reported', () => {
    const { publicKey, curve, reported } = verifyBound(signed());
    expect(publicKey.equals(p256.publicKey)).toBe(true);
    expect(curve).toBe('P-256');
    const { token, attributes } = goodEvidence;
    expect(reported).toEqual({ residence: 'pkcs11', token, attributes });
  });

  describe('the binding to the quote (ERR_HSM_KEY_NOT_BOUND)', () => {
    const report = signed();
    const quoted = keyEvidenceDigest(NONCE, report);
    const refused = (r: HsmKeyReport, quotedQualifyingData: unknown) =>
      codeOf(() => verifyHsmKey(r, { nonce: NONCE, quotedQualifyingData: quotedQualifyingData as Uint8Array }));

    it('refuses a report changed after the quote, even signed again by the same key', () => {
      const better = signed({ attributes: { local: true, alwaysSensitive: true }, token: { label: 'renamed' } });
      expect(refused(better, quoted)).toBe('ERR_HSM_KEY_NOT_BOUND');
    });

    it('refuses a report of another key, validly signed over the same nonce', () => {
      const other = generateKeyPairSync('ec', { namedCurve: 'P-256' });
      const theirs = signed({ publicKey: spkiOf(other.publicKey) }, other.privateKey);
      expect(refused(theirs, quoted)).toBe('ERR_HSM_KEY_NOT_BOUND');
    });

    it('refuses qualifying data made for another nonce, or that is not 32 bytes, or missing', () => {
      const otherNonce = randomBytes(32);
      expect(refused(report, keyEvidenceDigest(otherNonce, report))).toBe('ERR_HSM_KEY_NOT_BOUND');
      expect(refused(report, quoted.subarray(0, 31))).toBe('ERR_HSM_KEY_NOT_BOUND');
      expect(refused(report, undefined)).toBe('ERR_HSM_KEY_NOT_BOUND');
      expect(refused(report, Array.from(quoted))).toBe('ERR_HSM_KEY_NOT_BOUND');
      // The very digest verifies.
      expect(() => verifyHsmKey(report, { nonce: NONCE, quotedQualifyingData: quoted })).not.toThrow();
    });
  });

  it.each(HSM_KEY_FLAGS.map((f) => [f]))('names %s when it has the wrong value (ERR_HSM_KEY_ATTRIBUTES)', (flag) => {
    const report = signed({ attributes: { [flag]: !goodEvidence.attributes[flag] } });
    expect(() => verifyBound(report)).toThrow(
      expect.objectContaining({ code: 'ERR_HSM_KEY_ATTRIBUTES', violated: [flag], message: expect.stringContaining(flag) }),
    );
  });

  it('names every violated attribute at once', () => {
    const report = signed({ attributes: { token: false, extractable: true, local: false } });
    expect(() => verifyBound(report)).toThrow(
      expect.objectContaining({ code: 'ERR_HSM_KEY_ATTRIBUTES', violated: ['token', 'extractable', 'local'] }),
    );
  });

  it('refuses a key type other than CKK_EC with ERR_KEY_UNSUPPORTED', () => {
    expect(codeOf(() => verifyBound(signed({ attributes: { keyType: 0 } })))).toBe('ERR_KEY_UNSUPPORTED');
  });

  it.each([
    ['P-384', generateKeyPairSync('ec', { namedCurve: 'P-384' })],
    ['RSA', generateKeyPairSync('rsa', { modulusLength: 2048 })],
    ['Ed25519', generateKeyPairSync('ed25519')],
  ])('refuses a %s public key with ERR_KEY_UNSUPPORTED', (_name, pair) => {
    const report = { ...signed({ publicKey: spkiOf(pair.publicKey) }), signature: new Uint8Array(64) };
    expect(codeOf(() => verifyBound(report))).toBe('ERR_KEY_UNSUPPORTED');
  });

  it.each<[string, (spki: Buffer) => Uint8Array]>([
    ['not DER', () => Uint8Array.from([0x30, 0x03, 0x02, 0x01])],
    ['followed by a trailing byte', (spki) => Buffer.concat([spki, Buffer.from([0])])],
  ])('refuses a publicKey %s with ERR_HSM_KEY_REPORT_MALFORMED', (_what, mutate) => {
    const report = signed({ publicKey: mutate(Buffer.from(goodEvidence.publicKey)) });
    expect(codeOf(() => verifyBound(report))).toBe('ERR_HSM_KEY_REPORT_MALFORMED');
  });

  it('accepts the same key with its point compressed (a valid SPKI, signed as such)', () => {
    const report = signed({ publicKey: compressedSpki(p256.publicKey) });
    expect(verifyBound(report).publicKey.equals(p256.publicKey)).toBe(true);
  });

  it.each<[string, () => HsmKeyReport]>([
    ['signed by another key', () => signed({}, generateKeyPairSync('ec', { namedCurve: 'P-256' }).privateKey)],
    ['signed over another nonce', () => signed({}, p256.privateKey, randomBytes(32))],
    ['with a DER signature', () => {
      const r = signed();
      const der = sign('sha256', keyEvidenceMessage(NONCE, r), p256.privateKey);
      return { ...r, signature: new Uint8Array(der) };
    }],
    ['with a truncated signature', () => {
      const r = signed();
      return { ...r, signature: r.signature.subarray(0, 63) };
    }],
    ['changed after signing (token label)', () => ({ ...signed(), token: { ...goodEvidence.token, label: 'other' } })],
    [
      'changed after signing (attribute)',
      () => ({ ...signed(), attributes: { ...goodEvidence.attributes, alwaysSensitive: false } }),
    ],
  ])('refuses a report %s with ERR_SIGNATURE_INVALID', (_what, make) => {
    expect(codeOf(() => verifyBound(make()))).toBe('ERR_SIGNATURE_INVALID');
  });

  it('applies the token allowlist of the requirements', () => {
    const report = signed();
    const withAllowed = (allowedTokens: HsmKeyRequirements['allowedTokens']) =>
      verifyBound(report, NONCE, { allowedTokens });
    expect(() => withAllowed([{ manufacturer: 'Other' }, { manufacturer: 'Example HSM Corp', model: 'HSM-9000' }])).not.toThrow();
    expect(() => withAllowed([{ serial: '0011223344' }])).not.toThrow();
    expect(() => withAllowed(undefined)).not.toThrow();
    const refused = [[{ manufacturer: 'Example HSM Corp', serial: '9999' }], []];
    for (const allowedTokens of refused) {
      expect(codeOf(() => withAllowed(allowedTokens))).toBe('ERR_HSM_TOKEN_NOT_ALLOWED');
    }
  });

  it('never accepts a mutated report, and fails only with AttestorError (fast-check)', () => {
    const original = signed();
    type Mutation = (r: HsmKeyReport) => unknown;
    const set = (path: string[], value: unknown): Mutation => (r) => {
      const copy = structuredClone(r) as unknown as Record<string, unknown>;
      let at = copy;
      for (const p of path.slice(0, -1)) at = at[p] as Record<string, unknown>;
      if (value === undefined) delete at[path.at(-1)!];
      else at[path.at(-1)!] = value;
      return copy;
    };
    const bytesField = fc.constantFrom<('publicKey' | 'signature')>('publicKey', 'signature');
    const flipBit = fc
      .tuple(bytesField, fc.nat())
      .map(([f, n]): Mutation => (r) => {
        const b = Uint8Array.from(r[f]);
        b[(n >> 3) % b.length]! ^= 1 << (n & 7);
        return { ...r, [f]: b };
      });
    const resize = fc
      .tuple(bytesField, fc.uint8Array({ maxLength: 128 }))
      .map(([f, b]): Mutation => (r) => ({ ...r, [f]: b.length === r[f].length ? Uint8Array.from([...b, 0]) : b }));
    const negate = fc
      .constantFrom(...HSM_KEY_FLAGS)
      .map((f): Mutation => (r) => ({ ...r, attributes: { ...r.attributes, [f]: !r.attributes[f] } }));
    const keyType = fc
      .oneof(fc.integer(), fc.double(), fc.constant(2 ** 32))
      .filter((k) => k !== CKK_EC)
      .map((k) => set(['attributes', 'keyType'], k));
    const tokenText = fc
      .tuple(
        fc.constantFrom('manufacturer', 'model', 'serial', 'label'),
        fc.oneof(fc.string({ unit: 'grapheme', maxLength: 40 }), fc.string({ unit: 'binary', maxLength: 40 })),
      )
      .filter(([f, s]) => s !== original.token[f as keyof HsmKeyReport['token']])
      .map(([f, s]) => set(['token', f], s));
    const alg = fc
      .string()
      .filter((s) => s !== 'ES256')
      .map((s) => set(['alg'], s));
    const paths = [
      ['publicKey'],
      ['signature'],
      ['alg'],
      ['attributes'],
      ['token'],
      ...HSM_KEY_FLAGS.map((f) => ['attributes', f]),
      ['attributes', 'keyType'],
      ...['manufacturer', 'model', 'serial', 'label'].map((f) => ['token', f]),
    ];
    // Any value of another type in any field, or the field removed.
    const wrongType = fc
      .tuple(fc.constantFrom(...paths), fc.oneof(fc.anything(), fc.constant(undefined)))
      .filter(([path, v]) => {
        const current = path.reduce<unknown>((o, p) => (o as Record<string, unknown>)[p], original);
        return typeof v !== typeof current || (current instanceof Uint8Array) !== (v instanceof Uint8Array);
      })
      .map(([path, v]) => set(path, v));
    const otherNonce = fc.uint8Array({ minLength: 1, maxLength: 64 }).filter((n) => !Buffer.from(n).equals(NONCE));

    fc.assert(
      fc.property(
        fc.oneof(
          fc.tuple(fc.oneof(flipBit, resize, negate, keyType, tokenText, alg, wrongType), fc.constant(NONCE)),
          fc.tuple(fc.constant<Mutation>((r) => r), otherNonce),
        ),
        fc.boolean(),
        ([mutate, nonce], quotedMutated) => {
          const mutated = mutate(original) as HsmKeyReport;
          // The quote is the original report's, or (a host lying in both) the mutated one's.
          let quotedQualifyingData = keyEvidenceDigest(NONCE, original);
          if (quotedMutated) {
            try {
              quotedQualifyingData = keyEvidenceDigest(nonce, mutated);
            } catch {
              // A report that has no digest cannot be quoted either.
            }
          }
          let error: unknown;
          try {
            verifyHsmKey(mutated, { nonce, quotedQualifyingData });
          } catch (e) {
            error = e;
          }
          expect(error).toBeInstanceOf(AttestorError);
        },
      ),
      { numRuns: 500 },
    );
    // The unmutated report does verify, so the property is not vacuous.
    expect(() => verifyBound(original)).not.toThrow();
  });
});

/** The SPKI of `key` with its point in compressed form (valid DER, not the canonical encoding). */
function compressedSpki(key: KeyObject): Uint8Array {
  const jwk = key.export({ format: 'jwk' });
  const x = Buffer.from(jwk.x!, 'base64url');
  const y = Buffer.from(jwk.y!, 'base64url');
  const prefix = Buffer.from('3039301306072a8648ce3d020106082a8648ce3d030107032200', 'hex');
  return Buffer.concat([prefix, Buffer.from([2 + (y[31]! & 1)]), x]);
}
