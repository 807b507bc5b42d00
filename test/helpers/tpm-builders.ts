/**
 * Builders of TPM wire structures for tests that need a *validly signed* structure with one
 * chosen defect (wrong magic, wrong type, ...): a software key plays the AK. Real TPM output
 * comes from swtpm fixtures and the shared vectors; these cover what a TPM would never emit.
 */
import { constants, createECDH, createHash, generateKeyPairSync, sign, type KeyObject } from 'node:crypto';
import { TpmWriter } from '../../src/tpm/writer.js';
import { TPMA_OBJECT, TPM_ALG, TPM_ECC, TPM_GENERATED_VALUE, TPM_ST, hashByName } from '../../src/tpm/constants.js';

export const AK_ATTRIBUTES =
  TPMA_OBJECT.fixedTPM |
  TPMA_OBJECT.fixedParent |
  TPMA_OBJECT.sensitiveDataOrigin |
  TPMA_OBJECT.userWithAuth |
  TPMA_OBJECT.restricted |
  TPMA_OBJECT.sign;

export interface SoftAk {
  /** TPM2B_PUBLIC bytes. */
  readonly public: Uint8Array;
  readonly privateKey: KeyObject;
  readonly kind: 'ecc' | 'rsa';
  sign(message: Uint8Array, opts?: { hash?: 'sha1' | 'sha256'; sigAlg?: number }): Uint8Array;
}

export function softAk(
  kind: 'ecc' | 'rsa',
  opts: { attributes?: number; scheme?: number | null; schemeHash?: number; keyBits?: number } = {},
): SoftAk {
  const attributes = opts.attributes ?? AK_ATTRIBUTES;
  const schemeHash = opts.schemeHash ?? TPM_ALG.SHA256;
  let pub: Uint8Array;
  let privateKey: KeyObject;
  if (kind === 'ecc') {
    const pair = generateKeyPairSync('ec', { namedCurve: 'P-256' });
    privateKey = pair.privateKey;
    const jwk = pair.publicKey.export({ format: 'jwk' });
    const scheme = opts.scheme === undefined ? TPM_ALG.ECDSA : opts.scheme;
    const w = new TpmWriter().u16(TPM_ALG.ECC).u16(TPM_ALG.SHA256).u32(attributes).tpm2b(new Uint8Array()).u16(TPM_ALG.NULL);
    if (scheme === null) w.u16(TPM_ALG.NULL);
    else w.u16(scheme).u16(schemeHash);
    w.u16(TPM_ECC.NIST_P256).u16(TPM_ALG.NULL);
    w.tpm2b(Buffer.from(jwk.x!, 'base64url')).tpm2b(Buffer.from(jwk.y!, 'base64url'));
    pub = w.finish();
  } else {
    const bits = opts.keyBits ?? 2048;
    const pair = generateKeyPairSync('rsa', { modulusLength: bits });
    privateKey = pair.privateKey;
    const jwk = pair.publicKey.export({ format: 'jwk' });
    const scheme = opts.scheme === undefined ? TPM_ALG.RSASSA : opts.scheme;
    const w = new TpmWriter().u16(TPM_ALG.RSA).u16(TPM_ALG.SHA256).u32(attributes).tpm2b(new Uint8Array()).u16(TPM_ALG.NULL);
    if (scheme === null) w.u16(TPM_ALG.NULL);
    else w.u16(scheme).u16(schemeHash);
    w.u16(bits).u32(0).tpm2b(Buffer.from(jwk.n!, 'base64url'));
    pub = w.finish();
  }
  return {
    public: new TpmWriter().tpm2b(pub).finish(),
    privateKey,
    kind,
    sign(message, o = {}) {
      const hash = o.hash ?? 'sha256';
      const h = hashByName(hash);
      if (kind === 'ecc') {
        const raw = sign(hash, message, { key: privateKey, dsaEncoding: 'ieee-p1363' });
        return new TpmWriter()
          .u16(o.sigAlg ?? TPM_ALG.ECDSA)
          .u16(h.alg)
          .tpm2b(raw.subarray(0, 32))
          .tpm2b(raw.subarray(32))
          .finish();
      }
      const sigAlg = o.sigAlg ?? TPM_ALG.RSASSA;
      const raw = sign(hash, message, {
        key: privateKey,
        padding: sigAlg === TPM_ALG.RSAPSS ? constants.RSA_PKCS1_PSS_PADDING : constants.RSA_PKCS1_PADDING,
        saltLength: 32,
      });
      return new TpmWriter().u16(sigAlg).u16(h.alg).tpm2b(raw).finish();
    },
  };
}

export interface QuoteSpec {
  magic?: number;
  type?: number;
  extraData: Uint8Array;
  clock?: bigint;
  resetCount?: number;
  restartCount?: number;
  /** Banks in signed order with their values by index. */
  pcrs: Array<{ bank: 'sha1' | 'sha256'; values: Map<number, Uint8Array> }>;
  /** Hash of the pcrDigest (the signing hash); sha256 unless said. */
  digestHash?: 'sha1' | 'sha256';
  /** Override the digest (to forge a mismatch). */
  pcrDigest?: Uint8Array;
}

/** A TPMS_ATTEST of type QUOTE as TPM2_Quote builds it (Part 3 §18.4). */
export function buildQuote(spec: QuoteSpec): Uint8Array {
  const w = new TpmWriter()
    .u32(spec.magic ?? TPM_GENERATED_VALUE)
    .u16(spec.type ?? TPM_ST.ATTEST_QUOTE)
    .tpm2b(new Uint8Array(34).fill(7))
    .tpm2b(spec.extraData)
    .u64(spec.clock ?? 1000n)
    .u32(spec.resetCount ?? 0)
    .u32(spec.restartCount ?? 0)
    .u8(1)
    .u64(0x2023_0101n);
  w.u32(spec.pcrs.length);
  const digest = createHash(spec.digestHash ?? 'sha256');
  for (const { bank, values } of spec.pcrs) {
    const select = new Uint8Array(3);
    const indexes = [...values.keys()].sort((a, b) => a - b);
    for (const i of indexes) select[i >> 3]! |= 1 << (i & 7);
    w.u16(hashByName(bank).alg).u8(3).bytes(select);
    for (const i of indexes) digest.update(values.get(i)!);
  }
  w.tpm2b(spec.pcrDigest ?? digest.digest());
  return w.finish();
}

/** Plain values record from the builder's maps, as the verifier receives them. */
export function pcrValuesOf(spec: QuoteSpec): Record<string, Record<number, Uint8Array>> {
  return Object.fromEntries(spec.pcrs.map(({ bank, values }) => [bank, Object.fromEntries(values)]));
}

export function pcrValue(bank: 'sha1' | 'sha256', seed: number): Uint8Array {
  return new Uint8Array(createHash(bank).update(`pcr ${seed}`).digest());
}

/** A TPMS_ATTEST of type CERTIFY as TPM2_Certify builds it (Part 3 §18.2). */
export function buildCertify(spec: { extraData: Uint8Array; name: Uint8Array; magic?: number; type?: number }): Uint8Array {
  return new TpmWriter()
    .u32(spec.magic ?? TPM_GENERATED_VALUE)
    .u16(spec.type ?? TPM_ST.ATTEST_CERTIFY)
    .tpm2b(new Uint8Array(34).fill(7))
    .tpm2b(spec.extraData)
    .u64(1000n)
    .u32(0)
    .u32(0)
    .u8(1)
    .u64(0x2023_0101n)
    .tpm2b(spec.name)
    .tpm2b(spec.name)
    .finish();
}

export const EK_ATTRIBUTES =
  TPMA_OBJECT.fixedTPM | TPMA_OBJECT.fixedParent | TPMA_OBJECT.sensitiveDataOrigin | TPMA_OBJECT.adminWithPolicy | TPMA_OBJECT.restricted | TPMA_OBJECT.decrypt;

/** TPM2B_PUBLIC of an ECC P-256 storage EK (AES-128-CFB), as a TPM without an EK certificate would report it. */
export function softEkPublic(): Uint8Array {
  const point = createECDH('prime256v1').generateKeys();
  const area = new TpmWriter()
    .u16(TPM_ALG.ECC)
    .u16(TPM_ALG.SHA256)
    .u32(EK_ATTRIBUTES)
    .tpm2b(new Uint8Array())
    .u16(TPM_ALG.AES)
    .u16(128)
    .u16(TPM_ALG.CFB)
    .u16(TPM_ALG.NULL)
    .u16(TPM_ECC.NIST_P256)
    .u16(TPM_ALG.NULL)
    .tpm2b(point.subarray(1, 33))
    .tpm2b(point.subarray(33))
    .finish();
  return new TpmWriter().tpm2b(area).finish();
}
