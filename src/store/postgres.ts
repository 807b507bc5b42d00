import pg from 'pg';
import { AttestorError } from '../errors.js';
import { createStore } from './create-store.js';
import { pendingMigrations, schemaMigrationsTable } from './migrations.js';
import { storeError, type Body, type Clock, type Database, type Query, type Row } from './sql.js';
import type { Store } from './store.js';

export interface PostgresStoreOptions {
  /** postgres://user:password@host:port/database?sslmode=... (the password never appears in errors). */
  readonly url: string;
  /** The schema of Attestor's tables, set as search_path on every connection; it must exist. */
  readonly schema?: string;
  /** Times of audit entries and migrations (default Date.now). */
  readonly clock?: Clock;
}

/** Lowercase SQL identifiers only: the name goes into search_path unquoted. */
const SCHEMA_NAME = /^[a-z_][a-z0-9_]{0,62}$/;

/** How long opening a connection may take before the database counts as unreachable. */
const CONNECT_TIMEOUT_MS = 10_000;

/**
 * The store for several verifier replicas. Each replica has its own pool; correctness across
 * them comes from the database: single statements that claim a row (DELETE ... RETURNING),
 * unique indexes as arbiters (INSERT ... ON CONFLICT DO NOTHING), row locks taken by
 * SELECT ... FOR UPDATE in read-modify-write transactions, and the audit chain's head row.
 */
export async function openPostgresStore(options: PostgresStoreOptions): Promise<Store> {
  const server = serverOf(options.url);
  const { schema } = options;
  if (schema !== undefined && !SCHEMA_NAME.test(schema)) {
    throw new AttestorError('ERR_CONFIG', `the PostgreSQL schema "${schema}" is not a lowercase SQL identifier ([a-z_][a-z0-9_]*)`);
  }
  const clock = options.clock ?? Date.now;
  // BIGINT (times in ms, sequence numbers, counts) as numbers, on this pool's connections only:
  // every such value stays far below 2^53.
  const types = new pg.TypeOverrides();
  types.setTypeParser(pg.types.builtins.INT8, Number);
  const pool = new pg.Pool({
    connectionString: options.url,
    types,
    application_name: 'attestor',
    connectionTimeoutMillis: CONNECT_TIMEOUT_MS,
    ...(schema === undefined ? {} : { options: `-c search_path=${schema}` }),
  });
  // A connection the server drops while idle in the pool is discarded by the pool; without a
  // listener the pool's 'error' event would end the process.
  pool.on('error', () => {});
  const db = postgresDatabase(pool, server);
  try {
    if (schema !== undefined) {
      const found = await db.rowOf('opening the store', 'SELECT 1 FROM pg_namespace WHERE nspname = $1', [schema]);
      if (!found) throw new AttestorError('ERR_STORE', `the PostgreSQL schema "${schema}" does not exist at ${server}: create it first`);
    }
    await migrate(db, clock);
  } catch (e) {
    await pool.end();
    throw e;
  }
  return createStore(db.database, clock);
}

interface PostgresDatabase {
  readonly database: Database;
  /** An unnamed statement outside the store's statements (the schema check). */
  rowOf(what: string, text: string, values: readonly unknown[]): Promise<Row | undefined>;
  /** Runs `work` between BEGIN and COMMIT on one connection (ROLLBACK when it throws). */
  inTransaction<T>(what: string, work: (query: QueryOn) => Promise<T>): Promise<T>;
}

/** A statement on the connection of a transaction; database errors come out as AttestorErrors. */
type QueryOn = (config: pg.QueryConfig) => Promise<pg.QueryResult<Row>>;

function postgresDatabase(pool: pg.Pool, server: string): PostgresDatabase {
  // Every call into the driver goes through here, so only its errors are classified.
  const query = async (on: pg.Pool | pg.PoolClient, what: string, config: pg.QueryConfig): Promise<pg.QueryResult<Row>> => {
    try {
      return await on.query<Row>(config);
    } catch (e) {
      throw postgresError(e, what, server);
    }
  };
  const onPool = (what: string): QueryOn => (config) => query(pool, what, config);
  // Named: each connection parses and plans a statement once, then only binds its parameters.
  const execute = async (on: QueryOn, { statement, params, result }: Query): Promise<unknown> => {
    const res = await on({ name: statement.name, text: statement.postgres, values: params as unknown[] });
    return result === 'row' ? res.rows[0] : result === 'rows' ? res.rows : (res.rowCount ?? 0);
  };
  const inTransaction = async <T>(what: string, work: (on: QueryOn) => Promise<T>): Promise<T> => {
    let client: pg.PoolClient;
    try {
      client = await pool.connect();
    } catch (e) {
      throw postgresError(e, what, server);
    }
    const on: QueryOn = (config) => query(client, what, config);
    let broken: Error | undefined;
    // A connection that dies while checked out (the server restarts) fails its query and also
    // emits 'error', which the pool listens to only on idle connections: unheard, it would end
    // the process. Such a connection is discarded at release.
    const dead = (e: Error) => (broken ??= e);
    client.on('error', dead);
    try {
      await on({ text: 'BEGIN' });
      const result = await work(on);
      await on({ text: 'COMMIT' });
      return result;
    } catch (e) {
      try {
        await client.query('ROLLBACK');
      } catch (rollbackFailed) {
        broken = rollbackFailed as Error;
      }
      throw e;
    } finally {
      client.off('error', dead);
      // A connection that could not roll back is closed, not handed to the next caller.
      client.release(broken);
    }
  };
  const database: Database = {
    dialect: 'postgres',
    row: async (statement, params) => (await execute(onPool(statement.name), { statement, params, result: 'row' })) as Row | undefined,
    rows: async (statement, params) => (await execute(onPool(statement.name), { statement, params, result: 'rows' })) as readonly Row[],
    changes: async (statement, params) => (await execute(onPool(statement.name), { statement, params, result: 'changes' })) as number,
    transaction: <T>(what: string, body: Body<T>) =>
      inTransaction(what, async (on) => {
        let step = body.next();
        while (!step.done) step = body.next(await execute(on, step.value));
        return step.value;
      }),
    ping: async () => void (await onPool('ping')({ text: 'SELECT 1' })),
    close: () => pool.end(),
  };
  return {
    database,
    rowOf: async (what, text, values) => (await onPool(what)({ text, values: values as unknown[] })).rows[0],
    inTransaction,
  };
}

/** Replicas starting at once migrate one after the other, under a lock of this schema. */
async function migrate(db: PostgresDatabase, clock: Clock): Promise<void> {
  await db.inTransaction('migrating the schema', async (on) => {
    await on({ text: "SELECT pg_advisory_xact_lock(hashtext('attestor.schema_migrations'), hashtext(current_schema()))" });
    await on({ text: schemaMigrationsTable('postgres') });
    const current = (await on({ text: 'SELECT COALESCE(MAX(version), 0) AS v FROM schema_migrations' })).rows[0]!.v as number;
    for (const migration of pendingMigrations(current)) {
      for (const statement of migration.statements('postgres')) await on({ text: statement });
      await on({ text: 'INSERT INTO schema_migrations (version, applied_at) VALUES ($1, $2)', values: [migration.version, clock()] });
    }
  });
}

/** host:port of a PostgreSQL URL, for messages: never its user or password. */
function serverOf(url: string): string {
  let parsed: URL;
  try {
    parsed = new URL(url);
  } catch {
    throw new AttestorError('ERR_CONFIG', 'the PostgreSQL URL is malformed (postgres://user@host:port/database)');
  }
  const host = parsed.hostname || parsed.searchParams.get('host') || 'localhost';
  return `${host}:${parsed.port || '5432'}`;
}

/** SQLSTATE classes and codes that mean the server cannot be used now (not a fault of the statement). */
function unavailable(sqlstate: string): boolean {
  return ['08', '28', '53', '57'].includes(sqlstate.slice(0, 2)) || sqlstate === '3D000';
}

function postgresError(e: unknown, what: string, server: string): unknown {
  if (e instanceof AttestorError) return e;
  if (e instanceof pg.DatabaseError) {
    const sqlstate = e.code ?? '';
    if (sqlstate === '23505') return storeError('conflict', what, `${e.constraint ?? 'unique constraint'}, SQLSTATE 23505`, e);
    if (unavailable(sqlstate)) return storeError('unavailable', what, `PostgreSQL at ${server}: ${e.message} (SQLSTATE ${sqlstate})`, e);
    return storeError('other', what, `${e.message} (SQLSTATE ${sqlstate})`, e);
  }
  // Anything else the driver throws is about the connection: refused, reset, timed out.
  const code = (e as NodeJS.ErrnoException | undefined)?.code;
  return storeError('unavailable', what, `PostgreSQL at ${server} is unreachable (${code ?? (e instanceof Error ? e.message : String(e))})`, e);
}
