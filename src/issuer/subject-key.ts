import { createHash } from 'node:crypto';
import { p256 } from '@noble/curves/nist.js';
import { AttestorError } from '../errors.js';
import { TAG, der, derUnsignedInteger, readChildren, readTlv, valueOf, wholeOf, type Tlv } from './der.js';

/**
 * The public key a certificate certifies, checked and in canonical DER: EC P-256 (a TPM or
 * PKCS#11 key) or RSA 2048..8192 bits (a TPM key). node:crypto's createPublicKey would check
 * it too, but costs about 0.19 ms a call, as much as the rest of an X509-SVID; the DER is
 * read here and a P-256 point checked with @noble/curves (~10 us).
 */
export interface SubjectKey {
  readonly kind: 'ec' | 'rsa';
  /** DER SubjectPublicKeyInfo as it goes into the certificate. */
  readonly spki: Uint8Array;
  /** RFC 5280 §4.2.1.2 method 1: SHA-1 of the subjectPublicKey BIT STRING's value (unused-bits byte excluded). */
  readonly keyId: Uint8Array;
}

/** SPKI of a P-256 key (id-ecPublicKey, prime256v1; RFC 5480 §2) up to its uncompressed point. */
const P256_SPKI_PREFIX = Buffer.from('3059301306072a8648ce3d020106082a8648ce3d030107034200', 'hex');
const P256_SPKI_LENGTH = P256_SPKI_PREFIX.length + 65;
/** OID 1.2.840.113549.1.1.1 rsaEncryption (RFC 8017 Appendix C), with its tag and length. */
const RSA_ENCRYPTION_OID = Buffer.from('06092a864886f70d010101', 'hex');
const NULL = Uint8Array.of(TAG.NULL, 0);
const RSA_MIN_BITS = 2048;
const RSA_MAX_BITS = 8192;

/** The subject key of `spki`; ERR_ISSUANCE for anything but a well-formed P-256 or RSA key. */
export function readSubjectKey(spki: Uint8Array): SubjectKey {
  if (spki.length === P256_SPKI_LENGTH && P256_SPKI_PREFIX.equals(spki.subarray(0, P256_SPKI_PREFIX.length))) {
    const point = spki.subarray(P256_SPKI_PREFIX.length);
    if (point[0] !== 0x04) throw unsupported('the P-256 point is not uncompressed');
    try {
      p256.Point.fromHex(point).assertValidity();
    } catch {
      throw unsupported('the P-256 point is not on the curve');
    }
    return { kind: 'ec', spki, keyId: sha1(point) };
  }
  return readRsaKey(spki);
}

/** The subject key identifier (RFC 5280 §4.2.1.2 method 1) of a DER SubjectPublicKeyInfo. */
export function keyIdentifier(spki: Uint8Array): Uint8Array {
  return sha1(subjectPublicKeyBits(spki).bits);
}

function readRsaKey(spki: Uint8Array): SubjectKey {
  const { algorithm, bits } = subjectPublicKeyBits(spki);
  const [oid, params, ...extra] = readChildren(spki, algorithm, 'subject key algorithm');
  if (!oid || !Buffer.from(wholeOf(spki, oid)).equals(RSA_ENCRYPTION_OID)) {
    throw unsupported('it is neither EC P-256 (named curve, uncompressed point) nor RSA');
  }
  if (extra.length > 0 || (params && !Buffer.from(wholeOf(spki, params)).equals(NULL))) {
    throw unsupported('rsaEncryption parameters must be NULL');
  }
  const sequence = readTlv(bits, 0, bits.length, 'RSAPublicKey');
  const [n, e, ...more] = sequence.tag === TAG.SEQUENCE && sequence.end === bits.length ? readChildren(bits, sequence, 'RSAPublicKey') : [];
  if (!n || !e || more.length > 0 || n.tag !== TAG.INTEGER || e.tag !== TAG.INTEGER) {
    throw unsupported('RSAPublicKey is not SEQUENCE { modulus INTEGER, publicExponent INTEGER }');
  }
  const modulus = positive(valueOf(bits, n), 'modulus');
  const exponent = positive(valueOf(bits, e), 'exponent');
  const modulusBits = (modulus.length - 1) * 8 + (32 - Math.clz32(modulus[0]!));
  if (modulusBits < RSA_MIN_BITS || modulusBits > RSA_MAX_BITS) {
    throw unsupported(`RSA modulus of ${modulusBits} bits (${RSA_MIN_BITS}..${RSA_MAX_BITS} accepted)`);
  }
  if (exponent.length > 4 || (exponent[exponent.length - 1]! & 1) === 0 || (exponent.length === 1 && exponent[0]! < 3)) {
    throw unsupported('RSA public exponent must be odd, at least 3 and at most 32 bits');
  }
  // Re-encoded, so the certificate holds strict DER whatever encoding of the key arrived.
  const key = der(TAG.SEQUENCE, derUnsignedInteger(modulus), derUnsignedInteger(exponent));
  const canonical = der(TAG.SEQUENCE, der(TAG.SEQUENCE, RSA_ENCRYPTION_OID, NULL), der(TAG.BIT_STRING, Uint8Array.of(0), key));
  return { kind: 'rsa', spki: canonical, keyId: sha1(key) };
}

/** SubjectPublicKeyInfo ::= SEQUENCE { algorithm AlgorithmIdentifier, subjectPublicKey BIT STRING } (RFC 5280 §4.1). */
function subjectPublicKeyBits(spki: Uint8Array): { algorithm: Tlv; bits: Uint8Array } {
  const outer = readTlv(spki, 0, spki.length, 'subject key');
  const [algorithm, bitString, ...extra] = outer.tag === TAG.SEQUENCE && outer.end === spki.length ? readChildren(spki, outer, 'subject key') : [];
  if (!algorithm || !bitString || extra.length > 0 || algorithm.tag !== TAG.SEQUENCE || bitString.tag !== TAG.BIT_STRING) {
    throw unsupported('it is not a DER SubjectPublicKeyInfo');
  }
  const value = valueOf(spki, bitString);
  if (value.length < 2 || value[0] !== 0) throw unsupported('its subjectPublicKey is not whole bytes');
  return { algorithm, bits: value.subarray(1) };
}

/** The magnitude of a positive INTEGER in minimal DER. */
function positive(value: Uint8Array, what: string): Uint8Array {
  if (value.length === 0 || (value[0]! & 0x80) !== 0 || (value.length === 1 && value[0] === 0)) {
    throw unsupported(`RSA ${what} is not a positive INTEGER`);
  }
  if (value[0] === 0 && (value[1]! & 0x80) === 0) throw unsupported(`RSA ${what} is not minimal DER`);
  return value[0] === 0 ? value.subarray(1) : value;
}

function sha1(bytes: Uint8Array): Uint8Array {
  return createHash('sha1').update(bytes).digest();
}

function unsupported(why: string): AttestorError {
  return new AttestorError('ERR_ISSUANCE', `subject key refused: ${why}`);
}
