import { inspect } from 'node:util';
import { describe, expect, it } from 'vitest';
import { openPostgresStore } from '../src/store/postgres.js';
import { postgresTestDatabase } from './helpers/postgres-test-database.js';
import { rejection } from './helpers/rejection.js';
import { storeConformance } from './store-conformance.js';
import { TEST_PG_URL, createTestSchema, dropTestSchema, schemaClient } from './store-pg.js';

const schemas = new Set<string>();

storeConformance('postgres', () => postgresTestDatabase(schemas, (schema, clock) => openPostgresStore({ url: TEST_PG_URL, schema, ...(clock ? { clock } : {}) })), async () => {
  await dropTestSchema(...schemas);
});

describe('PostgreSQL store: connection', () => {
  it('an unreachable server is ERR_STORE_UNAVAILABLE naming host:port, never the password', async () => {
    const e = await rejection(openPostgresStore({ url: 'postgres://attestor:s3cret-pw@127.0.0.1:1/attestor' }), 'ERR_STORE_UNAVAILABLE');
    expect(e.message).toContain('127.0.0.1:1');
    expect(e.message).not.toContain('s3cret-pw');
    expect(inspect(e, { depth: 10 })).not.toContain('s3cret-pw');
  });

  it('refuses a schema that does not exist (ERR_STORE) or is not a plain identifier (ERR_CONFIG)', async () => {
    await rejection(openPostgresStore({ url: TEST_PG_URL, schema: 'attestor_test_missing_0' }), 'ERR_STORE');
    await rejection(openPostgresStore({ url: TEST_PG_URL, schema: 'x; DROP TABLE y' }), 'ERR_CONFIG');
    await rejection(openPostgresStore({ url: TEST_PG_URL, schema: 'Upper' }), 'ERR_CONFIG');
  });

  it('keeps its tables in its schema', async () => {
    const schema = await createTestSchema();
    try {
      const store = await openPostgresStore({ url: TEST_PG_URL, schema });
      await store.close();
      const client = await schemaClient(schema);
      try {
        const { rows } = await client.query<{ n: number }>('SELECT COUNT(*) AS n FROM pg_tables WHERE schemaname = $1', [schema]);
        expect(rows[0]!.n).toBe(16);
      } finally {
        await client.end();
      }
    } finally {
      await dropTestSchema(schema);
    }
  });
});
