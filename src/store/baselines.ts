import { AttestorError } from '../errors.js';
import { appendAudit } from './audit.js';
import { int, intOrNull, json, jsonParam, text } from './columns.js';
import { pageLimit, toPage } from './page.js';
import { row, rows, statements, type Body, type Clock, type Database, type Row } from './sql.js';
import type { AuditInput, Baseline, BaselineStatus, BaselineStore } from './store.js';

const COLUMNS = 'id, name, version, status, document, created_at, created_by, enforced_at, retired_at';

/*
 * baseline_versions holds one row per name with its latest version. Taking the next version
 * is one upsert, which also locks the name's row: concurrent creations of one name get
 * consecutive versions (even the first), and status changes of one name, which lock the same
 * row first, happen one after the other.
 */
const SQL = statements('baselines', {
  nextVersion: `INSERT INTO baseline_versions (name, latest) VALUES ($1, 1)
    ON CONFLICT (name) DO UPDATE SET latest = baseline_versions.latest + 1 RETURNING latest`,
  insert: `INSERT INTO baselines (${COLUMNS}) VALUES ($1, $2, $3, 'staged', $4, $5, $6, NULL, NULL) RETURNING ${COLUMNS}`,
  lockName: { forUpdate: 'SELECT name FROM baseline_versions WHERE name = (SELECT name FROM baselines WHERE id = $1)' },
  get: `SELECT ${COLUMNS} FROM baselines WHERE id = $1`,
  retireEnforced: `UPDATE baselines SET status = 'retired', retired_at = $2 WHERE name = $1 AND status = 'enforced' RETURNING id`,
  enforce: `UPDATE baselines SET status = 'enforced', enforced_at = $2 WHERE id = $1 RETURNING ${COLUMNS}`,
  retire: `UPDATE baselines SET status = 'retired', retired_at = $2 WHERE id = $1 RETURNING ${COLUMNS}`,
  // Ordered by name and version; the cursor is the id of the last baseline of the page.
  list: `SELECT ${COLUMNS} FROM baselines
    WHERE (CAST($1 AS TEXT) IS NULL OR (name, version) > (SELECT name, version FROM baselines WHERE id = $1))
      AND (CAST($2 AS TEXT) IS NULL OR status = $2)
    ORDER BY name, version LIMIT $3`,
  inForce: `SELECT id, version, status FROM baselines WHERE status IN ('enforced', 'staged') ORDER BY COALESCE(enforced_at, created_at) DESC, version DESC, id`,
});

type NewBaseline = Parameters<BaselineStore['create']>[0];

function* create(b: NewBaseline, audit: AuditInput, clock: Clock): Body<Baseline> {
  if (b.status !== 'staged') throw new AttestorError('ERR_BASELINE_STATE', `a baseline is created staged, not ${b.status}`);
  const version = int((yield* row(SQL.nextVersion, [b.name]))!.latest);
  const created = yield* row(SQL.insert, [b.id, b.name, version, jsonParam(b.document), b.createdAt, b.createdBy]);
  yield* appendAudit([audit], clock);
  return toBaseline(created!);
}

/** staged -> enforced, staged|enforced -> retired. */
const ALLOWED: { readonly [to in 'enforced' | 'retired']: readonly BaselineStatus[] } = {
  enforced: ['staged'],
  retired: ['staged', 'enforced'],
};

function* setStatus(id: string, status: 'enforced' | 'retired', now: number, audit: AuditInput, clock: Clock): Body<Baseline> {
  const locked = yield* row(SQL.lockName, [id]);
  if (!locked) throw new AttestorError('ERR_BASELINE_NOT_FOUND', `no baseline ${id}`);
  const current = toBaseline((yield* row(SQL.get, [id]))!);
  if (!ALLOWED[status].includes(current.status)) {
    throw new AttestorError('ERR_BASELINE_STATE', `baseline ${id} is ${current.status}: it cannot become ${status}`);
  }
  const retiredBy: AuditInput[] = [];
  if (status === 'enforced') {
    // The enforced baseline of the same name gives way, and the chain says so.
    for (const retired of yield* rows(SQL.retireEnforced, [current.name, now])) {
      retiredBy.push({ actor: audit.actor, action: 'baseline.retire', subject: text(retired.id), details: { supersededBy: id } });
    }
  }
  const changed = yield* row(status === 'enforced' ? SQL.enforce : SQL.retire, [id, now]);
  yield* appendAudit([...retiredBy, audit], clock);
  return toBaseline(changed!);
}

export function createBaselineStore(db: Database, clock: Clock): BaselineStore {
  return {
    create: (baseline, audit) => db.transaction('baselines.create', create(baseline, audit, clock)),
    async get(id) {
      const found = await db.row(SQL.get, [id]);
      return found ? toBaseline(found) : null;
    },
    async list(page) {
      const limit = pageLimit(page);
      const found = await db.rows(SQL.list, [page.after ?? null, page.status ?? null, limit + 1]);
      return toPage(found.map(toBaseline), limit, (b) => b.id);
    },
    setStatus: (id, status, now, audit) => db.transaction('baselines.setStatus', setStatus(id, status, now, audit, clock)),
    async inForce() {
      return (await db.rows(SQL.inForce, [])).map((r) => ({ id: text(r.id), version: int(r.version), status: text(r.status) as BaselineStatus }));
    },
  };
}

function toBaseline(r: Row): Baseline {
  return {
    id: text(r.id),
    name: text(r.name),
    version: int(r.version),
    status: text(r.status) as BaselineStatus,
    document: json(r.document),
    createdAt: int(r.created_at),
    createdBy: text(r.created_by),
    enforcedAt: intOrNull(r.enforced_at),
    retiredAt: intOrNull(r.retired_at),
  };
}
