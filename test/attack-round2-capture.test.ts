/**
 * Second-round attacks on capture (real verifier, SQLite, file keys, a swtpm host enrolled over
 * the API). The tests assert the secure behaviour; they fail until it is in place.
 */
import { generateKeyPairSync, sign } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { quoteWithPcrValues } from '../src/agent/quote-with-values.js';
import { CKK_EC, keyEvidenceMessage, type HsmKeyEvidence } from '../src/appraisal/hsm-key-report.js';
import { quoteQualifyingData } from '../src/appraisal/key-binding.js';
import { AttestationResponse, BaselineBody, type AttestationRequestInput } from '../src/wire/schemas.js';
import { challenge, enrollOverApi, reasonCodes, refused, startAttackBed, wirePcrs, withSession, type AttackBed } from './attack-harness.js';

let bed: AttackBed;
let agentId: string;

beforeAll(async () => {
  bed = await startAttackBed({ store: 'sqlite' });
  agentId = await enrollOverApi(bed, { role: 'prod' });
}, 120_000);

afterAll(async () => {
  await bed?.stop();
});

/** A correct answer to a fresh challenge that names a software key as a PKCS#11 key (made-up attributes and token). */
async function softwareKeyAnswer(): Promise<AttestationRequestInput> {
  const c = await challenge(bed, agentId);
  const software = generateKeyPairSync('ec', { namedCurve: 'P-256' });
  const evidence: HsmKeyEvidence = {
    publicKey: new Uint8Array(software.publicKey.export({ type: 'spki', format: 'der' })),
    attributes: { token: true, private: true, sensitive: true, extractable: false, neverExtractable: true, alwaysSensitive: true, local: true, keyType: CKK_EC },
    token: { manufacturer: 'Any Vendor', model: 'Any HSM', serial: '0001', label: 'made-up' },
    alg: 'ES256',
  };
  const signature = sign('sha256', keyEvidenceMessage(c.nonce, evidence), { key: software.privateKey, dsaEncoding: 'ieee-p1363' });
  const quote = await withSession(bed, (s) =>
    quoteWithPcrValues(s, c.pcrSelection as Record<string, number[]>, quoteQualifyingData(c.nonce, { kind: 'pkcs11', evidence })),
  );
  return { nonce: c.nonce, quote: quote.attest, signature: quote.signature, pcrs: wirePcrs(quote.values), key: { kind: 'pkcs11', report: { ...evidence, signature } } };
}

function attest(body: AttestationRequestInput) {
  return bed.anon.call('POST', `/v1/agents/${agentId}/attestations`, AttestationResponse, body);
}

describe('Capture lets the host opt its baseline in to PKCS#11 key reports', () => {
  it('a baseline captured after a PKCS#11 report attestation gives a software key no credentials', async () => {
    // No baseline enforced yet: the host answers the full challenge with a PKCS#11 report.
    await refused(attest(await softwareKeyAnswer()), 'ERR_NO_BASELINE');

    // The operator captures the host's boot state and enforces it. Baselines accept TPM-certified
    // keys only unless they opt in; the captured document opts in on the host's word
    // (key.residence ["pkcs11"], any token).
    const captured = await bed.admin.call('POST', '/v1/baselines/capture', BaselineBody, { agentId, name: 'captured-after-pkcs11-report' });
    await bed.admin.call('POST', `/v1/baselines/${captured.id}/enforce`, BaselineBody, {});
    try {
      // Before the fix: affirming, with an X509-SVID for a software key this test holds in memory.
      const e = await refused(attest(await softwareKeyAnswer()), 'ERR_ATTESTATION_REFUSED');
      expect(reasonCodes(e)).toContain('KEY_RESIDENCE_NOT_ALLOWED');
    } finally {
      await bed.admin.call('POST', `/v1/baselines/${captured.id}/retire`, BaselineBody, {});
    }
  });
});
