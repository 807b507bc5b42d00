import { createHash, generateKeyPairSync, X509Certificate } from 'node:crypto';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { calculateJwkThumbprint, createLocalJWKSet, decodeProtectedHeader, errors, jwtVerify } from 'jose';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createCaCertificate } from '../src/issuer/ca-certificate.js';
import { openFileKeyManager } from '../src/issuer/file-keys.js';
import { jwtJwks, kidOf, spiffeBundle, type JwtKey, type X509SvidBundleKey } from '../src/issuer/jwks.js';
import { createJwtSvidIssuer, type JwtSvidClaims, type JwtSvidIssuer } from '../src/issuer/jwt-svid.js';
import type { KeyManager, Signer } from '../src/issuer/signer.js';
import { createX509SvidIssuer } from '../src/issuer/x509-svid.js';
import { codeOf } from './helpers/code-of.js';
import { rejection } from './helpers/rejection.js';

const ISSUER = 'https://attestor.example.org';
const SPIFFE_ID = `spiffe://example.org/agent/tpm/${'cd'.repeat(32)}`;

let dir: string;
let manager: KeyManager;
let jwtSigner: Signer;
let caSigner: Signer;
let ca: Uint8Array;
let certificate: Uint8Array;
let jwtKey: JwtKey;
let issuer: JwtSvidIssuer;
let claims: JwtSvidClaims;

beforeAll(async () => {
  dir = mkdtempSync(join(tmpdir(), 'attestor-jwt-'));
  manager = await openFileKeyManager(join(dir, 'keys'));
  [jwtSigner, caSigner] = await Promise.all([manager.signer('jwt'), manager.signer('x509-ca')]);
  const now = new Date();
  ca = await createCaCertificate({ signer: caSigner, trustDomain: 'example.org', now, lifetimeSeconds: 86400 });
  const agentKey = generateKeyPairSync('ec', { namedCurve: 'P-256' }).publicKey;
  certificate = (
    await createX509SvidIssuer({ caCertificate: ca, signer: caSigner, crlUrl: `${ISSUER}/v1/crl` }).issue({
      subjectSpki: agentKey.export({ type: 'spki', format: 'der' }),
      spiffeId: SPIFFE_ID,
      notBefore: new Date(now.getTime() - 10_000),
      notAfter: new Date(now.getTime() + 3600_000),
    })
  ).der;
  jwtKey = { publicKey: jwtSigner.publicKey, kid: await kidOf(jwtSigner.publicKey) };
  issuer = createJwtSvidIssuer({ signer: jwtSigner, kid: jwtKey.kid, issuer: ISSUER });
  const iat = Math.floor(now.getTime() / 1000);
  claims = {
    sub: SPIFFE_ID,
    aud: 'spiffe://example.org/reports',
    iat,
    exp: iat + 300,
    jti: '0b6c1f9e-4a37-4e59-9a8e-3f1f4f7d2c11',
    cnf: { 'x5t#S256': createHash('sha256').update(certificate).digest('base64url') },
    attestation: {
      baseline: { id: '6f1c3a52-2b8e-4f0e-9a51-7d3c2e1b0a99', version: 3 },
      verdict: 'affirming',
      pcrDigest: 'aa'.repeat(32),
      evidenceHash: 'bb'.repeat(32),
      keyResidence: 'tpm',
    },
  };
});
afterAll(async () => {
  await manager?.close();
  if (dir) rmSync(dir, { recursive: true, force: true });
});

describe('JWT-SVID', () => {
  it('verifies with jose against the JWKS and against the public key, with exactly the header and claims of the profile', async () => {
    const token = await issuer.sign(claims);
    const [header] = token.split('.');
    expect(Buffer.from(header!, 'base64url').toString()).toBe(`{"alg":"ES256","kid":"${jwtKey.kid}","typ":"JWT"}`);
    expect(decodeProtectedHeader(token)).toEqual({ alg: 'ES256', kid: jwtKey.kid, typ: 'JWT' });
    const options = { issuer: ISSUER, audience: claims.aud, algorithms: ['ES256'], typ: 'JWT' };
    const viaJwks = await jwtVerify(token, createLocalJWKSet(jwtJwks([jwtKey]) as Parameters<typeof createLocalJWKSet>[0]), options);
    const viaKey = await jwtVerify(token, jwtSigner.publicKey, options);
    expect(viaJwks.payload).toEqual(viaKey.payload);
    expect(viaKey.payload).toEqual({
      iss: ISSUER,
      sub: claims.sub,
      aud: claims.aud,
      iat: claims.iat,
      exp: claims.exp,
      jti: claims.jti,
      cnf: claims.cnf,
      attestation: claims.attestation,
    });
    expect(Object.keys(viaKey.payload)).toEqual(['iss', 'sub', 'aud', 'iat', 'exp', 'jti', 'cnf', 'attestation']);
    // cnf binds the token to the certificate (RFC 8705 §3.1): base64url SHA-256 of its DER.
    const fingerprint = Buffer.from(new X509Certificate(certificate).fingerprint256.replace(/:/g, ''), 'hex');
    expect(viaKey.payload.cnf).toEqual({ 'x5t#S256': fingerprint.toString('base64url') });
  });

  it('is refused by jose once a signature byte is altered', async () => {
    const token = await issuer.sign(claims);
    const [h, p, s] = token.split('.');
    const signature = Buffer.from(s!, 'base64url');
    for (const at of [0, 31, 32, 63]) {
      const altered = Buffer.from(signature);
      altered[at]! ^= 0x01;
      const forged = `${h}.${p}.${altered.toString('base64url')}`;
      await expect(jwtVerify(forged, jwtSigner.publicKey)).rejects.toBeInstanceOf(errors.JWSSignatureVerificationFailed);
    }
    const payload = JSON.parse(Buffer.from(p!, 'base64url').toString()) as Record<string, unknown>;
    const otherClaims = Buffer.from(JSON.stringify({ ...payload, sub: 'spiffe://example.org/x' })).toString('base64url');
    await expect(jwtVerify(`${h}.${otherClaims}.${s}`, jwtSigner.publicKey)).rejects.toBeInstanceOf(errors.JWSSignatureVerificationFailed);
  });

  it('refuses claims outside the profile with ERR_ISSUANCE', async () => {
    const bad: Partial<Record<string, JwtSvidClaims>> = {
      'sub without path': { ...claims, sub: 'spiffe://example.org' },
      'sub not SPIFFE': { ...claims, sub: 'https://example.org/agent' },
      'aud empty': { ...claims, aud: '' },
      'aud with space': { ...claims, aud: 'a b' },
      'exp not after iat': { ...claims, exp: claims.iat },
      'iat fractional': { ...claims, iat: claims.iat + 0.5 },
      'jti empty': { ...claims, jti: '' },
      'cnf not a SHA-256': { ...claims, cnf: { 'x5t#S256': 'abc' } },
      'contraindicated verdict': { ...claims, attestation: { ...claims.attestation, verdict: 'contraindicated' } },
      'pcrDigest not hex': { ...claims, attestation: { ...claims.attestation, pcrDigest: 'XYZ' } },
      'baseline version fractional': { ...claims, attestation: { ...claims.attestation, baseline: { id: 'b', version: 1.5 } } },
    };
    for (const [what, c] of Object.entries(bad)) {
      const e = await rejection(issuer.sign(c!), 'ERR_ISSUANCE');
      expect(e.message, what).toMatch(/JWT-SVID|SPIFFE ID/);
    }
    expect(codeOf(() => createJwtSvidIssuer({ signer: jwtSigner, kid: '', issuer: ISSUER }))).toBe('ERR_ISSUANCE');
  });
});

describe('JWKS and SPIFFE bundle', () => {
  it('kidOf is the RFC 7638 thumbprint of the key, and refuses keys that are not P-256', async () => {
    const { x, y } = jwtSigner.publicKey.export({ format: 'jwk' });
    // RFC 7638 §3.2: the required members in lexicographic order, no whitespace.
    const canonical = `{"crv":"P-256","kty":"EC","x":"${x}","y":"${y}"}`;
    expect(jwtKey.kid).toBe(createHash('sha256').update(canonical).digest('base64url'));
    expect(jwtKey.kid).toBe(await calculateJwkThumbprint(jwtSigner.publicKey));
    await rejection(kidOf(generateKeyPairSync('ec', { namedCurve: 'P-384' }).publicKey), 'ERR_KEY_UNSUPPORTED');
    await rejection(kidOf(generateKeyPairSync('ed25519').privateKey), 'ERR_KEY_UNSUPPORTED');
  });

  it('/.well-known/jwks.json lists each JWT key with kty, crv, x, y, kid, alg ES256, use sig', () => {
    const other = generateKeyPairSync('ec', { namedCurve: 'P-256' }).publicKey;
    const jwks = jwtJwks([jwtKey, { publicKey: other, kid: 'k2' }]);
    const { x, y } = jwtSigner.publicKey.export({ format: 'jwk' });
    expect(jwks.keys[0]).toEqual({ kty: 'EC', crv: 'P-256', x, y, kid: jwtKey.kid, alg: 'ES256', use: 'sig' });
    expect(jwks.keys.map((k) => k.kid)).toEqual([jwtKey.kid, 'k2']);
  });

  it('the SPIFFE bundle has x509-svid entries with x5c and no kid, jwt-svid entries with kid, sequence and refresh hint', () => {
    const bundle = spiffeBundle({ caCertificates: [ca], jwtKeys: [jwtKey], sequence: 7, refreshHintSeconds: 300 });
    expect(JSON.parse(JSON.stringify(bundle))).toEqual({
      keys: [
        { ...caSigner.publicKey.export({ format: 'jwk' }), use: 'x509-svid', x5c: [Buffer.from(ca).toString('base64')] },
        { ...jwtSigner.publicKey.export({ format: 'jwk' }), kid: jwtKey.kid, use: 'jwt-svid' },
      ],
      spiffe_sequence: 7,
      spiffe_refresh_hint: 300,
    });
    const x509Entry = bundle.keys[0] as X509SvidBundleKey;
    expect(new X509Certificate(Buffer.from(x509Entry.x5c[0]!, 'base64')).publicKey.equals(caSigner.publicKey)).toBe(true);
    expect(codeOf(() => spiffeBundle({ caCertificates: [ca], jwtKeys: [], sequence: -1, refreshHintSeconds: 300 }))).toBe('ERR_ISSUANCE');
    expect(codeOf(() => spiffeBundle({ caCertificates: [ca], jwtKeys: [], sequence: 1, refreshHintSeconds: 0 }))).toBe('ERR_ISSUANCE');
  });
});
