import { createLocalJWKSet, jwtVerify, type JSONWebKeySet } from 'jose';
import type { Store } from '../../store/store.js';

/*
 * RFC 7662 token introspection for relying parties: a JWT-SVID is active while its signature
 * verifies under the verifier's JWT keys, it has not expired, its credential record is not
 * revoked and its agent is active and not stale (src/server/freshness-watchdog.ts). Anything else, unknown tokens included, is `{"active":
 * false}` and nothing more (RFC 7662 §2.2: no reason is given).
 */

export interface Introspection {
  readonly active: boolean;
  readonly iss?: string;
  readonly sub?: string;
  readonly aud?: string;
  readonly iat?: number;
  readonly exp?: number;
  readonly jti?: string;
  readonly cnf?: { readonly 'x5t#S256': string };
}

const INACTIVE: Introspection = { active: false };

export function createIntrospection(deps: { store: Store; jwks: () => JSONWebKeySet; issuer: string; now: () => number }) {
  // Every published JWT key (prepared, active, old), made again when a rotation changed the set.
  let published: { jwks: JSONWebKeySet; keys: ReturnType<typeof createLocalJWKSet> } | undefined;
  const keysNow = () => {
    const jwks = deps.jwks();
    if (published?.jwks !== jwks) published = { jwks, keys: createLocalJWKSet(jwks) };
    return published.keys;
  };
  return async (token: string): Promise<Introspection> => {
    const now = deps.now();
    let payload;
    try {
      ({ payload } = await jwtVerify(token, keysNow(), { issuer: deps.issuer, algorithms: ['ES256'], typ: 'JWT', currentDate: new Date(now) }));
    } catch {
      return INACTIVE;
    }
    if (typeof payload.jti !== 'string' || typeof payload.sub !== 'string' || typeof payload.aud !== 'string') return INACTIVE;
    const credential = await deps.store.attestations.credential(payload.jti);
    if (!credential || credential.kind !== 'jwt-svid' || credential.revoked || credential.expiresAt <= now) return INACTIVE;
    const agent = await deps.store.agents.get(credential.agentId);
    if (!agent || agent.status !== 'active' || agent.staleAt !== null) return INACTIVE;
    const cnf = payload.cnf as { 'x5t#S256'?: unknown } | undefined;
    return {
      active: true,
      iss: deps.issuer,
      sub: payload.sub,
      aud: payload.aud,
      ...(typeof payload.iat === 'number' && { iat: payload.iat }),
      ...(typeof payload.exp === 'number' && { exp: payload.exp }),
      jti: payload.jti,
      ...(typeof cnf?.['x5t#S256'] === 'string' && { cnf: { 'x5t#S256': cnf['x5t#S256'] } }),
    };
  };
}
