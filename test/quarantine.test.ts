/**
 * Quarantine on failure as the verifier runs it by default (attestation.quarantineOnFailure):
 * a host whose own evidence an enforced baseline contraindicates is quarantined in the same
 * commit as the verdict, and an innocent host is not: not for a late answer to an older
 * challenge, not for evidence asked for under a baseline that changed since, not for asking
 * for a key the baseline's policy refuses. Real swtpm host, real HTTPS verifier, SQLite.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { AgentDetailBody, AttestationResponse, BaselineBody, type AttestationRequestInput } from '../src/wire/schemas.js';
import { enforceBaseline, enrollOverApi, evidenceFor, reasonCodes, refused, softwareKeyAnswer, startAttackBed, type AttackBed } from './attack-harness.js';

const PCR_ZERO = '00'.repeat(32);

let bed: AttackBed;
let agentId: string;

beforeAll(async () => {
  bed = await startAttackBed({ store: 'sqlite' });
  agentId = await enrollOverApi(bed, { role: 'prod' });
}, 120_000);
afterAll(async () => bed?.stop());

const enforce = (name: string, document: Record<string, unknown>) => enforceBaseline(bed, name, document);
const retire = (id: string) => bed.admin.call('POST', `/v1/baselines/${id}/retire`, BaselineBody, {});
const attest = (body: AttestationRequestInput) => bed.anon.call('POST', `/v1/agents/${agentId}/attestations`, AttestationResponse, body);
const agent = () => bed.admin.call('GET', `/v1/agents/${agentId}`, AgentDetailBody);
const quarantines = async () => (await bed.v.verifier.store.audit.list({ limit: 1000 })).items.filter((e) => e.action === 'agent.quarantine').length;

/** Runs `work` under a baseline, then retires it and releases the agent if `work` left it quarantined. */
async function under(name: string, document: Record<string, unknown>, work: () => Promise<void>): Promise<void> {
  const id = await enforce(name, document);
  try {
    await work();
  } finally {
    await retire(id);
    if ((await agent()).status === 'quarantined') await bed.admin.call('POST', `/v1/agents/${agentId}/release`, AgentDetailBody.omit({ credentials: true }), {});
  }
}

describe('quarantine on failure', () => {
  const good = { pcrs: { sha256: { '15': [PCR_ZERO] } } };

  it("a host's PCR contradicting the baseline quarantines it and revokes its credentials, audited by system", async () => {
    await under('before', good, async () => {
      expect((await attest(await evidenceFor(bed, agentId))).credentials).toBeDefined();
    });
    await under('contradicted', { pcrs: { sha256: { '15': ['11'.repeat(32)] } } }, async () => {
      const before = await quarantines();
      const e = await refused(attest(await evidenceFor(bed, agentId)), 'ERR_ATTESTATION_REFUSED');
      expect(reasonCodes(e)).toStrictEqual(['PCR_VALUE_NOT_ALLOWED']);
      const a = await agent();
      expect(a.status).toBe('quarantined');
      expect(a.credentials.length).toBeGreaterThan(0);
      expect(a.credentials.every((c) => c.revoked)).toBe(true);
      expect(await quarantines()).toBe(before + 1);
      const notActive = await refused(bed.anon.call('POST', `/v1/agents/${agentId}/challenges`, AttestationResponse, {}), 'ERR_AGENT_NOT_ACTIVE');
      expect(notActive.problem.agentStatus).toBe('quarantined');
    });
  });

  it('a late answer to an older challenge (its TPM clock behind the last one) is refused, and quarantines nothing', async () => {
    await under('late-answer', good, async () => {
      const older = await evidenceFor(bed, agentId);
      const newer = await evidenceFor(bed, agentId);
      expect((await attest(newer)).credentials).toBeDefined();
      const before = await quarantines();
      const e = await refused(attest(older), 'ERR_ATTESTATION_REFUSED');
      expect(reasonCodes(e)).toStrictEqual(['ERR_QUOTE_CLOCK_ROLLBACK']);
      const a = await agent();
      expect(a.status).toBe('active');
      expect(a.credentials.some((c) => !c.revoked && Date.parse(c.expiresAt) > Date.now())).toBe(true);
      expect(await quarantines()).toBe(before);
    });
  });

  it('evidence asked for under a baseline that changed since is refused, quarantines nothing, and the next challenge asks for what the new one needs', async () => {
    let asked: AttestationRequestInput | undefined;
    await under('old', good, async () => {
      asked = await evidenceFor(bed, agentId);
    });
    await under('new', { pcrs: { sha256: { '14': [PCR_ZERO], '15': [PCR_ZERO] } } }, async () => {
      const before = await quarantines();
      const e = await refused(attest(asked!), 'ERR_ATTESTATION_REFUSED');
      expect(reasonCodes(e)).toStrictEqual(['ERR_QUOTE_PCR_NOT_SIGNED']);
      expect((await agent()).status).toBe('active');
      expect(await quarantines()).toBe(before);
      expect((await attest(await evidenceFor(bed, agentId))).verdict.status).toBe('affirming');
    });
  });

  it("a key the baseline's policy refuses (a PKCS#11 key where only TPM keys are allowed) refuses the request, not the host", async () => {
    await under('tpm-keys-only', good, async () => {
      const before = await quarantines();
      const e = await refused(attest(await softwareKeyAnswer(bed, agentId)), 'ERR_ATTESTATION_REFUSED');
      expect(reasonCodes(e)).toStrictEqual(['KEY_RESIDENCE_NOT_ALLOWED']);
      expect((await agent()).status).toBe('active');
      expect(await quarantines()).toBe(before);
    });
  });

  it('key evidence that does not verify (a key report whose signature is not the key\'s) is the host\'s act: quarantined', async () => {
    await under('pkcs11-allowed', { ...good, key: { residence: ['tpm', 'pkcs11'] } }, async () => {
      const answer = await softwareKeyAnswer(bed, agentId);
      const report = (answer.key as { kind: 'pkcs11'; report: { signature: Uint8Array } }).report;
      // The quote binds the report without its signature: only the report's own check fails.
      const forged = { ...answer, key: { kind: 'pkcs11' as const, report: { ...report, signature: new Uint8Array(report.signature).reverse() } } };
      const before = await quarantines();
      const e = await refused(attest(forged as AttestationRequestInput), 'ERR_ATTESTATION_REFUSED');
      expect(reasonCodes(e).some((c) => c.startsWith('ERR_HSM_') || c.startsWith('ERR_SIGNATURE_'))).toBe(true);
      expect((await agent()).status).toBe('quarantined');
      expect(await quarantines()).toBe(before + 1);
    });
  });
});
