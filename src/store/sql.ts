import { AttestorError } from '../errors.js';
import type { Store } from './store.js';

/*
 * What the entity modules (agents.ts, tokens.ts, ...) and the two drivers (sqlite.ts,
 * postgres.ts) share. An entity module writes its statements once, with $1, $2 ...
 * placeholders that both dialects read, and its transactions once, as generators that yield
 * the statements to run and receive their results: the SQLite driver runs such a body
 * synchronously inside an IMMEDIATE transaction, the PostgreSQL driver awaits each statement
 * inside BEGIN ... COMMIT on one pooled connection. Only the SQL text may differ by dialect,
 * and only where a statement locks rows.
 */

export type Dialect = Store['dialect'];

/** A statement of the store with its text for each dialect. */
export interface Statement {
  /** `<entity>.<key>`: PostgreSQL prepares the statement once per connection under this name. */
  readonly name: string;
  readonly sqlite: string;
  readonly postgres: string;
  /** Run alone (not in a transaction), its commit need not reach the disk before it returns: see UnsyncedWrite. */
  readonly unsynced?: true;
}

/**
 * A read of a read-modify-write transaction: on PostgreSQL it locks the rows it reads
 * (`FOR UPDATE`) until commit; SQLite's IMMEDIATE transactions hold the database's one write
 * lock from their start, so the same text without the clause is as safe there.
 */
export interface LockingRead {
  readonly forUpdate: string;
}

/**
 * A write that may be lost in a crash, whose loss costs a retry (a challenge issued or used):
 * SQLite commits it without waiting for the disk (synchronous = NORMAL), which is 7 times
 * cheaper than a synced commit here. In WAL mode commits keep their order, so the next synced
 * commit makes it durable too: an attestation recorded is never kept while the use of its
 * nonce is lost.
 */
export interface UnsyncedWrite {
  readonly unsynced: string;
}

/** Defines the statements of one entity: `statements('agents', { get: 'SELECT ...' })`. */
export function statements<K extends string>(entity: string, texts: { readonly [key in K]: string | LockingRead | UnsyncedWrite }): { readonly [key in K]: Statement } {
  const defined = {} as { [key in K]: Statement };
  for (const key of Object.keys(texts) as K[]) {
    const text: string | LockingRead | UnsyncedWrite = texts[key];
    const name = `${entity}.${key}`;
    if (typeof text === 'string') defined[key] = { name, sqlite: text, postgres: text };
    else if ('unsynced' in text) defined[key] = { name, sqlite: text.unsynced, postgres: text.unsynced, unsynced: true };
    else defined[key] = { name, sqlite: text.forUpdate, postgres: `${text.forUpdate} FOR UPDATE` };
  }
  return defined;
}

/**
 * `INSERT INTO <table> (<columns>) VALUES (...), ...` for 1 to ROWS_PER_INSERT rows, the
 * statement for n rows at index n - 1, named `<entity>.<key><n>`. On PostgreSQL each
 * statement is a round trip, and inside the audit head's lock (src/store/audit.ts) one that
 * every other writer waits for.
 */
export function multiRowInserts(entity: string, key: string, table: string, columns: readonly string[]): readonly Statement[] {
  return Array.from({ length: ROWS_PER_INSERT }, (_, i) => {
    const values = Array.from({ length: i + 1 }, (_, r) => `(${columns.map((_, c) => `$${r * columns.length + c + 1}`).join(', ')})`);
    const text = `INSERT INTO ${table} (${columns.join(', ')}) VALUES ${values.join(', ')}`;
    return { name: `${entity}.${key}${i + 1}`, sqlite: text, postgres: text };
  });
}

/** Inserts `rows` with the statements of multiRowInserts, as few as it takes. */
export function* insertRows(inserts: readonly Statement[], rows: ReadonlyArray<readonly Param[]>): Body<void> {
  for (let i = 0; i < rows.length; i += inserts.length) {
    const chunk = rows.slice(i, i + inserts.length);
    yield* changes(inserts[chunk.length - 1]!, chunk.flat());
  }
}

/** Rows per statement of multiRowInserts: an attestation's audit entries and credentials fit in one. */
const ROWS_PER_INSERT = 8;

/** Parameter values: booleans become 0/1 on SQLite; bytes are BLOB or BYTEA. */
export type Param = string | number | boolean | null | Uint8Array;

/** A result row as the drivers return it, columns by name. */
export type Row = { readonly [column: string]: unknown };

export interface Query {
  readonly statement: Statement;
  readonly params: readonly Param[];
  /** The first row, all rows, or the number of rows changed. */
  readonly result: 'row' | 'rows' | 'changes';
}

/** A transaction: yields its statements, receives their results, returns its value. */
export type Body<T> = Generator<Query, T, unknown>;

/** The first row of `statement` (undefined when none), inside a transaction body: `yield* row(...)`. */
export function* row(statement: Statement, params: readonly Param[]): Body<Row | undefined> {
  return (yield { statement, params, result: 'row' }) as Row | undefined;
}

export function* rows(statement: Statement, params: readonly Param[]): Body<readonly Row[]> {
  return (yield { statement, params, result: 'rows' }) as readonly Row[];
}

/** The number of rows `statement` inserted, updated or deleted. */
export function* changes(statement: Statement, params: readonly Param[]): Body<number> {
  return (yield { statement, params, result: 'changes' }) as number;
}

/**
 * One database connection (SQLite) or pool (PostgreSQL), as the entity modules use it. Errors
 * of the database become AttestorErrors (see storeError); the bodies' own pass through.
 */
export interface Database {
  readonly dialect: Dialect;
  /** One statement on its own (autocommit): a single statement is atomic by itself. */
  row(statement: Statement, params: readonly Param[]): Promise<Row | undefined>;
  rows(statement: Statement, params: readonly Param[]): Promise<readonly Row[]>;
  changes(statement: Statement, params: readonly Param[]): Promise<number>;
  /** Runs `body` in one read-modify-write transaction: committed when it returns, rolled back when it throws. */
  transaction<T>(what: string, body: Body<T>): Promise<T>;
  ping(): Promise<void>;
  close(): Promise<void>;
}

/** Milliseconds since the epoch; the time audit entries are recorded at. */
export type Clock = () => number;

/** What went wrong in the database, as the drivers classify it. */
export type Failure = 'conflict' | 'unavailable' | 'other';

/**
 * The AttestorError of a database error: a unique violation (told by its code, never by its
 * text) is ERR_STORE_CONFLICT, an unreachable or busy database ERR_STORE_UNAVAILABLE, anything
 * else ERR_STORE. `what` names the method or statement; `detail` must hold no secret.
 */
export function storeError(failure: Failure, what: string, detail: string, cause: unknown): AttestorError {
  switch (failure) {
    case 'conflict':
      return new AttestorError('ERR_STORE_CONFLICT', `${what}: a row with the same key exists (${detail})`, { cause });
    case 'unavailable':
      return new AttestorError('ERR_STORE_UNAVAILABLE', `${what}: ${detail}`, { cause });
    case 'other':
      return new AttestorError('ERR_STORE', `${what}: ${detail}`, { cause });
  }
}
