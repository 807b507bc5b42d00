import { createHash } from 'node:crypto';
import { parseTpm2bPublic, type TpmPublic } from './public.js';
import { publicKeyOf } from './public-key.js';

/**
 * The agent id of a TPM (SERVICE.md "Identities"): lowercase hex SHA-256 of the DER
 * SubjectPublicKeyInfo of its EK (the "EK hash" of spire-tpm-plugin), from the parsed EK or its
 * marshalled TPM2B_PUBLIC.
 */
export function agentIdOf(ek: TpmPublic | Uint8Array): string {
  const pub = ek instanceof Uint8Array ? parseTpm2bPublic(ek) : ek;
  return createHash('sha256').update(publicKeyOf(pub).export({ type: 'spki', format: 'der' })).digest('hex');
}
