import { verify, type KeyObject } from 'node:crypto';
import { PolicyError, VerificationError } from '../errors.js';
import {
  CKK_EC,
  HSM_KEY_FLAGS,
  keyEvidenceDigest,
  keyEvidenceMessage,
  p256PublicKey,
  parseHsmKeyReport,
  type HsmKeyAttributes,
  type HsmKeyReport,
  type HsmTokenIdentity,
} from './hsm-key-report.js';
import { equalBytes } from '../bytes.js';

/**
 * Appraisal of an HSM key report (DESIGN flow 3: "PKCS#11 key -> attribute report + signature
 * over the nonce").
 *
 * What this does and does not prove. The signature proves the reporter holds the private key
 * of the reported public key now (it covers the fresh nonce). The attributes and the token
 * identity, however, are reported by the host: without a vendor attestation chain from the
 * token nothing here proves the key is really non-extractable or lives in that token. They
 * gain weight only through the binding of DESIGN flow 3, which this checks: the qualifying
 * data of the agent's quote (verified by verifyQuote) must be keyEvidenceDigest(nonce,
 * report), so the TPM-attested host, whose boot state the appraisal accepts, vouches for this
 * very report. The result keeps them apart as `reported`.
 */

/** Attribute values a key must have to count as HSM-resident and non-exportable. */
const REQUIRED: Readonly<Record<(typeof HSM_KEY_FLAGS)[number], boolean>> = {
  token: true,
  private: true,
  sensitive: true,
  extractable: false,
  neverExtractable: true,
  alwaysSensitive: true,
  local: true,
};

/** ES256: P-256 signatures are two 32-byte integers. */
const P256_SIGNATURE_LENGTH = 64;

export interface HsmKeyRequirements {
  /**
   * Tokens the key may live on: the report's token must match one entry on every field the
   * entry sets. Absent: any token.
   */
  allowedTokens?: readonly Partial<HsmTokenIdentity>[];
}

export interface HsmKeyCheck {
  /** The nonce of the challenge the report answers. */
  nonce: Uint8Array;
  /**
   * The qualifying data (TPMS_ATTEST.extraData) of the agent's quote for the same challenge,
   * as verifyQuote returned it (VerifiedQuote.attest.extraData) once the quote verified. It
   * must be keyEvidenceDigest(nonce, report): otherwise the quote vouches for another report
   * (ERR_HSM_KEY_NOT_BOUND).
   */
  quotedQualifyingData: Uint8Array;
  requirements?: HsmKeyRequirements;
}

/**
 * What the host reported about its key and token. Checked against the requirements and bound
 * to the attested quote, but stated by the host, not proven by the token.
 */
export interface HsmKeyReported {
  residence: 'pkcs11';
  token: HsmTokenIdentity;
  attributes: HsmKeyAttributes;
}

export interface VerifiedHsmKey {
  /** The key; the reporter proved it holds the private half (signature over the nonce). */
  publicKey: KeyObject;
  /** Checked from the key itself. */
  curve: 'P-256';
  reported: HsmKeyReported;
}

/** ERR_HSM_KEY_ATTRIBUTES, naming every attribute that has the wrong value. */
export class HsmKeyAttributeError extends PolicyError {
  constructor(readonly violated: readonly (typeof HSM_KEY_FLAGS)[number][]) {
    super(
      'ERR_HSM_KEY_ATTRIBUTES',
      `HSM key: attributes not those of a non-extractable token key: ` +
        violated.map((f) => `${f} must be ${REQUIRED[f]}`).join(', '),
    );
  }
}

export function verifyHsmKey(report: HsmKeyReport, opts: HsmKeyCheck): VerifiedHsmKey {
  const r = parseHsmKeyReport(report);
  const quoted = opts.quotedQualifyingData;
  if (!(quoted instanceof Uint8Array) || !equalBytes(quoted, keyEvidenceDigest(opts.nonce, r))) {
    throw new VerificationError(
      'ERR_HSM_KEY_NOT_BOUND',
      "HSM key: the quote's qualifying data is not keyEvidenceDigest(nonce, report): the attested host did not vouch for this report",
    );
  }
  const publicKey = p256PublicKey(r.publicKey);
  if (r.attributes.keyType !== CKK_EC) {
    const keyType = `0x${r.attributes.keyType.toString(16)}`;
    throw new PolicyError('ERR_KEY_UNSUPPORTED', `HSM key: CKA_KEY_TYPE ${keyType} is not CKK_EC`);
  }

  const message = keyEvidenceMessage(opts.nonce, r);
  const valid =
    r.signature.length === P256_SIGNATURE_LENGTH &&
    verify('sha256', message, { key: publicKey, dsaEncoding: 'ieee-p1363' }, r.signature);
  if (!valid) {
    throw new VerificationError('ERR_SIGNATURE_INVALID', 'HSM key: signature over the challenge does not verify');
  }

  const violated = HSM_KEY_FLAGS.filter((f) => r.attributes[f] !== REQUIRED[f]);
  if (violated.length > 0) throw new HsmKeyAttributeError(violated);

  const allowed = opts.requirements?.allowedTokens;
  if (allowed && !allowed.some((entry) => tokenMatches(r.token, entry))) {
    throw new PolicyError(
      'ERR_HSM_TOKEN_NOT_ALLOWED',
      `HSM key: token ${JSON.stringify(r.token)} is not among the allowed tokens`,
    );
  }

  return { publicKey, curve: 'P-256', reported: { residence: 'pkcs11', token: r.token, attributes: r.attributes } };
}

function tokenMatches(token: HsmTokenIdentity, entry: Partial<HsmTokenIdentity>): boolean {
  const fields = Object.keys(entry) as (keyof HsmTokenIdentity)[];
  return fields.every((f) => entry[f] === undefined || entry[f] === token[f]);
}
