import { TPM_ALG, TPM_ECC, TPMA_OBJECT } from '../tpm/constants.js';
import { TpmWriter } from '../tpm/writer.js';

/*
 * TPM2B_PUBLIC templates (Part 2 §12.2.5) for the keys the agent makes. The EK templates must
 * be bit-exact: the EK is re-derived from the endorsement seed with them, and only the exact
 * template gives the key the EK certificate was issued for.
 */

export type KeyType = 'rsa' | 'ecc';

const { fixedTPM, fixedParent, sensitiveDataOrigin, userWithAuth, adminWithPolicy, noDA, restricted, decrypt, sign } = TPMA_OBJECT;

/**
 * PolicySecret(TPM_RH_ENDORSEMENT) with SHA-256: the EK's authPolicy in templates L-1/L-2
 * (TCG EK Credential Profile 2.0 §B.6.3). Using the EK therefore needs the endorsement auth.
 */
export const EK_AUTH_POLICY = Buffer.from('837197674484b3f81a90cc8d46a5d724fd52d76e06520b64f2a1da1b331469aa', 'hex');

/** What differs between the templates besides type and attributes. */
interface KeyParams {
  /** AES-128-CFB for storage keys (parents, EKs); none for signing keys. */
  readonly symmetric: boolean;
  /** TPMT_RSA_SCHEME / TPMT_ECC_SCHEME algorithm; anything but NULL takes SHA-256. */
  readonly scheme: number;
  /** unique.rsa, or each of unique.ecc.x and .y. */
  readonly unique: Uint8Array;
}

function template(type: KeyType, attributes: number, authPolicy: Uint8Array, p: KeyParams): Uint8Array {
  const w = new TpmWriter()
    .u16(type === 'rsa' ? TPM_ALG.RSA : TPM_ALG.ECC)
    .u16(TPM_ALG.SHA256)
    .u32(attributes)
    .tpm2b(authPolicy);
  // TPMT_SYM_DEF_OBJECT (Part 2 §11.1.7)
  if (p.symmetric) w.u16(TPM_ALG.AES).u16(128).u16(TPM_ALG.CFB);
  else w.u16(TPM_ALG.NULL);
  w.u16(p.scheme);
  if (p.scheme !== TPM_ALG.NULL) w.u16(TPM_ALG.SHA256);
  if (type === 'rsa') {
    // keyBits, exponent 0 = 2^16 + 1, unique.rsa.
    w.u16(2048).u32(0).tpm2b(p.unique);
  } else {
    // curveID, kdf NULL, unique.ecc (x, y).
    w.u16(TPM_ECC.NIST_P256).u16(TPM_ALG.NULL).tpm2b(p.unique).tpm2b(p.unique);
  }
  const publicArea = w.finish();
  return new TpmWriter().tpm2b(publicArea).finish();
}

/**
 * The default EK templates: L-1 (RSA 2048, unique = 256 zero bytes) and L-2 (ECC NIST P-256,
 * unique = two 32-byte zero coordinates), TCG EK Credential Profile 2.0 §B.3.3-B.3.4, as
 * swtpm_setup and `tpm2_createek` use them. Certificates at NV 0x01c00002 / 0x01c0000a.
 */
export function ekTemplate(type: KeyType): Uint8Array {
  const attributes = fixedTPM | fixedParent | sensitiveDataOrigin | adminWithPolicy | restricted | decrypt;
  return template(type, attributes, EK_AUTH_POLICY, {
    symmetric: true,
    scheme: TPM_ALG.NULL,
    unique: new Uint8Array(type === 'rsa' ? 256 : 32),
  });
}

/**
 * The Storage Root Key templates of the TCG TPM v2.0 Provisioning Guidance §7.5.1 (RSA 2048
 * or ECC P-256, restricted decrypt, AES-128-CFB, noDA, empty unique): the same template
 * yields the same key, so the SRK is re-derived on every start instead of being persisted.
 */
export function srkTemplate(type: KeyType): Uint8Array {
  const attributes = fixedTPM | fixedParent | sensitiveDataOrigin | userWithAuth | noDA | restricted | decrypt;
  return template(type, attributes, new Uint8Array(0), { symmetric: true, scheme: TPM_ALG.NULL, unique: new Uint8Array(0) });
}

/**
 * An attestation key: a restricted signing key (it signs only TPM-generated structures,
 * quotes and certifications), ECDSA-SHA256 on P-256 or RSASSA-SHA256 with RSA 2048.
 */
export function akTemplate(type: KeyType): Uint8Array {
  const attributes = fixedTPM | fixedParent | sensitiveDataOrigin | userWithAuth | restricted | sign;
  return template(type, attributes, new Uint8Array(0), {
    symmetric: false,
    scheme: type === 'rsa' ? TPM_ALG.RSASSA : TPM_ALG.ECDSA,
    unique: new Uint8Array(0),
  });
}

/**
 * The agent's identity key: ECC P-256 ECDSA-SHA256, not restricted (it signs TLS handshakes
 * and proofs), made in and bound to this TPM, which TPM2_Certify by the AK then proves.
 */
export function identityKeyTemplate(): Uint8Array {
  const attributes = fixedTPM | fixedParent | sensitiveDataOrigin | userWithAuth | sign;
  return template('ecc', attributes, new Uint8Array(0), { symmetric: false, scheme: TPM_ALG.ECDSA, unique: new Uint8Array(0) });
}
