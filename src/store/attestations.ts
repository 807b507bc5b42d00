import { AgentNotActiveError, AttestorError } from '../errors.js';
import { changeStatus } from './agents.js';
import { appendAudit } from './audit.js';
import { bool, int, intOrNull, json, jsonOrNull, jsonParam, text, textOrNull } from './columns.js';
import { pageLimit, toPage } from './page.js';
import { changes, insertRows, multiRowInserts, row, statements, type Body, type Clock, type Database, type Row } from './sql.js';
import type { AgentStatus, AttestationRecord, AttestationStore, Credential, CredentialKind, ImaProgress, StoredClock, Verdict, VerdictStatus } from './store.js';

const VERDICT_COLUMNS = 'id, agent_id, at, status, baseline_id, baseline_version, reasons, claims';
const CREDENTIAL_COLUMN_LIST = ['id', 'kind', 'agent_id', 'verdict_id', 'issued_at', 'expires_at', 'certificate_sha256', 'revoked', 'issuer_kid'];
const CREDENTIAL_COLUMNS = CREDENTIAL_COLUMN_LIST.join(', ');

const SQL = statements('attestations', {
  // The status check and the row lock in one statement: an agent revoked by a transaction that
  // committed first is seen here, and one revoked later waits for this commit. A null clock or
  // evidence (the quote did not verify) keeps the last authentic one: erasing the clock would
  // switch off the rollback check of the next quote.
  // Credentials issued ($6) make the agent fresh: the freshness watchdog measures from here.
  updateAgent: `UPDATE agents SET last_clock = COALESCE($2, last_clock), last_evidence = COALESCE($3, last_evidence),
    last_verdict_id = $4, last_attested_at = $5,
    last_affirmed_at = CASE WHEN $6 THEN $5 ELSE last_affirmed_at END, stale_at = CASE WHEN $6 THEN NULL ELSE stale_at END
    WHERE id = $1 AND status = 'active' RETURNING id`,
  agentStatus: 'SELECT status FROM agents WHERE id = $1',
  lastClock: { forUpdate: 'SELECT last_clock, stale_at, last_attested_at FROM agents WHERE id = $1' },
  insertVerdict: `INSERT INTO verdicts (${VERDICT_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)`,
  saveIma: `INSERT INTO ima_progress (agent_id, reset_count, state) VALUES ($1, $2, $3)
    ON CONFLICT (agent_id) DO UPDATE SET reset_count = excluded.reset_count, state = excluded.state`,
  ima: 'SELECT agent_id, reset_count, state FROM ima_progress WHERE agent_id = $1',
  verdict: `SELECT ${VERDICT_COLUMNS} FROM verdicts WHERE id = $1`,
  // Newest first; the cursor is the id of the last credential of the page.
  credentialsOf: `SELECT ${CREDENTIAL_COLUMNS} FROM credentials
    WHERE agent_id = $1 AND (CAST($2 AS TEXT) IS NULL OR (issued_at, id) < (SELECT issued_at, id FROM credentials WHERE id = $2))
    ORDER BY issued_at DESC, id DESC LIMIT $3`,
  countCredentials: 'SELECT COUNT(*) AS n FROM credentials',
  credential: `SELECT ${CREDENTIAL_COLUMNS} FROM credentials WHERE id = $1`,
  revokedCertificates: `SELECT id, revoked_at FROM credentials
    WHERE revoked = TRUE AND expires_at > $1 AND kind = 'x509-svid' AND issuer_kid = $2 ORDER BY revoked_at, id`,
});
const INSERT_CREDENTIALS = multiRowInserts('attestations', 'insertCredential', 'credentials', CREDENTIAL_COLUMN_LIST);

function* record(r: AttestationRecord, clock: Clock): Body<void> {
  const v = r.verdict;
  // Two attestations of one agent may commit in either order: the stored clock only moves forward.
  const stored = yield* row(SQL.lastClock, [v.agentId]);
  const last = stored ? jsonOrNull<StoredClock>(stored.last_clock) : null;
  const newClock = r.clock && (!last || !isBefore(r.clock, last)) ? r.clock : null;
  const issued = r.credentials.length > 0;
  const updated = yield* row(SQL.updateAgent, [v.agentId, newClock && jsonParam(newClock), r.evidence === null ? null : jsonParam(r.evidence), v.id, v.at, issued]);
  if (!updated) {
    const agent = yield* row(SQL.agentStatus, [v.agentId]);
    if (!agent) throw new AttestorError('ERR_AGENT_NOT_FOUND', `no agent ${v.agentId}`);
    const status = text(agent.status) as Exclude<AgentStatus, 'active'>;
    throw new AgentNotActiveError(status, `agent ${v.agentId} is ${status}`);
  }
  yield* changes(SQL.insertVerdict, [v.id, v.agentId, v.at, v.status, v.baselineId, v.baselineVersion, jsonParam(v.reasons), jsonParam(v.claims)]);
  yield* insertRows(
    INSERT_CREDENTIALS,
    r.credentials.map((c) => [c.id, c.kind, c.agentId, c.verdictId, c.issuedAt, c.expiresAt, c.certificateSha256, c.revoked, c.issuerKid]),
  );
  if (r.ima) yield* changes(SQL.saveIma, [r.ima.agentId, r.ima.resetCount, jsonParam(r.ima.state)]);
  const audit = [...r.audit];
  const staleAt = stored ? intOrNull(stored.stale_at) : null;
  if (issued && staleAt !== null) {
    audit.push({ actor: 'system', action: 'agent.fresh', subject: v.agentId, details: { staleSince: new Date(staleAt).toISOString() } });
  }
  const lastAttestedAt = stored ? intOrNull(stored.last_attested_at) : null;
  if (r.quarantine && (lastAttestedAt === null || lastAttestedAt < r.quarantine.challengedAt)) {
    yield* changeStatus(v.agentId, 'quarantined', v.at);
    audit.push(r.quarantine.audit);
  }
  yield* appendAudit(audit, clock);
}

/**
 * Whether `next` is a TPM clock reading from before `last`: an earlier reset, or the same reset
 * and an earlier clock. resetCount is compared modulo 2^32, as src/appraisal/quote-progress.ts
 * does (an AK outside the endorsement hierarchy sees it obfuscated by an offset).
 */
function isBefore(next: StoredClock, last: StoredClock): boolean {
  const resets = (next.resetCount - last.resetCount) >>> 0;
  if (resets >= 0x80000000) return true;
  return resets === 0 && BigInt(next.clock) < BigInt(last.clock);
}

export function createAttestationStore(db: Database, clock: Clock): AttestationStore {
  return {
    record: (r) => db.transaction('attestations.record', record(r, clock)),
    async imaProgress(agentId) {
      const found = await db.row(SQL.ima, [agentId]);
      return found ? toImaProgress(found) : null;
    },
    async verdict(id) {
      const found = await db.row(SQL.verdict, [id]);
      return found ? toVerdict(found) : null;
    },
    async credentialsOf(agentId, page) {
      const limit = pageLimit(page);
      const found = await db.rows(SQL.credentialsOf, [agentId, page.after ?? null, limit + 1]);
      return toPage(found.map(toCredential), limit, (c) => c.id);
    },
    async countCredentials() {
      return int((await db.row(SQL.countCredentials, []))!.n);
    },
    async credential(id) {
      const found = await db.row(SQL.credential, [id]);
      return found ? toCredential(found) : null;
    },
    async revokedCertificates(now, caKid) {
      return (await db.rows(SQL.revokedCertificates, [now, caKid])).map((r) => ({ serial: text(r.id), revokedAt: int(r.revoked_at) }));
    },
  };
}

function toVerdict(r: Row): Verdict {
  return {
    id: text(r.id),
    agentId: text(r.agent_id),
    at: int(r.at),
    status: text(r.status) as VerdictStatus,
    baselineId: textOrNull(r.baseline_id),
    baselineVersion: intOrNull(r.baseline_version),
    reasons: json(r.reasons),
    claims: json(r.claims),
  };
}

function toCredential(r: Row): Credential {
  return {
    id: text(r.id),
    kind: text(r.kind) as CredentialKind,
    agentId: text(r.agent_id),
    verdictId: text(r.verdict_id),
    issuedAt: int(r.issued_at),
    expiresAt: int(r.expires_at),
    certificateSha256: text(r.certificate_sha256),
    revoked: bool(r.revoked),
    issuerKid: textOrNull(r.issuer_kid),
  };
}

function toImaProgress(r: Row): ImaProgress {
  return { agentId: text(r.agent_id), resetCount: int(r.reset_count), state: json(r.state) };
}
