import { randomBytes, randomUUID } from 'node:crypto';
import { z } from 'zod';
import { captureBaseline, type CapturedEvidence } from '../../baseline/capture.js';
import { parseBaselineDocument } from '../../baseline/document.js';
import { AttestorError } from '../../errors.js';
import type { Agent, Baseline, Credential, Json, OperatorToken, Store, Verdict } from '../../store/store.js';
import {
  AGENT_ID,
  AgentBody,
  AgentDetailBody,
  BASELINE_STATUS,
  BaselineBody,
  BaselineCaptureRequest,
  BaselineCreateRequest,
  TokenBody,
  TokenCreateRequest,
  TokenCreateResponse,
  UUID,
  pageOf,
} from '../../wire/schemas.js';
import { tokenHash } from '../auth.js';
import { route, type Route } from '../route.js';
import { spiffeIdOf } from '../spiffe.js';

/** Operator routes (SERVICE.md): each names the one scope it needs. JSON only. */
export function operatorRoutes(deps: { store: Store; trustDomain: string; now: () => number }): Route[] {
  const { store } = deps;
  const actor = (t: OperatorToken | null) => `token:${t?.id ?? 'unknown'}`;
  const page = z.object({
    limit: z.coerce.number().int().min(1).max(500).default(100),
    after: z.string().max(256).optional(),
  });
  const getBaseline = async (id: string): Promise<Baseline> => {
    const b = await store.baselines.get(id);
    if (!b) throw new AttestorError('ERR_BASELINE_NOT_FOUND', 'no baseline with this id');
    return b;
  };
  const getAgent = async (id: string): Promise<Agent> => {
    const a = await store.agents.get(id);
    if (!a) throw new AttestorError('ERR_AGENT_NOT_FOUND', 'no enrolled agent with this id');
    return a;
  };
  const agentView = async (a: Agent) => ({
    id: a.id,
    spiffeId: spiffeIdOf(deps.trustDomain, a.id),
    status: a.status,
    labels: { ...a.labels },
    createdAt: iso(a.createdAt),
    lastAttestedAt: a.lastAttestedAt === null ? null : iso(a.lastAttestedAt),
    lastAffirmedAt: a.lastAffirmedAt === null ? null : iso(a.lastAffirmedAt),
    staleSince: a.staleAt === null ? null : iso(a.staleAt),
    lastVerdict: a.lastVerdictId === null ? null : verdictView(await store.attestations.verdict(a.lastVerdictId)),
  });
  const setStatus = (status: 'enforced' | 'retired') =>
    route({
      method: 'post',
      path: `/v1/baselines/:id/${status === 'enforced' ? 'enforce' : 'retire'}`,
      operationId: status === 'enforced' ? 'enforceBaseline' : 'retireBaseline',
      summary: status === 'enforced' ? 'Enforce a staged baseline (retires the enforced one of the same name)' : 'Retire a baseline',
      tag: 'operator',
      access: 'baselines:write',
      params: z.object({ id: UUID }),
      responses: { 200: BaselineBody },
      errors: ['ERR_BASELINE_NOT_FOUND', 'ERR_BASELINE_STATE'],
      handle: async ({ params, token }) => {
        const b = await store.baselines.setStatus(params.id, status, deps.now(), {
          actor: actor(token),
          action: status === 'enforced' ? 'baseline.enforce' : 'baseline.retire',
          subject: params.id,
          details: {},
        });
        return { status: 200, body: baselineView(b) };
      },
    });
  const createBaseline = async (name: string, document: unknown, token: OperatorToken | null, action: string, details: { [k: string]: Json }) => {
    // Validated before it is stored, and stored normalized: what is enforced is what was checked.
    const normalized = JSON.parse(JSON.stringify(parseBaselineDocument(document))) as Json;
    const b = await store.baselines.create(
      { id: randomUUID(), name, status: 'staged', document: normalized, createdAt: deps.now(), createdBy: actor(token) },
      { actor: actor(token), action, subject: name, details },
    );
    return { status: 201, body: baselineView(b) };
  };

  return [
    route({
      method: 'post',
      path: '/v1/baselines',
      operationId: 'createBaseline',
      summary: 'Add a baseline (staged); a new version when the name exists',
      tag: 'operator',
      access: 'baselines:write',
      body: BaselineCreateRequest,
      responses: { 201: BaselineBody },
      errors: ['ERR_BASELINE_INVALID'],
      handle: ({ body, token }) => createBaseline(body.name, body.document, token, 'baseline.create', {}),
    }),
    route({
      method: 'get',
      path: '/v1/baselines',
      operationId: 'listBaselines',
      summary: 'List baselines, newest first',
      tag: 'operator',
      access: 'baselines:read',
      query: page.extend({ status: BASELINE_STATUS.optional() }),
      responses: { 200: pageOf(BaselineBody) },
      handle: async ({ query }) => {
        const p = await store.baselines.list({ limit: query.limit, ...(query.after ? { after: query.after } : {}), ...(query.status ? { status: query.status } : {}) });
        return { status: 200, body: { items: p.items.map(baselineView), next: p.next } };
      },
    }),
    route({
      method: 'post',
      path: '/v1/baselines/capture',
      operationId: 'captureBaseline',
      summary: "A staged baseline from an agent's last authentic evidence",
      tag: 'operator',
      access: 'baselines:write',
      body: BaselineCaptureRequest,
      responses: { 201: BaselineBody },
      errors: ['ERR_AGENT_NOT_FOUND', 'ERR_NO_EVIDENCE'],
      handle: async ({ body, token }) => {
        const agent = await getAgent(body.agentId);
        if (agent.lastEvidence === null) {
          throw new AttestorError('ERR_NO_EVIDENCE', 'the agent has not attested yet: there is no verified evidence to capture');
        }
        const document = captureBaseline(agent.lastEvidence as unknown as CapturedEvidence, {
          ...(body.audiences ? { audiences: body.audiences } : {}),
          ...(body.selector ? { selector: body.selector } : {}),
        });
        const name = body.name ?? `captured-${agent.id.slice(0, 12)}`;
        return createBaseline(name, document, token, 'baseline.capture', { agentId: agent.id });
      },
    }),
    route({
      method: 'get',
      path: '/v1/baselines/:id',
      operationId: 'getBaseline',
      summary: 'One baseline',
      tag: 'operator',
      access: 'baselines:read',
      params: z.object({ id: UUID }),
      responses: { 200: BaselineBody },
      errors: ['ERR_BASELINE_NOT_FOUND'],
      handle: async ({ params }) => ({ status: 200, body: baselineView(await getBaseline(params.id)) }),
    }),
    setStatus('enforced'),
    setStatus('retired'),
    route({
      method: 'get',
      path: '/v1/agents',
      operationId: 'listAgents',
      summary: 'List enrolled agents',
      tag: 'operator',
      access: 'agents:read',
      query: page,
      responses: { 200: pageOf(AgentBody) },
      handle: async ({ query }) => {
        const p = await store.agents.list({ limit: query.limit, ...(query.after ? { after: query.after } : {}) });
        return { status: 200, body: { items: await Promise.all(p.items.map(agentView)), next: p.next } };
      },
    }),
    route({
      method: 'get',
      path: '/v1/agents/:id',
      operationId: 'getAgent',
      summary: 'One agent: status, last verdict with its reasons, credentials issued',
      tag: 'operator',
      access: 'agents:read',
      params: z.object({ id: AGENT_ID }),
      responses: { 200: AgentDetailBody },
      errors: ['ERR_AGENT_NOT_FOUND'],
      handle: async ({ params }) => {
        const agent = await getAgent(params.id);
        const credentials = await store.attestations.credentialsOf(agent.id, { limit: 50 });
        return { status: 200, body: { ...(await agentView(agent)), credentials: credentials.items.map(credentialView) } };
      },
    }),
    ...(['quarantine', 'release', 'revoke'] as const).map((action) =>
      route({
        method: 'post',
        path: `/v1/agents/:id/${action}`,
        operationId: `${action}Agent`,
        summary: AGENT_ACTIONS[action].summary,
        tag: 'operator',
        access: 'agents:write',
        params: z.object({ id: AGENT_ID }),
        responses: { 200: AgentBody },
        errors: ['ERR_AGENT_NOT_FOUND', 'ERR_AGENT_NOT_ACTIVE'],
        handle: async ({ params, token }) => {
          const agent = await store.agents.setStatus(params.id, AGENT_ACTIONS[action].status, deps.now(), {
            actor: actor(token),
            action: `agent.${action}`,
            subject: params.id,
            details: {},
          });
          return { status: 200, body: await agentView(agent) };
        },
      }),
    ),
    route({
      method: 'get',
      path: '/v1/tokens',
      operationId: 'listTokens',
      summary: 'List operator tokens (ids, roles, labels; never the tokens)',
      tag: 'operator',
      access: 'tokens:read',
      responses: { 200: z.strictObject({ items: z.array(TokenBody) }) },
      handle: async () => ({ status: 200, body: { items: (await store.tokens.list()).map(tokenView) } }),
    }),
    route({
      method: 'post',
      path: '/v1/tokens/:id/revoke',
      operationId: 'revokeToken',
      summary: 'Revoke an operator token: refused from then on',
      tag: 'operator',
      access: 'tokens:write',
      params: z.object({ id: UUID }),
      responses: { 200: TokenBody },
      errors: ['ERR_NOT_FOUND'],
      handle: async ({ params, token }) => {
        const revoked = await store.tokens.revoke(params.id, deps.now(), { actor: actor(token), action: 'token.revoke', subject: params.id, details: {} });
        return { status: 200, body: tokenView(revoked) };
      },
    }),
    route({
      method: 'post',
      path: '/v1/tokens',
      operationId: 'createToken',
      summary: 'Create an operator token (shown once)',
      tag: 'operator',
      access: 'tokens:write',
      body: TokenCreateRequest,
      responses: { 201: TokenCreateResponse },
      handle: async ({ body, token }) => {
        const created = await createToken(store, body.role, body.label ?? '', actor(token), deps.now());
        return { status: 201, body: created };
      },
    }),
  ];
}

/** What each operator action on an agent makes of it (SERVICE.md "Revocation"). */
const AGENT_ACTIONS = {
  quarantine: { status: 'quarantined', summary: 'Quarantine an agent: no new credentials, its unexpired ones revoked, until released' },
  release: { status: 'active', summary: 'Release a quarantined agent: it may attest again' },
  revoke: { status: 'revoked', summary: 'Revoke an agent for good: no new credentials, its unexpired ones revoked' },
} as const;

/** Creates an operator token: 256 random bits, stored as its SHA-256 only. */
export async function createToken(store: Store, role: OperatorToken['role'], label: string, actor: string, now: number) {
  const token = randomBytes(32).toString('base64url');
  const record: OperatorToken = { id: randomUUID(), hash: tokenHash(token), role, label, createdAt: now, revokedAt: null };
  await store.tokens.create(record, { actor, action: 'token.create', subject: record.id, details: { role, label } });
  return { id: record.id, role, label, token, createdAt: iso(now) };
}

export function tokenView(t: OperatorToken) {
  return { id: t.id, role: t.role, label: t.label, createdAt: iso(t.createdAt), revokedAt: t.revokedAt === null ? null : iso(t.revokedAt) };
}

function iso(ms: number): string {
  return new Date(ms).toISOString();
}

function baselineView(b: Baseline): z.input<typeof BaselineBody> {
  return {
    id: b.id,
    name: b.name,
    version: b.version,
    status: b.status,
    document: b.document as Record<string, unknown>,
    createdAt: iso(b.createdAt),
    createdBy: b.createdBy,
    enforcedAt: b.enforcedAt === null ? null : iso(b.enforcedAt),
    retiredAt: b.retiredAt === null ? null : iso(b.retiredAt),
  };
}

function verdictView(v: Verdict | null) {
  if (!v) return null;
  return {
    id: v.id,
    status: v.status,
    reasons: v.reasons as never,
    baseline: v.baselineId === null ? null : { id: v.baselineId, version: v.baselineVersion ?? 0 },
    at: iso(v.at),
  };
}

function credentialView(c: Credential) {
  return { id: c.id, kind: c.kind, issuedAt: iso(c.issuedAt), expiresAt: iso(c.expiresAt), revoked: c.revoked };
}
