import { equalBytes } from '../bytes.js';
import { AttestorError } from '../errors.js';
import { appendAudit } from './audit.js';
import { bytes, bytesOrNull, int, intOrNull, json, jsonOrNull, jsonParam, text, textOrNull } from './columns.js';
import { pageLimit, toPage } from './page.js';
import { changes, row, rows, statements, type Body, type Clock, type Database, type Row } from './sql.js';
import type { Agent, AgentStatus, AgentStore, AttestingAgent, AuditInput, StoredClock } from './store.js';

const COLUMNS = 'id, ek_public, ak_public, ek_certificate, labels, status, created_at, last_clock, last_evidence, last_verdict_id, last_attested_at, last_affirmed_at, stale_at';

const SQL = statements('agents', {
  // No conflict target: a taken id and an EK enrolled under another id both leave the row out.
  insert: `INSERT INTO agents (id, ek_public, ak_public, ek_certificate, labels, status, created_at)
    VALUES ($1, $2, $3, $4, $5, 'active', $6) ON CONFLICT DO NOTHING RETURNING ${COLUMNS}`,
  lock: { forUpdate: `SELECT ${COLUMNS} FROM agents WHERE id = $1` },
  setStatus: `UPDATE agents SET status = $2 WHERE id = $1 RETURNING ${COLUMNS}`,
  // A quarantined or revoked agent's unexpired credentials go on the CRL and introspect inactive.
  revokeCredentials: `UPDATE credentials SET revoked = TRUE, revoked_at = $2 WHERE agent_id = $1 AND revoked = FALSE AND expires_at > $2`,
  // The outer conditions are checked again on each row once it is locked: on PostgreSQL a
  // replica marking at the same time, or an attestation that just made the agent fresh,
  // makes this statement skip the row instead of marking it twice or wrongly.
  markStale: `UPDATE agents SET stale_at = $2 WHERE id IN (
      SELECT id FROM agents WHERE status = 'active' AND stale_at IS NULL AND COALESCE(last_affirmed_at, created_at) < $1
      ORDER BY COALESCE(last_affirmed_at, created_at) LIMIT $3)
    AND status = 'active' AND stale_at IS NULL AND COALESCE(last_affirmed_at, created_at) < $1
    RETURNING id, COALESCE(last_affirmed_at, created_at) AS fresh_since`,
  get: `SELECT ${COLUMNS} FROM agents WHERE id = $1`,
  attesting: 'SELECT id, ak_public, labels, status, last_clock FROM agents WHERE id = $1',
  list: `SELECT ${COLUMNS} FROM agents WHERE id > $1 ORDER BY id LIMIT $2`,
  count: 'SELECT COUNT(*) AS n FROM agents',
});

type NewAgent = Parameters<AgentStore['activate']>[0];

function* activate(agent: NewAgent, audit: AuditInput, clock: Clock): Body<Agent> {
  const labels = jsonParam(agent.labels);
  const inserted = yield* row(SQL.insert, [agent.id, agent.ekPublic, agent.akPublic, agent.ekCertificate, labels, agent.createdAt]);
  let activated: Row | undefined = inserted;
  if (!inserted) {
    // Concurrent activations of one id wait here for the first to commit, then compare.
    const existing = yield* row(SQL.lock, [agent.id]);
    if (!existing) throw new AttestorError('ERR_ENROLLMENT_CONFLICT', `the EK of agent ${agent.id} is enrolled under another agent id`);
    if (!equalBytes(bytes(existing.ek_public), agent.ekPublic) || !equalBytes(bytes(existing.ak_public), agent.akPublic)) {
      throw new AttestorError('ERR_ENROLLMENT_CONFLICT', `agent ${agent.id} is enrolled with another EK or AK`);
    }
    // Labels choose the baseline: a host enrolling again must not relabel itself into a weaker one.
    activated = existing;
  }
  yield* appendAudit([audit], clock);
  return toAgent(activated!);
}

/** The status changes an operator may make: revoked is final. */
const TRANSITIONS: Readonly<Record<AgentStatus, readonly AgentStatus[]>> = {
  active: ['quarantined', 'revoked'],
  quarantined: ['active', 'revoked'],
  revoked: [],
};

function* setStatus(id: string, status: AgentStatus, now: number, audit: AuditInput, clock: Clock): Body<Agent> {
  const existing = yield* row(SQL.lock, [id]);
  if (!existing) throw new AttestorError('ERR_AGENT_NOT_FOUND', 'no enrolled agent with this id');
  const from = text(existing.status) as AgentStatus;
  if (from === status) return toAgent(existing);
  if (!TRANSITIONS[from].includes(status)) throw new AttestorError('ERR_AGENT_NOT_ACTIVE', `the agent is ${from}: it cannot become ${status}`);
  const updated = yield* changeStatus(id, status, now);
  yield* appendAudit([audit], clock);
  return toAgent(updated);
}

/**
 * Sets the status of the locked agent `id`, inside the caller's transaction; quarantining or
 * revoking also revokes its unexpired credentials.
 */
export function* changeStatus(id: string, status: AgentStatus, now: number): Body<Row> {
  const updated = yield* row(SQL.setStatus, [id, status]);
  if (status !== 'active') yield* changes(SQL.revokeCredentials, [id, now]);
  return updated!;
}

function* markStale(cutoff: number, now: number, limit: number, clock: Clock): Body<readonly string[]> {
  const marked = yield* rows(SQL.markStale, [cutoff, now, limit]);
  yield* appendAudit(
    marked.map((r) => ({
      actor: 'system',
      action: 'agent.stale',
      subject: text(r.id),
      // What the agent was last vouched for at (its last credentials, or its activation).
      details: { lastAffirmedAt: new Date(int(r.fresh_since)).toISOString() },
    })),
    clock,
  );
  return marked.map((r) => text(r.id));
}

export function createAgentStore(db: Database, clock: Clock): AgentStore {
  return {
    activate: (agent, audit) => db.transaction('agents.activate', activate(agent, audit, clock)),
    setStatus: (id, status, now, audit) => db.transaction('agents.setStatus', setStatus(id, status, now, audit, clock)),
    markStale: (cutoff, now, limit) => db.transaction('agents.markStale', markStale(cutoff, now, limit, clock)),
    async get(id) {
      const found = await db.row(SQL.get, [id]);
      return found ? toAgent(found) : null;
    },
    async attesting(id): Promise<AttestingAgent | null> {
      const r = await db.row(SQL.attesting, [id]);
      if (!r) return null;
      return { id: text(r.id), akPublic: bytes(r.ak_public), labels: json<Agent['labels']>(r.labels), status: text(r.status) as AgentStatus, lastClock: jsonOrNull<StoredClock>(r.last_clock) };
    },
    async list(page) {
      const limit = pageLimit(page);
      const found = await db.rows(SQL.list, [page.after ?? '', limit + 1]);
      return toPage(found.map(toAgent), limit, (agent) => agent.id);
    },
    async count() {
      return int((await db.row(SQL.count, []))!.n);
    },
  };
}

function toAgent(r: Row): Agent {
  return {
    id: text(r.id),
    ekPublic: bytes(r.ek_public),
    akPublic: bytes(r.ak_public),
    ekCertificate: bytesOrNull(r.ek_certificate),
    labels: json<Agent['labels']>(r.labels),
    status: text(r.status) as AgentStatus,
    createdAt: int(r.created_at),
    lastClock: jsonOrNull<StoredClock>(r.last_clock),
    lastEvidence: jsonOrNull(r.last_evidence),
    lastVerdictId: textOrNull(r.last_verdict_id),
    lastAttestedAt: intOrNull(r.last_attested_at),
    lastAffirmedAt: intOrNull(r.last_affirmed_at),
    staleAt: intOrNull(r.stale_at),
  };
}
