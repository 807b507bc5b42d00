import { mkdir, open } from 'node:fs/promises';
import { dirname } from 'node:path';
import BetterSqlite3 from 'better-sqlite3';
import { AttestorError } from '../errors.js';
import { createStore } from './create-store.js';
import { pendingMigrations, schemaMigrationsTable } from './migrations.js';
import { storeError, type Body, type Clock, type Database, type Param, type Query, type Row, type Statement } from './sql.js';
import type { Store } from './store.js';

export interface SqliteStoreOptions {
  /** The database file, created 0600 when absent; its directory is created 0700 when absent. */
  readonly path: string;
  /** Times of audit entries and migrations (default Date.now). */
  readonly clock?: Clock;
}

/** How long a write waits for another process's write lock before ERR_STORE_UNAVAILABLE. */
const BUSY_TIMEOUT_MS = 5000;

/**
 * The embedded store: one better-sqlite3 connection in WAL mode with synchronous = FULL, so a
 * write is on disk when its method resolves (but for the unsynced writes of sql.ts, which the
 * next synced commit takes to disk). better-sqlite3 is synchronous: each method runs its
 * statements to the end before it returns a promise, and a transaction never spans an await,
 * so the methods of one instance cannot interleave. Other connections and processes are kept
 * out by BEGIN IMMEDIATE, which takes the write lock before the first read.
 */
export async function openSqliteStore(options: SqliteStoreOptions): Promise<Store> {
  const { path } = options;
  const clock = options.clock ?? Date.now;
  let db: BetterSqlite3.Database;
  try {
    await mkdir(dirname(path), { recursive: true, mode: 0o700 });
    // Created 0600 before SQLite opens it: SQLite gives its -wal and -shm files the same mode.
    await (await open(path, 'a', 0o600)).close();
    db = new BetterSqlite3(path);
  } catch (e) {
    throw new AttestorError('ERR_STORE_UNAVAILABLE', `cannot open the SQLite database ${path}: ${(e as NodeJS.ErrnoException).code ?? String(e)}`, { cause: e });
  }
  try {
    db.pragma(`busy_timeout = ${BUSY_TIMEOUT_MS}`);
    const mode = db.pragma('journal_mode = WAL', { simple: true });
    if (mode !== 'wal') throw new AttestorError('ERR_STORE', `SQLite cannot use WAL for ${path} (journal mode stays ${String(mode)})`);
    db.pragma('synchronous = FULL');
    // Group commit runs each body as a savepoint: its statement journal stays in memory
    // instead of spilling to a temporary file opened and closed every commit.
    db.pragma('temp_store = MEMORY');
    db.pragma('foreign_keys = ON');
    migrate(db, clock);
  } catch (e) {
    db.close();
    throw sqliteError(e, `opening ${path}`);
  }
  return createStore(sqliteDatabase(db), clock);
}

function migrate(db: BetterSqlite3.Database, clock: Clock): void {
  db.transaction(() => {
    db.exec(schemaMigrationsTable('sqlite'));
    const current = (db.prepare('SELECT COALESCE(MAX(version), 0) AS v FROM schema_migrations').get() as { v: number }).v;
    const record = db.prepare('INSERT INTO schema_migrations (version, applied_at) VALUES (?, ?)');
    for (const migration of pendingMigrations(current)) {
      for (const statement of migration.statements('sqlite')) db.exec(statement);
      record.run(migration.version, clock());
    }
  }).immediate();
}

function sqliteDatabase(db: BetterSqlite3.Database): Database {
  const prepared = new Map<Statement, BetterSqlite3.Statement>();
  const execute = (query: Query): unknown => {
    let statement = prepared.get(query.statement);
    if (!statement) {
      statement = db.prepare(query.statement.sqlite);
      prepared.set(query.statement, statement);
    }
    const params = bind(query.params);
    switch (query.result) {
      case 'row':
        return statement.get(params);
      case 'rows':
        return statement.all(params);
      case 'changes':
        return statement.run(params).changes;
    }
  };
  const attempt = <T>(what: string, work: () => T): Promise<T> => {
    try {
      return Promise.resolve(work());
    } catch (e) {
      return Promise.reject(sqliteError(e, what));
    }
  };
  const normal = db.prepare('PRAGMA synchronous = NORMAL');
  const full = db.prepare('PRAGMA synchronous = FULL');
  /** A statement run alone: an unsynced one with synchronous = NORMAL for its commit only. */
  const alone = (query: Query): unknown => {
    if (!query.statement.unsynced) return execute(query);
    normal.run();
    try {
      return execute(query);
    } finally {
      full.run();
    }
  };
  const inTransaction = db.transaction((body: Body<unknown>) => {
    let step = body.next();
    while (!step.done) step = body.next(execute(step.value));
    return step.value;
  });
  /*
   * Group commit: the transactions asked for in one turn of the event loop run as savepoints of
   * one IMMEDIATE transaction, so one synced commit (0.2-0.8 ms of a blocked event loop here)
   * serves all of them. Each body is still all or nothing (a failing one is rolled back to its
   * savepoint and rejected alone), and each promise settles only after the commit.
   */
  let queued: Array<{ what: string; body: Body<unknown>; resolve: (value: unknown) => void; reject: (e: unknown) => void }> = [];
  const flush = () => {
    const batch = queued;
    queued = [];
    if (batch.length === 0) return;
    const outcomes: Array<{ ok: true; value: unknown } | { ok: false; error: unknown }> = [];
    try {
      db.transaction(() => {
        for (const item of batch) {
          try {
            outcomes.push({ ok: true, value: inTransaction(item.body) });
          } catch (error) {
            // SQLite rolls a whole transaction back on some errors (SQLITE_FULL, SQLITE_IOERR,
            // SQLITE_BUSY): every body of the batch is undone then, and the rest must not run
            // outside it, each committed on its own.
            if (!db.inTransaction) throw error;
            outcomes.push({ ok: false, error });
          }
        }
      }).immediate();
    } catch (e) {
      for (const item of batch) item.reject(sqliteError(e, item.what));
      return;
    }
    batch.forEach((item, i) => {
      const outcome = outcomes[i]!;
      if (outcome.ok) item.resolve(outcome.value);
      else item.reject(sqliteError(outcome.error, item.what));
    });
  };
  const transaction = <T>(what: string, body: Body<T>): Promise<T> =>
    new Promise<T>((resolve, reject) => {
      if (queued.length === 0) setImmediate(flush);
      queued.push({ what, body, resolve: resolve as (value: unknown) => void, reject });
    });
  const ping = db.prepare('SELECT 1');
  return {
    dialect: 'sqlite',
    row: (statement, params) => attempt(statement.name, () => alone({ statement, params, result: 'row' }) as Row | undefined),
    rows: (statement, params) => attempt(statement.name, () => alone({ statement, params, result: 'rows' }) as readonly Row[]),
    changes: (statement, params) => attempt(statement.name, () => alone({ statement, params, result: 'changes' }) as number),
    transaction,
    ping: () => attempt('ping', () => void ping.get()),
    close: () =>
      attempt('close', () => {
        if (queued.length > 0) flush();
        db.close();
      }),
  };
}

/** Parameters by number ($1 is key 1): the statements' texts are shared with PostgreSQL. */
function bind(params: readonly Param[]): Record<number, unknown> {
  const bound: Record<number, unknown> = {};
  for (let i = 0; i < params.length; i++) {
    const value = params[i];
    bound[i + 1] = typeof value === 'boolean' ? Number(value) : value;
  }
  return bound;
}

function sqliteError(e: unknown, what: string): unknown {
  if (e instanceof AttestorError || !(e instanceof BetterSqlite3.SqliteError)) return e;
  const { code } = e;
  if (code === 'SQLITE_CONSTRAINT_UNIQUE' || code === 'SQLITE_CONSTRAINT_PRIMARYKEY') return storeError('conflict', what, e.message, e);
  if (code.startsWith('SQLITE_BUSY') || code.startsWith('SQLITE_LOCKED')) return storeError('unavailable', what, `the SQLite database stayed locked by another writer (${code})`, e);
  // The write is rolled back and reads go on; writes succeed again once space is freed.
  if (code === 'SQLITE_FULL') return storeError('unavailable', what, `the disk of the SQLite database is full (${code})`, e);
  return storeError('other', what, `${e.message} (${code})`, e);
}
