import { z } from 'zod';
import { verifyStoredChain, type StoredChainVerification } from '../../audit/verify-stored-chain.js';
import type { AuditCheckpoint, AuditEntry, Page, PageRequest, Store } from '../../store/store.js';
import { AuditCheckpointBody, AuditEntryBody, AuditVerificationBody, pageOf } from '../../wire/schemas.js';
import { route, type Route } from '../route.js';

/** The audit routes (SERVICE.md "Audit chain"): the chain and its checkpoints to read, and its verification. */
export function auditRoutes(deps: { store: Store }): Route[] {
  const { store } = deps;
  const page = z.object({
    limit: z.coerce.number().int().min(1).max(1000).default(100),
    after: z.string().max(20).optional(),
  });
  /** A list by seq: `list` pages the store, `view` makes each item its wire form. */
  const bySeq = <T>(r: { path: string; operationId: string; summary: string; item: z.ZodType; list: (p: PageRequest) => Promise<Page<T>>; view: (item: T) => unknown }) =>
    route({
      method: 'get',
      path: r.path,
      operationId: r.operationId,
      summary: r.summary,
      tag: 'operator',
      access: 'audit:read',
      query: page,
      responses: { 200: pageOf(r.item) },
      handle: async ({ query }) => {
        const p = await r.list({ limit: query.limit, ...(query.after ? { after: query.after } : {}) });
        return { status: 200, body: { items: p.items.map(r.view), next: p.next } };
      },
    });
  // A walk of the whole chain is long: requests during one share it rather than start more.
  let walking: Promise<StoredChainVerification> | undefined;
  const verifyOnce = () => (walking ??= verifyStoredChain(store).finally(() => (walking = undefined)));
  return [
    bySeq({
      path: '/v1/audit',
      operationId: 'listAudit',
      summary: 'The audit chain, oldest first; the cursor is a seq',
      item: AuditEntryBody,
      list: (p) => store.audit.list(p),
      view: auditEntryView,
    }),
    bySeq({
      path: '/v1/audit/checkpoints',
      operationId: 'listAuditCheckpoints',
      summary: "The audit key's signed checkpoints of the chain, by seq",
      item: AuditCheckpointBody,
      list: (p) => store.audit.checkpoints(p),
      view: checkpointView,
    }),
    route({
      method: 'get',
      path: '/v1/audit/verify',
      operationId: 'verifyAudit',
      summary: 'Verify the whole chain and its checkpoints: intact, or the first edited, deleted, inserted or reordered entry',
      tag: 'operator',
      access: 'audit:verify',
      responses: { 200: AuditVerificationBody },
      handle: async () => ({ status: 200, body: auditVerificationView(await verifyOnce()) }),
    }),
  ];
}

export function auditEntryView(e: AuditEntry): AuditEntryBody {
  return { seq: e.seq, at: iso(e.at), actor: e.actor, action: e.action, subject: e.subject, details: e.details, prevHash: e.prevHash, hash: e.hash };
}

function checkpointView(c: AuditCheckpoint): z.input<typeof AuditCheckpointBody> {
  return { seq: c.seq, hash: c.hash, at: iso(c.at), kid: c.kid, signature: Buffer.from(c.signature).toString('base64url') };
}

/** The verification as the route answers it and `attestor audit verify --json` prints it. */
export function auditVerificationView({ verdict, checkpointsStored }: StoredChainVerification): AuditVerificationBody {
  const last = verdict.lastCheckpoint;
  const checkpoints = { stored: checkpointsStored, verified: verdict.checkpoints, last: last && { seq: last.seq, at: iso(last.at), kid: last.kid } };
  if (verdict.ok) return { ok: true, entries: verdict.entries, head: { ...verdict.head }, checkpoints, uncheckpointed: verdict.uncheckpointed };
  return { ok: false, entries: verdict.entries, checkpoints, problem: { ...verdict.problem } };
}

function iso(ms: number): string {
  return new Date(ms).toISOString();
}
