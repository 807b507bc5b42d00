import { mkdtemp, rm, stat } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import BetterSqlite3 from 'better-sqlite3';
import { afterAll, describe, expect, it } from 'vitest';
import { openSqliteStore } from '../src/store/sqlite.js';
import { sqliteTestDatabase } from './helpers/sqlite-test-database.js';
import { storeConformance } from './store-conformance.js';

const roots: string[] = [];

storeConformance('sqlite', () => sqliteTestDatabase((path, clock) => openSqliteStore({ path, ...(clock ? { clock } : {}) })), async () => undefined);

describe('SQLite store: the file', () => {
  afterAll(async () => {
    await Promise.all(roots.map((root) => rm(root, { recursive: true, force: true })));
  });

  it('creates its directory 0700 and its file 0600, in WAL mode', async () => {
    const root = await mkdtemp(join(tmpdir(), 'attestor-store-'));
    roots.push(root);
    const path = join(root, 'new', 'dir', 'attestor.db');
    const store = await openSqliteStore({ path });
    try {
      expect((await stat(join(root, 'new'))).mode & 0o777).toBe(0o700);
      expect((await stat(join(root, 'new', 'dir'))).mode & 0o777).toBe(0o700);
      expect((await stat(path)).mode & 0o777).toBe(0o600);
      // The -wal file exists while a connection is open; SQLite gives it the database's mode.
      expect((await stat(`${path}-wal`)).mode & 0o777).toBe(0o600);
      const raw = new BetterSqlite3(path, { readonly: true });
      try {
        expect(raw.pragma('journal_mode', { simple: true })).toBe('wal');
      } finally {
        raw.close();
      }
    } finally {
      await store.close();
    }
  });
});
