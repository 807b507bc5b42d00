import { appendAudit } from './audit.js';
import { bytes, bytesOrNull, int, json, jsonParam, text } from './columns.js';
import { changes, row, statements, type Body, type Clock, type Database, type Row } from './sql.js';
import type { AuditInput, EnrollmentStore, PendingEnrollment } from './store.js';

const COLUMNS = 'id, agent_id, ek_public, ak_public, ek_certificate, labels, secret_hash, created_at, expires_at';

const SQL = statements('enrollments', {
  insert: `INSERT INTO pending_enrollments (${COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)`,
  // One statement removes and returns it: of concurrent activation attempts, one gets it.
  take: `DELETE FROM pending_enrollments WHERE id = $1 RETURNING ${COLUMNS}`,
  purge: 'DELETE FROM pending_enrollments WHERE expires_at <= $1',
});

function* create(e: PendingEnrollment, audit: AuditInput, clock: Clock): Body<void> {
  yield* changes(SQL.insert, [e.id, e.agentId, e.ekPublic, e.akPublic, e.ekCertificate, jsonParam(e.labels), e.secretHash, e.createdAt, e.expiresAt]);
  yield* appendAudit([audit], clock);
}

/**
 * Removes the pending enrollment and records that it was spent, in one transaction: a failed
 * activation drops it (Keylime CVE-2023-38201) and the audit chain says so, without the secret.
 */
function* take(id: string, now: number, clock: Clock): Body<PendingEnrollment | null> {
  const taken = yield* row(SQL.take, [id]);
  if (!taken) return null;
  const enrollment = toEnrollment(taken);
  const expired = now >= enrollment.expiresAt;
  yield* appendAudit(
    [{ actor: `agent:${enrollment.agentId}`, action: 'enrollment.spend', subject: enrollment.agentId, details: { enrollmentId: id, expired } }],
    clock,
  );
  return expired ? null : enrollment;
}

export function createEnrollmentStore(db: Database, clock: Clock): EnrollmentStore {
  return {
    create: (enrollment, audit) => db.transaction('enrollments.create', create(enrollment, audit, clock)),
    take: (id, now) => db.transaction('enrollments.take', take(id, now, clock)),
    purgeExpired: (now) => db.changes(SQL.purge, [now]),
  };
}

function toEnrollment(r: Row): PendingEnrollment {
  return {
    id: text(r.id),
    agentId: text(r.agent_id),
    ekPublic: bytes(r.ek_public),
    akPublic: bytes(r.ak_public),
    ekCertificate: bytesOrNull(r.ek_certificate),
    labels: json<PendingEnrollment['labels']>(r.labels),
    secretHash: bytes(r.secret_hash),
    createdAt: int(r.created_at),
    expiresAt: int(r.expires_at),
  };
}
