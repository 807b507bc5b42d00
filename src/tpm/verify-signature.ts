import { constants, verify, type KeyObject } from 'node:crypto';
import { PolicyError, VerificationError } from '../errors.js';
import { TPM_ALG, curveByOpensslName, hex16 } from './constants.js';
import type { TpmPublic } from './public.js';
import { leftPad, publicKeyOf } from './public-key.js';
import type { TpmSignature } from './signature.js';

/** A signing key as the verifier knows it: the TPM public area, or a bare key (PEM input). */
export type SigningKey = TpmPublic | KeyObject;

/**
 * Verifies a TPMT_SIGNATURE over `message` (the TPM signs H(message) with the scheme's hash).
 * The signature must use the key's own scheme when the key fixes one, and at least a scheme
 * of the key's type otherwise: a signature is never accepted under a scheme the key would
 * not sign with (Keylime CVE-2023-3674 accepted any).
 */
export function verifyTpmSignature(key: SigningKey, message: Uint8Array, sig: TpmSignature): void {
  const isTpmPublic = 'bytes' in key;
  const keyObject = isTpmPublic ? publicKeyOf(key) : key;
  checkScheme(key, keyObject, sig);
  let ok: boolean;
  if (sig.sigAlg === TPM_ALG.ECDSA) {
    const size = curveByOpensslName(keyObject.asymmetricKeyDetails?.namedCurve)?.size ?? 0;
    // r and s are integers in [1, n-1]: longer than the field means a forged encoding.
    // (s and n - s both verify, as with any ECDSA: replay protection rests on the nonce, never
    // on signature bytes.)
    if (sig.r.length > size || sig.s.length > size || size === 0) {
      throw new VerificationError('ERR_SIGNATURE_INVALID', 'ECDSA signature does not fit the key\'s curve');
    }
    const raw = Buffer.concat([leftPad(sig.r, size), leftPad(sig.s, size)]);
    ok = verify(sig.hash.name, message, { key: keyObject, dsaEncoding: 'ieee-p1363' }, raw);
  } else {
    ok = verify(
      sig.hash.name,
      message,
      sig.sigAlg === TPM_ALG.RSAPSS
        ? // The salt length is recovered from the signature: TPMs use the digest size or the
          // largest the key permits, and PSS is secure with any, so no length is imposed.
          { key: keyObject, padding: constants.RSA_PKCS1_PSS_PADDING, saltLength: constants.RSA_PSS_SALTLEN_AUTO }
        : { key: keyObject, padding: constants.RSA_PKCS1_PADDING },
      sig.sig,
    );
  }
  if (!ok) throw new VerificationError('ERR_SIGNATURE_INVALID', 'signature does not verify with the attestation key');
}

function checkScheme(key: SigningKey, keyObject: KeyObject, sig: TpmSignature): void {
  const keyType = keyObject.asymmetricKeyType;
  const fitsType = keyType === 'rsa' ? sig.sigAlg !== TPM_ALG.ECDSA : keyType === 'ec' && sig.sigAlg === TPM_ALG.ECDSA;
  if (!fitsType) {
    throw new PolicyError('ERR_SIGNATURE_SCHEME_MISMATCH', `a ${keyType} key cannot have made a sigAlg 0x${hex16(sig.sigAlg)} signature`);
  }
  const scheme = 'bytes' in key ? key.scheme : null;
  if (scheme && (scheme.scheme !== sig.sigAlg || scheme.hashAlg !== sig.hash.alg)) {
    throw new PolicyError(
      'ERR_SIGNATURE_SCHEME_MISMATCH',
      `signature scheme 0x${hex16(sig.sigAlg)}/${sig.hash.name} is not the key's scheme 0x${hex16(scheme.scheme)}/0x${hex16(scheme.hashAlg)}`,
    );
  }
}
