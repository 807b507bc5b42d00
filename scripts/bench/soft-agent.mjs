import { createECDH, createHash, generateKeyPairSync, sign } from 'node:crypto';
import { quoteQualifyingData } from '../../dist/appraisal/key-binding.js';
import { openStore } from '../../dist/store/open.js';
import { agentIdOf } from '../../dist/tpm/agent-id.js';
import { TPMA_OBJECT, TPM_ALG, TPM_ECC, TPM_GENERATED_VALUE, TPM_ST } from '../../dist/tpm/constants.js';
import { objectName } from '../../dist/tpm/name.js';
import { parseTpm2bPublic } from '../../dist/tpm/public.js';
import { TpmWriter } from '../../dist/tpm/writer.js';

/*
 * A software agent for loading the verifier alone: its AK and identity key are P-256 keys in
 * this process, and it writes the TPMS_ATTEST and TPMT_SIGNATURE structures a TPM would
 * (Part 2 §10.12, §11.3.4), so that its quotes and certifications go through the verifier's
 * unchanged code: the nonce is the challenge's, the signatures real ECDSA by the AK. Its PCRs
 * hold zeros; its clock moves forward with every quote. Enrolled by seeding (no EK to
 * activate), through the store's own activation.
 */

const EK_ATTRIBUTES =
  TPMA_OBJECT.fixedTPM | TPMA_OBJECT.fixedParent | TPMA_OBJECT.sensitiveDataOrigin | TPMA_OBJECT.adminWithPolicy | TPMA_OBJECT.restricted | TPMA_OBJECT.decrypt;
const AK_ATTRIBUTES =
  TPMA_OBJECT.fixedTPM | TPMA_OBJECT.fixedParent | TPMA_OBJECT.sensitiveDataOrigin | TPMA_OBJECT.userWithAuth | TPMA_OBJECT.restricted | TPMA_OBJECT.sign;
const IDENTITY_ATTRIBUTES = TPMA_OBJECT.fixedTPM | TPMA_OBJECT.fixedParent | TPMA_OBJECT.sensitiveDataOrigin | TPMA_OBJECT.userWithAuth | TPMA_OBJECT.sign;

/** A fresh P-256 point (no private key kept: createECDH is the quickest way to one). */
function randomPoint() {
  const point = createECDH('prime256v1').generateKeys();
  return { x: point.subarray(1, 33), y: point.subarray(33) };
}

/** TPM2B_PUBLIC of an ECC P-256 key: a storage key (the EK: AES-128-CFB) or an ECDSA SHA-256 signing key. */
function eccPublic(attributes, { symmetric }, { x, y } = randomPoint()) {
  const w = new TpmWriter().u16(TPM_ALG.ECC).u16(TPM_ALG.SHA256).u32(attributes).tpm2b(new Uint8Array());
  if (symmetric) w.u16(TPM_ALG.AES).u16(128).u16(TPM_ALG.CFB).u16(TPM_ALG.NULL);
  else w.u16(TPM_ALG.NULL).u16(TPM_ALG.ECDSA).u16(TPM_ALG.SHA256);
  const area = w.u16(TPM_ECC.NIST_P256).u16(TPM_ALG.NULL).tpm2b(x).tpm2b(y).finish();
  return new TpmWriter().tpm2b(area).finish();
}

/** A random EK public area: what a seeded agent's id is derived from. */
export const softEkPublic = () => eccPublic(EK_ATTRIBUTES, { symmetric: true });

/** A random AK public area, for agents that are only enrolled, never attesting. */
export const softAkPublic = () => eccPublic(AK_ATTRIBUTES, { symmetric: false });

export function createSoftAgent() {
  const ekPublic = softEkPublic();
  const ak = generateKeyPairSync('ec', { namedCurve: 'P-256' });
  const { x, y } = ak.publicKey.export({ format: 'jwk' });
  const akPublic = eccPublic(AK_ATTRIBUTES, { symmetric: false }, { x: Buffer.from(x, 'base64url'), y: Buffer.from(y, 'base64url') });
  const akName = objectName(parseTpm2bPublic(akPublic));
  const identityPublic = eccPublic(IDENTITY_ATTRIBUTES, { symmetric: false });
  const identityName = objectName(parseTpm2bPublic(identityPublic));
  let clock = 1_000_000n;

  /** TPMS_ATTEST, and its TPMT_SIGNATURE by the AK. */
  const attest = (type, extraData, attested) => {
    clock += 1000n;
    const bytes = new TpmWriter()
      .u32(TPM_GENERATED_VALUE)
      .u16(type)
      .tpm2b(akName)
      .tpm2b(extraData)
      .u64(clock)
      .u32(1)
      .u32(0)
      .u8(1)
      .u64(0x2023_0101n)
      .bytes(attested)
      .finish();
    const rs = sign('sha256', bytes, { key: ak.privateKey, dsaEncoding: 'ieee-p1363' });
    const signature = new TpmWriter().u16(TPM_ALG.ECDSA).u16(TPM_ALG.SHA256).tpm2b(rs.subarray(0, 32)).tpm2b(rs.subarray(32)).finish();
    return { attest: bytes, signature };
  };

  return {
    id: agentIdOf(ekPublic),
    ekPublic,
    akPublic,
    /** The body of POST /v1/agents/{id}/attestations answering `challenge`. */
    evidence(challenge, audience) {
      const certify = attest(TPM_ST.ATTEST_CERTIFY, challenge.nonce, new TpmWriter().tpm2b(identityName).tpm2b(identityName).finish());
      const banks = Object.entries(challenge.pcrSelection).filter(([, pcrs]) => pcrs && pcrs.length > 0);
      const selection = new TpmWriter().u32(banks.length);
      const pcrs = {};
      const values = [];
      for (const [bank, indexes] of banks) {
        if (bank !== 'sha256') throw new Error(`the soft agent has a sha256 bank only, not ${bank}`);
        const bitmap = new Uint8Array(3);
        for (const i of indexes) bitmap[i >> 3] |= 1 << (i & 7);
        selection.u16(TPM_ALG.SHA256).u8(3).bytes(bitmap);
        pcrs[bank] = {};
        for (const i of [...new Set(indexes)].sort((a, b) => a - b)) {
          pcrs[bank][i] = new Uint8Array(32);
          values.push(pcrs[bank][i]);
        }
      }
      const digest = createHash('sha256').update(Buffer.concat(values)).digest();
      const qualifying = quoteQualifyingData(challenge.nonce, { kind: 'tpm', public: identityPublic });
      const quote = attest(TPM_ST.ATTEST_QUOTE, qualifying, new TpmWriter().bytes(selection.finish()).tpm2b(digest).finish());
      return {
        nonce: challenge.nonce,
        quote: quote.attest,
        signature: quote.signature,
        pcrs,
        key: { kind: 'tpm', public: identityPublic, certifyInfo: certify.attest, signature: certify.signature },
        ...(audience ? { audience } : {}),
      };
    },
  };
}

/** Transactions asked for at once share a commit: seeding goes by this many. */
const SEED_CHUNK = 1000;

/**
 * Enrolls `agents` ({ id, ekPublic, akPublic }) in the store `where` names (openStore's
 * options: a data directory, or a database URL) through the store's own activation (audited
 * as enrollment audits it), as if each had enrolled.
 */
export async function seedAgents(where, agents) {
  const store = await openStore(where);
  try {
    for (let done = 0; done < agents.length; done += SEED_CHUNK) {
      await Promise.all(
        agents.slice(done, done + SEED_CHUNK).map((a) =>
          store.agents.activate(
            { id: a.id, ekPublic: a.ekPublic, akPublic: a.akPublic, ekCertificate: null, labels: { fleet: 'bench' }, createdAt: Date.now() },
            { actor: `agent:${a.id}`, action: 'agent.activate', subject: a.id, details: { seeded: true } },
          ),
        ),
      );
    }
  } finally {
    await store.close();
  }
}
