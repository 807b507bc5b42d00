import { ParseError } from '../errors.js';
import { TPM_ALG, curveInfo, hashInfo, hex16 } from './constants.js';
import { TpmReader } from './reader.js';

/** TPMT_SYM_DEF_OBJECT (Part 2 §11.1.7); null when the algorithm is TPM_ALG_NULL. */
export interface SymDef {
  readonly algorithm: number;
  readonly keyBits: number;
  readonly mode: number;
}

/** A signing/encryption/KDF scheme with its hash; null when the scheme is TPM_ALG_NULL. */
export interface Scheme {
  readonly scheme: number;
  readonly hashAlg: number;
}

interface PublicCommon {
  readonly nameAlg: number;
  readonly objectAttributes: number;
  readonly authPolicy: Uint8Array;
  readonly symmetric: SymDef | null;
  readonly scheme: Scheme | null;
  /** The marshalled TPMT_PUBLIC exactly as received: the Name is computed over these bytes. */
  readonly bytes: Uint8Array;
}

export interface RsaPublic extends PublicCommon {
  readonly type: 'rsa';
  readonly keyBits: number;
  /** The public exponent; a zero on the wire means the default 65537 (Part 2 §12.2.3.5). */
  readonly exponent: number;
  readonly modulus: Uint8Array;
}

export interface EccPublic extends PublicCommon {
  readonly type: 'ecc';
  readonly curve: number;
  readonly kdf: Scheme | null;
  readonly x: Uint8Array;
  readonly y: Uint8Array;
}

export type TpmPublic = RsaPublic | EccPublic;

/** TPM2B_PUBLIC (Part 2 §12.2.5): UINT16 size, then exactly one TPMT_PUBLIC of that size. */
export function parseTpm2bPublic(bytes: Uint8Array): TpmPublic {
  const r = new TpmReader(bytes, 'TPM2B_PUBLIC');
  const inner = r.tpm2b('publicArea');
  r.end();
  if (inner.length === 0) throw new ParseError('ERR_TPM_SIZE_MISMATCH', 'TPM2B_PUBLIC: empty publicArea');
  return parseTpmtPublic(inner);
}

/** TPMT_PUBLIC (Part 2 §12.2.4), RSA and ECC objects. */
export function parseTpmtPublic(bytes: Uint8Array): TpmPublic {
  const r = new TpmReader(bytes, 'TPMT_PUBLIC');
  const pub = readTpmtPublic(r);
  r.end();
  return pub;
}

/** Reads one TPMT_PUBLIC from a reader positioned at its start. */
function readTpmtPublic(r: TpmReader): TpmPublic {
  const start = r.position;
  const type = r.u16('type');
  const nameAlg = r.u16('nameAlg');
  hashInfo(nameAlg, 'nameAlg');
  const objectAttributes = r.u32('objectAttributes');
  const authPolicy = r.tpm2b('authPolicy', 64);
  if (type === TPM_ALG.RSA) {
    // TPMS_RSA_PARMS (Part 2 §12.2.3.5)
    const symmetric = readSymDefObject(r);
    const scheme = readScheme(r, 'scheme', [TPM_ALG.RSASSA, TPM_ALG.RSAPSS, TPM_ALG.OAEP, TPM_ALG.RSAES]);
    const keyBits = r.u16('keyBits');
    if (![1024, 2048, 3072, 4096].includes(keyBits)) {
      throw new ParseError('ERR_TPM_BAD_VALUE', `TPMT_PUBLIC: RSA keyBits ${keyBits} is not a TPM key size`);
    }
    const rawExponent = r.u32('exponent');
    // An even or unit exponent is no RSA key: e = 1 would make any padded digest a "signature".
    if (rawExponent !== 0 && (rawExponent < 3 || rawExponent % 2 === 0)) {
      throw new ParseError('ERR_TPM_BAD_VALUE', `TPMT_PUBLIC: RSA exponent ${rawExponent} is not an odd number >= 3`);
    }
    // TPM2B_PUBLIC_KEY_RSA (Part 2 §11.2.4.5): the modulus, at most 512 bytes.
    const modulus = r.tpm2b('unique.rsa', 512);
    if (modulus.length !== 0 && modulus.length !== keyBits / 8) {
      throw new ParseError(
        'ERR_TPM_SIZE_MISMATCH',
        `TPMT_PUBLIC: RSA modulus is ${modulus.length} bytes, keyBits says ${keyBits / 8}`,
      );
    }
    // A TPM-generated modulus has exactly keyBits bits and is odd; anything else is forged.
    if (modulus.length !== 0 && ((modulus[0]! & 0x80) === 0 || (modulus[modulus.length - 1]! & 1) === 0)) {
      throw new ParseError('ERR_TPM_BAD_VALUE', `TPMT_PUBLIC: RSA modulus is not an odd ${keyBits}-bit number`);
    }
    return {
      type: 'rsa',
      nameAlg,
      objectAttributes,
      authPolicy,
      symmetric,
      scheme,
      keyBits,
      exponent: rawExponent === 0 ? 65537 : rawExponent,
      modulus,
      bytes: r.slice(start),
    };
  }
  if (type === TPM_ALG.ECC) {
    // TPMS_ECC_PARMS (Part 2 §12.2.3.6)
    const symmetric = readSymDefObject(r);
    const scheme = readScheme(r, 'scheme', [
      TPM_ALG.ECDSA,
      TPM_ALG.ECDH,
      TPM_ALG.ECDAA,
      TPM_ALG.SM2,
      TPM_ALG.ECSCHNORR,
      TPM_ALG.ECMQV,
    ]);
    const curve = r.u16('curveID');
    const { size } = curveInfo(curve);
    const kdf = readScheme(r, 'kdf', [TPM_ALG.KDF1_SP800_56A, TPM_ALG.KDF2, TPM_ALG.KDF1_SP800_108]);
    // TPMS_ECC_POINT (Part 2 §11.2.5.2); coordinates may arrive without leading zeros.
    const x = r.tpm2b('unique.ecc.x', size);
    const y = r.tpm2b('unique.ecc.y', size);
    return { type: 'ecc', nameAlg, objectAttributes, authPolicy, symmetric, scheme, curve, kdf, x, y, bytes: r.slice(start) };
  }
  throw new ParseError('ERR_TPM_UNSUPPORTED_ALG', `TPMT_PUBLIC: object type 0x${hex16(type)} is not RSA or ECC`);
}

/** TPMT_SYM_DEF_OBJECT (Part 2 §11.1.7): algorithm, then keyBits and mode unless NULL. */
function readSymDefObject(r: TpmReader): SymDef | null {
  const algorithm = r.u16('symmetric.algorithm');
  if (algorithm === TPM_ALG.NULL) return null;
  if (algorithm !== TPM_ALG.AES) {
    throw new ParseError('ERR_TPM_UNSUPPORTED_ALG', `TPMT_PUBLIC: symmetric algorithm 0x${hex16(algorithm)} is not supported`);
  }
  return { algorithm, keyBits: r.u16('symmetric.keyBits'), mode: r.u16('symmetric.mode') };
}

/**
 * TPMT_RSA_SCHEME / TPMT_ECC_SCHEME / TPMT_KDF_SCHEME (Part 2 §11.2.4.2, §11.2.5.6, §11.2.3.3):
 * a selector and, unless NULL, a hash (ECDAA also a count; RSAES carries nothing).
 */
function readScheme(r: TpmReader, field: string, allowed: readonly number[]): Scheme | null {
  const scheme = r.u16(`${field}.scheme`);
  if (scheme === TPM_ALG.NULL) return null;
  if (!allowed.includes(scheme)) {
    throw new ParseError('ERR_TPM_UNSUPPORTED_ALG', `TPMT_PUBLIC: ${field} 0x${hex16(scheme)} is not valid here`);
  }
  if (scheme === TPM_ALG.RSAES) return { scheme, hashAlg: TPM_ALG.NULL };
  const hashAlg = r.u16(`${field}.hashAlg`);
  hashInfo(hashAlg, `${field}.hashAlg`);
  if (scheme === TPM_ALG.ECDAA) r.u16(`${field}.count`);
  return { scheme, hashAlg };
}
