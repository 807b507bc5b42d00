import { X509Certificate, type JsonWebKey, type KeyObject } from 'node:crypto';
import { calculateJwkThumbprint } from 'jose';
import { AttestorError, PolicyError } from '../errors.js';

/**
 * The public key sets the verifier publishes: `/.well-known/jwks.json` (the JWT keys, for
 * OIDC relying parties) and `/v1/bundle` (a SPIFFE bundle: SPIFFE Trust Domain and Bundle
 * §4, X509-SVID §6, JWT-SVID §6). Both are made once per key change and served as they are.
 */

export interface P256Jwk {
  readonly kty: 'EC';
  readonly crv: 'P-256';
  readonly x: string;
  readonly y: string;
}

export interface JwtJwk extends P256Jwk {
  readonly kid: string;
  readonly alg: 'ES256';
  readonly use: 'sig';
}

export interface Jwks {
  readonly keys: readonly JwtJwk[];
}

/** A CA certificate in the bundle: its key's JWK members, `use: "x509-svid"`, the DER as `x5c` (one certificate, no `kid`). */
export type X509SvidBundleKey = JsonWebKey & { readonly use: 'x509-svid'; readonly x5c: readonly [string] };
export type JwtSvidBundleKey = P256Jwk & { readonly kid: string; readonly use: 'jwt-svid' };

export interface SpiffeBundle {
  readonly keys: readonly (X509SvidBundleKey | JwtSvidBundleKey)[];
  readonly spiffe_sequence: number;
  readonly spiffe_refresh_hint: number;
}

/** The public JWK of a P-256 key; ERR_KEY_UNSUPPORTED for any other key. */
function p256Jwk(publicKey: KeyObject): P256Jwk {
  if (publicKey.type !== 'public' || publicKey.asymmetricKeyType !== 'ec' || publicKey.asymmetricKeyDetails?.namedCurve !== 'prime256v1') {
    throw new PolicyError('ERR_KEY_UNSUPPORTED', 'JWT keys are EC P-256 public keys');
  }
  const { x, y } = publicKey.export({ format: 'jwk' });
  return { kty: 'EC', crv: 'P-256', x: x!, y: y! };
}

/** The key id of a JWT key: its RFC 7638 JWK thumbprint (SHA-256, base64url). */
export async function kidOf(publicKey: KeyObject): Promise<string> {
  return calculateJwkThumbprint(p256Jwk(publicKey), 'sha256');
}

/** A JWT signing key as published: its public key and its kid (kidOf, as the keys table records it). */
export interface JwtKey {
  readonly publicKey: KeyObject;
  readonly kid: string;
}

/** `/.well-known/jwks.json`: the JWT keys (SERVICE.md "Bundle": kty, kid, alg, use "sig"). */
export function jwtJwks(keys: readonly JwtKey[]): Jwks {
  return { keys: keys.map((k) => ({ ...p256Jwk(k.publicKey), kid: k.kid, alg: 'ES256', use: 'sig' })) };
}

export interface SpiffeBundleOptions {
  /** DER of each CA certificate relying parties should trust (current, prepared and old). */
  readonly caCertificates: readonly Uint8Array[];
  readonly jwtKeys: readonly JwtKey[];
  /** Increases whenever the content changes (SPIFFE bundle §4.1.1). */
  readonly sequence: number;
  readonly refreshHintSeconds: number;
}

/**
 * `/v1/bundle`: one `x509-svid` entry per CA certificate (its key, `x5c` = [the DER, base64],
 * no `kid`: X509-SVID §6.1) and one `jwt-svid` entry per JWT key (with its `kid`).
 */
export function spiffeBundle(opts: SpiffeBundleOptions): SpiffeBundle {
  if (!Number.isSafeInteger(opts.sequence) || opts.sequence < 0) {
    throw new AttestorError('ERR_ISSUANCE', `spiffe_sequence must be a non-negative integer, not ${opts.sequence}`);
  }
  if (!Number.isSafeInteger(opts.refreshHintSeconds) || opts.refreshHintSeconds <= 0) {
    throw new AttestorError('ERR_ISSUANCE', `spiffe_refresh_hint must be a positive number of seconds, not ${opts.refreshHintSeconds}`);
  }
  // x5c is standard base64, not base64url (RFC 7517 §4.7).
  const x509Keys = opts.caCertificates.map(
    (der): X509SvidBundleKey => ({
      ...new X509Certificate(der).publicKey.export({ format: 'jwk' }),
      use: 'x509-svid',
      x5c: [Buffer.from(der).toString('base64')],
    }),
  );
  const jwtKeys = opts.jwtKeys.map((k): JwtSvidBundleKey => ({ ...p256Jwk(k.publicKey), kid: k.kid, use: 'jwt-svid' }));
  return { keys: [...x509Keys, ...jwtKeys], spiffe_sequence: opts.sequence, spiffe_refresh_hint: opts.refreshHintSeconds };
}
