import { appendAudit } from './audit.js';
import { bytes, bytesOrNull, int, intOrNull, text } from './columns.js';
import { row, statements, type Body, type Clock, type Database, type Row } from './sql.js';
import type { AuditInput, IssuingKey, KeyName, KeyState, KeyStore } from './store.js';

const COLUMNS = 'kid, name, uri, state, public_key_spki, certificate, created_at, not_after';

const SQL = statements('keys', {
  // The partial unique index issuing_keys_one_active is the arbiter: of replicas inserting
  // at once, the first commits and the others wait for it, then insert nothing.
  insertActive: `INSERT INTO issuing_keys (${COLUMNS}) VALUES ($1, $2, $3, 'active', $4, $5, $6, $7)
    ON CONFLICT (name) WHERE state = 'active' DO NOTHING RETURNING ${COLUMNS}`,
  active: `SELECT ${COLUMNS} FROM issuing_keys WHERE name = $1 AND state = 'active'`,
  list: `SELECT ${COLUMNS} FROM issuing_keys WHERE CAST($1 AS TEXT) IS NULL OR name = $1 ORDER BY name, created_at, kid`,
});

function* insertIfNoActive(k: IssuingKey, audit: AuditInput, clock: Clock): Body<IssuingKey> {
  const inserted = yield* row(SQL.insertActive, [k.kid, k.name, k.uri, k.publicKeySpki, k.certificate, k.createdAt, k.notAfter]);
  if (!inserted) return toKey((yield* row(SQL.active, [k.name]))!);
  yield* appendAudit([audit], clock);
  return toKey(inserted);
}

export function createKeyStore(db: Database, clock: Clock): KeyStore {
  return {
    async list(name) {
      return (await db.rows(SQL.list, [name ?? null])).map(toKey);
    },
    insertIfNoActive: (key, audit) => db.transaction('keys.insertIfNoActive', insertIfNoActive(key, audit, clock)),
  };
}

function toKey(r: Row): IssuingKey {
  return {
    name: text(r.name) as KeyName,
    kid: text(r.kid),
    uri: text(r.uri),
    state: text(r.state) as KeyState,
    publicKeySpki: bytes(r.public_key_spki),
    certificate: bytesOrNull(r.certificate),
    createdAt: int(r.created_at),
    notAfter: intOrNull(r.not_after),
  };
}
