import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import BetterSqlite3 from 'better-sqlite3';
import { afterAll, describe, expect, it } from 'vitest';
import { MIGRATIONS } from '../src/store/migrations.js';
import { openPostgresStore } from '../src/store/postgres.js';
import { openSqliteStore } from '../src/store/sqlite.js';
import type { Store } from '../src/store/store.js';
import { rejection } from './helpers/rejection.js';
import { TEST_PG_URL, createTestSchema, dropTestSchema, schemaClient } from './store-pg.js';

const LATEST = MIGRATIONS[MIGRATIONS.length - 1]!.version;

/** A dialect as this test drives it: open a Store, run raw SQL, leave nothing behind. */
interface Target {
  open(): Promise<Store>;
  sql(text: string): Promise<Record<string, unknown>[]>;
  remove(): Promise<void>;
}

async function sqliteTarget(): Promise<Target> {
  const root = await mkdtemp(join(tmpdir(), 'attestor-migrations-'));
  const path = join(root, 'attestor.db');
  return {
    open: () => openSqliteStore({ path }),
    async sql(text) {
      const db = new BetterSqlite3(path);
      try {
        const statement = db.prepare(text);
        return statement.reader ? (statement.all() as Record<string, unknown>[]) : (statement.run(), []);
      } finally {
        db.close();
      }
    },
    remove: () => rm(root, { recursive: true, force: true }),
  };
}

async function postgresTarget(): Promise<Target> {
  const schema = await createTestSchema();
  return {
    open: () => openPostgresStore({ url: TEST_PG_URL, schema }),
    async sql(text) {
      const client = await schemaClient(schema);
      try {
        return (await client.query(text)).rows as Record<string, unknown>[];
      } finally {
        await client.end();
      }
    },
    remove: () => dropTestSchema(schema),
  };
}

it('migrations are numbered 1, 2, 3 ... in order', () => {
  expect(MIGRATIONS.map((m) => m.version)).toStrictEqual(MIGRATIONS.map((_, i) => i + 1));
});

for (const [dialect, target] of [
  ['sqlite', sqliteTarget],
  ['postgres', postgresTarget],
] as const) {
  describe(`migrations: ${dialect}`, () => {
    const made: Target[] = [];
    const fresh = async () => {
      const t = await target();
      made.push(t);
      return t;
    };
    afterAll(async () => {
      for (const t of made) await t.remove();
    });

    it('migrate an empty database, then again as a no-op', async () => {
      const t = await fresh();
      await (await t.open()).close();
      const first = await t.sql('SELECT version, applied_at FROM schema_migrations ORDER BY version');
      expect(first.map((r) => Number(r.version))).toStrictEqual(MIGRATIONS.map((m) => m.version));
      const store = await t.open();
      await store.close();
      expect(await t.sql('SELECT version, applied_at FROM schema_migrations ORDER BY version')).toStrictEqual(first);
      expect(await t.sql('SELECT seq, hash FROM audit_head')).toStrictEqual([{ seq: 0, hash: '0'.repeat(64) }]);
    });

    it('refuses a database migrated by a newer Attestor (ERR_STORE), touching nothing', async () => {
      const t = await fresh();
      await (await t.open()).close();
      await t.sql(`INSERT INTO schema_migrations (version, applied_at) VALUES (${LATEST + 1}, 0)`);
      const e = await rejection(t.open(), 'ERR_STORE');
      expect(e.message).toContain(`version ${LATEST + 1}`);
      expect((await t.sql('SELECT version FROM schema_migrations')).length).toBe(MIGRATIONS.length + 1);
    });

    it('replicas opening a new database at once migrate it once', async () => {
      const t = await fresh();
      const stores = await Promise.all(Array.from({ length: 4 }, () => t.open()));
      for (const store of stores) await store.close();
      expect((await t.sql('SELECT version FROM schema_migrations')).map((r) => Number(r.version))).toStrictEqual(MIGRATIONS.map((m) => m.version));
    });
  });
}
