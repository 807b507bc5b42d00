/**
 * Key rotation and CRLs with two verifier replicas on one PostgreSQL schema and one key
 * directory: rotations asked of both at once rotate once (one audit entry), both publish the
 * same keys, and the CRL Number only grows, across the replicas and across a restart. And the
 * timer's own rotation of a CA nearing its end.
 */
import { randomBytes, randomUUID } from 'node:crypto';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { bootstrapCa, createApiClient, type ApiClient } from '../src/client/api-client.js';
import type { Store } from '../src/store/store.js';
import { runAttestor } from '../src/cli/program.js';
import { KeyList, TokenCreateResponse } from '../src/wire/schemas.js';
import { refused } from './helpers/api.js';
import { runCli } from './helpers/cli.js';
import { crlNumber, crlSerials } from './helpers/crl.js';
import { startTestVerifier, type TestVerifier } from './helpers/verifier.js';
import { createTestSchema, dropTestSchema, TEST_PG_URL } from './store-pg.js';

describe('key rotation with two replicas on one PostgreSQL', { timeout: 120_000 }, () => {
  let schema: string;
  let keysDir: string;
  const replicas: TestVerifier[] = [];
  const clients: ApiClient[] = [];
  let adminToken: string;

  /** A replica on the shared schema and key directory, and an admin client of it. */
  async function replica(): Promise<{ v: TestVerifier; admin: ApiClient }> {
    const v = await startTestVerifier({ config: { database: `${TEST_PG_URL}?schema=${schema}`, keys: `file:${keysDir}` } });
    replicas.push(v);
    adminToken ??= v.adminToken;
    const admin = createApiClient({ server: v.url, caPem: await bootstrapCa(v.url, v.caFingerprint), token: adminToken });
    clients.push(admin);
    return { v, admin };
  }

  let one: { v: TestVerifier; admin: ApiClient };
  let two: { v: TestVerifier; admin: ApiClient };

  beforeAll(async () => {
    schema = await createTestSchema();
    keysDir = mkdtempSync(join(tmpdir(), 'attestor-shared-keys-'));
    one = await replica();
    two = await replica();
    expect(two.v.caFingerprint).toBe(one.v.caFingerprint);
  }, 60_000);

  afterAll(async () => {
    for (const c of clients) c.close();
    for (const v of replicas) await v.stop();
    if (schema) await dropTestSchema(schema);
    if (keysDir) rmSync(keysDir, { recursive: true, force: true });
  });

  it('rotations asked of both replicas at once: those that overlap rotate once, each rotation is audited once, and both replicas publish every key', async () => {
    const before = (await one.admin.call('GET', '/v1/keys', KeyList)).items.find((k) => k.role === 'jwt' && k.state === 'active')!;
    const answers = await Promise.all(
      Array.from({ length: 6 }, (_, i) => (i % 2 ? two : one).admin.call('POST', '/v1/keys/rotate', KeyList, { key: 'jwt', now: true })),
    );
    // Requests that overlap find one prepared key and promote it once (the store's race is
    // tested in test/store-conformance.ts); one that arrives after a rotation has ended asks
    // for another. Each answer shows the key its own rotation made active.
    const rotated = [...new Set(answers.map((a) => a.items.find((k) => k.state === 'active')!.kid))];
    expect(rotated).not.toContain(before.kid);
    const after = (await one.admin.call('GET', '/v1/keys', KeyList)).items.filter((k) => k.role === 'jwt');
    expect(after.filter((k) => k.state === 'active')).toHaveLength(1);
    expect(rotated).toContain(after.find((k) => k.state === 'active')!.kid);
    const audit = (await one.v.verifier.store.audit.list({ limit: 500 })).items;
    for (const action of ['key.prepare', 'key.activate', 'key.retire']) {
      expect(audit.filter((e) => e.action === action && e.subject === 'jwt'), action).toHaveLength(rotated.length);
    }

    // The other replica sees them within its polling interval.
    for (const { admin } of [one, two]) {
      await expect.poll(async () => JSON.parse((await admin.get('/.well-known/jwks.json')).body.toString()).keys.map((k: { kid: string }) => k.kid).sort(), { timeout: 5000 }).toEqual(
        [before.kid, ...rotated].sort(),
      );
    }
    const sequences = await Promise.all([one, two].map(async ({ admin }) => JSON.parse((await admin.get('/v1/bundle')).body.toString()).spiffe_sequence));
    expect(sequences[0]).toBe(sequences[1]);
  });

  it('only an admin rotates: an operator or auditor may list, and a refused or malformed request changes nothing', async () => {
    const store = one.v.verifier.store;
    const before = { ring: await store.keys.ring(), head: await store.audit.head() };
    for (const role of ['operator', 'auditor'] as const) {
      const token = (await one.admin.call('POST', '/v1/tokens', TokenCreateResponse, { role, label: role })).token;
      const client = createApiClient({ server: one.v.url, caPem: await bootstrapCa(one.v.url, one.v.caFingerprint), token });
      clients.push(client);
      expect((await client.call('GET', '/v1/keys', KeyList)).items).toHaveLength(before.ring.keys.length);
      await refused(client.call('POST', '/v1/keys/rotate', KeyList, { key: 'x509-ca', now: true }), 'ERR_FORBIDDEN');
    }
    await refused(one.admin.call('POST', '/v1/keys/rotate', KeyList, { key: 'root' }), 'ERR_INPUT');
    await refused(one.admin.call('POST', '/v1/keys/rotate', KeyList, { key: 'jwt', now: 'yes' }), 'ERR_INPUT');
    await refused(one.admin.call('POST', '/v1/keys/rotate', KeyList, { key: 'jwt', state: 'active' }), 'ERR_INPUT');
    const cli = await runCli(runAttestor, ['keys', 'rotate', '--key', 'root', '--server', one.v.url, '--ca-fingerprint', one.v.caFingerprint]);
    expect(cli.code).toBe(2);
    expect(await store.keys.ring()).toStrictEqual(before.ring);
    const head = await store.audit.head();
    expect((await store.audit.list({ limit: 500, after: String(before.head!.seq) })).items.map((e) => e.action)).toEqual(['token.create', 'token.create']);
    expect(head!.action).toBe('token.create');
  });

  it('the CRL Number only grows, across replicas and across a restart; both serve the same CRL', async () => {
    const caKid = (await one.admin.call('GET', '/v1/keys', KeyList)).items.find((k) => k.role === 'x509-ca' && k.state === 'active')!.kid;
    const crlAt = async (admin: ApiClient) => (await admin.get('/v1/crl')).body;

    const first = await revokedCertificate(one.v.verifier.store, caKid);
    const a = await crlAt(two.admin);
    expect(crlSerials(a)).toContain(first);
    expect((await crlAt(one.admin)).equals(a)).toBe(true);

    const second = await revokedCertificate(two.v.verifier.store, caKid);
    const b = await crlAt(one.admin);
    expect(crlSerials(b)).toEqual(expect.arrayContaining([first, second]));
    expect(crlNumber(b)).toBeGreaterThan(crlNumber(a));
    expect((await crlAt(two.admin)).equals(b)).toBe(true);
    expect((await two.admin.get(`/v1/crl/${caKid}`)).body.equals(b)).toBe(true);

    // A restarted replica serves the stored CRL, and the next one after it.
    const restarted = await replica();
    await replicas.splice(replicas.indexOf(one.v), 1)[0]!.stop();
    expect(crlNumber(await crlAt(restarted.admin))).toBe(crlNumber(b));
    await revokedCertificate(restarted.v.verifier.store, caKid);
    const c = await crlAt(two.admin);
    expect(crlNumber(c)).toBeGreaterThan(crlNumber(b));
    expect((await crlAt(restarted.admin)).equals(c)).toBe(true);
  });
});

describe("the timer rotates a CA nearing its end by itself", { timeout: 60_000 }, () => {
  it('prepares a new CA when a sixth of its lifetime is left, and activates it after the delay; audited as the system', async () => {
    let skewMs = 0;
    const v = await startTestVerifier({ config: { ca: { lifetimeDays: 6 }, keyRotation: { activationDelaySeconds: 3600 } }, now: () => Date.now() + skewMs });
    try {
      const store = v.verifier.store;
      const first = (await store.keys.list('x509-ca'))[0]!;
      // Four days in: more than a sixth left, nothing happens.
      skewMs = 4 * 86_400_000;
      await new Promise((r) => setTimeout(r, 2500));
      expect((await store.keys.list('x509-ca')).map((k) => k.state)).toEqual(['active']);
      skewMs = 5 * 86_400_000 + 60_000;
      await expect.poll(async () => (await store.keys.list('x509-ca')).map((k) => k.state), { timeout: 10_000 }).toEqual(['active', 'prepared']);
      const prepared = (await store.keys.list('x509-ca'))[1]!;
      expect(prepared.notAfter! - prepared.createdAt).toBeGreaterThan(5 * 86_400_000);
      skewMs += 3600_000;
      await expect.poll(async () => (await store.keys.list('x509-ca')).map((k) => [k.kid, k.state]), { timeout: 10_000 }).toEqual([
        [first.kid, 'old'],
        [prepared.kid, 'active'],
      ]);
      const entries = (await store.audit.list({ limit: 500 })).items.filter((e) => e.subject === 'x509-ca');
      expect(entries.map((e) => [e.action, e.actor])).toEqual([
        ['key.create', 'system'],
        ['key.prepare', 'system'],
        ['key.activate', 'system'],
        ['key.retire', 'system'],
      ]);
    } finally {
      await v.stop();
    }
  });
});

/** An X509-SVID of the CA `caKid` recorded for a new agent, then revoked by quarantining it; its serial. */
async function revokedCertificate(store: Store, caKid: string): Promise<string> {
  const now = Date.now();
  const agentId = randomBytes(32).toString('hex');
  const system = (action: string) => ({ actor: 'system', action, subject: agentId, details: {} });
  await store.agents.activate(
    { id: agentId, ekPublic: randomBytes(100), akPublic: randomBytes(90), ekCertificate: null, labels: {}, createdAt: now },
    system('agent.activate'),
  );
  const verdictId = randomUUID();
  const serial = `7${randomBytes(15).toString('hex')}`;
  await store.attestations.record({
    verdict: { id: verdictId, agentId, at: now, status: 'affirming', baselineId: null, baselineVersion: null, reasons: [], claims: {} },
    credentials: [
      { id: serial, kind: 'x509-svid', agentId, verdictId, issuedAt: now, expiresAt: now + 3600_000, certificateSha256: randomBytes(32).toString('hex'), revoked: false, issuerKid: caKid },
    ],
    clock: null,
    evidence: null,
    audit: [system('attestation.verdict')],
  });
  await store.agents.setStatus(agentId, 'quarantined', now, system('agent.quarantine'));
  return serial;
}
