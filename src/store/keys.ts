import { AttestorError } from '../errors.js';
import { appendAudit } from './audit.js';
import { bytes, bytesOrNull, int, intOrNull, text } from './columns.js';
import { changes, row, rows, statements, type Body, type Clock, type Database, type Row } from './sql.js';
import type { AuditInput, IssuingKey, KeyName, KeyState, KeyStore, StoredCrl } from './store.js';

const COLUMNS = 'kid, name, uri, state, public_key_spki, certificate, created_at, not_after, activated_at, retired_at';
const CRL_COLUMNS = 'ca_kid, number, der, serials_sha256, renew_at';

/*
 * Key rotation as SPIRE does it: per name at most one prepared key, exactly one active, any
 * number of old ones. Every change locks the key_ring row first and bumps its sequence, so
 * changes of replicas happen one after the other and each replica sees that something changed
 * by polling one number. The partial unique indexes issuing_keys_one_active and
 * issuing_keys_one_prepared hold the rule whatever a statement does.
 */
const SQL = statements('keys', {
  lockRing: { forUpdate: 'SELECT sequence FROM key_ring WHERE id = 1' },
  bumpRing: 'UPDATE key_ring SET sequence = sequence + 1 WHERE id = 1',
  sequence: 'SELECT sequence FROM key_ring WHERE id = 1',
  insertActive: `INSERT INTO issuing_keys (${COLUMNS}) VALUES ($1, $2, $3, 'active', $4, $5, $6, $7, $6, NULL)
    ON CONFLICT (name) WHERE state = 'active' DO NOTHING RETURNING ${COLUMNS}`,
  insertPrepared: `INSERT INTO issuing_keys (${COLUMNS}) VALUES ($1, $2, $3, 'prepared', $4, $5, $6, $7, NULL, NULL)
    ON CONFLICT (name) WHERE state = 'prepared' DO NOTHING RETURNING ${COLUMNS}`,
  inState: `SELECT ${COLUMNS} FROM issuing_keys WHERE name = $1 AND state = $2`,
  ofName: `SELECT ${COLUMNS} FROM issuing_keys WHERE name = $1 ORDER BY created_at, kid`,
  list: `SELECT ${COLUMNS} FROM issuing_keys WHERE CAST($1 AS TEXT) IS NULL OR name = $1 ORDER BY name, created_at, kid`,
  // Old first: the active key's place is free before the prepared key takes it.
  retire: "UPDATE issuing_keys SET state = 'old', retired_at = $2 WHERE kid = $1 AND state = 'active'",
  activate: "UPDATE issuing_keys SET state = 'active', activated_at = $2 WHERE kid = $1 AND state = 'prepared'",
  prunable: `SELECT ${COLUMNS} FROM issuing_keys k WHERE state = 'old' AND name IN ('x509-ca', 'jwt') AND retired_at < $2
    AND NOT EXISTS (SELECT 1 FROM credentials c WHERE c.issuer_kid = k.kid AND c.expires_at > $1) ORDER BY created_at, kid`,
  remove: "DELETE FROM issuing_keys WHERE kid = $1 AND state = 'old'",
  removeCrl: 'DELETE FROM crls WHERE ca_kid = $1',
  crl: `SELECT ${CRL_COLUMNS} FROM crls WHERE ca_kid = $1`,
  insertCrl: `INSERT INTO crls (${CRL_COLUMNS}) VALUES ($1, $2, $3, $4, $5) ON CONFLICT (ca_kid) DO NOTHING RETURNING ${CRL_COLUMNS}`,
  replaceCrl: `UPDATE crls SET number = $2, der = $3, serials_sha256 = $4, renew_at = $5 WHERE ca_kid = $1 AND number = $6 RETURNING ${CRL_COLUMNS}`,
});

function* changed(audit: readonly AuditInput[], clock: Clock): Body<void> {
  yield* changes(SQL.bumpRing, []);
  yield* appendAudit(audit, clock);
}

function keyParams(k: IssuingKey) {
  return [k.kid, k.name, k.uri, k.publicKeySpki, k.certificate, k.createdAt, k.notAfter];
}

function* insertIfNoActive(k: IssuingKey, audit: AuditInput, clock: Clock): Body<IssuingKey> {
  yield* row(SQL.lockRing, []);
  // The partial unique index issuing_keys_one_active is the arbiter: of replicas inserting
  // at once, the first commits and the others wait for it, then insert nothing.
  const inserted = yield* row(SQL.insertActive, keyParams(k));
  if (!inserted) return toKey((yield* row(SQL.inState, [k.name, 'active']))!);
  yield* changed([audit], clock);
  return toKey(inserted);
}

function* prepare(k: IssuingKey, successorOf: string, audit: AuditInput, clock: Clock): Body<readonly IssuingKey[]> {
  yield* row(SQL.lockRing, []);
  const active = yield* row(SQL.inState, [k.name, 'active']);
  if (active && text(active.kid) === successorOf && (yield* row(SQL.insertPrepared, keyParams(k)))) yield* changed([audit], clock);
  return (yield* rows(SQL.ofName, [k.name])).map(toKey);
}

function* promote(name: KeyName, expectedActiveKid: string, now: number, actor: string, clock: Clock): Body<readonly IssuingKey[]> {
  yield* row(SQL.lockRing, []);
  const before = (yield* rows(SQL.ofName, [name])).map(toKey);
  const active = before.find((k) => k.state === 'active');
  const prepared = before.find((k) => k.state === 'prepared');
  // Another replica rotated first, or there is nothing to promote: the state as it is.
  if (!prepared || active?.kid !== expectedActiveKid) return before;
  yield* changes(SQL.retire, [active.kid, now]);
  yield* changes(SQL.activate, [prepared.kid, now]);
  yield* changed(
    [
      { actor, action: 'key.activate', subject: name, details: { kid: prepared.kid, uri: prepared.uri } },
      { actor, action: 'key.retire', subject: name, details: { kid: active.kid, uri: active.uri } },
    ],
    clock,
  );
  return (yield* rows(SQL.ofName, [name])).map(toKey);
}

function* prune(now: number, retiredBefore: number, clock: Clock): Body<readonly IssuingKey[]> {
  yield* row(SQL.lockRing, []);
  const pruned = (yield* rows(SQL.prunable, [now, retiredBefore])).map(toKey);
  if (pruned.length === 0) return pruned;
  for (const k of pruned) {
    yield* changes(SQL.remove, [k.kid]);
    yield* changes(SQL.removeCrl, [k.kid]);
  }
  yield* changed(
    pruned.map((k) => ({ actor: 'system', action: 'key.prune', subject: k.name, details: { kid: k.kid, uri: k.uri } })),
    clock,
  );
  return pruned;
}

function* saveCrl(c: StoredCrl, previous: number | null): Body<StoredCrl> {
  if (!(c.number > (previous ?? 0))) throw new AttestorError('ERR_STORE', `CRL number ${c.number} does not follow ${previous}`);
  const params = [c.caKid, c.number, c.der, c.serialsSha256, c.renewAt];
  const saved = previous === null ? yield* row(SQL.insertCrl, params) : yield* row(SQL.replaceCrl, [...params, previous]);
  // Another replica stored one first: theirs is the CRL now.
  return toCrl(saved ?? (yield* row(SQL.crl, [c.caKid]))!);
}

export function createKeyStore(db: Database, clock: Clock): KeyStore {
  const sequence = async () => int((await db.row(SQL.sequence, []))!.sequence);
  const list = async (name?: KeyName) => (await db.rows(SQL.list, [name ?? null])).map(toKey);
  return {
    list,
    sequence,
    async ring() {
      const seq = await sequence();
      return { sequence: seq, keys: await list() };
    },
    insertIfNoActive: (key, audit) => db.transaction('keys.insertIfNoActive', insertIfNoActive(key, audit, clock)),
    prepare: (key, successorOf, audit) => db.transaction('keys.prepare', prepare(key, successorOf, audit, clock)),
    promote: (name, expectedActiveKid, now, actor) => db.transaction('keys.promote', promote(name, expectedActiveKid, now, actor, clock)),
    prune: (now, retiredBefore) => db.transaction('keys.prune', prune(now, retiredBefore, clock)),
    async crl(caKid) {
      const found = await db.row(SQL.crl, [caKid]);
      return found ? toCrl(found) : null;
    },
    saveCrl: (crl, previous) => db.transaction('keys.saveCrl', saveCrl(crl, previous)),
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
    activatedAt: intOrNull(r.activated_at),
    retiredAt: intOrNull(r.retired_at),
  };
}

function toCrl(r: Row): StoredCrl {
  return { caKid: text(r.ca_kid), number: int(r.number), der: bytes(r.der), serialsSha256: text(r.serials_sha256), renewAt: int(r.renew_at) };
}
