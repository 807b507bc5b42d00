import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import BetterSqlite3 from 'better-sqlite3';
import type { Store } from '../../src/store/store.js';
import type { TestDatabase } from '../store-conformance.js';

/**
 * A SQLite database file of its own in a temporary directory, its stores opened by `open`
 * (in this thread or on a worker thread); raw SQL on another connection.
 */
export async function sqliteTestDatabase(open: (path: string, clock?: () => number) => Promise<Store>): Promise<TestDatabase & { readonly path: string }> {
  const root = await mkdtemp(join(tmpdir(), 'attestor-store-'));
  const path = join(root, 'data', 'attestor.db');
  const stores: Store[] = [];
  let raw: BetterSqlite3.Database | undefined;
  return {
    path,
    async open(clock) {
      const store = await open(path, clock);
      stores.push(store);
      return store;
    },
    async sql(text, params = []) {
      raw ??= new BetterSqlite3(path);
      const statement = raw.prepare(text);
      const bound = Object.fromEntries(params.map((p, i) => [i + 1, p]));
      return statement.reader ? (statement.all(bound) as Record<string, unknown>[]) : (statement.run(bound), []);
    },
    async dispose() {
      raw?.close();
      for (const store of stores) await store.close();
      await rm(root, { recursive: true, force: true });
    },
  };
}
