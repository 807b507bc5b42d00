import { z } from 'zod';
import { AttestorError } from '../../errors.js';
import type { Store } from '../../store/store.js';
import type { CredentialAuthority } from '../credential-authority.js';
import type { Metrics } from '../metrics.js';
import { route, type Route } from '../route.js';

function crlReply(der: Uint8Array | null) {
  if (der === null) throw new AttestorError('ERR_NOT_FOUND', 'no published CA has this key id');
  return { status: 200, body: Buffer.from(der), contentType: 'application/pkix-crl' };
}

/** What anyone may fetch: discovery, keys, bundles, the root CA, health, metrics, the API description. */
export function publicRoutes(deps: {
  store: Store;
  authority: CredentialAuthority;
  metrics: Metrics;
  publicUrl: string;
  openapi: () => unknown;
  now: () => number;
}): Route[] {
  const { authority } = deps;
  const json = (path: string, operationId: string, summary: string, body: () => unknown): Route =>
    route({
      method: 'get',
      path,
      operationId,
      summary,
      tag: 'public',
      access: 'public',
      responses: { 200: 'json-document' },
      handle: async () => ({ status: 200, body: JSON.stringify(body()), contentType: 'application/json' }),
    });
  // OpenID Connect Discovery 1.0 §3, as SPIRE's OIDC provider serves it for JWT-SVID consumers.
  const discovery = {
    issuer: deps.publicUrl,
    jwks_uri: `${deps.publicUrl}/.well-known/jwks.json`,
    authorization_endpoint: '',
    response_types_supported: ['id_token'],
    subject_types_supported: ['public'],
    id_token_signing_alg_values_supported: ['ES256'],
  };
  return [
    json('/.well-known/openid-configuration', 'openidConfiguration', 'OpenID Connect discovery for JWT-SVID verification', () => discovery),
    json('/.well-known/jwks.json', 'jwks', 'The JWT-SVID signing keys', () => authority.jwks),
    json('/v1/bundle', 'spiffeBundle', 'The SPIFFE bundle of the trust domain (X.509 and JWT authorities)', () => authority.spiffeBundle),
    route({
      method: 'get',
      path: '/v1/ca.pem',
      operationId: 'caCertificates',
      summary: 'The CA certificates X509-SVIDs chain to, PEM',
      tag: 'public',
      access: 'public',
      responses: { 200: 'pem' },
      handle: async () => ({ status: 200, body: authority.bundlePem, contentType: 'application/x-pem-file' }),
    }),
    route({
      method: 'get',
      path: '/v1/crl',
      operationId: 'crl',
      summary: "The active CA's certificate revocation list, DER",
      tag: 'public',
      access: 'public',
      responses: { 200: 'crl' },
      handle: async () => crlReply(await authority.crl(deps.now())),
    }),
    route({
      method: 'get',
      path: '/v1/crl/:kid',
      operationId: 'crlOfCa',
      summary: "The certificate revocation list of a published CA, by its key id, DER (the X509-SVIDs' CRL distribution point)",
      tag: 'public',
      access: 'public',
      params: z.object({ kid: z.string().regex(/^[A-Za-z0-9_-]{43}$/, 'must be a key id (43 base64url characters)') }),
      responses: { 200: 'crl' },
      errors: ['ERR_NOT_FOUND'],
      handle: async ({ params }) => crlReply(await authority.crl(deps.now(), params.kid)),
    }),
    route({
      method: 'get',
      path: '/v1/roots/:fingerprint',
      operationId: 'rootByFingerprint',
      summary: 'The published root CA with this SHA-256 fingerprint, PEM (for pinning clients)',
      tag: 'public',
      access: 'public',
      params: z.object({ fingerprint: z.string().regex(/^[0-9a-fA-F]{64}$/, 'must be 64 hex digits') }),
      responses: { 200: 'pem' },
      errors: ['ERR_NOT_FOUND'],
      handle: async ({ params }) => {
        const root = authority.root(params.fingerprint.toLowerCase());
        if (root === undefined) throw new AttestorError('ERR_NOT_FOUND', 'no root CA with this fingerprint');
        return { status: 200, body: root, contentType: 'application/x-pem-file' };
      },
    }),
    route({
      method: 'get',
      path: '/healthz',
      operationId: 'health',
      summary: 'The process is up',
      tag: 'public',
      access: 'public',
      responses: { 200: 'text' },
      handle: async () => ({ status: 200, body: 'ok\n', contentType: 'text/plain' }),
    }),
    route({
      method: 'get',
      path: '/readyz',
      operationId: 'ready',
      summary: 'The database answers and the active issuing keys are loaded and their token answers: ready for traffic',
      tag: 'public',
      access: 'public',
      responses: { 200: 'text', 503: 'text' },
      handle: async () => {
        try {
          await deps.store.ping();
        } catch {
          return { status: 503, body: 'the database does not answer\n', contentType: 'text/plain' };
        }
        if (deps.authority.unavailable() !== null) return { status: 503, body: 'the active issuing keys cannot be loaded\n', contentType: 'text/plain' };
        try {
          await deps.authority.checkKeys();
        } catch {
          return { status: 503, body: 'the issuing keys cannot sign: their token does not answer\n', contentType: 'text/plain' };
        }
        return { status: 200, body: 'ready\n', contentType: 'text/plain' };
      },
    }),
    route({
      method: 'get',
      path: '/metrics',
      operationId: 'metrics',
      summary: 'Prometheus metrics',
      tag: 'public',
      access: 'public',
      responses: { 200: 'text' },
      handle: async () => ({ status: 200, body: await deps.metrics.registry.metrics(), contentType: deps.metrics.registry.contentType }),
    }),
    json('/v1/openapi.json', 'openapi', 'This API, OpenAPI 3.1', deps.openapi),
  ];
}
