/**
 * The authorization matrix, built from the verifier's own route list: every route x {no
 * token, an unknown token, a revoked token, each role}. What each role may call is written
 * here from SERVICE.md ("Identities" and the route table), not from src/server/scopes.ts, so
 * a scope that drifts from the specification fails this test, and so does a route added
 * without an entry below. Refused calls answer 401 ERR_UNAUTHENTICATED or 403 ERR_FORBIDDEN
 * and change nothing (the audit head stays where it was).
 */
import { randomBytes, randomUUID } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { bootstrapCa, createApiClient } from '../../src/client/api-client.js';
import { TokenBody, TokenCreateResponse } from '../../src/wire/schemas.js';
import { startTestVerifier, type TestVerifier } from '../helpers/verifier.js';
import { send, type RawRequest } from './harness.js';

type Role = 'admin' | 'operator' | 'auditor' | 'relying-party';
const ROLES: readonly Role[] = ['admin', 'operator', 'auditor', 'relying-party'];

/** Anyone, whatever token (or none) they send: public documents, and agent routes (the TPM evidence authenticates). */
const ANYONE = 'anyone';

/*
 * SERVICE.md: "admin (everything), operator (baselines, agents, keys), auditor (read-only,
 * audit verify), relying-party (introspection only)"; the route table names keys and tokens
 * as the admin's, so rotating keys and managing tokens is the admin's alone.
 * One documented addition (docs/api.md, docs/cli.md): operators read the audit chain too.
 */
const READERS: readonly Role[] = ['admin', 'operator', 'auditor'];
const WRITERS: readonly Role[] = ['admin', 'operator'];
const AUDIT_READERS: readonly Role[] = ['admin', 'operator', 'auditor'];

const EXPECTED: Readonly<Record<string, typeof ANYONE | readonly Role[]>> = {
  'POST /v1/enrollments': ANYONE,
  'POST /v1/enrollments/:id/activation': ANYONE,
  'POST /v1/agents/:id/challenges': ANYONE,
  'POST /v1/agents/:id/attestations': ANYONE,
  'GET /.well-known/openid-configuration': ANYONE,
  'GET /.well-known/jwks.json': ANYONE,
  'GET /v1/bundle': ANYONE,
  'GET /v1/ca.pem': ANYONE,
  'GET /v1/crl': ANYONE,
  'GET /v1/crl/:kid': ANYONE,
  'GET /v1/roots/:fingerprint': ANYONE,
  'GET /healthz': ANYONE,
  'GET /readyz': ANYONE,
  'GET /metrics': ANYONE,
  'GET /v1/openapi.json': ANYONE,
  'GET /v1/baselines': READERS,
  'GET /v1/baselines/:id': READERS,
  'POST /v1/baselines': WRITERS,
  'POST /v1/baselines/capture': WRITERS,
  'POST /v1/baselines/:id/enforce': WRITERS,
  'POST /v1/baselines/:id/retire': WRITERS,
  'GET /v1/agents': READERS,
  'GET /v1/agents/:id': READERS,
  'POST /v1/agents/:id/revoke': WRITERS,
  'POST /v1/agents/:id/quarantine': WRITERS,
  'POST /v1/agents/:id/release': WRITERS,
  'GET /v1/keys': READERS,
  'POST /v1/keys/rotate': ['admin'],
  'GET /v1/audit': AUDIT_READERS,
  'GET /v1/audit/checkpoints': AUDIT_READERS,
  'GET /v1/audit/verify': ['admin', 'auditor'],
  'GET /v1/tokens': ['admin', 'auditor'],
  'POST /v1/tokens': ['admin'],
  'POST /v1/tokens/:id/revoke': ['admin'],
  'POST /v1/introspect': ['admin', 'relying-party'],
};

let v: TestVerifier;
let caPem: string;
const tokens: Partial<Record<Role | 'revoked', string>> = {};

beforeAll(async () => {
  v = await startTestVerifier({ store: 'sqlite' });
  caPem = await bootstrapCa(v.url, v.caFingerprint);
  const admin = createApiClient({ server: v.url, caPem, token: v.adminToken });
  try {
    tokens.admin = v.adminToken;
    for (const role of ['operator', 'auditor', 'relying-party'] as const) {
      tokens[role] = (await admin.call('POST', '/v1/tokens', TokenCreateResponse, { role, label: `matrix ${role}` })).token;
    }
    const revoked = await admin.call('POST', '/v1/tokens', TokenCreateResponse, { role: 'admin', label: 'matrix revoked' });
    await admin.call('POST', `/v1/tokens/${revoked.id}/revoke`, TokenBody, {});
    tokens.revoked = revoked.token;
  } finally {
    admin.close();
  }
}, 60_000);

afterAll(async () => {
  await v?.stop();
});

const keyOf = (r: { method: string; path: string }) => `${r.method.toUpperCase()} ${r.path}`;

/** The route called with parameters of the right shape for nothing that exists, and an empty body. */
function requestFor(r: { method: string; path: string; form?: boolean }, token: string | undefined): RawRequest {
  const path = r.path
    .replace(':kid', 'A'.repeat(43))
    .replace(':fingerprint', '0'.repeat(64))
    .replace(':id', r.path.startsWith('/v1/agents/') ? '0'.repeat(64) : randomUUID());
  const body = r.method === 'post' ? (r.form ? { form: { token: 'not.a.jwt' } } : { body: {} }) : {};
  return { method: r.method, path, ...(token !== undefined && { token }), ...body };
}

describe('authorization matrix (every route of verifier.routes)', () => {
  it('every route has an entry, and every entry a route', () => {
    const routes = v.verifier.routes.map(keyOf).sort();
    expect(routes).toEqual(Object.keys(EXPECTED).sort());
  });

  it('no token, an unknown token and a revoked token: 401 ERR_UNAUTHENTICATED on every operator route, and nothing changes', async () => {
    const callers = { none: undefined, unknown: randomBytes(32).toString('base64url'), revoked: tokens.revoked! };
    for (const r of v.verifier.routes) {
      for (const [who, token] of Object.entries(callers)) {
        const before = await v.verifier.store.audit.head();
        const reply = await send(v, caPem, requestFor(r, token));
        if (EXPECTED[keyOf(r)] === ANYONE) {
          expect([401, 403], `${keyOf(r)} as ${who}`).not.toContain(reply.status);
          continue;
        }
        expect([reply.status, reply.code], `${keyOf(r)} as ${who}`).toEqual([401, 'ERR_UNAUTHENTICATED']);
        expect(await v.verifier.store.audit.head(), `${keyOf(r)} as ${who}`).toEqual(before);
      }
    }
  });

  it('each role: the routes SERVICE.md gives it pass the access check, every other operator route is 403 ERR_FORBIDDEN and changes nothing', async () => {
    for (const r of v.verifier.routes) {
      const expected = EXPECTED[keyOf(r)]!;
      for (const role of ROLES) {
        const before = await v.verifier.store.audit.head();
        const reply = await send(v, caPem, requestFor(r, tokens[role]));
        const label = `${keyOf(r)} as ${role}`;
        if (expected === ANYONE || expected.includes(role)) {
          // Past the access check: the call fails on its empty body or unknown id, or succeeds.
          expect([401, 403], label).not.toContain(reply.status);
          expect(reply.status, label).toBeLessThan(500);
        } else {
          expect([reply.status, reply.code], label).toEqual([403, 'ERR_FORBIDDEN']);
          expect(await v.verifier.store.audit.head(), label).toEqual(before);
        }
      }
    }
  });
});
