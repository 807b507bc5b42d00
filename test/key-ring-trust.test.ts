/**
 * What the keys table can and cannot make a verifier do (real verifiers, PostgreSQL, key
 * files): a row written by someone who can write the database but holds no key publishes
 * nothing (a JWT key, a CA root, a key of one role recorded under another); replicas that
 * cannot load the active key the table names issue nothing and say they are not ready, until
 * they can; the verifier's own TLS certificate follows the active CA.
 */
import { execFileSync } from 'node:child_process';
import { mkdtempSync, readFileSync, renameSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { connect } from 'node:tls';
import { randomBytes, X509Certificate } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import { bootstrapCa, createApiClient, type ApiClient } from '../src/client/api-client.js';
import { openFileKeyManager } from '../src/issuer/file-keys.js';
import { kidOf } from '../src/issuer/jwks.js';
import { recordOf } from '../src/server/issuing-keys.js';
import { openPostgresStore } from '../src/store/postgres.js';
import { KeyList } from '../src/wire/schemas.js';
import { startTestVerifier, type TestVerifier } from './helpers/verifier.js';
import { createTestSchema, dropTestSchema, schemaClient, TEST_PG_URL } from './store-pg.js';

describe('the keys table and what a verifier makes of it', { timeout: 120_000 }, () => {
  let schema: string;
  let tmp: string;
  let keysDir: string;
  const verifiers: TestVerifier[] = [];
  const clients: ApiClient[] = [];
  let a: { v: TestVerifier; admin: ApiClient; anon: ApiClient };
  let b: { v: TestVerifier; admin: ApiClient; anon: ApiClient };

  async function replica(keysDir: string, token?: string) {
    const v = await startTestVerifier({ config: { database: `${TEST_PG_URL}?schema=${schema}`, keys: `file:${keysDir}` } });
    verifiers.push(v);
    const caPem = await bootstrapCa(v.url, v.caFingerprint);
    const admin = createApiClient({ server: v.url, caPem, token: token ?? v.adminToken! });
    const anon = createApiClient({ server: v.url, caPem });
    clients.push(admin, anon);
    return { v, admin, anon };
  }

  const sql = async (text: string, values: unknown[] = []) => {
    const client = await schemaClient(schema);
    try {
      return (await client.query(text, values)).rows;
    } finally {
      await client.end();
    }
  };
  const jwksKids = async (at: typeof a) => (JSON.parse((await at.anon.get('/.well-known/jwks.json')).body.toString()) as { keys: { kid: string }[] }).keys.map((k) => k.kid).sort();
  const caPems = async (at: typeof a) => (await at.anon.get('/v1/ca.pem')).body.toString();
  const ready = async (at: typeof a) => (await at.anon.get('/readyz')).status;

  beforeAll(async () => {
    schema = await createTestSchema();
    tmp = mkdtempSync(join(tmpdir(), 'attestor-key-ring-'));
    // Replicas find keys by the URI the table records: they share one key directory.
    keysDir = join(tmp, 'keys');
    a = await replica(keysDir);
    b = await replica(keysDir, a.v.adminToken);
  }, 120_000);

  afterAll(async () => {
    for (const c of clients) c.close();
    for (const v of verifiers) await v.stop();
    if (schema) await dropTestSchema(schema);
    if (tmp) rmSync(tmp, { recursive: true, force: true });
  });

  it('rows written into the table without the keys publish nothing: a JWT key, a CA root, a key recorded under another role', async () => {
    const before = { kids: await jwksKids(a), cas: await caPems(a) };
    // An attacker's own JWT key and self-signed root, and the real CA key recorded as a JWT key.
    const pemDir = mkdtempSync(join(tmp, 'attacker-'));
    execFileSync('openssl', ['req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256', '-nodes', '-keyout', join(pemDir, 'k.pem'), '-out', join(pemDir, 'c.pem'), '-subj', '/O=attestor.internal', '-days', '30'], { stdio: 'ignore' });
    const root = new X509Certificate(readFileSync(join(pemDir, 'c.pem')));
    const spki = root.publicKey.export({ type: 'spki', format: 'der' });
    const [realCa] = await sql("SELECT public_key_spki FROM issuing_keys WHERE name = 'x509-ca' AND state = 'active'");
    const now = Date.now();
    const insert = (kid: string, name: string, uri: string, key: Buffer, certificate: Buffer | null) =>
      sql('INSERT INTO issuing_keys (kid, name, uri, state, public_key_spki, certificate, created_at, not_after, activated_at, retired_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $7, $7)', [
        kid, name, uri, 'old', key, certificate, now, certificate ? now + 30 * 86_400_000 : null,
      ]);
    const attacker = await kidOf(root.publicKey);
    const [jwtKid, caKid, swappedKid] = [randomBytes(32).toString('base64url'), attacker, randomBytes(32).toString('base64url')];
    await insert(jwtKid, 'jwt', `file:${join(keysDir, 'jwt.0123456789abcdef.pem')}`, spki, null);
    await insert(caKid, 'x509-ca', `file:${join(keysDir, 'x509-ca.pem')}`, spki, root.raw);
    await insert(swappedKid, 'jwt', `file:${join(keysDir, 'x509-ca.pem')}`, realCa.public_key_spki, null);
    await sql('UPDATE key_ring SET sequence = sequence + 1');
    // Each replica reads the table within a key round (a second).
    await new Promise((r) => setTimeout(r, 2500));
    for (const at of [a, b]) {
      expect(await jwksKids(at)).toStrictEqual(before.kids);
      expect(await caPems(at)).toBe(before.cas);
      expect((await at.anon.get(`/v1/crl/${caKid}`)).status).toBe(404);
      expect((await at.anon.get(`/v1/roots/${createFingerprint(root.raw)}`)).status).toBe(404);
      expect(await ready(at)).toBe(200);
    }
    await sql('DELETE FROM issuing_keys WHERE kid = ANY($1)', [[jwtKid, caKid, swappedKid]]);
    await sql('UPDATE key_ring SET sequence = sequence + 1');
  });

  it('replicas that cannot load the active key the table names issue nothing and are not ready; once they can, they serve it', async () => {
    // A key made elsewhere (another replica's HSM session, a volume not yet replicated here):
    // generated and recorded active, its file out of the replicas' reach.
    const maker = await openFileKeyManager(keysDir);
    const store = await openPostgresStore({ url: TEST_PG_URL, schema });
    try {
      const signer = await maker.generate('jwt');
      const file = signer.uri.slice('file:'.length);
      renameSync(file, `${file}.elsewhere`);
      const activeKid = (await store.keys.list('jwt')).find((k) => k.state === 'active')!.kid;
      const key = recordOf('jwt', signer, null, await kidOf(signer.publicKey), Date.now());
      const audit = { actor: 'test', action: 'key.prepare', subject: 'jwt', details: {} };
      await store.keys.prepare(key, activeKid, audit);
      await store.keys.promote('jwt', activeKid, Date.now(), 'test');
      for (const at of [a, b]) await vi.waitFor(async () => expect(await ready(at)).toBe(503), { timeout: 5000, interval: 200 });
      expect((await b.anon.get('/readyz')).body.toString()).toBe('the active issuing keys cannot be loaded\n');
      renameSync(`${file}.elsewhere`, file);
      for (const at of [a, b]) {
        await vi.waitFor(async () => expect(await ready(at)).toBe(200), { timeout: 5000, interval: 200 });
        expect(await jwksKids(at)).toContain(key.kid);
      }
    } finally {
      await store.close();
      await maker.close();
    }
  });

  it("the verifier's TLS certificate is issued again by the new CA once a CA rotation activates it, without a restart", async () => {
    const before = await peerCertificate(a.v.url);
    const answer = await a.admin.call('POST', '/v1/keys/rotate', KeyList, { key: 'x509-ca', now: true });
    const newCa = answer.items.find((k) => k.role === 'x509-ca' && k.state === 'active')!;
    for (const at of [a, b]) {
      await vi.waitFor(
        async () => {
          const cert = await peerCertificate(at.v.url);
          expect(cert.fingerprint256).not.toBe(before.fingerprint256);
          expect(createFingerprint(cert.issuerCertificate.raw)).toBe(newCa.fingerprint);
        },
        { timeout: 5000, interval: 200 },
      );
    }
  });
});

function createFingerprint(der: Buffer): string {
  return new X509Certificate(der).fingerprint256.replace(/:/g, '').toLowerCase();
}

/** The certificate a TLS server presents, with its chain as sent. */
function peerCertificate(url: string): Promise<{ fingerprint256: string; issuerCertificate: { raw: Buffer } }> {
  const { hostname, port } = new URL(url);
  return new Promise((resolve, reject) => {
    const socket = connect({ host: hostname, port: Number(port), rejectUnauthorized: false }, () => {
      const peer = socket.getPeerCertificate(true);
      socket.end();
      resolve(peer);
    });
    socket.on('error', reject);
  });
}
