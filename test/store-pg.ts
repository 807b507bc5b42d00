import { randomBytes } from 'node:crypto';
import pg from 'pg';

/** The PostgreSQL of the tests: trust auth, user postgres, database test. */
export const TEST_PG_URL = 'postgres://postgres@127.0.0.1:5432/test';

async function admin<T>(work: (client: pg.Client) => Promise<T>): Promise<T> {
  const client = new pg.Client({ connectionString: TEST_PG_URL, connectionTimeoutMillis: 10_000 });
  try {
    await client.connect();
  } catch (e) {
    // Never skipped: these tests need the database, and say so.
    throw new Error(`the store tests need PostgreSQL at 127.0.0.1:5432 (trust auth, user postgres, database test), which did not answer: ${(e as Error).message}`);
  }
  try {
    return await work(client);
  } finally {
    await client.end();
  }
}

/** A new empty schema attestor_test_<random>. */
export async function createTestSchema(): Promise<string> {
  const schema = `attestor_test_${randomBytes(8).toString('hex')}`;
  await admin((c) => c.query(`CREATE SCHEMA ${schema}`));
  return schema;
}

export async function dropTestSchema(...schemas: string[]): Promise<void> {
  if (schemas.length === 0) return;
  // One statement (one transaction) per schema: a single DROP of many would hold a lock per table of them all.
  await admin(async (c) => {
    for (const schema of schemas) await c.query(`DROP SCHEMA IF EXISTS ${schema} CASCADE`);
  });
}

/** A client in `schema`, BIGINT as numbers as the store reads them. */
export async function schemaClient(schema: string): Promise<pg.Client> {
  const types = new pg.TypeOverrides();
  types.setTypeParser(pg.types.builtins.INT8, Number);
  const client = new pg.Client({ connectionString: TEST_PG_URL, types, options: `-c search_path=${schema}` });
  await client.connect();
  return client;
}
