/**
 * appraise(): the verdict from a quote, its PCR values, the clock history and the key evidence
 * against a baseline. Quotes and certifications are signed by software AKs (the only way to
 * give a validly signed quote one chosen defect); the certified keys are real swtpm keys, and
 * real swtpm quotes show what a quote that does not bind the key evidence gets.
 */
import { createHash, createPublicKey, generateKeyPairSync } from 'node:crypto';
import { describe, expect, it } from 'vitest';
import { appraise, type AppraisalInput, type AppraisedBaseline } from '../src/appraisal/appraise.js';
import { tpmKeySpki } from '../src/appraisal/attested-key.js';
import { evidenceHash } from '../src/appraisal/evidence.js';
import { canonicalKeyEvidence } from '../src/appraisal/hsm-key-report.js';
import { parseBaselineDocument } from '../src/baseline/document.js';
import { hex } from '../src/bytes.js';
import { parseAttest } from '../src/tpm/attest.js';
import { TPM_ALG, TPM_ECC, TPM_GENERATED_VALUE } from '../src/tpm/constants.js';
import { objectName } from '../src/tpm/name.js';
import { parsePcrFile } from '../src/tpm/pcr-file.js';
import { publicKeyOf } from '../src/tpm/public-key.js';
import { parseTpm2bPublic, type TpmPublic } from '../src/tpm/public.js';
import { fixture, manifest } from './fixtures.js';
import {
  DUPLICABLE_KEY_PUBLIC,
  HSM_TOKEN,
  TPM_KEY_PEM,
  TPM_KEY_PUBLIC,
  attestation,
  hsmKey,
  hsmReport,
  testAgent,
  type EvidenceSpec,
} from './helpers/appraise-evidence.js';
import { codeOf } from './helpers/code-of.js';
import { buildCertify, pcrValue, softAk } from './helpers/tpm-builders.js';

const agent = testAgent();
const NONCE = new Uint8Array(32).fill(0x5a);
const OTHER_NONCE = new Uint8Array(32).fill(0xa5);
const SIGNED = { sha256: { 0: pcrValue('sha256', 0), 1: pcrValue('sha256', 1), 7: pcrValue('sha256', 7) } };
const allowed = (pcr: 0 | 1 | 7) => hex(SIGNED.sha256[pcr]);

const baselineOf = (document: unknown, id = 'enforced-1', version = 3): AppraisedBaseline => ({ id, version, document: parseBaselineDocument(document) });
// PKCS#11 keys are opted in to (the default is TPM keys only).
const BOTH = { residence: ['tpm', 'pkcs11'] };
const PINNED = baselineOf({ version: 1, pcrs: { sha256: { 0: [allowed(0)], 7: [allowed(7).toUpperCase(), 'ab'.repeat(32)] } }, key: BOTH });

const spec = (over: Partial<EvidenceSpec> = {}): EvidenceSpec => ({ nonce: NONCE, pcrs: SIGNED, clock: 5000n, resetCount: 2, ...over });
const input = (over: Partial<AppraisalInput> = {}, evidence = attestation(agent, spec())): AppraisalInput => ({
  akPublic: agent.akPublic,
  nonce: NONCE,
  evidence,
  baseline: PINNED,
  ...over,
});
const codes = (reasons: readonly { code: string }[]) => reasons.map((r) => r.code);

describe('affirming', () => {
  it('a quote of allowed PCR values, bound to a certified TPM key: claims, key, clock and evidence', () => {
    const evidence = attestation(agent, spec());
    const a = appraise(input({}, evidence));
    expect(a.status).toBe('affirming');
    expect(a.reasons).toEqual([]);
    const digest = createHash('sha256').update(SIGNED.sha256[0]).update(SIGNED.sha256[1]).update(SIGNED.sha256[7]).digest('hex');
    expect(a.claims).toEqual({ pcrDigest: digest, evidenceHash: hex(evidenceHash(evidence)), baseline: { id: 'enforced-1', version: 3 }, keyResidence: 'tpm' });
    // The key credentials are bound to is the swtpm key, as tpm2_readpublic exported it.
    expect(Buffer.from(a.key!.spki)).toEqual(createPublicKey(Buffer.from(TPM_KEY_PEM)).export({ type: 'spki', format: 'der' }));
    expect(a.key!.kind).toBe('tpm');
    expect(a.clock).toEqual({ clock: 5000n, resetCount: 2, restartCount: 0, safe: true });
    expect(a.evidence).toEqual({ version: 1, keyResidence: 'tpm', pcrs: { sha256: { 0: allowed(0), 1: allowed(1), 7: allowed(7) } } });
    expect(a.staged).toEqual([]);
    expect(a.ima).toBeUndefined();
  });

  it('a PKCS#11 key: the report bound by the quote, its key is the attested one', () => {
    const key = hsmKey();
    const report = hsmReport(NONCE, key);
    const a = appraise(input({}, attestation(agent, spec({ key: { kind: 'pkcs11', report } }))));
    expect(a.status).toBe('affirming');
    expect(a.claims.keyResidence).toBe('pkcs11');
    expect(a.key).toEqual({ kind: 'pkcs11', spki: report.publicKey });
    expect(a.evidence?.keyResidence).toBe('pkcs11');
  });

  it('the clock moved on from the last accepted one, or the TPM was reset since', () => {
    const last = { clock: 4000n, resetCount: 2, restartCount: 0, safe: true };
    expect(appraise(input({ lastClock: last })).status).toBe('affirming');
    expect(appraise(input({ lastClock: { ...last, clock: 9000n, resetCount: 1 } })).status).toBe('affirming');
  });

  it('what it returns to store is JSON (the clock aside, a bigint the caller writes as text)', () => {
    const a = appraise(input({ staged: [baselineOf({ version: 1, pcrs: { sha256: { 1: ['00'.repeat(32)] } } }, 'staged-1')] }));
    const { clock: _clock, key: _key, ...stored } = a;
    expect(JSON.parse(JSON.stringify(stored))).toEqual(stored);
  });
});

describe('evidence that is not the agent\'s answer to this challenge throws (rule 1)', () => {
  it('ERR_SIGNATURE_INVALID: another AK signed the quote', () => {
    const other = testAgent();
    expect(codeOf(() => appraise(input({}, attestation(agent, spec({ quoteSigner: other.ak })))))).toBe('ERR_SIGNATURE_INVALID');
  });

  it('ERR_QUOTE_NONCE_MISMATCH: a quote for another challenge (replayed)', () => {
    const old = attestation(agent, spec({ nonce: OTHER_NONCE }));
    expect(codeOf(() => appraise(input({}, old)))).toBe('ERR_QUOTE_NONCE_MISMATCH');
  });

  it('ERR_QUOTE_NONCE_MISMATCH: a real swtpm quote over the bare nonce, which binds no key evidence', () => {
    const dir = manifest.dirs.ecc!;
    const real = { quote: fixture(dir.quote.msg), signature: fixture(dir.quote.sig), pcrs: parsePcrFile(fixture(dir.quote.pcrs)) };
    const key = attestation(agent, spec()).key;
    const swtpm = { akPublic: parseTpm2bPublic(fixture(dir.ak.pub)), nonce: Buffer.from(dir.quote.nonce, 'hex'), evidence: { ...real, key } };
    expect(codeOf(() => appraise(swtpm))).toBe('ERR_QUOTE_NONCE_MISMATCH');
    // And the same real quote against another agent's AK.
    expect(codeOf(() => appraise({ ...swtpm, akPublic: agent.akPublic }))).toBe('ERR_SIGNATURE_INVALID');
  });

  it('ERR_QUOTE_NONCE_MISMATCH: the TPM key evidence swapped after the quote (another key, validly certified)', () => {
    const quoted = attestation(agent, spec());
    const swapped = attestation(agent, spec({ key: { kind: 'tpm', public: DUPLICABLE_KEY_PUBLIC } })).key;
    expect(codeOf(() => appraise(input({}, { ...quoted, key: swapped })))).toBe('ERR_QUOTE_NONCE_MISMATCH');
  });

  it('ERR_QUOTE_NONCE_MISMATCH: the PKCS#11 report swapped after the quote (so ERR_HSM_KEY_NOT_BOUND cannot arise later)', () => {
    const key = hsmKey();
    const quoted = attestation(agent, spec({ key: { kind: 'pkcs11', report: hsmReport(NONCE, key) } }));
    const swapped = { kind: 'pkcs11' as const, report: hsmReport(NONCE, key, { token: { serial: 'another-token' } }) };
    expect(codeOf(() => appraise(input({}, { ...quoted, key: swapped })))).toBe('ERR_QUOTE_NONCE_MISMATCH');
  });

  it('ERR_QUOTE_MAGIC and ERR_QUOTE_TYPE: signed by the AK, but not a TPM-made quote', () => {
    expect(codeOf(() => appraise(input({}, attestation(agent, spec({ quoteMagic: TPM_GENERATED_VALUE ^ 1 })))))).toBe('ERR_QUOTE_MAGIC');
    // A certification by the AK, carrying the right qualifying data, offered as the quote.
    const good = attestation(agent, spec());
    const certify = buildCertify({ extraData: parseAttest(good.quote).extraData, name: objectName(agent.akPublic) });
    expect(codeOf(() => appraise(input({}, { ...good, quote: certify, signature: agent.ak.sign(certify) })))).toBe('ERR_QUOTE_TYPE');
  });

  it('ERR_QUOTE_SHA1_NOT_ALLOWED: a SHA-1 quote when neither the baseline nor the verifier allows SHA-1', () => {
    const legacy = testAgent({ schemeHash: TPM_ALG.SHA1 });
    const evidence = attestation(legacy, spec({ quoteHash: 'sha1' }));
    expect(codeOf(() => appraise(input({ akPublic: legacy.akPublic }, evidence)))).toBe('ERR_QUOTE_SHA1_NOT_ALLOWED');
    // allowSha1 of the input is for agents with no enforced baseline: the enforced one decides.
    expect(codeOf(() => appraise(input({ akPublic: legacy.akPublic, allowSha1: true }, evidence)))).toBe('ERR_QUOTE_SHA1_NOT_ALLOWED');
  });

  it('structures that do not parse throw their parse code', () => {
    const good = attestation(agent, spec());
    expect(codeOf(() => appraise(input({}, { ...good, quote: good.quote.subarray(0, 20) })))).toBe('ERR_TPM_TRUNCATED');
    expect(codeOf(() => appraise(input({}, { ...good, signature: Uint8Array.of(0, 0x18) })))).toBe('ERR_TPM_TRUNCATED');
    // Key structures: the TPM key's public area (bound by the quote) and its certification.
    const garbageKey = Uint8Array.of(0, 4, 1, 2, 3, 4);
    const withGarbageKey = attestation(agent, spec({ key: { kind: 'tpm', public: garbageKey, certifiedName: new Uint8Array(34) } }));
    expect(codeOf(() => appraise(input({}, withGarbageKey)))).toMatch(/^ERR_TPM_/);
    const tpmKey = good.key as Extract<typeof good.key, { kind: 'tpm' }>;
    expect(codeOf(() => appraise(input({}, { ...good, key: { ...tpmKey, certifyInfo: Uint8Array.of(1, 2, 3) } })))).toBe('ERR_TPM_TRUNCATED');
    // A report whose signature field is empty.
    const report = { ...hsmReport(NONCE), signature: new Uint8Array() };
    expect(codeOf(() => appraise(input({}, attestation(agent, spec({ key: { kind: 'pkcs11', report } })))))).toBe('ERR_HSM_KEY_REPORT_MALFORMED');
  });

  it('a bad signature wins over wrong PCR values: the values are judged only once the quote is the agent\'s', () => {
    const other = testAgent();
    const sent = { sha256: { ...SIGNED.sha256, 7: pcrValue('sha256', 70) } };
    expect(codeOf(() => appraise(input({}, attestation(agent, spec({ quoteSigner: other.ak, sentPcrs: sent })))))).toBe('ERR_SIGNATURE_INVALID');
  });
});

describe('authentic evidence that fails becomes a reason, the verdict contraindicated (rule 2)', () => {
  it('PCR_VALUE_NOT_ALLOWED names bank and PCR', () => {
    const changed = { sha256: { ...SIGNED.sha256, 7: pcrValue('sha256', 70) } };
    const a = appraise(input({}, attestation(agent, spec({ pcrs: changed }))));
    expect(a.status).toBe('contraindicated');
    expect(a.reasons).toEqual([
      { code: 'PCR_VALUE_NOT_ALLOWED', bank: 'sha256', pcr: 7, message: `sha256 PCR 7 is ${hex(pcrValue('sha256', 70))}, not an allowed value` },
    ]);
    // The key is still the agent's and the evidence still verified (for capture).
    expect(a.key).not.toBeNull();
    expect(a.evidence?.pcrs.sha256?.['7']).toBe(hex(pcrValue('sha256', 70)));
  });

  it('ERR_QUOTE_PCR_NOT_SIGNED: a PCR the baseline needs is outside the signed selection, even when its value is sent', () => {
    const signed = { sha256: { 0: SIGNED.sha256[0], 1: SIGNED.sha256[1] } };
    const a = appraise(input({}, attestation(agent, spec({ pcrs: signed, sentPcrs: SIGNED }))));
    expect(a.status).toBe('contraindicated');
    expect(a.reasons).toEqual([expect.objectContaining({ code: 'ERR_QUOTE_PCR_NOT_SIGNED', bank: 'sha256', pcr: 7 })]);
    expect(a.reasons[0]!.message).toContain('sha256:0,1');
  });

  it('ERR_QUOTE_PCR_DIGEST_MISMATCH: the values sent are not the signed ones; nothing is offered for capture', () => {
    const sent = { sha256: { ...SIGNED.sha256, 1: pcrValue('sha256', 10) } };
    const a = appraise(input({}, attestation(agent, spec({ sentPcrs: sent }))));
    expect(codes(a.reasons)).toEqual(['ERR_QUOTE_PCR_DIGEST_MISMATCH']);
    expect(a.evidence).toBeNull();
    expect(a.clock.clock).toBe(5000n);
    // No baseline either: still the agent's quote, still a verdict.
    expect(codes(appraise(input({ baseline: undefined }, attestation(agent, spec({ sentPcrs: sent })))).reasons)).toEqual([
      'NO_BASELINE',
      'ERR_QUOTE_PCR_DIGEST_MISMATCH',
    ]);
  });

  it('ERR_QUOTE_PCR_MISSING: a signed PCR without its value', () => {
    const sent = { sha256: { 0: SIGNED.sha256[0], 7: SIGNED.sha256[7] } };
    expect(codes(appraise(input({}, attestation(agent, spec({ sentPcrs: sent })))).reasons)).toEqual(['ERR_QUOTE_PCR_MISSING']);
  });

  it('ERR_QUOTE_CLOCK_ROLLBACK: the clock went back without a reset; the last clock is kept and nothing offered for capture', () => {
    const last = { clock: 6000n, resetCount: 2, restartCount: 0, safe: true };
    const a = appraise(input({ lastClock: last }));
    expect(codes(a.reasons)).toEqual(['ERR_QUOTE_CLOCK_ROLLBACK']);
    expect(a.clock).toEqual(last);
    expect(a.evidence).toBeNull();
    // resetCount went back: the TPM was cleared or an old state restored.
    expect(codes(appraise(input({ lastClock: { ...last, clock: 1n, resetCount: 3 } })).reasons)).toEqual(['ERR_QUOTE_CLOCK_ROLLBACK']);
  });

  it('ERR_CERTIFY_KEY_ATTRIBUTES: the certified key is a real swtpm key that can be duplicated off the TPM', () => {
    const a = appraise(input({}, attestation(agent, spec({ key: { kind: 'tpm', public: DUPLICABLE_KEY_PUBLIC } }))));
    expect(a.status).toBe('contraindicated');
    expect(codes(a.reasons)).toEqual(['ERR_CERTIFY_KEY_ATTRIBUTES']);
    expect(a.key).toBeNull();
  });

  it('ERR_CERTIFY_NONCE_MISMATCH, ERR_CERTIFY_NAME_MISMATCH, ERR_CERTIFY_MAGIC, ERR_SIGNATURE_INVALID: certifications that do not prove the key', () => {
    const reasonsOf = (key: EvidenceSpec['key']) => codes(appraise(input({}, attestation(agent, spec({ key })))).reasons);
    expect(reasonsOf({ kind: 'tpm', certifyData: OTHER_NONCE })).toEqual(['ERR_CERTIFY_NONCE_MISMATCH']);
    expect(reasonsOf({ kind: 'tpm', certifiedName: objectName(parseTpm2bPublic(DUPLICABLE_KEY_PUBLIC)) })).toEqual(['ERR_CERTIFY_NAME_MISMATCH']);
    expect(reasonsOf({ kind: 'tpm', certifyMagic: 0 })).toEqual(['ERR_CERTIFY_MAGIC']);
    expect(reasonsOf({ kind: 'tpm', certifier: testAgent().ak })).toEqual(['ERR_SIGNATURE_INVALID']);
  });

  it('ERR_HSM_KEY_ATTRIBUTES: an extractable PKCS#11 key, bound and signed', () => {
    const report = hsmReport(NONCE, hsmKey(), { attributes: { extractable: true, neverExtractable: false } });
    const a = appraise(input({}, attestation(agent, spec({ key: { kind: 'pkcs11', report } }))));
    expect(a.status).toBe('contraindicated');
    expect(codes(a.reasons)).toEqual(['ERR_HSM_KEY_ATTRIBUTES']);
    expect(a.reasons[0]!.message).toContain('extractable must be false');
    expect(a.key).toBeNull();
  });

  it('ERR_SIGNATURE_INVALID and ERR_KEY_UNSUPPORTED: a report not signed by its key, a key of another curve', () => {
    const unsigned = hsmReport(NONCE, hsmKey(), { signer: hsmKey().privateKey });
    expect(codes(appraise(input({}, attestation(agent, spec({ key: { kind: 'pkcs11', report: unsigned } })))).reasons)).toEqual(['ERR_SIGNATURE_INVALID']);
    const p384 = hsmReport(NONCE, hsmKey('P-384'));
    expect(codes(appraise(input({}, attestation(agent, spec({ key: { kind: 'pkcs11', report: p384 } })))).reasons)).toEqual(['ERR_KEY_UNSUPPORTED']);
  });

  it('ERR_HSM_TOKEN_NOT_ALLOWED: the token is not among the baseline\'s', () => {
    const report = hsmReport(NONCE);
    const evidence = attestation(agent, spec({ key: { kind: 'pkcs11', report } }));
    const pcrs = PINNED.document.pcrs;
    const onToken = (allowedTokens: unknown) => baselineOf({ version: 1, pcrs, key: { ...BOTH, allowedTokens } });
    expect(appraise(input({ baseline: onToken([{ serial: HSM_TOKEN.serial }, { label: 'x' }]) }, evidence)).status).toBe('affirming');
    const a = appraise(input({ baseline: onToken([{ manufacturer: HSM_TOKEN.manufacturer, serial: 'another' }]) }, evidence));
    expect(codes(a.reasons)).toEqual(['ERR_HSM_TOKEN_NOT_ALLOWED']);
    expect(a.key).toBeNull();
  });

  it('KEY_RESIDENCE_NOT_ALLOWED: a PKCS#11 key where the baseline wants TPM keys', () => {
    const tpmOnly = baselineOf({ version: 1, pcrs: PINNED.document.pcrs, key: { residence: ['tpm'] } });
    const evidence = attestation(agent, spec({ key: { kind: 'pkcs11', report: hsmReport(NONCE) } }));
    const a = appraise(input({ baseline: tpmOnly }, evidence));
    expect(a.reasons).toEqual([{ code: 'KEY_RESIDENCE_NOT_ALLOWED', message: 'the key is a pkcs11 key; the baseline allows tpm keys' }]);
    expect(a.key).toBeNull();
    expect(appraise(input({ baseline: tpmOnly })).status).toBe('affirming');
  });

  it('EVENTLOG_MISSING and IMA_LOG_MISSING: the baseline has rules for logs the agent did not send', () => {
    const logs = baselineOf({ version: 1, eventlog: { requireSecureBoot: true }, ima: { allow: {} } });
    const a = appraise(input({ baseline: logs }));
    // PCR 7 (secure boot) is signed, PCR 10 (IMA) is not.
    expect(codes(a.reasons)).toEqual(['ERR_QUOTE_PCR_NOT_SIGNED', 'EVENTLOG_MISSING', 'IMA_LOG_MISSING']);
    expect(a.reasons[0]).toMatchObject({ bank: 'sha256', pcr: 10 });
  });

  it('every failure is reported, not only the first', () => {
    const changed = { sha256: { 0: pcrValue('sha256', 100), 1: SIGNED.sha256[1], 7: pcrValue('sha256', 70) } };
    const evidence = attestation(agent, spec({ pcrs: changed, key: { kind: 'tpm', public: DUPLICABLE_KEY_PUBLIC } }));
    const a = appraise(input({ lastClock: { clock: 9999n, resetCount: 2, restartCount: 0, safe: true } }, evidence));
    expect(codes(a.reasons)).toEqual(['ERR_QUOTE_CLOCK_ROLLBACK', 'ERR_CERTIFY_KEY_ATTRIBUTES', 'PCR_VALUE_NOT_ALLOWED', 'PCR_VALUE_NOT_ALLOWED']);
  });
});

describe('no enforced baseline (rule 3)', () => {
  it('NO_BASELINE: contraindicated, fail closed; the verified PCRs and the key are still returned', () => {
    const a = appraise(input({ baseline: undefined }));
    expect(a.status).toBe('contraindicated');
    expect(a.reasons).toEqual([{ code: 'NO_BASELINE', message: expect.stringContaining('no enforced baseline') }]);
    expect(a.claims.baseline).toBeNull();
    expect(a.evidence?.pcrs).toEqual({ sha256: { 0: allowed(0), 1: allowed(1), 7: allowed(7) } });
    expect(a.key?.kind).toBe('tpm');
  });

  it('the verifier may accept SHA-1 quotes from agents without a baseline, so SHA-1 fleets can be captured', () => {
    const legacy = testAgent({ schemeHash: TPM_ALG.SHA1 });
    const evidence = attestation(legacy, spec({ quoteHash: 'sha1', pcrs: { sha1: { 0: pcrValue('sha1', 0) } }, key: { kind: 'tpm', certifyHash: 'sha1' } }));
    expect(codeOf(() => appraise(input({ akPublic: legacy.akPublic, baseline: undefined }, evidence)))).toBe('ERR_QUOTE_SHA1_NOT_ALLOWED');
    const a = appraise(input({ akPublic: legacy.akPublic, baseline: undefined, allowSha1: true }, evidence));
    expect(codes(a.reasons)).toEqual(['NO_BASELINE']);
    expect(a.evidence?.pcrs).toEqual({ sha1: { 0: hex(pcrValue('sha1', 0)) } });
  });
});

describe('warning (rule 4) and staged baselines (rule 5)', () => {
  const STRICTER = baselineOf({ version: 1, pcrs: { sha256: { 1: ['00'.repeat(32)] } } }, 'staged-1', 1);
  const LOOSER = baselineOf({ version: 1, pcrs: { sha256: { 0: [allowed(0)] } } }, 'staged-2', 1);

  it('a staged baseline that would contraindicate: warning, credentials still allowed; it is reported, not enforced', () => {
    const a = appraise(input({ staged: [STRICTER, LOOSER] }));
    expect(a.status).toBe('warning');
    expect(a.reasons).toEqual([{ code: 'STAGED_BASELINE_CONTRAINDICATED', message: 'staged baseline staged-1 (version 1) would contraindicate: PCR_VALUE_NOT_ALLOWED' }]);
    expect(a.key).not.toBeNull();
    expect(a.staged).toEqual([
      { id: 'staged-1', version: 1, status: 'contraindicated', reasons: [expect.objectContaining({ code: 'PCR_VALUE_NOT_ALLOWED', bank: 'sha256', pcr: 1 })] },
      { id: 'staged-2', version: 1, status: 'affirming', reasons: [] },
    ]);
  });

  it('staged baselines are judged when the enforced one contraindicates, and when there is none', () => {
    const changed = { sha256: { ...SIGNED.sha256, 7: pcrValue('sha256', 70) } };
    const a = appraise(input({ staged: [LOOSER] }, attestation(agent, spec({ pcrs: changed }))));
    expect(a.status).toBe('contraindicated');
    expect(codes(a.reasons)).toEqual(['PCR_VALUE_NOT_ALLOWED']);
    expect(a.staged.map((s) => s.status)).toEqual(['affirming']);
    const none = appraise(input({ baseline: undefined, staged: [STRICTER, LOOSER] }));
    expect(codes(none.reasons)).toEqual(['NO_BASELINE']);
    expect(none.staged.map((s) => s.status)).toEqual(['contraindicated', 'affirming']);
  });

  it('staged baselines see the same key checks with their own key rules', () => {
    const report = hsmReport(NONCE);
    const evidence = attestation(agent, spec({ key: { kind: 'pkcs11', report } }));
    const otherToken = baselineOf({ version: 1, pcrs: PINNED.document.pcrs, key: { ...BOTH, allowedTokens: [{ serial: 'other' }] } }, 'staged-3', 1);
    const tpmOnly = baselineOf({ version: 1, pcrs: PINNED.document.pcrs, key: { residence: ['tpm'] } }, 'staged-4', 1);
    const a = appraise(input({ staged: [otherToken, tpmOnly] }, evidence));
    expect(a.status).toBe('warning');
    expect(a.staged.map((s) => codes(s.reasons))).toEqual([['ERR_HSM_TOKEN_NOT_ALLOWED'], ['KEY_RESIDENCE_NOT_ALLOWED']]);
    expect(a.key?.kind).toBe('pkcs11');
  });

  it('LEGACY_SHA1_ACCEPTED: the baseline allows SHA-1 and the quote used it; a staged baseline that does not would refuse it', () => {
    const legacy = testAgent({ schemeHash: TPM_ALG.SHA1 });
    const sha1Pcrs = { sha1: { 0: pcrValue('sha1', 0) } };
    const evidence = attestation(legacy, spec({ quoteHash: 'sha1', pcrs: sha1Pcrs, key: { kind: 'tpm', certifyHash: 'sha1' } }));
    const allowing = baselineOf({ version: 1, pcrs: { sha1: { 0: [hex(pcrValue('sha1', 0))] } }, allowSha1: true });
    const a = appraise(input({ akPublic: legacy.akPublic, baseline: allowing }, evidence));
    expect(a.status).toBe('warning');
    expect(a.reasons).toEqual([
      {
        code: 'LEGACY_SHA1_ACCEPTED',
        message:
          'legacy SHA-1 accepted: the quote is signed with SHA-1; the AK uses SHA-1; the key is named or certified with SHA-1; the baseline relies on sha1 PCR values or digests',
      },
    ]);
    const strict = baselineOf({ version: 1, pcrs: PINNED.document.pcrs, key: BOTH }, 'staged-5', 1);
    const withStaged = appraise(input({ akPublic: legacy.akPublic, baseline: allowing, staged: [strict] }, evidence));
    expect(withStaged.staged[0]!.status).toBe('contraindicated');
    expect(codes(withStaged.staged[0]!.reasons)).toEqual(['ERR_QUOTE_SHA1_NOT_ALLOWED', 'ERR_QUOTE_PCR_NOT_SIGNED', 'ERR_QUOTE_PCR_NOT_SIGNED']);
    expect(codes(withStaged.reasons)).toEqual(['LEGACY_SHA1_ACCEPTED', 'STAGED_BASELINE_CONTRAINDICATED']);
  });

  it('a SHA-1 certification is legacy too: refused as a reason unless allowed, then a warning', () => {
    const evidence = attestation(agent, spec({ key: { kind: 'tpm', certifier: testAgent({ schemeHash: TPM_ALG.SHA1 }).ak, certifyHash: 'sha1' } }));
    // Certified by another (SHA-1) AK: refused for SHA-1 before its signature is even checked.
    expect(codes(appraise(input({}, evidence)).reasons)).toEqual(['ERR_CERTIFY_SHA1_NOT_ALLOWED']);
  });
});

describe('evidenceHash', () => {
  const field = (b: Uint8Array | string) => {
    const bytes = typeof b === 'string' ? Buffer.from(b) : Buffer.from(b);
    const length = Buffer.alloc(4);
    length.writeUInt32BE(bytes.length);
    return Buffer.concat([length, bytes]);
  };

  it('is SHA-256 of the documented length-prefixed fields (known answer, TPM key, both logs)', () => {
    const e = attestation(agent, spec({ eventLog: Uint8Array.of(1, 2), imaLog: Uint8Array.of(3) }));
    const k = e.key as Extract<typeof e.key, { kind: 'tpm' }>;
    const expected = createHash('sha256')
      .update(Buffer.concat([field('attestor/evidence/v1'), field(e.quote), field(e.signature), field('tpm'), field(k.public), field(k.certifyInfo), field(k.signature)]))
      .update(Buffer.concat([Uint8Array.of(1), field(e.eventLog!), Uint8Array.of(1), field(e.imaLog!)]))
      .digest();
    expect(Buffer.from(evidenceHash(e))).toEqual(expected);
  });

  it('PKCS#11 key, no logs: the canonical key evidence and its signature, absent logs as 0x00', () => {
    const e = attestation(agent, spec({ key: { kind: 'pkcs11', report: hsmReport(NONCE) } }));
    const k = e.key as Extract<typeof e.key, { kind: 'pkcs11' }>;
    const expected = createHash('sha256')
      .update(Buffer.concat([field('attestor/evidence/v1'), field(e.quote), field(e.signature), field('pkcs11'), field(canonicalKeyEvidence(k.report)), field(k.report.signature)]))
      .update(Uint8Array.of(0, 0))
      .digest();
    expect(Buffer.from(evidenceHash(e))).toEqual(expected);
  });

  it('tells apart an absent log from an empty one, and any changed byte', () => {
    const e = attestation(agent, spec());
    const hashes = new Set(
      [
        e,
        { ...e, eventLog: new Uint8Array() },
        { ...e, imaLog: new Uint8Array() },
        { ...e, eventLog: Uint8Array.of(0) },
        { ...e, signature: Uint8Array.from(e.signature, (b, i) => (i === e.signature.length - 1 ? b ^ 1 : b)) },
      ].map((x) => hex(evidenceHash(x))),
    );
    expect(hashes.size).toBe(5);
  });
});

describe('tpmKeySpki: the SPKI credentials are issued for', () => {
  const eccTemplate = parseTpm2bPublic(TPM_KEY_PUBLIC) as Extract<TpmPublic, { type: 'ecc' }>;

  it.each([
    ['P-256', TPM_ECC.NIST_P256],
    ['P-384', TPM_ECC.NIST_P384],
    ['P-521', TPM_ECC.NIST_P521],
  ] as const)('an ECC %s key encodes as node:crypto exports it, short coordinates padded', (curve, tpmCurve) => {
    for (let i = 0; i < 20; i++) {
      const key = generateKeyPairSync('ec', { namedCurve: curve }).publicKey;
      const jwk = key.export({ format: 'jwk' });
      // TPM2B_ECC_PARAMETER may come without leading zero bytes.
      const strip = (b64: string) => {
        const b = Buffer.from(b64, 'base64url');
        return b.subarray(b.findIndex((x) => x !== 0));
      };
      const pub = { ...eccTemplate, curve: tpmCurve, x: strip(jwk.x!), y: strip(jwk.y!) };
      expect(Buffer.from(tpmKeySpki(pub))).toEqual(key.export({ type: 'spki', format: 'der' }));
    }
  });

  it('an RSA key through node:crypto; coordinates longer than the field are refused', () => {
    const rsa = parseTpm2bPublic(softAk('rsa').public);
    expect(Buffer.from(tpmKeySpki(rsa))).toEqual(publicKeyOf(rsa).export({ type: 'spki', format: 'der' }));
    expect(codeOf(() => tpmKeySpki({ ...eccTemplate, x: new Uint8Array(33).fill(1) }))).toBe('ERR_TPM_BAD_VALUE');
  });
});
