import type { KeyObject } from 'node:crypto';
import pkcs11js from 'pkcs11js';
import { p256PublicKey } from '../appraisal/hsm-key-report.js';
import { PolicyError } from '../errors.js';
import { attributeValues, type Pkcs11Handle, type Template } from './module.js';

/**
 * EC P-256 key pairs in a PKCS#11 token as Attestor makes them, for the agent's identity key
 * and the verifier's issuing keys alike: generated on the token, the private half sensitive
 * and non-extractable, the pair linked by CKA_ID and found by CKA_LABEL.
 */

/** DER of OID 1.2.840.10045.3.1.7 (prime256v1), the CKA_EC_PARAMS of P-256 (PKCS#11 v2.40 §2.3.3). */
const P256_EC_PARAMS = Buffer.from('06082a8648ce3d030107', 'hex');
/** An uncompressed P-256 point: 0x04 || X || Y. */
const P256_POINT_LENGTH = 65;
/** DER of a P-256 SubjectPublicKeyInfo (id-ecPublicKey, prime256v1; RFC 5480 §2) up to its BIT STRING's point. */
const P256_SPKI_PREFIX = Buffer.from('3059301306072a8648ce3d020106082a8648ce3d030107034200', 'hex');

/** Templates of C_GenerateKeyPair (PKCS#11 v2.40 §2.3.5 "EC key pair generation"). */
export function ecP256KeyPairTemplates(label: string, id: Uint8Array): { publicKey: Template; privateKey: Template } {
  const common = [
    { type: pkcs11js.CKA_KEY_TYPE, value: pkcs11js.CKK_EC },
    { type: pkcs11js.CKA_TOKEN, value: true },
    { type: pkcs11js.CKA_LABEL, value: label },
    { type: pkcs11js.CKA_ID, value: Buffer.from(id) },
  ];
  return {
    publicKey: [
      { type: pkcs11js.CKA_CLASS, value: pkcs11js.CKO_PUBLIC_KEY },
      ...common,
      { type: pkcs11js.CKA_PRIVATE, value: false },
      { type: pkcs11js.CKA_EC_PARAMS, value: P256_EC_PARAMS },
      { type: pkcs11js.CKA_VERIFY, value: true },
    ],
    privateKey: [
      { type: pkcs11js.CKA_CLASS, value: pkcs11js.CKO_PRIVATE_KEY },
      ...common,
      { type: pkcs11js.CKA_PRIVATE, value: true },
      { type: pkcs11js.CKA_SENSITIVE, value: true },
      { type: pkcs11js.CKA_EXTRACTABLE, value: false },
      { type: pkcs11js.CKA_SIGN, value: true },
    ],
  };
}

/**
 * The public key of a P-256 public key object, for use inside Pkcs11Session.run; a key on
 * another curve is refused with ERR_KEY_UNSUPPORTED.
 */
export function readEcP256PublicKey(
  p11: pkcs11js.PKCS11,
  session: Pkcs11Handle,
  publicKeyObject: Pkcs11Handle,
  label: string,
): { publicKey: KeyObject; spki: Uint8Array } {
  const [params, point] = attributeValues(p11, session, publicKeyObject, [pkcs11js.CKA_EC_PARAMS, pkcs11js.CKA_EC_POINT]);
  if (!params!.equals(P256_EC_PARAMS)) {
    throw new PolicyError(
      'ERR_KEY_UNSUPPORTED',
      `key ${JSON.stringify(label)} is not on curve P-256 (CKA_EC_PARAMS ${params!.toString('hex')})`,
    );
  }
  const publicKey = publicKeyOfPoint(point!, label);
  return { publicKey, spki: publicKey.export({ type: 'spki', format: 'der' }) };
}

/**
 * CKA_EC_POINT is the DER OCTET STRING of the X9.62 point (PKCS#11 v2.40 §2.3.3): 04 41 ||
 * point for P-256. Some modules return the bare point; the lengths (67 vs 65) tell them apart.
 * The key is made as a report's verifier makes it, from the SPKI of the point.
 */
function publicKeyOfPoint(ecPoint: Buffer, label: string): KeyObject {
  const point =
    ecPoint.length === P256_POINT_LENGTH + 2 && ecPoint[0] === 0x04 && ecPoint[1] === P256_POINT_LENGTH
      ? ecPoint.subarray(2)
      : ecPoint;
  const unsupported = (why: string, cause?: unknown) =>
    new PolicyError('ERR_KEY_UNSUPPORTED', `key ${JSON.stringify(label)}: CKA_EC_POINT ${why}`, { cause });
  if (point.length !== P256_POINT_LENGTH || point[0] !== 0x04) throw unsupported('is not an uncompressed P-256 point');
  try {
    return p256PublicKey(Buffer.concat([P256_SPKI_PREFIX, point]));
  } catch (e) {
    throw unsupported('is not a point on P-256', e);
  }
}
