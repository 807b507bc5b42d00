import { AttestorError } from '../errors.js';
import { appendAudit } from './audit.js';
import { int, intOrNull, text } from './columns.js';
import { changes, row, statements, type Body, type Clock, type Database, type Row } from './sql.js';
import type { AuditInput, OperatorToken, Role, TokenStore } from './store.js';

const COLUMNS = 'id, hash, role, label, created_at, revoked_at';

const SQL = statements('tokens', {
  insert: `INSERT INTO operator_tokens (${COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6)`,
  anyAdmin: "SELECT id FROM operator_tokens WHERE role = 'admin' LIMIT 1",
  // The partial unique index operator_tokens_first_admin admits one first admin ever: of
  // replicas starting at once, one inserts and the others insert nothing.
  insertFirstAdmin: `INSERT INTO operator_tokens (${COLUMNS}, first_admin) VALUES ($1, $2, 'admin', $3, $4, $5, TRUE)
    ON CONFLICT (first_admin) WHERE first_admin = TRUE DO NOTHING RETURNING id`,
  findByHash: `SELECT ${COLUMNS} FROM operator_tokens WHERE hash = $1 AND revoked_at IS NULL`,
  list: `SELECT ${COLUMNS} FROM operator_tokens ORDER BY created_at, id`,
  revoke: `UPDATE operator_tokens SET revoked_at = $2 WHERE id = $1 AND revoked_at IS NULL RETURNING ${COLUMNS}`,
  get: `SELECT ${COLUMNS} FROM operator_tokens WHERE id = $1`,
});

function* create(t: OperatorToken, audit: AuditInput, clock: Clock): Body<void> {
  yield* changes(SQL.insert, [t.id, t.hash, t.role, t.label, t.createdAt, t.revokedAt]);
  yield* appendAudit([audit], clock);
}

function* createFirstAdmin(t: OperatorToken, audit: AuditInput, clock: Clock): Body<boolean> {
  if (t.role !== 'admin') throw new AttestorError('ERR_INPUT', `the first token must have the admin role, not ${t.role}`);
  if (yield* row(SQL.anyAdmin, [])) return false;
  if (!(yield* row(SQL.insertFirstAdmin, [t.id, t.hash, t.label, t.createdAt, t.revokedAt]))) return false;
  yield* appendAudit([audit], clock);
  return true;
}

function* revoke(id: string, now: number, audit: AuditInput, clock: Clock): Body<OperatorToken> {
  const revoked = yield* row(SQL.revoke, [id, now]);
  if (!revoked) {
    const existing = yield* row(SQL.get, [id]);
    if (!existing) throw new AttestorError('ERR_NOT_FOUND', 'no operator token with this id');
    // Revoked already: nothing changes, nothing is audited again.
    return toToken(existing);
  }
  yield* appendAudit([audit], clock);
  return toToken(revoked);
}

export function createTokenStore(db: Database, clock: Clock): TokenStore {
  return {
    create: (token, audit) => db.transaction('tokens.create', create(token, audit, clock)),
    async findByHash(hash) {
      const found = await db.row(SQL.findByHash, [hash]);
      return found ? toToken(found) : null;
    },
    createFirstAdmin: (token, audit) => db.transaction('tokens.createFirstAdmin', createFirstAdmin(token, audit, clock)),
    async list() {
      return (await db.rows(SQL.list, [])).map(toToken);
    },
    revoke: (id, now, audit) => db.transaction('tokens.revoke', revoke(id, now, audit, clock)),
  };
}

function toToken(r: Row): OperatorToken {
  return {
    id: text(r.id),
    hash: text(r.hash),
    role: text(r.role) as Role,
    label: text(r.label),
    createdAt: int(r.created_at),
    revokedAt: intOrNull(r.revoked_at),
  };
}
