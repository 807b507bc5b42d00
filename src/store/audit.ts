import { AttestorError } from '../errors.js';
import { nextAuditEntry, type ChainHead } from './audit-chain.js';
import { canonicalJson } from './canonical-json.js';
import { bytes, int, json, text } from './columns.js';
import { pageLimit, toPage } from './page.js';
import { changes, insertRows, multiRowInserts, row, statements, type Body, type Clock, type Database, type Param, type Row, type Statement } from './sql.js';
import type { AuditCheckpoint, AuditEntry, AuditInput, AuditStore, Page, PageRequest } from './store.js';

const COLUMN_LIST = ['seq', 'at', 'actor', 'action', 'subject', 'details', 'prev_hash', 'hash'];
const COLUMNS = COLUMN_LIST.join(', ');
const CHECKPOINT_COLUMNS = 'seq, hash, at, kid, signature';

/*
 * audit_head is a one-row table holding the chain's last seq and hash. Appending locks it
 * (FOR UPDATE on PostgreSQL, the IMMEDIATE write lock on SQLite), so replicas append one
 * after the other and the chain stays one chain. Every transaction appends last: the head is
 * the last lock it takes and is held only until its commit.
 */
const SQL = statements('audit', {
  lockHead: { forUpdate: 'SELECT seq, hash FROM audit_head WHERE id = 1' },
  moveHead: 'UPDATE audit_head SET seq = $1, hash = $2 WHERE id = 1',
  list: `SELECT ${COLUMNS} FROM audit_entries WHERE seq > $1 ORDER BY seq LIMIT $2`,
  last: `SELECT ${COLUMNS} FROM audit_entries ORDER BY seq DESC LIMIT 1`,
  head: 'SELECT seq, hash FROM audit_head WHERE id = 1',
  range: `SELECT ${COLUMNS} FROM audit_entries WHERE seq > $1 AND seq <= $2 ORDER BY seq LIMIT $3`,
  // One statement, so the head and the rows are of one moment: an append moves both at once.
  pastHead: `SELECT ${COLUMNS} FROM audit_entries WHERE seq > (SELECT seq FROM audit_head WHERE id = 1) ORDER BY seq LIMIT 1`,
  insertCheckpoint: `INSERT INTO audit_checkpoints (${CHECKPOINT_COLUMNS}) VALUES ($1, $2, $3, $4, $5) ON CONFLICT (seq) DO NOTHING`,
  checkpoint: `SELECT ${CHECKPOINT_COLUMNS} FROM audit_checkpoints WHERE seq = $1`,
  checkpoints: `SELECT ${CHECKPOINT_COLUMNS} FROM audit_checkpoints WHERE seq > $1 ORDER BY seq LIMIT $2`,
  lastCheckpoint: `SELECT ${CHECKPOINT_COLUMNS} FROM audit_checkpoints ORDER BY seq DESC LIMIT 1`,
});
const INSERTS = multiRowInserts('audit', 'insert', 'audit_entries', COLUMN_LIST);

/** Appends `inputs` to the chain, in order, inside the caller's transaction: call it last. */
export function* appendAudit(inputs: readonly AuditInput[], clock: Clock): Body<void> {
  if (inputs.length === 0) return;
  const locked = yield* row(SQL.lockHead, []);
  let head: ChainHead = { seq: int(locked!.seq), hash: text(locked!.hash) };
  // Read the clock once the head is ours, so times follow the order of the chain.
  const at = clock();
  const rows: Param[][] = [];
  for (const input of inputs) {
    const entry = nextAuditEntry(head, input, at);
    rows.push([entry.seq, entry.at, entry.actor, entry.action, entry.subject, canonicalJson(entry.details), entry.prevHash, entry.hash]);
    head = entry;
  }
  yield* insertRows(INSERTS, rows);
  yield* changes(SQL.moveHead, [head.seq, head.hash]);
}

export function createAuditStore(db: Database): AuditStore {
  /** A page of rows in seq order, after the seq `page.after`. */
  const pageBySeq = async <T extends { readonly seq: number }>(statement: Statement, page: PageRequest, map: (r: Row) => T): Promise<Page<T>> => {
    const limit = pageLimit(page);
    const found = await db.rows(statement, [afterSeq(page.after), limit + 1]);
    return toPage(found.map(map), limit, (item) => String(item.seq));
  };
  return {
    list: (page) => pageBySeq(SQL.list, page, toAuditEntry),
    async head() {
      const found = await db.row(SQL.last, []);
      return found ? toAuditEntry(found) : null;
    },
    async recordedHead() {
      const head = (await db.row(SQL.head, []))!;
      return { seq: int(head.seq), hash: text(head.hash) };
    },
    async range(after, upTo, limit) {
      const found = await db.rows(SQL.range, [after, upTo, pageLimit({ limit })]);
      return found.map(toAuditEntry);
    },
    async pastHead() {
      const found = await db.row(SQL.pastHead, []);
      return found ? toAuditEntry(found) : null;
    },
    async checkpoint(c) {
      // The primary key is the arbiter: of replicas inserting one seq at once, the first stores it.
      await db.changes(SQL.insertCheckpoint, [c.seq, c.hash, c.at, c.kid, c.signature]);
      return toCheckpoint((await db.row(SQL.checkpoint, [c.seq]))!);
    },
    checkpoints: (page) => pageBySeq(SQL.checkpoints, page, toCheckpoint),
    async lastCheckpoint() {
      const found = await db.row(SQL.lastCheckpoint, []);
      return found ? toCheckpoint(found) : null;
    },
  };
}

function afterSeq(after: string | undefined): number {
  if (after === undefined) return 0;
  if (!/^(0|[1-9][0-9]{0,14})$/.test(after)) throw new AttestorError('ERR_INPUT', 'the audit page cursor is not a sequence number');
  return Number(after);
}

function toCheckpoint(r: Row): AuditCheckpoint {
  return { seq: int(r.seq), hash: text(r.hash), at: int(r.at), kid: text(r.kid), signature: bytes(r.signature) };
}

/**
 * The details column, appended as canonical JSON. Text that does not parse was written by
 * someone else: it is kept under the key "(not JSON)", so the entry reads (and its hash no
 * longer matches) instead of every reader of the chain failing on it.
 */
function storedDetails(value: string): AuditEntry['details'] {
  try {
    return json(value);
  } catch {
    return { '(not JSON)': value };
  }
}

function toAuditEntry(r: Row): AuditEntry {
  return {
    seq: int(r.seq),
    at: int(r.at),
    actor: text(r.actor),
    action: text(r.action),
    subject: text(r.subject),
    details: storedDetails(text(r.details)),
    prevHash: text(r.prev_hash),
    hash: text(r.hash),
  };
}
