/**
 * Second-round attacks on capture (real verifier, SQLite, file keys, a swtpm host enrolled over
 * the API). The tests assert the secure behaviour; they fail until it is in place.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { AttestationResponse, BaselineBody, type AttestationRequestInput } from '../src/wire/schemas.js';
import { enrollOverApi, reasonCodes, refused, softwareKeyAnswer as answerWithSoftwareKey, startAttackBed, type AttackBed } from './attack-harness.js';

let bed: AttackBed;
let agentId: string;

beforeAll(async () => {
  bed = await startAttackBed({ store: 'sqlite' });
  agentId = await enrollOverApi(bed, { role: 'prod' });
}, 120_000);

afterAll(async () => {
  await bed?.stop();
});

const softwareKeyAnswer = () => answerWithSoftwareKey(bed, agentId);

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
