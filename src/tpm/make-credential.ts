import { constants, createCipheriv, createECDH, createHmac, publicEncrypt, randomBytes } from 'node:crypto';
import { AttestorError } from '../errors.js';
import { TPM_ALG, TPMA_OBJECT, curveInfo, hashInfo, type HashInfo } from './constants.js';
import { kdfa, kdfe } from './kdf.js';
import type { EccPublic, RsaPublic, TpmPublic } from './public.js';
import { leftPad, publicKeyOf } from './public-key.js';
import { TpmWriter } from './writer.js';

/** What TPM2_MakeCredential returns, each marshalled as a TPM2B (size-prefixed). */
export interface MadeCredential {
  /** TPM2B_ID_OBJECT (Part 2 §12.4.3): TPM2B_DIGEST(outer HMAC) || encrypted TPM2B_DIGEST(secret). */
  readonly credentialBlob: Uint8Array;
  /** TPM2B_ENCRYPTED_SECRET (Part 2 §11.4.33): the seed, RSA-OAEP encrypted or an ECDH ephemeral point. */
  readonly encryptedSecret: Uint8Array;
}

/** Source of random bytes (seed, ephemeral ECC scalar); injectable for known-answer tests. */
export type RandomSource = (size: number) => Uint8Array;

const defaultRandom: RandomSource = (size) => randomBytes(size);

/**
 * Server-side TPM2_MakeCredential (Part 3 §12.6, Part 1 §24 "Credential Protection"): protects
 * `secret` so that only the TPM holding `ek` can recover it, and only through
 * TPM2_ActivateCredential of the object whose Name is `objectName` (the AK). Pure: no TPM needed.
 */
export function makeCredential(
  ek: TpmPublic,
  objectName: Uint8Array,
  secret: Uint8Array,
  random: RandomSource = defaultRandom,
): MadeCredential {
  const hash = hashInfo(ek.nameAlg, 'ek.nameAlg');
  const aesBits = checkEk(ek);
  checkName(objectName);
  if (secret.length < 1 || secret.length > hash.size) {
    throw input(`secret must be 1..${hash.size} bytes for this EK's nameAlg, got ${secret.length}`);
  }

  const { seed, encryptedSecret } =
    ek.type === 'rsa' ? rsaSeed(ek, hash, random) : eccSeed(ek, hash, random);

  // Part 1 §24.4: the credential is AES-CFB encrypted under a key bound to the object's Name...
  const symKey = kdfa(ek.nameAlg, seed, 'STORAGE', objectName, new Uint8Array(0), aesBits);
  const cipher = createCipheriv(`aes-${aesBits}-cfb`, symKey, Buffer.alloc(16));
  const encIdentity = Buffer.concat([cipher.update(new TpmWriter().tpm2b(secret).finish()), cipher.final()]);
  // ...and §24.5: integrity over the ciphertext and the Name, so another Name fails activation.
  const hmacKey = kdfa(ek.nameAlg, seed, 'INTEGRITY', new Uint8Array(0), new Uint8Array(0), hash.size * 8);
  const outerHmac = createHmac(hash.name, hmacKey).update(encIdentity).update(objectName).digest();

  return {
    credentialBlob: new TpmWriter().tpm2b(new TpmWriter().tpm2b(outerHmac).bytes(encIdentity).finish()).finish(),
    encryptedSecret: new TpmWriter().tpm2b(encryptedSecret).finish(),
  };
}

/** The EK must be a storage-type key (restricted decrypt, not sign) with an AES-CFB symmetric. Returns AES key bits. */
function checkEk(ek: TpmPublic): number {
  const a = ek.objectAttributes;
  if (!(a & TPMA_OBJECT.restricted) || !(a & TPMA_OBJECT.decrypt) || a & TPMA_OBJECT.sign) {
    throw input('EK must be a restricted decryption key without sign');
  }
  const sym = ek.symmetric;
  if (!sym || sym.algorithm !== TPM_ALG.AES || sym.mode !== TPM_ALG.CFB || ![128, 192, 256].includes(sym.keyBits)) {
    throw input('EK symmetric must be AES-128/192/256 in CFB mode');
  }
  if (ek.type === 'rsa' ? ek.modulus.length === 0 : ek.x.length === 0 || ek.y.length === 0) {
    throw input('EK has no public key');
  }
  return sym.keyBits;
}

/** A Name of an object (Part 1 §16): nameAlg (UINT16) || digest of exactly that hash's size. */
function checkName(name: Uint8Array): void {
  if (name.length < 2) throw input('object Name is shorter than its nameAlg');
  const alg = (name[0]! << 8) | name[1]!;
  let size: number;
  try {
    size = hashInfo(alg, 'objectName.nameAlg').size;
  } catch (e) {
    throw input('object Name has an unsupported nameAlg', e);
  }
  if (name.length !== 2 + size) throw input(`object Name must be ${2 + size} bytes for its nameAlg, got ${name.length}`);
}

interface Seed {
  readonly seed: Uint8Array;
  /** The payload of TPM2B_ENCRYPTED_SECRET. */
  readonly encryptedSecret: Uint8Array;
}

/** Part 1 Annex B.10 (RSA secret sharing): a random seed, OAEP-encrypted with the nameAlg and label "IDENTITY". */
function rsaSeed(ek: RsaPublic, hash: HashInfo, random: RandomSource): Seed {
  const seed = random(hash.size);
  try {
    const encrypted = publicEncrypt(
      { key: publicKeyOf(ek), padding: constants.RSA_PKCS1_OAEP_PADDING, oaepHash: hash.name, oaepLabel: Buffer.from('IDENTITY\0') },
      seed,
    );
    return { seed, encryptedSecret: encrypted };
  } catch (e) {
    // e.g. a seed of the nameAlg's size that does not fit OAEP under a small modulus.
    throw input('EK cannot encrypt the seed with RSA-OAEP', e);
  }
}

/**
 * Part 1 Annex C.6 (ECC secret sharing): an ephemeral key pair on the EK's curve; the seed is
 * KDFe(nameAlg, Z = x(ephemeral * EK), "IDENTITY", x(ephemeral), x(EK)); the ephemeral public
 * point (TPMS_ECC_POINT) is what the TPM receives.
 */
function eccSeed(ek: EccPublic, hash: HashInfo, random: RandomSource): Seed {
  const curve = curveInfo(ek.curve);
  const { size } = curve;
  const ekPoint = Buffer.concat([Buffer.of(4), leftPad(ek.x, size), leftPad(ek.y, size)]);
  const ecdh = createECDH(curve.openssl);
  for (let attempt = 0; ; attempt++) {
    // A scalar of the order's bit length; out-of-range values (0, >= n) are drawn again.
    const scalar = Buffer.from(random(size));
    if (curve.orderBits % 8 !== 0) scalar[0]! &= (1 << (curve.orderBits % 8)) - 1;
    try {
      ecdh.setPrivateKey(scalar);
      break;
    } catch (e) {
      if (attempt >= 32) throw input('the random source gives no valid ECC scalar', e);
    }
  }
  let z: Buffer;
  try {
    z = ecdh.computeSecret(ekPoint);
  } catch (e) {
    throw input('EK public point is not on its curve', e);
  }
  const ephemeral = ecdh.getPublicKey();
  const ephX = ephemeral.subarray(1, 1 + size);
  const ephY = ephemeral.subarray(1 + size);
  // partyVInfo is the EK's x exactly as in its public area: that is what the TPM hashes.
  const seed = kdfe(ek.nameAlg, z, 'IDENTITY', ephX, ek.x, hash.size * 8);
  return { seed, encryptedSecret: new TpmWriter().tpm2b(ephX).tpm2b(ephY).finish() };
}

function input(message: string, cause?: unknown): AttestorError {
  return new AttestorError('ERR_MAKECREDENTIAL_INPUT', `MakeCredential: ${message}`, cause === undefined ? undefined : { cause });
}
