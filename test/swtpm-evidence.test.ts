import { createPublicKey } from 'node:crypto';
import { describe, expect, it } from 'vitest';
import { checkAttestationKey } from '../src/appraisal/attestation-key.js';
import { verifyCertify } from '../src/appraisal/verify-certify.js';
import { verifyQuote } from '../src/appraisal/verify-quote.js';
import { TPMA_OBJECT, TPM_ALG } from '../src/tpm/constants.js';
import { objectName } from '../src/tpm/name.js';
import { parsePcrFile } from '../src/tpm/pcr-file.js';
import { formatPcrSelection } from '../src/tpm/pcr-selection.js';
import { parseTpm2bPublic } from '../src/tpm/public.js';
import { fixture, manifest, type FixtureDir } from './fixtures.js';
import { buildCertify, softAk } from './helpers/tpm-builders.js';
import { codeOf } from './helpers/code-of.js';
import { hex } from '../src/bytes.js';
const fromHex = (s: string) => new Uint8Array(Buffer.from(s, 'hex'));

it('the fixtures hold certifications of a TPM-resident key for RSA and ECC, and of a duplicable key for ECC', () => {
  // The certify tests below are registered only where a fixture has them: these must not vanish.
  expect(manifest.dirs.rsa?.certify).toBeDefined();
  expect(manifest.dirs.ecc?.certify).toBeDefined();
  expect(manifest.dirs.ecc?.dupCertify).toBeDefined();
});

describe.each(Object.entries(manifest.dirs))('swtpm evidence: %s', (_name, dir: FixtureDir) => {
  const ak = parseTpm2bPublic(fixture(dir.ak.pub));
  const evidence = { quote: fixture(dir.quote.msg), signature: fixture(dir.quote.sig), pcrs: parsePcrFile(fixture(dir.quote.pcrs)) };
  const policy = { qualifyingData: fromHex(dir.quote.nonce) };

  it('the AK is an attestation key and its Name is the one tpm2-tools computed', () => {
    expect(() => checkAttestationKey(ak)).not.toThrow();
    expect(hex(objectName(ak))).toBe(dir.ak.nameHex);
    expect(hex(fixture(dir.ak.name))).toBe(dir.ak.nameHex);
    // TPMT_PUBLIC -> KeyObject gives the same key as tpm2_readpublic -f pem.
    const pem = createPublicKey(Buffer.from(fixture(dir.ak.pem)));
    expect(verifyQuote(pem, evidence, policy).pcrs).toEqual(verifyQuote(ak, evidence, policy).pcrs);
  });

  it('the quote verifies and yields the PCR values the TPM held', () => {
    const requiredPcrs = { sha256: [0, 1, 2, 3, 16, 23], sha1: [16, 23] };
    // Relying on SHA-1 PCR values is legacy: refused unless allowed.
    expect(codeOf(() => verifyQuote(ak, evidence, { ...policy, requiredPcrs }))).toBe('ERR_QUOTE_SHA1_NOT_ALLOWED');
    const v = verifyQuote(ak, evidence, { ...policy, requiredPcrs, allowSha1: true });
    expect(formatPcrSelection(v.selection)).toBe(dir.quote.selection);
    const got = Object.fromEntries(
      Object.entries(v.pcrs).map(([bank, byIndex]) => [bank, Object.fromEntries(Object.entries(byIndex).map(([i, d]) => [i, hex(d)]))]),
    );
    expect(got).toEqual(manifest.pcrValues);
  });

  it('a PCR outside the signed selection is refused even when the file supplies it', () => {
    expect(codeOf(() => verifyQuote(ak, evidence, { ...policy, requiredPcrs: { sha256: [7] } }))).toBe('ERR_QUOTE_PCR_NOT_SIGNED');
  });

  if (dir.certify) {
    const certify = dir.certify;
    const keyPublic = parseTpm2bPublic(fixture(certify.key.pub));
    const certEvidence = { keyPublic, certifyInfo: fixture(certify.msg), signature: fixture(certify.sig) };
    const certPolicy = { qualifyingData: fromHex(certify.qualifyingData) };

    it('the certification of the TPM-resident key verifies', () => {
      const attest = verifyCertify(ak, certEvidence, certPolicy);
      expect(attest.attested.type).toBe('certify');
      expect(hex(objectName(keyPublic))).toBe(certify.key.nameHex);
    });

    it('ERR_CERTIFY_NONCE_MISMATCH / ERR_CERTIFY_NAME_MISMATCH / ERR_SIGNATURE_INVALID', () => {
      expect(codeOf(() => verifyCertify(ak, certEvidence, { qualifyingData: new Uint8Array(32) }))).toBe('ERR_CERTIFY_NONCE_MISMATCH');
      // Another key's public area offered with this certification.
      expect(codeOf(() => verifyCertify(ak, { ...certEvidence, keyPublic: ak }, certPolicy))).toBe('ERR_CERTIFY_NAME_MISMATCH');
      const sig = new Uint8Array(certEvidence.signature);
      sig[sig.length - 1]! ^= 1;
      expect(codeOf(() => verifyCertify(ak, { ...certEvidence, signature: sig }, certPolicy))).toBe('ERR_SIGNATURE_INVALID');
    });

    it('ERR_QUOTE_TYPE and ERR_CERTIFY_TYPE: a real certification is no quote, and the reverse', () => {
      expect(codeOf(() => verifyQuote(ak, { ...evidence, quote: certEvidence.certifyInfo, signature: certEvidence.signature }, policy))).toBe(
        'ERR_QUOTE_TYPE',
      );
      expect(codeOf(() => verifyCertify(ak, { ...certEvidence, certifyInfo: evidence.quote, signature: evidence.signature }, policy))).toBe(
        'ERR_CERTIFY_TYPE',
      );
    });
  }

  const dup = dir.dupCertify as FixtureDir['certify'];
  if (dup) {
    it('ERR_CERTIFY_KEY_ATTRIBUTES: a correctly certified key that can be duplicated off the TPM is refused', () => {
      const keyPublic = parseTpm2bPublic(fixture(dup.key.pub));
      expect(keyPublic.objectAttributes & TPMA_OBJECT.fixedTPM).toBe(0);
      const ev = { keyPublic, certifyInfo: fixture(dup.msg), signature: fixture(dup.sig) };
      expect(codeOf(() => verifyCertify(ak, ev, { qualifyingData: fromHex(dup.qualifyingData) }))).toBe('ERR_CERTIFY_KEY_ATTRIBUTES');
    });
  }
});

it('ERR_CERTIFY_MAGIC: a signed certify structure without TPM_GENERATED_VALUE', () => {
  const ak = softAk('ecc');
  const keyPublic = parseTpm2bPublic(ak.public);
  const info = buildCertify({ extraData: Uint8Array.of(1), name: objectName(keyPublic), magic: 0 });
  const ev = { keyPublic, certifyInfo: info, signature: ak.sign(info) };
  expect(codeOf(() => verifyCertify(keyPublic, ev, { qualifyingData: Uint8Array.of(1) }))).toBe('ERR_CERTIFY_MAGIC');
  const good = buildCertify({ extraData: Uint8Array.of(1), name: objectName(keyPublic) });
  expect(() => verifyCertify(keyPublic, { ...ev, certifyInfo: good, signature: ak.sign(good) }, { qualifyingData: Uint8Array.of(1) })).not.toThrow();
});

it('ERR_CERTIFY_SHA1_NOT_ALLOWED: a key named with SHA-1 (or a SHA-1 signature) unless allowed', () => {
  const ak = softAk('ecc');
  const akPublic = parseTpm2bPublic(ak.public);
  const sha1Named = { ...akPublic, nameAlg: TPM_ALG.SHA1 };
  const info = buildCertify({ extraData: Uint8Array.of(1), name: objectName(sha1Named) });
  const ev = { keyPublic: sha1Named, certifyInfo: info, signature: ak.sign(info) };
  expect(codeOf(() => verifyCertify(akPublic, ev, { qualifyingData: Uint8Array.of(1) }))).toBe('ERR_CERTIFY_SHA1_NOT_ALLOWED');
  expect(() => verifyCertify(akPublic, ev, { qualifyingData: Uint8Array.of(1), allowSha1: true })).not.toThrow();
  const good = buildCertify({ extraData: Uint8Array.of(1), name: objectName(akPublic) });
  const sha1Signed = { keyPublic: akPublic, certifyInfo: good, signature: ak.sign(good, { hash: 'sha1' }) };
  expect(codeOf(() => verifyCertify(akPublic, sha1Signed, { qualifyingData: Uint8Array.of(1) }))).toBe('ERR_CERTIFY_SHA1_NOT_ALLOWED');
});
