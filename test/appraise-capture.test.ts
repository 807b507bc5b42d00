/**
 * Capture: a baseline made from the evidence an appraisal verified (an agent with no baseline
 * yet, quoting the default selection of a real machine's boot), stored as JSON, then enforced.
 */
import { describe, expect, it } from 'vitest';
import { appraise, type AppraisalInput } from '../src/appraisal/appraise.js';
import { captureBaseline, parseCapturedEvidence, type CapturedEvidence } from '../src/baseline/capture.js';
import { DEFAULT_PCR_SELECTION, parseBaselineDocument, pcrSelectionOf } from '../src/baseline/document.js';
import { hex } from '../src/bytes.js';
import { TPM_ALG } from '../src/tpm/constants.js';
import { attestation, hsmReport, testAgent, type EvidenceSpec } from './helpers/appraise-evidence.js';
import { codeOf } from './helpers/code-of.js';
import { pcrValue } from './helpers/tpm-builders.js';
import { eventlogVector, replayedPcrs } from './eventlog-fixtures.js';

const agent = testAgent();
const FIRST = new Uint8Array(32).fill(1);
const SECOND = new Uint8Array(32).fill(2);
const codes = (reasons: readonly { code: string }[]) => reasons.map((r) => r.code);

/** What the default challenge selection reads on a machine that booted the Arch Linux log (sha1 bank too). */
const log = replayedPcrs(eventlogVector('event-arch-linux.bin'));
const bank = (name: 'sha1' | 'sha256', size: number) =>
  Object.fromEntries(DEFAULT_PCR_SELECTION.sha256!.map((i) => [i, log[name]?.[i] ?? new Uint8Array(size)]));
const BOOT = { sha256: bank('sha256', 32), sha1: bank('sha1', 20) };

function appraiseWith(nonce: Uint8Array, spec: Partial<EvidenceSpec>, over: Partial<AppraisalInput> = {}) {
  return appraise({ akPublic: agent.akPublic, nonce, evidence: attestation(agent, { nonce, pcrs: BOOT, ...spec }), ...over });
}

/** Through the database and back, as the service keeps lastEvidence and baselines. */
const stored = <T>(value: T): T => JSON.parse(JSON.stringify(value)) as T;

describe('captureBaseline', () => {
  it('pins every PCR the quote signed; enforced, it affirms the same boot and names the one PCR that changes', () => {
    const first = appraiseWith(FIRST, {});
    expect(codes(first.reasons)).toEqual(['NO_BASELINE']);
    const doc = captureBaseline(stored(first.evidence!), { audiences: ['spiffe://example.org/db'], selector: { role: 'db' } });
    // sha256 is what the baseline relies on: the sha1 bank the agent also quoted is left out.
    expect(pcrSelectionOf(doc)).toEqual(DEFAULT_PCR_SELECTION);
    expect(doc.pcrs?.sha256?.['4']).toEqual([hex(BOOT.sha256[4]!)]);
    expect(JSON.parse(JSON.stringify(doc))).toMatchObject({
      version: 1,
      selector: { labels: { role: 'db' } },
      key: { residence: ['tpm'] },
      audiences: ['spiffe://example.org/db'],
      allowSha1: false,
    });
    const baseline = { id: 'captured-1', version: 1, document: parseBaselineDocument(stored(doc)) };

    expect(appraiseWith(SECOND, {}, { baseline }).status).toBe('affirming');
    const changed = { ...BOOT, sha256: { ...BOOT.sha256, 4: pcrValue('sha256', 4) } };
    const a = appraiseWith(SECOND, { pcrs: changed }, { baseline });
    expect(a.status).toBe('contraindicated');
    expect(a.reasons).toEqual([{ code: 'PCR_VALUE_NOT_ALLOWED', bank: 'sha256', pcr: 4, message: `sha256 PCR 4 is ${hex(pcrValue('sha256', 4))}, not an allowed value` }]);
  });

  it('a captured baseline allows TPM-certified keys only, whatever key the host used (a host cannot opt it in to key reports)', () => {
    const first = appraiseWith(FIRST, { key: { kind: 'pkcs11', report: hsmReport(FIRST) } });
    const document = captureBaseline(stored(first.evidence!));
    expect(document.key).toEqual({ residence: ['tpm'] });
    const a = appraiseWith(SECOND, { key: { kind: 'pkcs11', report: hsmReport(SECOND) } }, { baseline: { id: 'captured-2', version: 1, document } });
    expect(codes(a.reasons)).toEqual(['KEY_RESIDENCE_NOT_ALLOWED']);
  });

  it('a legacy SHA-1-only TPM: its values are kept and the document allows SHA-1, so its appraisals end in a warning', () => {
    const legacy = testAgent({ schemeHash: TPM_ALG.SHA1 });
    const sha1Only = { sha1: BOOT.sha1 };
    const evidence = (nonce: Uint8Array) => attestation(legacy, { nonce, pcrs: sha1Only, quoteHash: 'sha1', key: { kind: 'tpm', certifyHash: 'sha1' } });
    const first = appraise({ akPublic: legacy.akPublic, nonce: FIRST, evidence: evidence(FIRST), allowSha1: true });
    const document = captureBaseline(stored(first.evidence!));
    expect(document.allowSha1).toBe(true);
    expect(pcrSelectionOf(document)).toEqual({ sha1: DEFAULT_PCR_SELECTION.sha256 });
    const a = appraise({ akPublic: legacy.akPublic, nonce: SECOND, evidence: evidence(SECOND), baseline: { id: 'legacy', version: 1, document } });
    expect(a.status).toBe('warning');
    expect(codes(a.reasons)).toEqual(['LEGACY_SHA1_ACCEPTED']);
  });

  it('ERR_NO_EVIDENCE: stored evidence that is not what appraise returned, or that pins nothing', () => {
    const good = stored(appraiseWith(FIRST, {}).evidence!);
    for (const bad of [null, 'evidence', { ...good, version: 2 }, { ...good, keyResidence: 'disk' }, { ...good, extra: 1 }, { ...good, pcrs: { sha256: { 0: 'zz' } } }]) {
      expect(codeOf(() => parseCapturedEvidence(bad))).toBe('ERR_NO_EVIDENCE');
      expect(codeOf(() => captureBaseline(bad as CapturedEvidence))).toBe('ERR_NO_EVIDENCE');
    }
    expect(codeOf(() => captureBaseline({ ...good, pcrs: {} }))).toBe('ERR_NO_EVIDENCE');
    expect(codeOf(() => captureBaseline({ ...good, pcrs: { sha256: {} } }))).toBe('ERR_NO_EVIDENCE');
  });

  it('ERR_BASELINE_INVALID: options the document refuses', () => {
    const good = stored(appraiseWith(FIRST, {}).evidence!);
    expect(codeOf(() => captureBaseline(good, { selector: { Role: 'db' } }))).toBe('ERR_BASELINE_INVALID');
    expect(codeOf(() => captureBaseline(good, { audiences: ['two words'] }))).toBe('ERR_BASELINE_INVALID');
  });

  it('evidence a failed appraisal did not verify is not offered for capture', () => {
    const sent = { ...BOOT, sha256: { ...BOOT.sha256, 3: pcrValue('sha256', 3) } };
    expect(appraiseWith(FIRST, { sentPcrs: sent }).evidence).toBeNull();
  });
});
