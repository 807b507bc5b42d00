// Two relying parties of the demo, each an HTTPS service that requires a client certificate
// chaining to the verifier's CA:
//   - the mTLS service trusts the certificate itself: a SPIFFE ID of the trust domain, not on
//     the CRL of its distribution point (fetched on every request, so a revocation shows at once);
//   - the JWT service trusts a JWT-SVID: signature through OIDC discovery + JWKS, issuer,
//     audience, its cnf bound to the client certificate of the connection (RFC 8705), and RFC 7662
//     introspection with a relying-party token, refused when inactive.
// Usage: ATTESTOR_INTROSPECTION_TOKEN=... node scripts/demo/relying-parties.mjs --server URL
//   --ca-fingerprint HEX --trust-domain TD --audience AUD --dir DIR
// It prints the two services' URLs and the path of their server certificate, then serves until SIGTERM.
import 'reflect-metadata';
import { spawnSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { createServer } from 'node:https';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import * as x509 from '@peculiar/x509';
import { createRemoteJWKSet, customFetch, jwtVerify } from 'jose';
import { bootstrapCa } from '../../dist/client/api-client.js';
import { fetchPinned } from './pinned-fetch.mjs';

/** The checks of both services, on what the connection shows and what the verifier publishes. */
function createRelyingPartyChecks({ server, caPem, trustDomain, audience, introspectionToken }) {
  const fetchCa = (url, init) => fetchPinned(url, caPem, init);
  const issuers = x509.PemConverter.decode(caPem).map((der) => new x509.X509Certificate(der));
  let jwt;

  /** The peer's SPIFFE ID: its one URI SAN, in the trust domain. */
  function spiffeId(peer) {
    const uris = (peer.subjectAltName ?? '').split(', ').filter((n) => n.startsWith('URI:'));
    const id = uris.length === 1 ? uris[0].slice(4) : undefined;
    if (!id?.startsWith(`spiffe://${trustDomain}/`)) throw refusal(403, 'the client certificate has no SPIFFE ID of this trust domain');
    return id;
  }

  /** Refuses a certificate its CA revoked, per the CRL at its distribution point. */
  async function checkCrl(peer) {
    const cert = new x509.X509Certificate(peer.raw);
    const cdp = cert.getExtension(x509.CRLDistributionPointsExtension);
    const url = cdp?.distributionPoints[0]?.distributionPoint?.fullName?.[0]?.uniformResourceIdentifier;
    if (!url) throw refusal(403, 'the client certificate names no CRL distribution point');
    const res = await fetchCa(url);
    if (res.status !== 200) throw refusal(503, `the CRL could not be fetched (HTTP ${res.status})`);
    const crl = new x509.X509Crl(new Uint8Array(await res.arrayBuffer()));
    // The CRL must be signed by the CA that signed the certificate (during a CA rotation the
    // bundle holds two, possibly with one subject: the signatures decide).
    const signers = await Promise.all(issuers.map(async (ca) => ((await cert.verify({ publicKey: ca, signatureOnly: true })) ? ca : undefined)));
    const issuer = signers.find(Boolean);
    if (!issuer || crl.issuer !== issuer.subject || !(await crl.verify({ publicKey: issuer }))) {
      throw refusal(503, "the CRL is not signed by the certificate's CA");
    }
    if (crl.nextUpdate && crl.nextUpdate < new Date()) throw refusal(503, 'the CRL is past its nextUpdate');
    const entry = crl.findRevoked(cert);
    if (entry) throw refusal(403, `certificate ${cert.serialNumber} is on the CA's CRL: revoked at ${entry.revocationDate.toISOString()}`);
  }

  /** The verified claims of a JWT-SVID presented with `peer`'s certificate, when introspection says it is live. */
  async function checkJwt(token, peer) {
    jwt ??= await discover();
    let verified;
    try {
      verified = await jwtVerify(token, jwt.keys, { issuer: jwt.issuer, audience, algorithms: jwt.algorithms });
    } catch (e) {
      throw refusal(401, `the JWT does not verify: ${e.code ?? e.message}`);
    }
    const { payload } = verified;
    const thumbprint = createHash('sha256').update(peer.raw).digest('base64url');
    if (payload.cnf?.['x5t#S256'] !== thumbprint) throw refusal(401, 'the JWT is not bound to this client certificate (cnf x5t#S256)');
    if (payload.sub !== spiffeId(peer)) throw refusal(401, 'the JWT names another SPIFFE ID than the client certificate');
    const res = await fetchCa(`${server}/v1/introspect`, {
      method: 'POST',
      headers: { authorization: `Bearer ${introspectionToken}`, 'content-type': 'application/x-www-form-urlencoded' },
      body: new URLSearchParams({ token }).toString(),
    });
    if (res.status !== 200) throw refusal(503, `introspection failed (HTTP ${res.status})`);
    if (!(await res.json()).active) throw refusal(401, 'the JWT is not active (introspection): revoked, expired or its agent is not in good standing');
    return verified;
  }

  /** OIDC discovery, then the JWKS it names (fetched again when a JWT names an unknown kid). */
  async function discover() {
    const res = await fetchCa(`${server}/.well-known/openid-configuration`);
    if (res.status !== 200) throw refusal(503, `OIDC discovery failed (HTTP ${res.status})`);
    const config = await res.json();
    return {
      issuer: config.issuer,
      algorithms: config.id_token_signing_alg_values_supported,
      // jose waits 30 s between JWKS fetches by default (against floods of made-up kids); the
      // demo rotates the JWT key with --now, so a new kid must send it to the JWKS at once.
      keys: createRemoteJWKSet(new URL(config.jwks_uri), { [customFetch]: fetchCa, cooldownDuration: 0 }),
    };
  }

  return {
    async mtls(peer) {
      const id = spiffeId(peer);
      await checkCrl(peer);
      return `hello ${id}`;
    },
    async jwt(authorization, peer) {
      const token = /^Bearer (\S+)$/.exec(authorization ?? '')?.[1];
      if (!token) throw refusal(401, 'no JWT-SVID (Authorization: Bearer)');
      const { payload, protectedHeader } = await checkJwt(token, peer);
      return (
        `hello ${payload.sub}\n` +
        `JWT verified: alg ${protectedHeader.alg}, kid ${protectedHeader.kid.slice(0, 12)}..., aud ${payload.aud}, ` +
        `cnf x5t#S256 = SHA-256 of the client certificate, introspection: active, verdict ${payload.attestation?.verdict}`
      );
    },
  };
}

function refusal(status, message) {
  return Object.assign(new Error(message), { status });
}

/** An HTTPS server that only completes handshakes with a client certificate chaining to `ca`. */
function listen({ key, cert, ca }, answer) {
  const server = createServer({ key, cert, ca, requestCert: true, rejectUnauthorized: true }, (req, res) => {
    const peer = req.socket.getPeerX509Certificate();
    answer(req, peer).then(
      (body) => send(res, 200, body),
      (e) => send(res, e.status ?? 500, e.status ? e.message : `internal error: ${e.message}`),
    );
  });
  return new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => resolve(server));
  });
}

function send(res, status, body) {
  res.sendDate = false;
  const bytes = Buffer.from(`${body}\n`);
  res.writeHead(status, { 'content-type': 'text/plain; charset=utf-8', 'content-length': bytes.length, connection: 'close' });
  res.end(bytes);
}

/** A self-signed P-256 server certificate for 127.0.0.1 (clients are given it as their CA file). */
function serverCertificate(dir) {
  const key = join(dir, 'relying-party.key');
  const cert = join(dir, 'relying-party.pem');
  const r = spawnSync('openssl', ['req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256', '-nodes', '-keyout', key, '-out', cert,
    '-days', '1', '-subj', '/CN=demo relying party', '-addext', 'subjectAltName=IP:127.0.0.1'], { encoding: 'utf8' });
  if (r.status !== 0) throw new Error(`openssl req failed: ${r.stderr}`);
  return { key: readFileSync(key), cert: readFileSync(cert), certPath: cert };
}

async function main() {
  const { values } = parseArgs({
    options: {
      server: { type: 'string' },
      'ca-fingerprint': { type: 'string' },
      'trust-domain': { type: 'string' },
      audience: { type: 'string' },
      dir: { type: 'string' },
    },
  });
  const introspectionToken = process.env.ATTESTOR_INTROSPECTION_TOKEN;
  if (!values.server || !values['ca-fingerprint'] || !values['trust-domain'] || !values.audience || !values.dir || !introspectionToken) {
    throw new Error('usage: ATTESTOR_INTROSPECTION_TOKEN=... relying-parties.mjs --server URL --ca-fingerprint HEX --trust-domain TD --audience AUD --dir DIR');
  }
  // The root is pinned by its fingerprint; the CA certificates then come over a channel that root authenticates.
  const root = await bootstrapCa(values.server, values['ca-fingerprint']);
  const caPem = await (await fetchPinned(`${values.server}/v1/ca.pem`, root)).text();
  const checks = createRelyingPartyChecks({ server: values.server, caPem, trustDomain: values['trust-domain'], audience: values.audience, introspectionToken });
  const tls = { ...serverCertificate(values.dir), ca: caPem };
  const mtls = await listen(tls, (_req, peer) => checks.mtls(peer));
  const jwt = await listen(tls, (req, peer) => checks.jwt(req.headers.authorization, peer));
  console.log(`mTLS service  https://127.0.0.1:${mtls.address().port}`);
  console.log(`JWT service   https://127.0.0.1:${jwt.address().port}`);
  console.log(`server certificate ${tls.certPath}`);
  process.once('SIGTERM', () => {
    mtls.close();
    jwt.close();
    mtls.closeAllConnections();
    jwt.closeAllConnections();
  });
}

await main().catch((e) => {
  console.error(`relying parties: ${e.message}`);
  process.exit(1);
});
