import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import BetterSqlite3 from 'better-sqlite3';
import { afterAll, describe, expect, it } from 'vitest';
import { MIGRATIONS, schemaMigrationsTable } from '../src/store/migrations.js';
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

    it('version 3 measures the freshness of agents already enrolled from their last credentials, not from their enrollment', async () => {
      const t = await fresh();
      // A database as version 2 left it: one agent enrolled 30 days ago, its last credentials 5 minutes old.
      await t.sql(schemaMigrationsTable(dialect));
      for (const m of MIGRATIONS.filter((x) => x.version <= 2)) {
        for (const statement of m.statements(dialect)) await t.sql(statement);
        await t.sql(`INSERT INTO schema_migrations (version, applied_at) VALUES (${m.version}, 0)`);
      }
      const now = Date.now();
      const [enrolled, issued] = [now - 30 * 86_400_000, now - 300_000];
      const bytes = (hex: string) => (dialect === 'sqlite' ? `X'${hex}'` : `'\\x${hex}'`);
      await t.sql(`INSERT INTO agents (id, ek_public, ak_public, labels, status, created_at) VALUES ('old', ${bytes('01')}, ${bytes('02')}, '{}', 'active', ${enrolled})`);
      await t.sql(`INSERT INTO agents (id, ek_public, ak_public, labels, status, created_at) VALUES ('never', ${bytes('03')}, ${bytes('04')}, '{}', 'active', ${enrolled})`);
      // Credentials exist only once the first start recorded the keys.
      await t.sql(`INSERT INTO issuing_keys (kid, name, uri, state, public_key_spki, created_at) VALUES ('k', 'jwt', 'file:jwt.pem', 'active', ${bytes('05')}, ${enrolled})`);
      await t.sql(`INSERT INTO verdicts (id, agent_id, at, status, reasons, claims) VALUES ('v', 'old', ${issued}, 'affirming', '[]', '{}')`);
      for (const [id, at] of [['c1', issued - 3_600_000], ['c2', issued]] as const) {
        await t.sql(`INSERT INTO credentials (id, kind, agent_id, verdict_id, issued_at, expires_at, certificate_sha256, revoked) VALUES ('${id}', 'jwt-svid', 'old', 'v', ${at}, ${at + 3_600_000}, 'x', FALSE)`);
      }
      const store = await t.open();
      try {
        expect((await store.agents.get('old'))?.lastAffirmedAt).toBe(issued);
        expect((await store.agents.get('never'))?.lastAffirmedAt).toBeNull();
        // Only the agent never given credentials is due (an hour's window).
        expect(await store.agents.markStale(now - 3_600_000, now, 10)).toStrictEqual(['never']);
      } finally {
        await store.close();
      }
    });

    it('replicas opening a new database at once migrate it once', async () => {
      const t = await fresh();
      const stores = await Promise.all(Array.from({ length: 4 }, () => t.open()));
      for (const store of stores) await store.close();
      expect((await t.sql('SELECT version FROM schema_migrations')).map((r) => Number(r.version))).toStrictEqual(MIGRATIONS.map((m) => m.version));
    });
  });
}
