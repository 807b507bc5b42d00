import { AttestorError } from '../errors.js';
import type { Signer } from './signer.js';
import { parseSpiffeId } from './spiffe-id.js';

/**
 * JWT-SVIDs (SPIFFE JWT-SVID.md, SERVICE.md "Credentials"): compact JWS, header exactly
 * {"alg":"ES256","kid":...,"typ":"JWT"}; claims iss, sub (the SPIFFE ID), aud (one audience),
 * iat, exp, jti, cnf {"x5t#S256"} binding the token to the X509-SVID issued with it (RFC 8705
 * §3.1), and the attestation the credentials rest on, in that order. The signature is the
 * Signer's raw r||s, which is the JWS ES256 form (RFC 7518 §3.4) as it is.
 */

export interface JwtSvidIssuerOptions {
  readonly signer: Signer;
  /** The signer's key id (jwks.ts kidOf). */
  readonly kid: string;
  /** `iss`: the verifier's issuer URL, as OIDC discovery names it. */
  readonly issuer: string;
}

/** What the appraisal concluded, as relying parties read it from the token (the `attestation` claim). */
export interface AttestationClaim {
  readonly baseline: { readonly id: string; readonly version: number };
  /** Credentials follow an affirming or warning verdict only. */
  readonly verdict: 'affirming' | 'warning' | 'contraindicated';
  /** The quote's PCR digest, lowercase hex. */
  readonly pcrDigest: string;
  /** SHA-256 of the evidence appraised, lowercase hex. */
  readonly evidenceHash: string;
  /** Where the key the token is bound to lives: certified by the TPM, or reported in a PKCS#11 token. */
  readonly keyResidence: 'tpm' | 'pkcs11';
}

/** The token's claims but `iss`, which is the issuer's. */
export interface JwtSvidClaims {
  /** The agent's SPIFFE ID. */
  readonly sub: string;
  /** The one audience (JWT-SVID §3.2 recommends one; SERVICE.md requires it). */
  readonly aud: string;
  /** Seconds since the epoch. */
  readonly iat: number;
  /** Seconds since the epoch; not past the bound certificate's notAfter (the caller's rule). */
  readonly exp: number;
  readonly jti: string;
  /** base64url SHA-256 of the DER of the X509-SVID issued with the token (RFC 8705 §3.1). */
  readonly cnf: { readonly 'x5t#S256': string };
  readonly attestation: AttestationClaim;
}

export interface JwtSvidIssuer {
  /** The compact JWS. */
  sign(claims: JwtSvidClaims): Promise<string>;
}

const AUDIENCE = /^\S{1,256}$/;
const JTI = /^[A-Za-z0-9._~-]{1,128}$/;
/** base64url of 32 bytes, no padding. */
const SHA256_BASE64URL = /^[A-Za-z0-9_-]{42}[AEIMQUYcgkosw048]$/;
const HEX = /^(?:[0-9a-f]{2})+$/;

export function createJwtSvidIssuer(opts: JwtSvidIssuerOptions): JwtSvidIssuer {
  if (!opts.kid) throw new AttestorError('ERR_ISSUANCE', 'a JWT-SVID issuer needs a kid');
  if (!opts.issuer) throw new AttestorError('ERR_ISSUANCE', 'a JWT-SVID issuer needs an issuer (iss)');
  const header = base64url(JSON.stringify({ alg: 'ES256', kid: opts.kid, typ: 'JWT' }));
  return {
    async sign(claims) {
      checkClaims(claims);
      const { baseline, verdict, pcrDigest, evidenceHash, keyResidence } = claims.attestation;
      // Built member by member: the token carries these claims and nothing a caller slipped in.
      const payload = base64url(
        JSON.stringify({
          iss: opts.issuer,
          sub: claims.sub,
          aud: claims.aud,
          iat: claims.iat,
          exp: claims.exp,
          jti: claims.jti,
          cnf: { 'x5t#S256': claims.cnf['x5t#S256'] },
          attestation: { baseline: { id: baseline.id, version: baseline.version }, verdict, pcrDigest, evidenceHash, keyResidence },
        }),
      );
      const signingInput = `${header}.${payload}`;
      const signature = await opts.signer.sign(Buffer.from(signingInput, 'latin1'));
      return `${signingInput}.${Buffer.from(signature).toString('base64url')}`;
    },
  };
}

/** ERR_ISSUANCE naming the first claim that is not what a JWT-SVID of this verifier carries. */
function checkClaims(claims: JwtSvidClaims): void {
  const bad = (why: string) => new AttestorError('ERR_ISSUANCE', `JWT-SVID: ${why}`);
  if (parseSpiffeId(claims.sub).path === '') throw bad('sub must be a SPIFFE ID with a path (a workload)');
  if (!AUDIENCE.test(claims.aud)) throw bad('aud must be 1..256 characters without spaces');
  if (!Number.isSafeInteger(claims.iat) || !Number.isSafeInteger(claims.exp) || claims.iat < 0 || !(claims.iat < claims.exp)) {
    throw bad('iat and exp must be whole seconds with iat < exp');
  }
  if (!JTI.test(claims.jti)) throw bad('jti must be 1..128 URL-safe characters');
  if (!SHA256_BASE64URL.test(claims.cnf['x5t#S256'])) throw bad('cnf x5t#S256 must be a base64url SHA-256');
  const a = claims.attestation;
  if (a.verdict !== 'affirming' && a.verdict !== 'warning') throw bad(`no credentials on a ${String(a.verdict)} verdict`);
  if (typeof a.baseline.id !== 'string' || a.baseline.id === '' || !Number.isSafeInteger(a.baseline.version)) {
    throw bad('attestation baseline needs an id and an integer version');
  }
  if (!HEX.test(a.pcrDigest) || !HEX.test(a.evidenceHash)) throw bad('attestation pcrDigest and evidenceHash must be lowercase hex');
  if (a.keyResidence !== 'tpm' && a.keyResidence !== 'pkcs11') throw bad('attestation keyResidence must be tpm or pkcs11');
}

function base64url(text: string): string {
  return Buffer.from(text, 'utf8').toString('base64url');
}
