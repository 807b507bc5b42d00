/**
 * IMA lists sent with an attestation over HTTPS (real verifier, a swtpm host whose PCR 10 is
 * extended as the kernel would): a list with an entry left out, or one that no longer
 * continues what the verifier appraised before (shorter, or new entries that do not extend
 * its stored state to the quoted PCR), is refused with its reason and issues nothing; the
 * honest list is affirmed, incrementally.
 */
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { buildAttestationRequest } from '../../src/agent/evidence.js';
import { imaHashByName } from '../../src/eventlog/ima/hash-algos.js';
import { buildImaEntry, formatImaAscii } from '../../src/eventlog/ima/serialize.js';
import { AttestationResponse } from '../../src/wire/schemas.js';
import { challenge, enforceBaseline, enrollOverApi, reasonCodes, refused, startAttackBed, withSession, type AttackBed } from '../attack-harness.js';
import { referenceDigests } from '../helpers/ima.js';
import { tpm2 } from '../helpers/swtpm.js';
import { expectRefusedVerdictOnly, recordOf } from './harness.js';

let bed: AttackBed;
let agentId: string;
let tmp: string;

const sha256 = imaHashByName('sha256', 'test');
/** Measured files, each with its digest: what the host "runs". */
const files = Array.from({ length: 6 }, (_, i) => ({ path: `/usr/bin/tool-${i}`, digest: Buffer.alloc(32, i + 1) }));
const entries = files.map((f) => buildImaEntry(0, 10, 'ima-ng', { digestAlgo: sha256, digest: f.digest, name: Buffer.from(f.path) }));
const ascii = (list: typeof entries) => Buffer.from(formatImaAscii(list));

beforeAll(async () => {
  bed = await startAttackBed({ store: 'sqlite', config: { attestation: { quarantineOnFailure: false } } });
  tmp = mkdtempSync(join(tmpdir(), 'attestor-security-ima-'));
  agentId = await enrollOverApi(bed, { role: 'ima' });
  await enforceBaseline(bed, 'ima-security', { ima: { allow: Object.fromEntries(files.map((f) => [f.path, [`sha256:${f.digest.toString('hex')}`]])) } });
}, 120_000);

afterAll(async () => {
  await bed?.stop();
  if (tmp) rmSync(tmp, { recursive: true, force: true });
});

/** Extends PCR 10 as the kernel does for `list` (both banks). */
async function extendAsKernel(list: Buffer): Promise<void> {
  const specs = referenceDigests(list).map((d) => `${d.pcr}:sha1=${d.sha1.toString('hex')},sha256=${d.sha256.toString('hex')}`);
  await tpm2(bed.host, ['tpm2_pcrextend', ...specs]);
}

/** The host's answer to a fresh challenge, sending `list` as its IMA measurement list. */
async function answer(list: Buffer) {
  const path = join(tmp, `ima-${Date.now()}-${Math.random()}`);
  writeFileSync(path, list);
  const c = await challenge(bed, agentId);
  return withSession(bed, (session) => buildAttestationRequest({ session, key: { kind: 'tpm' }, challenge: c, logs: { imaLog: { path, ifPresent: false } } }));
}
const attest = (body: unknown) => bed.anon.call('POST', `/v1/agents/${agentId}/attestations`, AttestationResponse, body);

describe('IMA lists over the API', () => {
  it('a list with a measured entry left out: ERR_IMA_PCR_MISMATCH, nothing issued; the whole list is affirmed', async () => {
    const first = ascii(entries.slice(0, 4));
    await extendAsKernel(first);
    const before = await recordOf(bed.v, agentId);
    const e = await refused(attest(await answer(ascii([entries[0]!, entries[1]!, entries[3]!]))), 'ERR_ATTESTATION_REFUSED');
    expect(reasonCodes(e)).toContain('ERR_IMA_PCR_MISMATCH');
    await expectRefusedVerdictOnly(bed.v, before, agentId);
    expect((await attest(await answer(first))).verdict.status).toBe('affirming');
  });

  it('a later list shorter than what was appraised, or whose new entries do not continue the verified state: refused, nothing issued', async () => {
    const all = ascii(entries);
    await extendAsKernel(ascii(entries.slice(4)));
    // Shorter than the four entries appraised before.
    let before = await recordOf(bed.v, agentId);
    const shrunk = await refused(attest(await answer(ascii(entries.slice(0, 2)))), 'ERR_ATTESTATION_REFUSED');
    expect(reasonCodes(shrunk)).toStrictEqual(['ERR_IMA_LOG_SHRUNK']);
    await expectRefusedVerdictOnly(bed.v, before, agentId);
    // The new entries in another order than measured: they do not continue the verified state
    // to the quoted PCR 10. (The prefix already appraised is not read again: the verifier resumes
    // from the state it verified and keeps, never from anything the host sends.)
    before = await recordOf(bed.v, agentId);
    const reordered = [...entries.slice(0, 4), entries[5]!, entries[4]!];
    const forged = await refused(attest(await answer(ascii(reordered))), 'ERR_ATTESTATION_REFUSED');
    expect(reasonCodes(forged)).toContain('ERR_IMA_PCR_MISMATCH');
    await expectRefusedVerdictOnly(bed.v, before, agentId);
    // The honest list, continued: affirmed.
    expect((await attest(await answer(all))).verdict.status).toBe('affirming');
  });
});
