import { ParseError } from '../errors.js';
import { curveInfo, type CurveInfo } from '../tpm/constants.js';
import { leftPad, publicKeyOf } from '../tpm/public-key.js';
import type { TpmPublic } from '../tpm/public.js';

/**
 * SubjectPublicKeyInfo DER up to the point, per curve (RFC 5480: id-ecPublicKey with the named
 * curve, then a BIT STRING holding the uncompressed point 04 || X || Y). Coordinates padded to
 * the field size give every curve one fixed length, so the headers are constants.
 */
const EC_SPKI_PREFIX: Readonly<Record<CurveInfo['nodeName'], Buffer>> = {
  'P-256': Buffer.from('3059301306072a8648ce3d020106082a8648ce3d03010703420004', 'hex'),
  'P-384': Buffer.from('3076301006072a8648ce3d020106052b8104002203620004', 'hex'),
  'P-521': Buffer.from('30819b301006072a8648ce3d020106052b810400230381860004', 'hex'),
};

/**
 * The SPKI of a key a verified TPM2_Certify proved TPM-resident: what its credentials are
 * issued for. EC keys are encoded directly: verifyCertify required fixedTPM and
 * sensitiveDataOrigin, so the TPM generated the key and checked its point, and importing it
 * again (which validates the point) would cost more than the certification's signature check.
 */
export function tpmKeySpki(pub: TpmPublic): Uint8Array {
  if (pub.type !== 'ecc') return new Uint8Array(publicKeyOf(pub).export({ type: 'spki', format: 'der' }));
  const { nodeName, size } = curveInfo(pub.curve);
  if (pub.x.length > size || pub.y.length > size) {
    throw new ParseError('ERR_TPM_BAD_VALUE', `TPMT_PUBLIC: ECC coordinates longer than a ${nodeName} field element`);
  }
  return new Uint8Array(Buffer.concat([EC_SPKI_PREFIX[nodeName], leftPad(pub.x, size), leftPad(pub.y, size)]));
}
