import { ParseError } from '../errors.js';

/**
 * TPM_ALG_ID (TPM 2.0 Part 2 §6.3): the algorithms of the structures Attestor parses and
 * builds, plus HMAC, KEYEDHASH and SM3_256, which it does not support (the tests name them as
 * values that must be refused).
 */
export const TPM_ALG = {
  RSA: 0x0001,
  SHA1: 0x0004,
  HMAC: 0x0005,
  AES: 0x0006,
  KEYEDHASH: 0x0008,
  SHA256: 0x000b,
  SHA384: 0x000c,
  SHA512: 0x000d,
  NULL: 0x0010,
  SM3_256: 0x0012,
  RSASSA: 0x0014,
  RSAES: 0x0015,
  RSAPSS: 0x0016,
  OAEP: 0x0017,
  ECDSA: 0x0018,
  ECDH: 0x0019,
  ECDAA: 0x001a,
  SM2: 0x001b,
  ECSCHNORR: 0x001c,
  ECMQV: 0x001d,
  KDF1_SP800_56A: 0x0020,
  KDF2: 0x0021,
  KDF1_SP800_108: 0x0022,
  ECC: 0x0023,
  CFB: 0x0043,
} as const;

/** TPM_ST (Part 2 §6.9): the attestation structure tags. */
export const TPM_ST = {
  ATTEST_NV: 0x8014,
  ATTEST_COMMAND_AUDIT: 0x8015,
  ATTEST_SESSION_AUDIT: 0x8016,
  ATTEST_CERTIFY: 0x8017,
  ATTEST_QUOTE: 0x8018,
  ATTEST_TIME: 0x8019,
  ATTEST_CREATION: 0x801a,
  ATTEST_NV_DIGEST: 0x801c,
} as const;

/** TPM_GENERATED_VALUE (Part 2 §6.2): "\xffTCG", only the TPM puts it at the start of what it signs. */
export const TPM_GENERATED_VALUE = 0xff544347;

/** TPMA_OBJECT bits (Part 2 §8.3.2) that key templates set and attestation checks read. */
export const TPMA_OBJECT = {
  fixedTPM: 1 << 1,
  fixedParent: 1 << 4,
  sensitiveDataOrigin: 1 << 5,
  userWithAuth: 1 << 6,
  adminWithPolicy: 1 << 7,
  noDA: 1 << 10,
  restricted: 1 << 16,
  decrypt: 1 << 17,
  sign: 1 << 18,
} as const;

/**
 * NV indexes of EK certificates (TCG EK Credential Profile 2.0 §2.2.1.5): the low range
 * (templates L-1 and L-2, the default EKs) and the high range H-1..H-3.
 */
export const EK_CERT_NV = {
  /** RSA 2048 EK, template L-1. */
  rsa2048: 0x01c00002,
  /** ECC NIST P-256 EK, template L-2. */
  eccP256: 0x01c0000a,
  /** RSA 2048 EK, template H-1. */
  rsa2048High: 0x01c00012,
  /** ECC NIST P-256 EK, template H-2. */
  eccP256High: 0x01c00014,
  /** ECC NIST P-384 EK, template H-3. */
  eccP384: 0x01c00016,
} as const;

/** TPM_ECC_CURVE (Part 2 §6.4). */
export const TPM_ECC = {
  NIST_P256: 0x0003,
  NIST_P384: 0x0004,
  NIST_P521: 0x0005,
} as const;

export interface HashInfo {
  readonly alg: number;
  /** Name as node:crypto and tpm2-tools spell it. */
  readonly name: 'sha1' | 'sha256' | 'sha384' | 'sha512';
  readonly size: number;
}

const HASHES: readonly HashInfo[] = [
  { alg: TPM_ALG.SHA1, name: 'sha1', size: 20 },
  { alg: TPM_ALG.SHA256, name: 'sha256', size: 32 },
  { alg: TPM_ALG.SHA384, name: 'sha384', size: 48 },
  { alg: TPM_ALG.SHA512, name: 'sha512', size: 64 },
];

/** The hash for a TPM_ALG_ID, or a typed error naming the field it came from. */
export function hashInfo(alg: number, field = 'hashAlg'): HashInfo {
  const h = HASHES.find((x) => x.alg === alg);
  if (!h) throw new ParseError('ERR_TPM_UNSUPPORTED_ALG', `${field}: hash algorithm 0x${hex16(alg)} is not supported`);
  return h;
}

/** The hash for a bank name as tpm2-tools writes it ("sha256"). */
export function hashByName(name: string): HashInfo {
  const h = HASHES.find((x) => x.name === name.toLowerCase());
  if (!h) throw new ParseError('ERR_TPM_UNSUPPORTED_ALG', `hash algorithm "${name}" is not supported`);
  return h;
}

export interface CurveInfo {
  readonly curve: number;
  readonly nodeName: 'P-256' | 'P-384' | 'P-521';
  /** The name OpenSSL (node:crypto's ECDH, asymmetricKeyDetails.namedCurve) uses. */
  readonly openssl: 'prime256v1' | 'secp384r1' | 'secp521r1';
  /** Byte length of a field element (coordinates, r and s). */
  readonly size: number;
  /** Bit length of the group order n. */
  readonly orderBits: number;
}

const CURVES: readonly CurveInfo[] = [
  { curve: TPM_ECC.NIST_P256, nodeName: 'P-256', openssl: 'prime256v1', size: 32, orderBits: 256 },
  { curve: TPM_ECC.NIST_P384, nodeName: 'P-384', openssl: 'secp384r1', size: 48, orderBits: 384 },
  { curve: TPM_ECC.NIST_P521, nodeName: 'P-521', openssl: 'secp521r1', size: 66, orderBits: 521 },
];

/** The curve a node:crypto key is on, by OpenSSL's name; undefined for curves TPMs do not use. */
export function curveByOpensslName(name: string | undefined): CurveInfo | undefined {
  return CURVES.find((x) => x.openssl === name);
}

export function curveInfo(curve: number): CurveInfo {
  const c = CURVES.find((x) => x.curve === curve);
  if (!c) throw new ParseError('ERR_TPM_UNSUPPORTED_ALG', `ECC curve 0x${hex16(curve)} is not supported`);
  return c;
}

export function hex16(v: number): string {
  return v.toString(16).padStart(4, '0');
}
