import type pg from 'pg';
import type { Store } from '../../src/store/store.js';
import type { TestDatabase } from '../store-conformance.js';
import { createTestSchema, schemaClient } from '../store-pg.js';

/**
 * A private schema of the test PostgreSQL (added to `schemas`, which the suite drops after it:
 * a DROP costs more than a test); each store `open` opens is another pool, as another replica
 * would have (in this thread or on a worker thread); raw SQL on a connection of its own.
 */
export async function postgresTestDatabase(schemas: Set<string>, open: (schema: string, clock?: () => number) => Promise<Store>): Promise<TestDatabase> {
  const schema = await createTestSchema();
  schemas.add(schema);
  const stores: Store[] = [];
  let raw: pg.Client | undefined;
  return {
    async open(clock) {
      const store = await open(schema, clock);
      stores.push(store);
      return store;
    },
    async sql(text, params = []) {
      raw ??= await schemaClient(schema);
      return (await raw.query(text, [...params])).rows as Record<string, unknown>[];
    },
    async dispose() {
      await raw?.end();
      for (const store of stores) await store.close();
    },
  };
}
