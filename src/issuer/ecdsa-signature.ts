import { AttestorError } from '../errors.js';
import { TAG, der, derUnsignedInteger } from './der.js';

/**
 * A Signer's raw r||s (the JOSE and WebCrypto form, 64 bytes for P-256) as the DER
 * ECDSA-Sig-Value ::= SEQUENCE { r INTEGER, s INTEGER } that X.509 signatures carry
 * (RFC 5480 §2.2 via RFC 3279 §2.2.3): each INTEGER minimal, with a leading 0 where the top bit is set.
 */
export function ecdsaSignatureDer(rs: Uint8Array): Buffer {
  if (rs.length === 0 || rs.length % 2 !== 0) {
    throw new AttestorError('ERR_ISSUANCE', `an ECDSA r||s signature has an even, non-zero length, not ${rs.length}`);
  }
  const half = rs.length / 2;
  return der(TAG.SEQUENCE, derUnsignedInteger(rs.subarray(0, half)), derUnsignedInteger(rs.subarray(half)));
}
