import type { JwtSvidClaims } from '../issuer/jwt-svid.js';

/**
 * What the attestation flow and the public routes need of the issuing side: sign an
 * X509-SVID and a JWT-SVID, and the public material relying parties fetch. Built at start by
 * src/server/issuing-keys.ts from the key manager and the keys table.
 */
export interface CredentialAuthority {
  /** DER of the root CA certificate. */
  readonly caCertificate: Uint8Array;
  /** PEM of the CA bundle agents and relying parties verify X509-SVIDs with. */
  readonly bundlePem: string;
  /** SHA-256 of the root CA DER, lowercase hex. */
  readonly caFingerprint: string;
  /** The CA certificate's notAfter (ms): no credential lives past it. */
  readonly caNotAfter: number;
  issueX509Svid(req: { subjectSpki: Uint8Array; spiffeId: string; notBefore: Date; notAfter: Date }): Promise<{ der: Uint8Array; serial: string }>;
  issueJwtSvid(claims: JwtSvidClaims): Promise<string>;
  /** The CA's current CRL, DER (/v1/crl, the X509-SVIDs' CRL distribution point). */
  crl(now: number): Promise<Uint8Array>;
  /** /.well-known/jwks.json */
  readonly jwks: unknown;
  /** /v1/bundle (SPIFFE bundle). */
  readonly spiffeBundle: unknown;
}
