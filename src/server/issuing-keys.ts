import { createHash, generateKeyPairSync, X509Certificate } from 'node:crypto';
import { isIP } from 'node:net';
import { equalBytes } from '../bytes.js';
import { AttestorError } from '../errors.js';
import { createCaCertificate, createServerCertificate } from '../issuer/ca-certificate.js';
import { createCrl } from '../issuer/crl.js';
import { issuingCa, type IssuingCa } from '../issuer/issuing-ca.js';
import { jwtJwks, kidOf, spiffeBundle } from '../issuer/jwks.js';
import { createJwtSvidIssuer } from '../issuer/jwt-svid.js';
import type { KeyManager, KeyRole, Signer } from '../issuer/signer.js';
import { createX509SvidIssuer } from '../issuer/x509-svid.js';
import type { IssuingKey, Store } from '../store/store.js';
import { pem } from './pem.js';
import type { CredentialAuthority } from './credential-authority.js';

/*
 * The verifier's keys at start: each of x509-ca, jwt and audit is found in (or generated into)
 * the key manager, and recorded in the keys table the first time. The CA certificate lives in
 * the table, so every replica and every restart serves the same root; a key manager whose key
 * is not the recorded one (another token, a wiped directory) is refused rather than silently
 * starting a new trust domain root.
 */

export interface IssuingKeysDeps {
  readonly store: Store;
  readonly keys: KeyManager;
  readonly trustDomain: string;
  readonly publicUrl: string;
  readonly caLifetimeDays: number;
  readonly now: () => number;
}

/** How often relying parties are told to refetch the bundle (SPIFFE bundle `spiffe_refresh_hint`). */
const REFRESH_HINT_SECONDS = 300;

export async function loadCredentialAuthority(deps: IssuingKeysDeps): Promise<CredentialAuthority & { readonly caSigner: Signer }> {
  const caSigner = await deps.keys.signer('x509-ca');
  const ca = await activeKey(deps, 'x509-ca', caSigner, async () => {
    const now = deps.now();
    return createCaCertificate({ signer: caSigner, trustDomain: deps.trustDomain, now: new Date(now), lifetimeSeconds: deps.caLifetimeDays * 86400 });
  });
  const jwtSigner = await deps.keys.signer('jwt');
  const jwtKey = await activeKey(deps, 'jwt', jwtSigner);
  const auditSigner = await deps.keys.signer('audit');
  await activeKey(deps, 'audit', auditSigner);

  const caCertificate = ca.certificate!;
  const caPem = pem('CERTIFICATE', caCertificate);
  const x509 = createX509SvidIssuer({ caCertificate, signer: caSigner, crlUrl: `${deps.publicUrl}/v1/crl` });
  const jwt = createJwtSvidIssuer({ signer: jwtSigner, kid: jwtKey.kid, issuer: deps.publicUrl });
  const jwtKeys = [{ publicKey: jwtSigner.publicKey, kid: jwtKey.kid }];
  const crl = crlCache(issuingCa(caCertificate, caSigner), deps.store);
  return {
    caSigner,
    caCertificate,
    bundlePem: caPem,
    caFingerprint: createHash('sha256').update(caCertificate).digest('hex'),
    caNotAfter: ca.notAfter!,
    issueX509Svid: (req) => x509.issue(req),
    issueJwtSvid: (claims) => jwt.sign(claims),
    crl,
    jwks: jwtJwks(jwtKeys),
    spiffeBundle: spiffeBundle({ caCertificates: [caCertificate], jwtKeys, sequence: 1, refreshHintSeconds: REFRESH_HINT_SECONDS }),
  };
}

/** How long a CRL is valid, and when a fresh one is made: RFC 5280 nextUpdate, renewed at half. */
const CRL_VALIDITY_MS = 24 * 3600_000;

/**
 * The CA's CRL: made again when the revoked serials changed (read from the store at each
 * request, so a revocation made by any replica is served at once) or half its validity has
 * passed. Its number is the second it was made, and always more than the last one here.
 */
function crlCache(ca: IssuingCa, store: Store): (now: number) => Promise<Uint8Array> {
  let current: { der: Promise<Uint8Array>; renewAt: number; serials: string; number: number } | undefined;
  return async (now) => {
    const revoked = await store.attestations.revokedCertificates(now);
    const serials = revoked.map((r) => r.serial).join(',');
    if (!current || now >= current.renewAt || serials !== current.serials) {
      const number = Math.max(Math.floor(now / 1000), (current?.number ?? 0) + 1);
      const der = createCrl({
        ca,
        number,
        thisUpdate: new Date(now - 10_000),
        nextUpdate: new Date(now + CRL_VALIDITY_MS),
        revoked: revoked.map((r) => ({ serial: r.serial, at: new Date(r.revokedAt) })),
      });
      const made = { der, renewAt: now + CRL_VALIDITY_MS / 2, serials, number };
      // A failed signing is not kept: the next request tries again.
      der.catch(() => {
        if (current === made) current = undefined;
      });
      current = made;
    }
    return current.der;
  };
}

/**
 * The active key of `name`, recorded on first start (with the certificate `certify` makes).
 * Of replicas starting at once, all end up with the one recorded first; a signer that holds
 * another key than the recorded one is refused (ERR_KEYS).
 */
async function activeKey(
  deps: IssuingKeysDeps,
  name: KeyRole,
  signer: Signer,
  certify?: () => Promise<Uint8Array>,
): Promise<IssuingKey> {
  let key = (await deps.store.keys.list(name)).find((k) => k.state === 'active');
  if (!key) {
    const certificate = certify ? await certify() : null;
    key = await deps.store.keys.insertIfNoActive(
      {
        name,
        kid: await kidOf(signer.publicKey),
        uri: signer.uri,
        state: 'active',
        publicKeySpki: signer.spki,
        certificate,
        createdAt: deps.now(),
        notAfter: certificate ? Date.parse(new X509Certificate(certificate).validTo) : null,
      },
      { actor: 'system', action: 'key.create', subject: name, details: { uri: signer.uri, software: signer.software } },
    );
  }
  if (!equalBytes(key.publicKeySpki, signer.spki)) {
    throw new AttestorError(
      'ERR_KEYS',
      `the ${name} key at ${signer.uri} is not the one this verifier's database records (${key.uri}): wrong token or key directory?`,
    );
  }
  return key;
}

/**
 * The verifier's own TLS key and certificate, issued by its CA for the names it is reached at
 * (agents pin the CA, so a fresh key at every start is fine): valid 30 days at most.
 */
export async function selfIssuedTls(opts: {
  caCertificate: Uint8Array;
  caSigner: Signer;
  names: readonly string[];
  now: number;
}): Promise<{ key: string; cert: string }> {
  const pair = generateKeyPairSync('ec', { namedCurve: 'P-256' });
  const names = [...new Set(opts.names)];
  const der = await createServerCertificate({
    ca: { certificate: opts.caCertificate, signer: opts.caSigner },
    subjectSpki: pair.publicKey.export({ type: 'spki', format: 'der' }),
    dnsNames: names.filter((n) => isIP(n) === 0),
    ipAddresses: names.filter((n) => isIP(n) !== 0),
    now: new Date(opts.now),
    lifetimeSeconds: 30 * 86400,
  });
  return { key: pair.privateKey.export({ type: 'pkcs8', format: 'pem' }) as string, cert: pem('CERTIFICATE', der) + pem('CERTIFICATE', opts.caCertificate) };
}
