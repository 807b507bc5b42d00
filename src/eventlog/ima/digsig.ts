import { constants, hash, publicDecrypt, type KeyObject } from 'node:crypto';
import { ParseError } from '../../errors.js';
import { hex } from '../../bytes.js';
import { TpmReader } from '../../tpm/reader.js';
import { withCode } from '../tcg-reader.js';
import { verifyEcdsaDigest } from './ecdsa-digest.js';
import { imaHashById, type ImaHashAlgo } from './hash-algos.js';

/** security.ima xattr type of a digital signature (EVM_IMA_XATTR_DIGSIG, integrity.h). */
const EVM_IMA_XATTR_DIGSIG = 0x03;
const DIGSIG_VERSION_2 = 2;

/**
 * An IMA signature, `struct signature_v2_hdr` (security/integrity/integrity.h, packed,
 * big-endian): u8 type (0x03), u8 version (2), u8 hash_algo (enum hash_algo), be32 keyid,
 * be16 sig_size, then the signature over the file digest: RSASSA-PKCS1-v1_5 or DER ECDSA.
 */
export interface ImaSignature {
  readonly hashAlgo: ImaHashAlgo;
  /** The signer's key id as 8 hex digits (see imaKeyId). */
  readonly keyId: string;
  readonly signature: Uint8Array;
}

export function parseImaSignature(bytes: Uint8Array): ImaSignature {
  return withCode('ERR_IMA_SIGNATURE_MALFORMED', () => {
    const r = new TpmReader(bytes, 'IMA signature');
    const type = r.u8('type');
    const version = r.u8('version');
    if (type !== EVM_IMA_XATTR_DIGSIG || version !== DIGSIG_VERSION_2) {
      throw new ParseError('ERR_IMA_SIGNATURE_UNSUPPORTED', `IMA signature type 0x${type.toString(16)} version ${version}: only digsig v2 (0x03, 2) is verified`);
    }
    const algoId = r.u8('hash_algo');
    const hashAlgo = imaHashById(algoId);
    if (!hashAlgo) throw new ParseError('ERR_IMA_SIGNATURE_UNSUPPORTED', `IMA signature hash_algo ${algoId} is not known`);
    if (hashAlgo.weak) {
      throw new ParseError('ERR_IMA_SIGNATURE_WEAK_HASH', `IMA signature over a ${hashAlgo.name} digest: signatures must be over sha256 or stronger`);
    }
    const keyId = hex(r.bytesOf(4, 'keyid'));
    const signature = r.bytesOf(r.u16('sig_size'), 'signature');
    r.end();
    return { hashAlgo, keyId, signature };
  });
}

/**
 * The v2 key id of a public key as evmctl computes it (ima-evm-utils calc_keyid_v2): the last
 * 4 bytes of the SHA-1 of the subjectPublicKey bits of its SubjectPublicKeyInfo, i.e. the
 * RSAPublicKey DER or the EC point as encoded (compressed or not). It equals the X.509
 * subject key identifier of RFC 5280 §4.2.1.2 method 1, by which the kernel finds the key; a
 * certificate whose identifier was made otherwise needs its key id given in the rules.
 */
export function imaKeyId(key: KeyObject): string {
  const spki = key.export({ type: 'spki', format: 'der' });
  return hex(hash('sha1', subjectPublicKeyBits(spki), 'buffer').subarray(16));
}

/**
 * SubjectPublicKeyInfo ::= SEQUENCE { algorithm AlgorithmIdentifier, subjectPublicKey BIT
 * STRING } (RFC 5280 §4.1), as node:crypto exports it: well-formed, so its tags are skipped.
 */
function subjectPublicKeyBits(spki: Uint8Array): Uint8Array {
  const r = new TpmReader(spki, 'SubjectPublicKeyInfo');
  derLength(r);
  r.bytesOf(derLength(r), 'algorithm');
  const length = derLength(r);
  r.u8('unused bits'); // 0: a key is whole bytes
  return r.bytesOf(length - 1, 'subjectPublicKey');
}

/** Skips a DER tag and reads the definite length after it (X.690 §8.1.3). */
function derLength(r: TpmReader): number {
  r.u8('tag');
  const first = r.u8('length');
  if (first < 0x80) return first;
  let length = 0;
  for (let i = 0; i < (first & 0x7f); i++) length = length * 256 + r.u8('length');
  return length;
}

/** DigestInfo prefixes of EMSA-PKCS1-v1_5 (RFC 8017 §9.2, note 1), for the hashes a signature may use. */
const DIGEST_INFO_PREFIX: Readonly<Record<string, Buffer>> = {
  sha256: Buffer.from('3031300d060960864801650304020105000420', 'hex'),
  sha384: Buffer.from('3041300d060960864801650304020205000430', 'hex'),
  sha512: Buffer.from('3051300d060960864801650304020305000440', 'hex'),
};

/**
 * Whether `sig` signs `digest` (the file digest IMA measured, with sig.hashAlgo) under `key`,
 * as the kernel's asymmetric_verify checks it: PKCS#1 v1.5 for RSA, X9.62 for ECDSA.
 */
export function verifyImaSignature(sig: ImaSignature, digest: Uint8Array, key: KeyObject): boolean {
  // ECDSA signs any string of bits: the digest must be one of the algorithm the signature names.
  if (digest.length !== sig.hashAlgo.size) return false;
  if (key.asymmetricKeyType === 'ec') return verifyEcdsaDigest(key, digest, sig.signature);
  const prefix = DIGEST_INFO_PREFIX[sig.hashAlgo.name];
  const modulusBytes = Math.ceil((key.asymmetricKeyDetails?.modulusLength ?? 0) / 8);
  if (!prefix || sig.signature.length !== modulusBytes) return false;
  let encoded: Buffer;
  try {
    // RSAVP1 and the EMSA-PKCS1-v1_5 padding check (RFC 8017 §8.2.2 steps 2-3).
    encoded = publicDecrypt({ key, padding: constants.RSA_PKCS1_PADDING }, sig.signature);
  } catch {
    return false;
  }
  return encoded.equals(Buffer.concat([prefix, digest]));
}
