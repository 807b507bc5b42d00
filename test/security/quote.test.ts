/**
 * Quote forgeries against the real verifier (HTTPS, SQLite) and a real swtpm host enrolled
 * over the API, one test per failure class (DESIGN's quote invariants and the CVEs behind
 * them). Evidence that is not the agent's own is refused with its code and changes nothing;
 * authentic evidence that fails is refused with its verdict's reasons and issues nothing.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { TPM_ALG, TPM_ECC } from '../../src/tpm/constants.js';
import { parseSignature } from '../../src/tpm/signature.js';
import { TpmWriter } from '../../src/tpm/writer.js';
import { AgentDetailBody, AttestationResponse, BaselineBody, EnrollmentResponse } from '../../src/wire/schemas.js';
import { enforceBaseline, enrollOverApi, evidenceFor, reasonCodes, refused, startAttackBed, withSession, type AttackBed } from '../attack-harness.js';
import { AK_ATTRIBUTES, softAk } from '../helpers/tpm-builders.js';
import { tpm2 } from '../helpers/swtpm.js';
import { TPMA_OBJECT } from '../../src/tpm/constants.js';
import { expectNothingRecorded, expectRefusedVerdictOnly, recordOf } from './harness.js';

/** The order n of P-256 (FIPS 186-4 D.1.2.3): r and s must lie in [1, n-1]. */
const P256_N = BigInt('0xffffffff00000000ffffffffffffffffbce6faada7179e84f3b9cac2fc632551');

let bed: AttackBed;
let agentId: string;

beforeAll(async () => {
  // One agent is refused again and again: quarantine on failure (tested in test/quarantine.test.ts) would stop it at the first.
  bed = await startAttackBed({ store: 'sqlite', config: { attestation: { quarantineOnFailure: false } } });
  agentId = await enrollOverApi(bed, { role: 'security' });
  // The swtpm's sha256 PCR 15 as it starts: never extended here.
  await enforceBaseline(bed, 'quote-security', { pcrs: { sha256: { '15': ['00'.repeat(32)] } } });
}, 120_000);

afterAll(async () => {
  await bed?.stop();
});

const attest = (body: unknown) => bed.anon.call('POST', `/v1/agents/${agentId}/attestations`, AttestationResponse, body);
const record = () => recordOf(bed.v, agentId);

/** A TPMT_SIGNATURE (ECDSA, SHA-256) with the given r and s. */
function ecdsaSignature(r: Uint8Array, s: Uint8Array): Uint8Array {
  return new TpmWriter().u16(TPM_ALG.ECDSA).u16(TPM_ALG.SHA256).tpm2b(r).tpm2b(s).finish();
}

const bytes32 = (n: bigint) => Buffer.from(n.toString(16).padStart(64, '0'), 'hex');

describe('quote structure (tpm2-tools CVE-2024-29038)', () => {
  it('a quote whose magic is not TPM_GENERATED_VALUE: ERR_QUOTE_MAGIC, nothing recorded', async () => {
    const body = await evidenceFor(bed, agentId);
    const quote = Buffer.from(body.quote);
    quote[0] = quote[0]! ^ 0xff;
    const before = await record();
    await refused(attest({ ...body, quote }), 'ERR_QUOTE_MAGIC');
    await expectNothingRecorded(bed.v, before, agentId);
  });

  it("an AK-signed attestation of another type (the host's TPM2_Certify) as the quote: ERR_QUOTE_TYPE, nothing recorded", async () => {
    const body = await evidenceFor(bed, agentId);
    if (body.key.kind !== 'tpm') throw new Error('unreachable');
    const before = await record();
    await refused(attest({ ...body, quote: body.key.certifyInfo, signature: body.key.signature }), 'ERR_QUOTE_TYPE');
    await expectNothingRecorded(bed.v, before, agentId);
  });

  it('an AK that is not a restricted signing key, or on an unsupported curve, is refused at enrollment: nothing pending, nothing audited', async () => {
    const before = await record();
    const enroll = (akPublic: Uint8Array) =>
      withSession(bed, (s) => bed.anon.call('POST', '/v1/enrollments', EnrollmentResponse, { ekPublic: s.ek.public, ekCertificate: s.ek.certificate!, akPublic }));
    // Unrestricted: it would sign a forged TPMS_ATTEST that starts with TPM_GENERATED_VALUE.
    await refused(enroll(softAk('ecc', { attributes: AK_ATTRIBUTES & ~TPMA_OBJECT.restricted }).public), 'ERR_AK_ATTRIBUTES');
    // TPM2B_PUBLIC of an ECC key: size, type, nameAlg, objectAttributes, authPolicy (empty), symmetric, scheme + hash, then curveID.
    const onCurve = (curve: number) => {
      const ak = Buffer.from(softAk('ecc').public);
      ak.writeUInt16BE(curve, 18);
      return ak;
    };
    await refused(enroll(onCurve(TPM_ECC.NIST_P521)), 'ERR_AK_ATTRIBUTES');
    await refused(enroll(onCurve(0x0010 /* TPM_ECC_BN_P256 */)), 'ERR_TPM_UNSUPPORTED_ALG');
    await expectNothingRecorded(bed.v, before, agentId);
  });
});

describe('quote signature (Keylime CVE-2023-3674): refused as an error, never only logged', () => {
  it('a flipped bit, r = s = 0 (CVE-2022-21449) and r = n: ERR_SIGNATURE_INVALID each, nothing recorded', async () => {
    const before = await record();
    const forgeries: Array<(sig: Uint8Array) => Uint8Array> = [
      (sig) => {
        const flipped = Buffer.from(sig);
        flipped[flipped.length - 1] = flipped[flipped.length - 1]! ^ 0x01;
        return flipped;
      },
      () => ecdsaSignature(new Uint8Array(32), new Uint8Array(32)),
      (sig) => {
        const parsed = parseSignature(sig) as { r: Uint8Array; s: Uint8Array };
        return ecdsaSignature(bytes32(P256_N), parsed.s);
      },
    ];
    for (const forge of forgeries) {
      const body = await evidenceFor(bed, agentId);
      await refused(attest({ ...body, signature: forge(body.signature as Uint8Array) }), 'ERR_SIGNATURE_INVALID');
    }
    await expectNothingRecorded(bed.v, before, agentId);
  });

  it('the high-s twin (n - s) of an accepted quote is no second use: ERR_NONCE_UNKNOWN, nothing recorded', async () => {
    const body = await evidenceFor(bed, agentId);
    const affirmed = await attest(body);
    expect(affirmed.verdict.status).toBe('affirming');
    const { r, s } = parseSignature(body.signature as Uint8Array) as { r: Uint8Array; s: Uint8Array };
    const twin = ecdsaSignature(r, bytes32(P256_N - BigInt(`0x${Buffer.from(s).toString('hex')}`)));
    const before = await record();
    await refused(attest({ ...body, signature: twin }), 'ERR_NONCE_UNKNOWN');
    await expectNothingRecorded(bed.v, before, agentId);
  });
});

describe('PCR selection (go-attestation CVE-2022-0317, tpm2-tools CVE-2024-29039)', () => {
  it('a quote over no PCR at all, with the pinned value supplied unsigned: ERR_QUOTE_PCR_NOT_SIGNED, nothing issued', async () => {
    const body = await evidenceFor(bed, agentId, (c) => ({ ...c, pcrSelection: {} }));
    const before = await record();
    const e = await refused(attest({ ...body, pcrs: { sha256: { '15': new Uint8Array(32) } } }), 'ERR_ATTESTATION_REFUSED');
    expect(reasonCodes(e)).toContain('ERR_QUOTE_PCR_NOT_SIGNED');
    await expectRefusedVerdictOnly(bed.v, before, agentId);
  });

  it('values of another index: ERR_QUOTE_PCR_DIGEST_MISMATCH, and no value is judged', async () => {
    // PCR 14 and 15 hold different values: the host relabels 14's as 15's and 15's as 14's.
    await tpm2(bed.host, ['tpm2_pcrextend', `14:sha256=${'14'.repeat(32)}`]);
    const body = await evidenceFor(bed, agentId, (c) => ({ ...c, pcrSelection: { sha256: [14, 15] } }));
    const signed = body.pcrs.sha256!;
    const before = await record();
    const e = await refused(attest({ ...body, pcrs: { sha256: { '14': signed['15']!, '15': signed['14']! } } }), 'ERR_ATTESTATION_REFUSED');
    expect(reasonCodes(e)).toEqual(['ERR_QUOTE_PCR_DIGEST_MISMATCH']);
    await expectRefusedVerdictOnly(bed.v, before, agentId);
  });
});

describe('legacy SHA-1 (not allowed unless a baseline says so)', () => {
  it("a quote of the sha1 bank answering for the sha256 PCR the baseline pins: ERR_QUOTE_PCR_NOT_SIGNED, the sha1 value decides nothing", async () => {
    const body = await evidenceFor(bed, agentId, (c) => ({ ...c, pcrSelection: { sha1: [15] } }));
    const before = await record();
    // The signed sha1 value, and the value the baseline allows supplied under sha256.
    const e = await refused(attest({ ...body, pcrs: { ...body.pcrs, sha256: { '15': new Uint8Array(32) } } }), 'ERR_ATTESTATION_REFUSED');
    expect(reasonCodes(e)).toEqual(['ERR_QUOTE_PCR_NOT_SIGNED']);
    await expectRefusedVerdictOnly(bed.v, before, agentId);
  });

  it('a baseline relying on sha1 PCR values without allowSha1, in any case of the bank name: ERR_BASELINE_INVALID, nothing stored', async () => {
    const before = await record();
    for (const pcrs of [{ sha1: { '15': ['00'.repeat(20)] } }, { SHA1: { '15': ['00'.repeat(20)] } }]) {
      await refused(bed.admin.call('POST', '/v1/baselines', BaselineBody, { name: 'sha1-pinned', document: { version: 1, pcrs } }), 'ERR_BASELINE_INVALID');
      await refused(bed.admin.call('POST', '/v1/baselines', BaselineBody, { name: 'sha1-rules', document: { version: 1, eventlog: { pcrs } } }), 'ERR_BASELINE_INVALID');
    }
    await expectNothingRecorded(bed.v, before, agentId);
  });
});

describe('TPM clock and resets, compared after the signature', () => {
  it('a quote older than the last accepted one (clock behind, same resetCount): ERR_QUOTE_CLOCK_ROLLBACK, the stored clock kept, nothing issued', async () => {
    const older = await evidenceFor(bed, agentId);
    await new Promise((r) => setTimeout(r, 50));
    expect((await attest(await evidenceFor(bed, agentId))).verdict.status).toBe('affirming');
    const before = await record();
    const e = await refused(attest(older), 'ERR_ATTESTATION_REFUSED');
    expect(reasonCodes(e)).toEqual(['ERR_QUOTE_CLOCK_ROLLBACK']);
    await expectRefusedVerdictOnly(bed.v, before, agentId);
    expect((await recordOf(bed.v, agentId)).lastClock).toEqual(before.lastClock);
  });

  it('a quote from before a TPM reset, sent after one was accepted (resetCount goes back): ERR_QUOTE_CLOCK_ROLLBACK, nothing issued', async () => {
    const beforeReset = await evidenceFor(bed, agentId);
    await bed.host.restart();
    expect((await attest(await evidenceFor(bed, agentId))).verdict.status).toBe('affirming');
    const before = await record();
    const e = await refused(attest(beforeReset), 'ERR_ATTESTATION_REFUSED');
    expect(reasonCodes(e)).toEqual(['ERR_QUOTE_CLOCK_ROLLBACK']);
    await expectRefusedVerdictOnly(bed.v, before, agentId);
    expect((await bed.admin.call('GET', `/v1/agents/${agentId}`, AgentDetailBody)).status).toBe('active');
  });
});

