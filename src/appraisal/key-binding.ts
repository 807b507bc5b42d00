import { createHash } from 'node:crypto';
import { AttestorError } from '../errors.js';
import { keyEvidenceDigest, type HsmKeyEvidence } from './hsm-key-report.js';

/*
 * DESIGN flow 3: the quote's qualifying data = SHA-256(nonce || SHA-256(canonical key
 * evidence)), so the attested host vouches, in the same signed quote, for the key the
 * credentials will be bound to. Agent and verifier compute it here, the same way.
 */

const TPM_DOMAIN = Buffer.from('attestor/tpm-key-evidence/v1');

/** The key evidence a quote commits to: the TPM identity key's public area, or a PKCS#11 key report. */
export type BoundKey = { readonly kind: 'tpm'; readonly public: Uint8Array } | { readonly kind: 'pkcs11'; readonly evidence: HsmKeyEvidence };

/**
 * Canonical TPM key evidence, version 1: two fields, each prefixed by its UINT32 big-endian
 * length: the domain "attestor/tpm-key-evidence/v1" and the key's marshalled TPM2B_PUBLIC.
 * The TPM2_Certify that comes with it carries the bare nonce as its own qualifying data.
 */
export function canonicalTpmKeyEvidence(keyPublic: Uint8Array): Uint8Array {
  const out = Buffer.alloc(8 + TPM_DOMAIN.length + keyPublic.length);
  let at = out.writeUInt32BE(TPM_DOMAIN.length, 0);
  out.set(TPM_DOMAIN, at);
  at = out.writeUInt32BE(keyPublic.length, at + TPM_DOMAIN.length);
  out.set(keyPublic, at);
  return out;
}

/** The qualifying data the agent's quote must carry for `nonce` and the key it asks credentials for. */
export function quoteQualifyingData(nonce: Uint8Array, key: BoundKey): Uint8Array {
  if (nonce.length === 0) throw new AttestorError('ERR_INPUT', 'key binding: the nonce must be non-empty bytes');
  if (key.kind === 'pkcs11') return keyEvidenceDigest(nonce, key.evidence);
  const evidenceHash = createHash('sha256').update(canonicalTpmKeyEvidence(key.public)).digest();
  return createHash('sha256').update(nonce).update(evidenceHash).digest();
}
