import { AttestorError } from '../errors.js';
import { nextAuditEntry, type ChainHead } from './audit-chain.js';
import { canonicalJson } from './canonical-json.js';
import { int, json, text } from './columns.js';
import { pageLimit, toPage } from './page.js';
import { changes, row, statements, type Body, type Clock, type Database, type Row } from './sql.js';
import type { AuditEntry, AuditInput, AuditStore } from './store.js';

const COLUMNS = 'seq, at, actor, action, subject, details, prev_hash, hash';

/*
 * audit_head is a one-row table holding the chain's last seq and hash. Appending locks it
 * (FOR UPDATE on PostgreSQL, the IMMEDIATE write lock on SQLite), so replicas append one
 * after the other and the chain stays one chain. Every transaction appends last: the head is
 * the last lock it takes and is held only until its commit.
 */
const SQL = statements('audit', {
  lockHead: { forUpdate: 'SELECT seq, hash FROM audit_head WHERE id = 1' },
  moveHead: 'UPDATE audit_head SET seq = $1, hash = $2 WHERE id = 1',
  insert: `INSERT INTO audit_entries (${COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)`,
  list: `SELECT ${COLUMNS} FROM audit_entries WHERE seq > $1 ORDER BY seq LIMIT $2`,
  last: `SELECT ${COLUMNS} FROM audit_entries ORDER BY seq DESC LIMIT 1`,
});

/** Appends `inputs` to the chain, in order, inside the caller's transaction: call it last. */
export function* appendAudit(inputs: readonly AuditInput[], clock: Clock): Body<void> {
  if (inputs.length === 0) return;
  const locked = yield* row(SQL.lockHead, []);
  let head: ChainHead = { seq: int(locked!.seq), hash: text(locked!.hash) };
  // Read the clock once the head is ours, so times follow the order of the chain.
  const at = clock();
  for (const input of inputs) {
    const entry = nextAuditEntry(head, input, at);
    yield* changes(SQL.insert, [entry.seq, entry.at, entry.actor, entry.action, entry.subject, canonicalJson(entry.details), entry.prevHash, entry.hash]);
    head = entry;
  }
  yield* changes(SQL.moveHead, [head.seq, head.hash]);
}

export function createAuditStore(db: Database): AuditStore {
  return {
    async list(page) {
      const limit = pageLimit(page);
      const found = await db.rows(SQL.list, [afterSeq(page.after), limit + 1]);
      return toPage(found.map(toAuditEntry), limit, (entry) => String(entry.seq));
    },
    async head() {
      const found = await db.row(SQL.last, []);
      return found ? toAuditEntry(found) : null;
    },
  };
}

function afterSeq(after: string | undefined): number {
  if (after === undefined) return 0;
  if (!/^(0|[1-9][0-9]{0,14})$/.test(after)) throw new AttestorError('ERR_INPUT', 'the audit page cursor is not a sequence number');
  return Number(after);
}

function toAuditEntry(r: Row): AuditEntry {
  return {
    seq: int(r.seq),
    at: int(r.at),
    actor: text(r.actor),
    action: text(r.action),
    subject: text(r.subject),
    details: json(r.details),
    prevHash: text(r.prev_hash),
    hash: text(r.hash),
  };
}
