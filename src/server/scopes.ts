import type { Role } from '../store/store.js';

/*
 * Operator access (SERVICE.md "Identities"): each role maps to `resource:action` scopes in this
 * one table, and every operator route names the one scope it needs (src/server/routes.ts).
 */

export type Scope =
  | 'baselines:read'
  | 'baselines:write'
  | 'agents:read'
  | 'agents:write'
  | 'keys:read'
  | 'keys:write'
  | 'tokens:write'
  | 'tokens:read'
  | 'audit:read'
  | 'audit:verify'
  | 'introspect';

const ALL: readonly Scope[] = [
  'baselines:read',
  'baselines:write',
  'agents:read',
  'agents:write',
  'keys:read',
  'keys:write',
  'tokens:write',
  'tokens:read',
  'audit:read',
  'audit:verify',
  'introspect',
];

export const ROLE_SCOPES: Readonly<Record<Role, ReadonlySet<Scope>>> = {
  admin: new Set(ALL),
  operator: new Set<Scope>(['baselines:read', 'baselines:write', 'agents:read', 'agents:write', 'keys:read', 'audit:read']),
  auditor: new Set<Scope>(['baselines:read', 'agents:read', 'keys:read', 'audit:read', 'audit:verify', 'tokens:read']),
  'relying-party': new Set<Scope>(['introspect']),
};

export function roleHas(role: Role, scope: Scope): boolean {
  return ROLE_SCOPES[role].has(scope);
}
