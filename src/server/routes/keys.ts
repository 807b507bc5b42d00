import type { IssuingKey, OperatorToken } from '../../store/store.js';
import { KeyList, KeyRotateRequest, type KeyBody } from '../../wire/schemas.js';
import { fingerprintOf, type KeyRing } from '../issuing-keys.js';
import type { KeyRotation } from '../key-rotation.js';
import { route, type Route } from '../route.js';

/** The issuing keys (SERVICE.md "Keys"): list them, rotate one. */
export function keyRoutes(deps: { ring: KeyRing; rotation: KeyRotation }): Route[] {
  return [
    route({
      method: 'get',
      path: '/v1/keys',
      operationId: 'listKeys',
      summary: 'The issuing keys: role, state (prepared, active, old), times, where they live (never a secret)',
      tag: 'operator',
      access: 'keys:read',
      responses: { 200: KeyList },
      handle: async () => {
        await deps.ring.refresh();
        return { status: 200, body: { items: deps.ring.keys().map(keyView) } };
      },
    }),
    route({
      method: 'post',
      path: '/v1/keys/rotate',
      operationId: 'rotateKey',
      summary: 'Prepare a new key, and activate it once it has been published for the activation delay (or at once with now: true)',
      tag: 'operator',
      access: 'keys:write',
      body: KeyRotateRequest,
      responses: { 200: KeyList },
      handle: async ({ body, token }) => {
        const keys = await deps.rotation.rotate(body.key, body.now ?? false, actor(token));
        return { status: 200, body: { items: keys.map(keyView) } };
      },
    }),
  ];
}

function actor(t: OperatorToken | null): string {
  return `token:${t?.id ?? 'unknown'}`;
}

function keyView(k: IssuingKey): KeyBody {
  const iso = (ms: number | null) => (ms === null ? null : new Date(ms).toISOString());
  return {
    kid: k.kid,
    role: k.name,
    state: k.state,
    uri: k.uri,
    createdAt: new Date(k.createdAt).toISOString(),
    activatedAt: iso(k.activatedAt),
    retiredAt: iso(k.retiredAt),
    notAfter: iso(k.notAfter),
    fingerprint: k.certificate === null ? null : fingerprintOf(k.certificate),
  };
}
