import type { JwtSvidClaims } from '../issuer/jwt-svid.js';

/**
 * What the attestation flow and the public routes need of the issuing side: sign an
 * X509-SVID and a JWT-SVID with the active keys, and the public material relying parties
 * fetch (every published key: prepared, active and old). Kept current by the key ring of
 * src/server/issuing-keys.ts as keys rotate; each property is read at the moment of use.
 */
export interface CredentialAuthority {
  /** PEM of every published CA certificate, the active one first: what X509-SVIDs are verified with. */
  readonly bundlePem: string;
  /** SHA-256 of the active CA certificate's DER, lowercase hex. */
  readonly caFingerprint: string;
  /** The active CA certificate's notAfter (ms): no credential lives past it. */
  readonly caNotAfter: number;
  /**
   * Why this verifier cannot issue now (the keys table names active keys it cannot load), or
   * null. While it is not null, issuing throws ERR_KEYS_UNAVAILABLE and /readyz answers 503.
   */
  unavailable(): string | null;
  /** Resolves when the active keys could sign now (their token answers), signing nothing: /readyz. */
  checkKeys(): Promise<void>;
  /** Signed by the active CA; `issuerKid` names it (the credential records it, for its CRL). */
  issueX509Svid(req: { subjectSpki: Uint8Array; spiffeId: string; notBefore: Date; notAfter: Date }): Promise<{ der: Uint8Array; serial: string; issuerKid: string }>;
  /** Signed by the active JWT key, whose kid the header and `kid` carry. */
  issueJwtSvid(claims: JwtSvidClaims): Promise<{ token: string; kid: string }>;
  /** The CRL of the published CA `caKid` (the active CA's when absent), DER; null for no such CA. */
  crl(now: number, caKid?: string): Promise<Uint8Array | null>;
  /** PEM of the published CA certificate with this SHA-256 fingerprint (lowercase hex), if any. */
  root(fingerprint: string): string | undefined;
  /** /.well-known/jwks.json */
  readonly jwks: unknown;
  /** /v1/bundle (SPIFFE bundle). */
  readonly spiffeBundle: unknown;
}
