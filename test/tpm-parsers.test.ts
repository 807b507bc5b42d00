import { readFileSync } from 'node:fs';
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { AttestorError, ParseError } from '../src/errors.js';
import { parseAttest } from '../src/tpm/attest.js';
import { TPM_ALG } from '../src/tpm/constants.js';
import { encodePcrFile, parsePcrFile } from '../src/tpm/pcr-file.js';
import { formatPcrSelection, parsePcrSelectionSpec } from '../src/tpm/pcr-selection.js';
import { objectName } from '../src/tpm/name.js';
import { parseTpm2bPublic, parseTpmtPublic } from '../src/tpm/public.js';
import { publicKeyOf } from '../src/tpm/public-key.js';
import { parseSignature } from '../src/tpm/signature.js';
import { verifyTpmSignature } from '../src/tpm/verify-signature.js';
import { codeOf, parsesOrTypedError } from './helpers/code-of.js';
import { softAk } from './helpers/tpm-builders.js';
import { TpmWriter } from '../src/tpm/writer.js';
import { fixture, manifest } from './fixtures.js';
import { vector, vectorsDir } from './vectors.js';

const KEYLIME = 'quote-bundles/keylime-tpm2-tools/';
const samples = {
  'TPM2B_PUBLIC (RSA AK)': { bytes: vector(`${KEYLIME}ak.pub`), parse: parseTpm2bPublic },
  'TPM2B_PUBLIC (RSA EK)': { bytes: vector(`${KEYLIME}ek.pub`), parse: parseTpm2bPublic },
  'TPM2B_PUBLIC (ECC AK)': { bytes: fixture(manifest.dirs.ecc!.ak.pub), parse: parseTpm2bPublic },
  'TPMS_ATTEST (quote)': { bytes: vector(`${KEYLIME}quote.out`), parse: parseAttest },
  'TPMS_ATTEST (certify)': { bytes: fixture(manifest.dirs.ecc!.certify!.msg), parse: parseAttest },
  'TPMT_SIGNATURE (RSASSA)': { bytes: vector(`${KEYLIME}quotesig.out`), parse: parseSignature },
  'TPMT_SIGNATURE (ECDSA)': { bytes: fixture(manifest.dirs.ecc!.quote.sig), parse: parseSignature },
  'PCR file': { bytes: vector(`${KEYLIME}quotepcr.out`), parse: parsePcrFile },
};

describe.each(Object.entries(samples))('%s', (_name, { bytes, parse }) => {
  it('parses the real sample', () => {
    expect(() => parse(bytes)).not.toThrow();
  });

  it('every truncation is a typed error', () => {
    for (let len = 0; len < bytes.length; len++) {
      expect(() => parse(bytes.subarray(0, len))).toThrow(ParseError);
    }
  });

  it('trailing bytes are refused', () => {
    const longer = new Uint8Array(bytes.length + 1);
    longer.set(bytes);
    expect(() => parse(longer)).toThrow(ParseError);
  });

  it('random bytes and mutated samples only produce typed errors', () => {
    fc.assert(fc.property(fc.uint8Array({ maxLength: 1024 }), (b) => parsesOrTypedError(parse, b)), { numRuns: 3000 });
    fc.assert(
      fc.property(fc.array(fc.tuple(fc.nat(), fc.nat({ max: 255 })), { minLength: 1, maxLength: 8 }), (edits) => {
        const b = new Uint8Array(bytes);
        for (const [pos, v] of edits) b[pos % b.length] = v;
        parsesOrTypedError(parse, b);
      }),
      { numRuns: 3000 },
    );
  });
});

describe('TPMT_PUBLIC details', () => {
  const keylimeAk = parseTpm2bPublic(vector(`${KEYLIME}ak.pub`));
  if (keylimeAk.type !== 'rsa') throw new Error('the vector AK is RSA');
  const rsaPublic = (opts: { exponent?: number; keyBits?: number; modulus?: Uint8Array; type?: number }) =>
    new TpmWriter()
      .u16(opts.type ?? TPM_ALG.RSA)
      .u16(TPM_ALG.SHA256)
      .u32(0x00050072)
      .tpm2b(new Uint8Array())
      .u16(TPM_ALG.NULL)
      .u16(TPM_ALG.RSASSA)
      .u16(TPM_ALG.SHA256)
      .u16(opts.keyBits ?? 2048)
      .u32(opts.exponent ?? 0)
      .tpm2b(opts.modulus ?? keylimeAk.modulus)
      .finish();

  it('reads the RSA exponent big-endian, and 0 as 65537', () => {
    const three = parseTpmtPublic(rsaPublic({ exponent: 3 }));
    expect(three.type === 'rsa' && three.exponent).toBe(3);
    expect(publicKeyOf(three).export({ format: 'jwk' }).e).toBe('Aw');
    expect(publicKeyOf(parseTpmtPublic(rsaPublic({}))).export({ format: 'jwk' }).e).toBe('AQAB');
  });

  it('ERR_TPM_BAD_VALUE: RSA values no TPM would make (e = 1, even e, short or even modulus)', () => {
    // With e = 1 the "signature" of a digest would be its own padding: a forgery.
    for (const exponent of [1, 2, 65536]) expect(codeOf(() => parseTpmtPublic(rsaPublic({ exponent })))).toBe('ERR_TPM_BAD_VALUE');
    const short = new Uint8Array(keylimeAk.modulus);
    short[0] = 0x00;
    expect(codeOf(() => parseTpmtPublic(rsaPublic({ modulus: short })))).toBe('ERR_TPM_BAD_VALUE');
    const even = new Uint8Array(keylimeAk.modulus);
    even[even.length - 1]! &= 0xfe;
    expect(codeOf(() => parseTpmtPublic(rsaPublic({ modulus: even })))).toBe('ERR_TPM_BAD_VALUE');
  });

  it('ERR_TPM_SIZE_MISMATCH: a modulus that is not keyBits long', () => {
    expect(codeOf(() => parseTpmtPublic(rsaPublic({ keyBits: 3072 })))).toBe('ERR_TPM_SIZE_MISMATCH');
  });

  it('ERR_TPM_BAD_VALUE: a key size no TPM has', () => {
    expect(codeOf(() => parseTpmtPublic(rsaPublic({ keyBits: 2047 })))).toBe('ERR_TPM_BAD_VALUE');
  });

  it('ERR_TPM_UNSUPPORTED_ALG: object types other than RSA and ECC, unknown nameAlg', () => {
    expect(codeOf(() => parseTpmtPublic(rsaPublic({ type: TPM_ALG.KEYEDHASH })))).toBe('ERR_TPM_UNSUPPORTED_ALG');
    const b = rsaPublic({});
    b[3] = 0x99;
    expect(codeOf(() => parseTpmtPublic(b))).toBe('ERR_TPM_UNSUPPORTED_ALG');
  });

  it('ERR_TPM_SIZE_MISMATCH / ERR_TPM_TRAILING_BYTES: TPM2B_PUBLIC size disagreeing with its content', () => {
    const inner = rsaPublic({});
    const bigger = new TpmWriter().u16(inner.length + 2).bytes(inner).u16(0).finish();
    expect(codeOf(() => parseTpm2bPublic(bigger))).toBe('ERR_TPM_TRAILING_BYTES');
    expect(codeOf(() => parseTpm2bPublic(new TpmWriter().u16(0).finish()))).toBe('ERR_TPM_SIZE_MISMATCH');
  });

  it('ERR_TPM_BAD_VALUE: an ECC point that is not on the curve', () => {
    const ak = parseTpm2bPublic(softAk('ecc').public);
    if (ak.type !== 'ecc') throw new Error('unreachable');
    const y = new Uint8Array(ak.y);
    y[5]! ^= 1;
    expect(codeOf(() => publicKeyOf({ ...ak, y }))).toBe('ERR_TPM_BAD_VALUE');
  });

  it('the parsed public key is cached per parsed object', () => {
    const ak = parseTpm2bPublic(vector(`${KEYLIME}ak.pub`));
    expect(publicKeyOf(ak)).toBe(publicKeyOf(ak));
  });
});

describe('TPMS_ATTEST, TPML_PCR_SELECTION and TPMT_SIGNATURE details', () => {
  const quote = vector(`${KEYLIME}quote.out`);
  // Offsets in the vector: magic(4) type(2) signer(2+34) extraData(2+20) clock(17) fw(8) = 89.
  const selectionAt = 4 + 2 + 36 + 22 + 17 + 8;

  it('parses a real CREATION attestation (GCE AK) with its signer and firmware version', () => {
    const j = JSON.parse(readFileSync(`${vectorsDir}/quote-bundles/windows_gcp_shielded_vm.json`, 'utf8'));
    const b64 = (x: string) => new Uint8Array(Buffer.from(x, 'base64'));
    const ak = parseTpmtPublic(b64(j.AK.Public));
    const creation = parseAttest(b64(j.AK.CreateAttestation));
    const quoteAttest = parseAttest(b64(j.Quote.Quote));
    expect(creation.attested.type).toBe('creation');
    if (creation.attested.type !== 'creation') throw new Error('unreachable');
    // The creation attestation is about the AK itself, signed by it (go-attestation's AK proof).
    expect(Buffer.from(creation.attested.objectName).equals(Buffer.from(objectName(ak)))).toBe(true);
    expect(creation.attested.creationHash).toHaveLength(32);
    expect(Buffer.from(creation.qualifiedSigner).equals(Buffer.from(quoteAttest.qualifiedSigner))).toBe(true);
    expect(creation.firmwareVersion).toBe(quoteAttest.firmwareVersion);
    expect(() => verifyTpmSignature(ak, b64(j.AK.CreateAttestation), parseSignature(b64(j.AK.CreateSignature)))).not.toThrow();
  });

  it('accepts qualifying data up to sizeof(TPMT_HA) = 66 bytes, not more', () => {
    const build = (n: number) =>
      new TpmWriter().u32(0xff544347).u16(0x8017).tpm2b(new Uint8Array(34)).tpm2b(new Uint8Array(n)).u64(1n).u32(0).u32(0).u8(1).u64(0n).tpm2b(new Uint8Array(34)).tpm2b(new Uint8Array(34)).finish();
    expect(parseAttest(build(66)).extraData).toHaveLength(66);
    expect(codeOf(() => parseAttest(build(67)))).toBe('ERR_TPM_BAD_VALUE');
  });

  it('ERR_TPM_BAD_VALUE: clockInfo.safe other than YES/NO', () => {
    const b = new Uint8Array(quote);
    b[selectionAt - 9] = 2;
    expect(codeOf(() => parseAttest(b))).toBe('ERR_TPM_BAD_VALUE');
  });

  it('ERR_TPM_BAD_VALUE: unknown attestation type, oversized sizeofSelect, too many banks, a bank twice', () => {
    const type = new Uint8Array(quote);
    type[5] = 0x99;
    expect(codeOf(() => parseAttest(type))).toBe('ERR_TPM_BAD_VALUE');
    const size = new Uint8Array(quote);
    size[selectionAt + 6] = 5;
    expect(codeOf(() => parseAttest(size))).toBe('ERR_TPM_BAD_VALUE');
    const count = new Uint8Array(quote);
    count[selectionAt + 3] = 17;
    expect(codeOf(() => parseAttest(count))).toBe('ERR_TPM_BAD_VALUE');
    // Two identical sha256 selections.
    const sel = quote.subarray(selectionAt + 4, selectionAt + 4 + 6);
    const twice = new TpmWriter()
      .bytes(quote.subarray(0, selectionAt))
      .u32(2)
      .bytes(sel)
      .bytes(sel)
      .bytes(quote.subarray(selectionAt + 10))
      .finish();
    expect(codeOf(() => parseAttest(twice))).toBe('ERR_TPM_BAD_VALUE');
  });

  it('ERR_SIGNATURE_UNSUPPORTED: HMAC, ECDAA, SM2, ECSCHNORR and NULL signatures', () => {
    for (const alg of [TPM_ALG.HMAC, TPM_ALG.ECDAA, TPM_ALG.SM2, TPM_ALG.ECSCHNORR, TPM_ALG.NULL]) {
      expect(codeOf(() => parseSignature(new TpmWriter().u16(alg).u16(TPM_ALG.SHA256).finish()))).toBe('ERR_SIGNATURE_UNSUPPORTED');
    }
  });

  it('ERR_SIGNATURE_INVALID: ECDSA r or s longer than the curve allows', () => {
    const ak = softAk('ecc');
    const pub = parseTpm2bPublic(ak.public);
    const msg = Uint8Array.of(1, 2, 3);
    const sig = parseSignature(ak.sign(msg));
    if (sig.sigAlg !== TPM_ALG.ECDSA) throw new Error('unreachable');
    expect(() => verifyTpmSignature(pub, msg, sig)).not.toThrow();
    const long = { ...sig, r: new Uint8Array([0, ...sig.r]) };
    expect(codeOf(() => verifyTpmSignature(pub, msg, long))).toBe('ERR_SIGNATURE_INVALID');
  });
});

describe('tpm2-tools PCR file', () => {
  it('writing the parsed values back gives tpm2-tools\' bytes exactly', () => {
    const bytes = vector(`${KEYLIME}quotepcr.out`);
    const values = parsePcrFile(bytes).sha256!;
    const rebuilt = encodePcrFile({ sha256: values });
    expect(Buffer.from(rebuilt).equals(Buffer.from(bytes))).toBe(true);
  });

  it('reads multi-bank files with more than eight PCRs (several digest lists)', () => {
    const file = parsePcrFile(fixture(manifest.dirs.rsa!.quote.pcrs));
    expect(Object.keys(file.sha256!).map(Number)).toEqual([0, 1, 2, 3, 16, 23]);
    expect(Object.keys(file.sha1!).map(Number)).toEqual([16, 23]);
    const many = Object.fromEntries(Array.from({ length: 24 }, (_, i) => [i, new Uint8Array(32).fill(i)]));
    const parsed = parsePcrFile(encodePcrFile({ sha256: many }));
    expect(parsed.sha256![23]![0]).toBe(23);
  });

  it('ERR_PCR_FILE_MALFORMED: wrong digest sizes, counts, and truncations', () => {
    const sha1AsSha256 = new Uint8Array(encodePcrFile({ sha1: { 0: new Uint8Array(20) } }));
    sha1AsSha256[4] = TPM_ALG.SHA256; // the bank's hash, little-endian
    expect(codeOf(() => parsePcrFile(sha1AsSha256))).toBe('ERR_PCR_FILE_MALFORMED');
    const b = new Uint8Array(vector(`${KEYLIME}quotepcr.out`));
    b[0x84] = 9; // nine digest lists for three PCRs
    expect(codeOf(() => parsePcrFile(b))).toBe('ERR_PCR_FILE_MALFORMED');
    expect(codeOf(() => parsePcrFile(b.subarray(0, 100)))).toBe('ERR_PCR_FILE_MALFORMED');
  });

  it('encodePcrFile keeps the banks in the order given, indexes ascending, and round-trips', () => {
    const values = { sha256: { 7: new Uint8Array(32).fill(7), 0: new Uint8Array(32).fill(1) }, sha1: { 3: new Uint8Array(20).fill(3) } };
    const bytes = encodePcrFile(values);
    // Selection slots: sha256 first, then sha1 (UINT16 little-endian at 4 and 12).
    expect([bytes[4], bytes[12]]).toEqual([TPM_ALG.SHA256, TPM_ALG.SHA1]);
    const parsed = parsePcrFile(bytes);
    expect(Object.keys(parsed)).toEqual(['sha256', 'sha1']);
    expect(parsed.sha256![0]![0]).toBe(1);
    expect(parsed.sha256![7]![0]).toBe(7);
    // Digest order in the file is bank by bank, index ascending: PCR 0's value comes first.
    expect(bytes[132 + 4 + 4 + 2]).toBe(1);
    expect(encodePcrFile({}).length).toBe(136);
  });

  it('encodePcrFile refuses what the format cannot hold: ERR_TPM_BAD_VALUE, ERR_TPM_SIZE_MISMATCH, ERR_TPM_UNSUPPORTED_ALG', () => {
    expect(codeOf(() => encodePcrFile({ sha256: { 24: new Uint8Array(32) } }))).toBe('ERR_TPM_BAD_VALUE');
    const seventeen = Object.fromEntries(Array.from({ length: 17 }, (_, i) => [`bank${i}`, {}]));
    expect(codeOf(() => encodePcrFile(seventeen))).toBe('ERR_TPM_BAD_VALUE');
    expect(codeOf(() => encodePcrFile({ sha256: { 0: new Uint8Array(20) } }))).toBe('ERR_TPM_SIZE_MISMATCH');
    expect(codeOf(() => encodePcrFile({ md5: { 0: new Uint8Array(16) } }))).toBe('ERR_TPM_UNSUPPORTED_ALG');
  });
});

describe('PCR selection specs as tpm2-tools takes them', () => {
  const banksOf = (spec: string) => parsePcrSelectionSpec(spec).map((b) => [b.hash.name, b.pcrs]);

  it('reads banks joined by +, indexes in decimal or hex, "all"; sorted and without repeats', () => {
    expect(banksOf('sha256:0,1,2,3,4,5,6,7')).toEqual([['sha256', [0, 1, 2, 3, 4, 5, 6, 7]]]);
    expect(banksOf('sha256:7,0x10,7,1+sha1:23')).toEqual([
      ['sha256', [1, 7, 16]],
      ['sha1', [23]],
    ]);
    expect(banksOf('0xb:0+SHA384:2')).toEqual([
      ['sha256', [0]],
      ['sha384', [2]],
    ]);
    expect(banksOf('sha1:all')[0]![1]).toEqual(Array.from({ length: 24 }, (_, i) => i));
    expect(formatPcrSelection(parsePcrSelectionSpec('sha256:3,1+sha1:7'))).toBe('sha256:1,3+sha1:7');
  });

  it.each([
    ['empty', ''],
    ['no colon', 'sha256'],
    ['unknown bank', 'md5:0'],
    ['unknown algorithm id', '0x99:0'],
    ['empty list', 'sha256:'],
    ['empty index', 'sha256:0,,1'],
    ['index 24', 'sha256:24'],
    ['negative index', 'sha256:-1'],
    ['range syntax', 'sha256:0-7'],
    ['bank twice', 'sha256:0+sha256:1'],
    ['trailing +', 'sha256:0+'],
  ])('ERR_PCR_SELECTION_SPEC: %s', (_name, spec) => {
    expect(codeOf(() => parsePcrSelectionSpec(spec))).toBe('ERR_PCR_SELECTION_SPEC');
  });
});

it('every error a parser raises is an AttestorError with a stable code', () => {
  const e = (() => {
    try {
      parseAttest(new Uint8Array(3));
    } catch (x) {
      return x;
    }
  })();
  expect(e).toBeInstanceOf(AttestorError);
  expect((e as AttestorError).code).toBe('ERR_TPM_TRUNCATED');
});
