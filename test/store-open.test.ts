import { mkdtemp, rm, stat } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { openStore } from '../src/store/open.js';
import { rejection } from './helpers/rejection.js';
import { TEST_PG_URL, createTestSchema, dropTestSchema, schemaClient } from './store-pg.js';

describe('openStore', () => {
  const roots: string[] = [];
  const schemas: string[] = [];
  afterAll(async () => {
    for (const root of roots) await rm(root, { recursive: true, force: true });
    await dropTestSchema(...schemas);
  });

  it('opens SQLite at <dataDir>/attestor.db by default', async () => {
    const root = await mkdtemp(join(tmpdir(), 'attestor-open-'));
    roots.push(root);
    const store = await openStore({ dataDir: join(root, 'data') });
    try {
      expect(store.dialect).toBe('sqlite');
      expect((await stat(join(root, 'data', 'attestor.db'))).isFile()).toBe(true);
    } finally {
      await store.close();
    }
  });

  it('opens PostgreSQL for postgres:// and postgresql:// URLs, in the schema the URL names', async () => {
    const schema = await createTestSchema();
    schemas.push(schema);
    for (const scheme of ['postgres', 'postgresql']) {
      const store = await openStore({ dataDir: '/nonexistent', database: `${scheme}${TEST_PG_URL.slice('postgres'.length)}?schema=${schema}&application_name=attestor-test` });
      try {
        expect(store.dialect).toBe('postgres');
        await store.ping();
      } finally {
        await store.close();
      }
    }
    const client = await schemaClient(schema);
    try {
      expect((await client.query("SELECT 1 FROM pg_tables WHERE schemaname = $1 AND tablename = 'agents'", [schema])).rowCount).toBe(1);
    } finally {
      await client.end();
    }
  });

  it('refuses anything else (ERR_CONFIG), naming the value without its credentials', async () => {
    const e = await rejection(openStore({ dataDir: '/tmp', database: 'mysql://root:hunter2@db.example:3306/attestor' }), 'ERR_CONFIG');
    expect(e.message).toContain('mysql://db.example:3306/attestor');
    expect(e.message).not.toContain('hunter2');
    expect(e.message).not.toContain('root');
    await rejection(openStore({ dataDir: '/tmp', database: 'sqlite:attestor.db' }), 'ERR_CONFIG');
    const bad = await rejection(openStore({ dataDir: '/tmp', database: 'postgres://u:hunter2@[bad/db' }), 'ERR_CONFIG');
    expect(bad.message).not.toContain('hunter2');
  });

  it('refuses a schema parameter that is not a plain identifier (ERR_CONFIG)', async () => {
    await rejection(openStore({ dataDir: '/tmp', database: `${TEST_PG_URL}?schema=a%20b` }), 'ERR_CONFIG');
  });
});
