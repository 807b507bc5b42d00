/**
 * The store on a worker thread (the server's), SQLite and PostgreSQL: the conformance suite
 * through the thread, errors that keep their class and code across it, and a process that
 * exits once its calls are answered. The thread runs the build (dist/), which `npm test` makes
 * first.
 */
import { execFile } from 'node:child_process';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { promisify } from 'node:util';
import { afterAll, describe, expect, it } from 'vitest';
import { AgentNotActiveError, AttestorError } from '../src/errors.js';
import { openSqliteStore } from '../src/store/sqlite.js';
import { openStoreThread } from '../src/store/store-thread.js';
import { postgresTestDatabase } from './helpers/postgres-test-database.js';
import { rejection } from './helpers/rejection.js';
import { sqliteTestDatabase } from './helpers/sqlite-test-database.js';
import { activated, attestation, audit, storeConformance } from './store-conformance.js';
import { TEST_PG_URL, createTestSchema, dropTestSchema } from './store-pg.js';

const roots: string[] = [];

async function newPath(): Promise<string> {
  const root = await mkdtemp(join(tmpdir(), 'attestor-store-thread-'));
  roots.push(root);
  return join(root, 'data', 'attestor.db');
}

const removeRoots = async () => {
  await Promise.all(roots.map((root) => rm(root, { recursive: true, force: true })));
};

storeConformance(
  'sqlite',
  () =>
    sqliteTestDatabase((path, clock) => {
      if (clock) throw new Error('a store on a thread reads its own clock');
      return openStoreThread({ sqlite: { path } });
    }),
  async () => undefined,
  { title: 'sqlite on a worker thread', clock: false },
);

const schemas = new Set<string>();

storeConformance(
  'postgres',
  () =>
    postgresTestDatabase(schemas, (schema, clock) => {
      if (clock) throw new Error('a store on a thread reads its own clock');
      return openStoreThread({ postgres: { url: TEST_PG_URL, schema } });
    }),
  () => dropTestSchema(...schemas),
  { title: 'postgres on a worker thread', clock: false },
);

describe('store on a worker thread', () => {
  afterAll(removeRoots);

  it('SQLite: answers with the values the in-process store gives, byte arrays included, and errors with their class, code and status', async () => {
    const path = await newPath();
    const store = await openStoreThread({ sqlite: { path } });
    try {
      const agent = await activated(store);
      expect(agent.akPublic).toBeInstanceOf(Uint8Array);
      const inProcess = await openSqliteStore({ path });
      try {
        expect(await store.agents.get(agent.id)).toStrictEqual(await inProcess.agents.get(agent.id));
      } finally {
        await inProcess.close();
      }
      await store.agents.setStatus(agent.id, 'quarantined', Date.now(), audit('agent.quarantine', agent.id));
      const refused = await store.attestations.record(attestation(agent.id)).catch((e: unknown) => e);
      expect(refused).toBeInstanceOf(AgentNotActiveError);
      expect(refused).toMatchObject({ code: 'ERR_AGENT_NOT_ACTIVE', agentStatus: 'quarantined' });
      const missing = await store.agents.setStatus('no-such-agent', 'active', Date.now(), audit('agent.release', 'x')).catch((e: unknown) => e);
      expect(missing).toBeInstanceOf(AttestorError);
      expect(missing).toMatchObject({ code: 'ERR_AGENT_NOT_FOUND' });
    } finally {
      await store.close();
    }
  });

  it('refuses a call it cannot send (an argument that cannot be cloned) alone, and serves the next; after close every call is ERR_STORE_UNAVAILABLE', async () => {
    const store = await openStoreThread({ sqlite: { path: await newPath() } });
    const cannotClone = (() => 'x') as unknown as string;
    expect(((await store.agents.get(cannotClone).catch((e: unknown) => e)) as Error).name).toBe('DataCloneError');
    // Calls made together travel together: the one that cannot be sent fails, the others are answered.
    const [before, refused, after] = await Promise.allSettled([store.agents.count(), store.agents.get(cannotClone), store.agents.count()]);
    expect([before, after]).toStrictEqual([{ status: 'fulfilled', value: 0 }, { status: 'fulfilled', value: 0 }]);
    expect(refused).toMatchObject({ status: 'rejected', reason: { name: 'DataCloneError' } });
    await store.ping();
    await store.close();
    await expect(store.ping()).rejects.toMatchObject({ code: 'ERR_STORE_UNAVAILABLE' });
  });

  it('keeps a process alive while a call is waiting, and lets it exit when none is (no close needed)', async () => {
    const path = await newPath();
    const module = new URL('../dist/store/store-thread.js', import.meta.url).href;
    const script = `const { openStoreThread } = await import(${JSON.stringify(module)});
      const store = await openStoreThread({ sqlite: { path: ${JSON.stringify(path)} } });
      await new Promise((r) => setTimeout(r, 50));
      console.log(JSON.stringify(await store.keys.ring()));`;
    const file = join(dirname(path), '..', 'exits.mjs');
    await writeFile(file, script);
    const { stdout } = await promisify(execFile)(process.execPath, [file], { timeout: 20_000 });
    expect(JSON.parse(stdout)).toStrictEqual({ sequence: expect.any(Number), keys: [] });
  });

  it('PostgreSQL: a database it cannot open fails as it would in process: its code, host:port, never the password', async () => {
    const e = await rejection(openStoreThread({ postgres: { url: 'postgres://attestor:s3cret-pw@127.0.0.1:1/attestor' } }), 'ERR_STORE_UNAVAILABLE');
    expect(e.message).toContain('127.0.0.1:1');
    expect(e.message).not.toContain('s3cret-pw');
    await rejection(openStoreThread({ postgres: { url: TEST_PG_URL, schema: 'attestor_test_missing_0' } }), 'ERR_STORE');
    await rejection(openStoreThread({ postgres: { url: TEST_PG_URL, schema: 'Upper' } }), 'ERR_CONFIG');
  });

  it('PostgreSQL: closed with more calls in flight than its pool has connections, every call settles: answered, or ERR_STORE_UNAVAILABLE', async () => {
    const schema = await createTestSchema();
    schemas.add(schema);
    const store = await openStoreThread({ postgres: { url: TEST_PG_URL, schema } });
    // 30 calls for 10 connections: those still queued for one when the pool ends are never answered by it.
    const calls = Promise.allSettled(Array.from({ length: 30 }, () => store.agents.count()));
    await new Promise((resolve) => setImmediate(resolve));
    await store.close();
    const settled = await Promise.race([calls, new Promise<'hung'>((resolve) => setTimeout(() => resolve('hung'), 5_000))]);
    expect(settled).not.toBe('hung');
    const outcomes = settled as PromiseSettledResult<number>[];
    expect(outcomes.some((o) => o.status === 'fulfilled')).toBe(true);
    for (const o of outcomes) {
      if (o.status === 'fulfilled') expect(o.value).toBe(0);
      else expect(o.reason).toMatchObject({ code: 'ERR_STORE_UNAVAILABLE', message: 'the store was closed before it answered' });
    }
  });
});
