import { createPublicKey, verify, type KeyObject } from 'node:crypto';
import { ParseError, PolicyError, VerificationError } from '../errors.js';
import {
  CKK_EC,
  HSM_KEY_FLAGS,
  keyEvidenceMessage,
  parseHsmKeyReport,
  type HsmKeyAttributes,
  type HsmKeyReport,
  type HsmTokenIdentity,
} from './hsm-key-report.js';

/**
 * Appraisal of an HSM key report (DESIGN flow 3: "PKCS#11 key -> attribute report + signature
 * over the nonce").
 *
 * What this does and does not prove. The signature proves the reporter holds the private key
 * of the reported public key now (it covers the fresh nonce). The attributes and the token
 * identity, however, are self-reported by the host: without a vendor attestation chain from
 * the token nothing here proves the key is really non-extractable or lives in that token. They
 * gain weight only through the binding of DESIGN flow 3: the quote's qualifying data is
 * keyEvidenceDigest(nonce, report), so the TPM-attested host, whose boot state the appraisal
 * accepts, vouches for this report. Callers must therefore verify the quote against that
 * digest before trusting these claims.
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

export interface HsmKeyClaims {
  residence: 'pkcs11';
  curve: 'P-256';
  token: HsmTokenIdentity;
  attributes: HsmKeyAttributes;
}

export interface VerifiedHsmKey {
  publicKey: KeyObject;
  claims: HsmKeyClaims;
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

export function verifyHsmKey(
  report: HsmKeyReport,
  opts: { nonce: Uint8Array; requirements?: HsmKeyRequirements },
): VerifiedHsmKey {
  const r = parseHsmKeyReport(report);
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

  return { publicKey, claims: { residence: 'pkcs11', curve: 'P-256', token: r.token, attributes: r.attributes } };
}

function p256PublicKey(spki: Uint8Array): KeyObject {
  let key: KeyObject;
  try {
    key = createPublicKey({ key: Buffer.from(spki), format: 'der', type: 'spki' });
  } catch (e) {
    throw new ParseError('ERR_HSM_KEY_REPORT_MALFORMED', 'HSM key report: publicKey is not a valid SPKI', { cause: e });
  }
  // OpenSSL ignores bytes after the SPKI; the evidence must be exactly the key's encoding.
  if (!key.export({ type: 'spki', format: 'der' }).equals(spki)) {
    throw new ParseError('ERR_HSM_KEY_REPORT_MALFORMED', 'HSM key report: publicKey has bytes beyond its SPKI DER');
  }
  if (key.asymmetricKeyType !== 'ec' || key.asymmetricKeyDetails?.namedCurve !== 'prime256v1') {
    const details = key.asymmetricKeyDetails?.namedCurve ?? key.asymmetricKeyType ?? 'unknown';
    throw new PolicyError('ERR_KEY_UNSUPPORTED', `HSM key: ${details} key; only EC P-256 (ES256) is accepted`);
  }
  return key;
}

function tokenMatches(token: HsmTokenIdentity, entry: Partial<HsmTokenIdentity>): boolean {
  const fields = Object.keys(entry) as (keyof HsmTokenIdentity)[];
  return fields.every((f) => entry[f] === undefined || entry[f] === token[f]);
}
