/**
 * The audit checkpointer of a running verifier: a checkpoint once the interval has passed and
 * the chain moved, none while it stands still, and one of the head at a clean shutdown; each
 * verifies with the audit key.
 */
import { afterEach, describe, expect, it, vi } from 'vitest';
import { verifyStoredChain } from '../src/audit/verify-stored-chain.js';
import { bootstrapCa, createApiClient } from '../src/client/api-client.js';
import { openStore } from '../src/store/open.js';
import { TokenCreateResponse } from '../src/wire/schemas.js';
import { startTestVerifier, type TestVerifier } from './helpers/verifier.js';

describe('audit checkpointer', () => {
  const started: TestVerifier[] = [];
  afterEach(async () => {
    for (const v of started.splice(0)) await v.stop();
  });

  async function verifierWith(audit: { checkpointEvery: number; checkpointSeconds: number }) {
    const v = await startTestVerifier({ config: { audit } });
    started.push(v);
    const client = createApiClient({ server: v.url, caPem: await bootstrapCa(v.url, v.caFingerprint), token: v.adminToken });
    const createToken = () => client.call('POST', '/v1/tokens', TokenCreateResponse, { role: 'relying-party' });
    return { v, client, createToken };
  }

  it('checkpoints a chain that moved once the interval has passed, and not while it stands still', async () => {
    const { v, client, createToken } = await verifierWith({ checkpointEvery: 1000, checkpointSeconds: 1 });
    try {
      const { store } = v.verifier;
      await createToken();
      await vi.waitFor(async () => expect((await store.audit.lastCheckpoint())?.seq).toBe((await store.audit.recordedHead()).seq), { timeout: 10_000, interval: 200 });
      const last = await store.audit.lastCheckpoint();
      await new Promise((resolve) => setTimeout(resolve, 2500));
      expect(await store.audit.lastCheckpoint()).toStrictEqual(last);
      expect((await verifyStoredChain(store)).verdict).toMatchObject({ ok: true, uncheckpointed: 0, lastCheckpoint: { seq: last!.seq } });
    } finally {
      client.close();
    }
  });

  it('verifies the entries since its last checkpoint a page at a time, and signs the head they reach', async () => {
    // More entries than the checkpointer verifies between two turns of the event loop (25).
    const { v, client, createToken } = await verifierWith({ checkpointEvery: 60, checkpointSeconds: 3600 });
    try {
      const { store } = v.verifier;
      while ((await store.audit.recordedHead()).seq < 70) await createToken();
      await vi.waitFor(async () => expect((await store.audit.lastCheckpoint())?.seq).toBeGreaterThanOrEqual(60), { timeout: 10_000, interval: 200 });
      const last = (await store.audit.lastCheckpoint())!;
      expect((await verifyStoredChain(store)).verdict).toMatchObject({ ok: true, lastCheckpoint: { seq: last.seq } });
    } finally {
      client.close();
    }
  });

  it('a clean shutdown checkpoints the head', async () => {
    const { v, client, createToken } = await verifierWith({ checkpointEvery: 1000, checkpointSeconds: 3600 });
    await createToken();
    client.close();
    expect(await v.verifier.store.audit.lastCheckpoint()).toBeNull();
    await v.verifier.close();
    const store = await openStore({ dataDir: v.dataDir });
    try {
      const head = await store.audit.recordedHead();
      expect(head.seq).toBeGreaterThan(1);
      expect(await store.audit.lastCheckpoint()).toMatchObject({ seq: head.seq, hash: head.hash });
      expect((await verifyStoredChain(store)).verdict).toMatchObject({ ok: true, checkpoints: 1, uncheckpointed: 0 });
    } finally {
      await store.close();
    }
  });
});
