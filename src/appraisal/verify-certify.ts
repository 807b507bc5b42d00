import { PolicyError, VerificationError } from '../errors.js';
import type { Attest, CertifyInfo } from '../tpm/attest.js';
import { TPMA_OBJECT, TPM_ALG, TPM_ST } from '../tpm/constants.js';
import { objectName } from '../tpm/name.js';
import type { TpmPublic } from '../tpm/public.js';
import type { SigningKey } from '../tpm/verify-signature.js';
import { equalBytes } from '../bytes.js';
import { verifySignedAttest, type AttestKind } from './signed-attest.js';

export interface CertifyEvidence {
  /** The public area of the key being certified, as the agent sent it. */
  readonly keyPublic: TpmPublic;
  /** The marshalled TPMS_ATTEST from TPM2_Certify. */
  readonly certifyInfo: Uint8Array;
  /** The AK's TPMT_SIGNATURE over it. */
  readonly signature: Uint8Array;
}

export interface CertifyPolicy {
  readonly qualifyingData: Uint8Array;
  readonly allowSha1?: boolean;
}

const CERTIFY: AttestKind = {
  what: 'certification',
  type: TPM_ST.ATTEST_CERTIFY,
  tpmSt: 'TPM_ST_ATTEST_CERTIFY',
  codes: { magic: 'ERR_CERTIFY_MAGIC', type: 'ERR_CERTIFY_TYPE', nonce: 'ERR_CERTIFY_NONCE_MISMATCH', sha1: 'ERR_CERTIFY_SHA1_NOT_ALLOWED' },
};

const RESIDENT = ['fixedTPM', 'fixedParent', 'sensitiveDataOrigin'] as const;

/**
 * Verifies a TPM2_Certify by the AK: the TPM vouches that an object with exactly this public
 * area (its Name) is loaded in the same TPM, and the attributes say its private part was
 * made there and cannot leave it. Only then may a credential be bound to the key.
 */
export function verifyCertify(ak: SigningKey, evidence: CertifyEvidence, policy: CertifyPolicy): Attest {
  const { attest } = verifySignedAttest(
    ak,
    evidence.certifyInfo,
    evidence.signature,
    policy.qualifyingData,
    CERTIFY,
    policy.allowSha1,
  );
  // The Name binds the key only as strongly as its hash.
  if (evidence.keyPublic.nameAlg === TPM_ALG.SHA1 && !policy.allowSha1) {
    throw new PolicyError('ERR_CERTIFY_SHA1_NOT_ALLOWED', 'certified key is named with SHA-1; legacy SHA-1 is not allowed');
  }
  // verifySignedAttest checked the type is TPM_ST_ATTEST_CERTIFY.
  const { name } = attest.attested as CertifyInfo;
  if (!equalBytes(name, objectName(evidence.keyPublic))) {
    throw new VerificationError('ERR_CERTIFY_NAME_MISMATCH', 'certified Name is not the Name of the supplied public key');
  }
  const missing = RESIDENT.filter((a) => (evidence.keyPublic.objectAttributes & TPMA_OBJECT[a]) === 0);
  if (missing.length > 0) {
    throw new PolicyError('ERR_CERTIFY_KEY_ATTRIBUTES', `certified key can leave the TPM: ${missing.join(', ')} not set`);
  }
  return attest;
}
