import { p256, p384 } from '@noble/curves/nist.js';
import { createHash, type KeyObject } from 'node:crypto';

/*
 * ECDSA verification over a digest that is already computed. IMA signatures sign the file
 * digest the kernel measured, and the verifier only ever sees that digest, while node:crypto
 * verifies messages only (it hashes them itself). @noble/curves (audited) verifies a digest
 * directly with `prehash: false`.
 */
const CURVES = { prime256v1: p256, secp384r1: p384 } as const;

type CurveName = keyof typeof CURVES;

function curveOf(key: KeyObject): (typeof CURVES)[CurveName] | undefined {
  const name = key.asymmetricKeyDetails?.namedCurve;
  return key.asymmetricKeyType === 'ec' && name && name in CURVES ? CURVES[name as CurveName] : undefined;
}

/** Whether `key` is an EC public key on a curve this module verifies for. */
export function isSupportedEcKey(key: KeyObject): boolean {
  return curveOf(key) !== undefined;
}

// The raw public point per key object, so repeated verifications skip the export.
const points = new WeakMap<KeyObject, Uint8Array>();

/**
 * Results of verifications already made. Verifying with @noble/curves takes about 2 ms for
 * P-256 (node:crypto's native 0.05 ms cannot take a digest), and a verifier meets the same
 * signed files on every host and at every appraisal. The key is a SHA-256 of the public point,
 * the digest and the signature, so a result answers only the very same question; it is a fact
 * of arithmetic, so it never goes stale. Module state, bounded: the least recently used
 * result goes first, and at most ECDSA_CACHE_SIZE are kept (about 1.5 MB).
 */
export const ECDSA_CACHE_SIZE = 10_000;
const results = new Map<string, boolean>();

function cacheKey(point: Uint8Array, digest: Uint8Array, signature: Uint8Array): string {
  // Lengths first, so no two questions hash the same bytes.
  return createHash('sha256').update(Uint8Array.of(point.length, digest.length)).update(point).update(digest).update(signature).digest('base64');
}

/** Verifies a DER ECDSA-Sig-Value over `digest` (SEC 1 §4.1.4) with an EC P-256/P-384 public key. */
export function verifyEcdsaDigest(key: KeyObject, digest: Uint8Array, derSignature: Uint8Array): boolean {
  const curve = curveOf(key);
  if (!curve) return false;
  let point = points.get(key);
  if (!point) {
    const jwk = key.export({ format: 'jwk' });
    point = new Uint8Array(Buffer.concat([Buffer.of(4), Buffer.from(jwk.x!, 'base64url'), Buffer.from(jwk.y!, 'base64url')]));
    points.set(key, point);
  }
  const k = cacheKey(point, digest, derSignature);
  const known = results.get(k);
  if (known !== undefined) {
    results.delete(k);
    results.set(k, known);
    return known;
  }
  const valid = verifyWith(curve, point, digest, derSignature);
  if (results.size >= ECDSA_CACHE_SIZE) results.delete(results.keys().next().value!);
  results.set(k, valid);
  return valid;
}

function verifyWith(curve: (typeof CURVES)[CurveName], point: Uint8Array, digest: Uint8Array, derSignature: Uint8Array): boolean {
  try {
    // High-S signatures are valid ECDSA (the kernel and OpenSSL accept them), hence lowS: false.
    return curve.verify(derSignature, digest, point, { prehash: false, lowS: false, format: 'der' });
  } catch {
    return false;
  }
}
