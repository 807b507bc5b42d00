/**
 * Key rotation on the real verifier (HTTPS, SoftHSM keys, SQLite and PostgreSQL) with a swtpm
 * host attesting over the API: a new key is published before it signs, becomes active after
 * the activation delay, and the old one stays published (bundle, JWKS, /v1/ca.pem) until the
 * last credential it signed has expired; each CA has its own CRL. The rotation is driven by
 * the real CLI (`attestor keys rotate | list`).
 */
import { spawnSync } from 'node:child_process';
import { X509Certificate } from 'node:crypto';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createLocalJWKSet, decodeProtectedHeader, jwtVerify, type JSONWebKeySet } from 'jose';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { runAttestor } from '../src/cli/program.js';
import { AgentDetailBody, AttestationResponse, KeyList, TokenCreateResponse, type KeyBody } from '../src/wire/schemas.js';
import { enforceBaseline, enrollOverApi, evidenceFor, startAttackBed, type AttackBed } from './attack-harness.js';
import { postForm } from './helpers/api.js';
import { crlSerials, spawnText } from './helpers/crl.js';
import { runCli } from './helpers/cli.js';

const AUDIENCE = 'rotation-service';
/** Long enough to look at the prepared key before it signs; short enough to wait for. */
const ACTIVATION_DELAY_SECONDS = 10;

for (const store of ['sqlite', 'postgres'] as const) {
  describe(`key rotation (${store}, SoftHSM)`, { timeout: 120_000 }, () => {
    let bed: AttackBed;
    let agentId: string;
    let tmp: string;
    let relyingParty: string;
    let skewMs = 0;

    beforeAll(async () => {
      bed = await startAttackBed({
        store,
        keys: 'softhsm',
        config: { keyRotation: { activationDelaySeconds: ACTIVATION_DELAY_SECONDS } },
        now: () => Date.now() + skewMs,
      });
      tmp = mkdtempSync(join(tmpdir(), 'attestor-rotation-'));
      agentId = await enrollOverApi(bed, { role: 'rotation' });
      await enforceBaseline(bed, 'rotation', { pcrs: { sha256: { '15': ['00'.repeat(32)] } }, audiences: [AUDIENCE] });
      relyingParty = (await bed.admin.call('POST', '/v1/tokens', TokenCreateResponse, { role: 'relying-party', label: 'rotation' })).token;
    }, 120_000);

    afterAll(async () => {
      await bed?.stop();
      if (tmp) rmSync(tmp, { recursive: true, force: true });
    });

    /** An X509-SVID and a JWT-SVID for the host. */
    async function credentials(): Promise<{ cert: X509Certificate; jwt: string }> {
      const answer = await bed.anon.call('POST', `/v1/agents/${agentId}/attestations`, AttestationResponse, { ...(await evidenceFor(bed, agentId)), audience: AUDIENCE });
      return { cert: new X509Certificate(answer.credentials!.certificate), jwt: answer.credentials!.jwt! };
    }

    /** `attestor keys ...` against the bed, as an operator runs it. */
    async function keysCli(...args: string[]) {
      const saved = process.env.ATTESTOR_TOKEN;
      process.env.ATTESTOR_TOKEN = bed.v.adminToken;
      try {
        return await runCli(runAttestor, ['keys', ...args, '--server', bed.v.url, '--ca-fingerprint', bed.v.caFingerprint]);
      } finally {
        if (saved === undefined) delete process.env.ATTESTOR_TOKEN;
        else process.env.ATTESTOR_TOKEN = saved;
      }
    }

    const listKeys = async (): Promise<KeyBody[]> => (await bed.admin.call('GET', '/v1/keys', KeyList)).items;
    const keyOf = (keys: readonly KeyBody[], role: string, state: string) => keys.find((k) => k.role === role && k.state === state);
    const jwks = async () => JSON.parse((await bed.anon.get('/.well-known/jwks.json')).body.toString()) as JSONWebKeySet & { keys: { kid: string }[] };
    const bundle = async () => JSON.parse((await bed.anon.get('/v1/bundle')).body.toString()) as { keys: { use: string; kid?: string; x5c?: string[] }[]; spiffe_sequence: number };
    const caPem = async () => (await bed.anon.get('/v1/ca.pem')).body.toString();
    const introspect = async (jwt: string) => (await postForm(bed.v.url, bed.caPem, '/v1/introspect', { token: jwt }, relyingParty)).body;

    /** The CA certificate of /v1/ca.pem that signed `cert`, by its key. */
    async function issuerIn(pemText: string, cert: X509Certificate): Promise<X509Certificate | undefined> {
      const cas = [...pemText.matchAll(/-----BEGIN CERTIFICATE-----[^-]+-----END CERTIFICATE-----\n/g)].map((m) => new X509Certificate(m[0]));
      return cas.find((ca) => cert.checkIssued(ca) && cert.verify(ca.publicKey));
    }

    /** OpenSSL's verdict on `cert` against /v1/ca.pem, checking the CRL its distribution point names. */
    async function opensslVerify(cert: X509Certificate): Promise<string> {
      const crlUrl = /URI:(\S+)/.exec(spawnText('openssl', ['x509', '-noout', '-ext', 'crlDistributionPoints'], cert.toString()))![1]!;
      const crl = await bed.anon.get(new URL(crlUrl).pathname);
      const files = { ca: join(tmp, 'ca.pem'), cert: join(tmp, 'leaf.pem'), crl: join(tmp, 'crl.pem') };
      writeFileSync(files.ca, await caPem());
      writeFileSync(files.cert, cert.toString());
      writeFileSync(files.crl, `-----BEGIN X509 CRL-----\n${crl.body.toString('base64')}\n-----END X509 CRL-----\n`);
      const r = spawnSync('openssl', ['verify', '-crl_check', '-CRLfile', files.crl, '-CAfile', files.ca, files.cert], { encoding: 'utf8' });
      return r.stdout + r.stderr;
    }

    async function waitFor<T>(what: string, probe: () => Promise<T | undefined>): Promise<T> {
      for (let i = 0; i < 100; i++) {
        const found = await probe();
        if (found !== undefined) return found;
        await new Promise((r) => setTimeout(r, 200));
      }
      throw new Error(`timed out waiting for ${what}`);
    }

    let before: { cert: X509Certificate; jwt: string };
    let oldKeys: { ca: KeyBody; jwt: KeyBody };
    let sequence: number;

    it('a prepared key is published in the bundle, JWKS and /v1/ca.pem before it signs', async () => {
      before = await credentials();
      const keys = await listKeys();
      oldKeys = { ca: keyOf(keys, 'x509-ca', 'active')!, jwt: keyOf(keys, 'jwt', 'active')! };
      expect(oldKeys.ca.fingerprint).toBe(bed.v.caFingerprint);
      sequence = (await bundle()).spiffe_sequence;

      for (const role of ['x509-ca', 'jwt']) {
        const r = await keysCli('rotate', '--key', role);
        expect(r.code, r.err).toBe(0);
        expect(r.out).toMatch(new RegExp(`^${role}: key \\S+ is prepared \\(published, not yet signing\\)`));
      }
      const listed = await keysCli('list', '--json');
      expect(listed.code, listed.err).toBe(0);
      const after = KeyList.parse(JSON.parse(listed.out)).items;
      const prepared = { ca: keyOf(after, 'x509-ca', 'prepared')!, jwt: keyOf(after, 'jwt', 'prepared')! };
      expect(prepared.ca.uri).toMatch(/^pkcs11:token=attestor;object=x509-ca\.[0-9a-f]{16}\?module-path=/);
      expect(prepared.ca.fingerprint).not.toBe(oldKeys.ca.fingerprint);
      expect(keyOf(after, 'x509-ca', 'active')!.kid).toBe(oldKeys.ca.kid);
      expect((await keysCli('list')).out).toMatch(new RegExp(`x509-ca\\s+prepared\\s+${prepared.ca.kid}`));

      expect((await jwks()).keys.map((k) => k.kid).sort()).toEqual([oldKeys.jwt.kid, prepared.jwt.kid].sort());
      const b = await bundle();
      expect(b.spiffe_sequence).toBe(sequence + 2);
      expect(b.keys.filter((k) => k.use === 'x509-svid')).toHaveLength(2);
      expect(b.keys.filter((k) => k.use === 'jwt-svid').map((k) => k.kid).sort()).toEqual([oldKeys.jwt.kid, prepared.jwt.kid].sort());
      const pemText = await caPem();
      expect(pemText.match(/BEGIN CERTIFICATE/g)).toHaveLength(2);
      // The new root is served to clients that pin it.
      expect((await bed.anon.get(`/v1/roots/${prepared.ca.fingerprint}`)).body.toString()).toBe(pemText.split(/(?<=-----END CERTIFICATE-----\n)/)[1]);

      // Issuance still uses the active keys.
      const meanwhile = await credentials();
      expect((await issuerIn(pemText, meanwhile.cert))?.fingerprint256.replace(/:/g, '').toLowerCase()).toBe(oldKeys.ca.fingerprint);
      expect(decodeProtectedHeader(meanwhile.jwt).kid).toBe(oldKeys.jwt.kid);
    });

    it('after the activation delay the prepared keys sign; what the old keys signed still verifies and introspects active', async () => {
      const promoted = await waitFor('the prepared keys to become active', async () => {
        const keys = await listKeys();
        return keys.filter((k) => k.state === 'prepared').length === 0 ? keys : undefined;
      });
      expect(keyOf(promoted, 'x509-ca', 'old')!.kid).toBe(oldKeys.ca.kid);
      expect(keyOf(promoted, 'jwt', 'old')!.kid).toBe(oldKeys.jwt.kid);
      const active = { ca: keyOf(promoted, 'x509-ca', 'active')!, jwt: keyOf(promoted, 'jwt', 'active')! };

      const after = await credentials();
      const pemText = await caPem();
      expect((await issuerIn(pemText, after.cert))?.fingerprint256.replace(/:/g, '').toLowerCase()).toBe(active.ca.fingerprint);
      expect(decodeProtectedHeader(after.jwt).kid).toBe(active.jwt.kid);
      expect(spawnText('openssl', ['x509', '-noout', '-ext', 'crlDistributionPoints'], after.cert.toString())).toContain(`${bed.v.url}/v1/crl/${active.ca.kid}`);

      // Issued before the rotation: chains to a certificate still in /v1/ca.pem, verifies with the JWKS, introspects active.
      expect(await opensslVerify(before.cert)).toMatch(/leaf\.pem: OK/);
      expect(await opensslVerify(after.cert)).toMatch(/leaf\.pem: OK/);
      const keys = createLocalJWKSet(await jwks());
      for (const jwt of [before.jwt, after.jwt]) {
        await jwtVerify(jwt, keys, { issuer: bed.v.url, audience: AUDIENCE, algorithms: ['ES256'] });
        expect(await introspect(jwt)).toMatchObject({ active: true });
      }
      const audit = (await bed.v.verifier.store.audit.list({ limit: 500 })).items.filter((e) => e.action.startsWith('key.'));
      expect(audit.map((e) => `${e.action} ${e.subject}`)).toEqual(expect.arrayContaining(['key.prepare x509-ca', 'key.prepare jwt', 'key.activate x509-ca', 'key.retire x509-ca', 'key.activate jwt', 'key.retire jwt']));
    });

    it("a revoked certificate of the old CA is on the old CA's CRL, not on the new one's", async () => {
      const serial = before.cert.serialNumber.toLowerCase().replace(/^0+/, '');
      await bed.admin.call('POST', `/v1/agents/${agentId}/quarantine`, AgentDetailBody.omit({ credentials: true }), {});
      try {
        expect(await opensslVerify(before.cert)).toMatch(/certificate revoked/);
        const keys = await listKeys();
        const serialsOf = async (kid: string) => crlSerials((await bed.anon.get(`/v1/crl/${kid}`)).body);
        expect(await serialsOf(oldKeys.ca.kid)).toContain(serial);
        expect(await serialsOf(keyOf(keys, 'x509-ca', 'active')!.kid)).not.toContain(serial);
        expect((await bed.anon.get(`/v1/crl/${'A'.repeat(43)}`)).status).toBe(404);
      } finally {
        await bed.admin.call('POST', `/v1/agents/${agentId}/release`, AgentDetailBody.omit({ credentials: true }), {});
      }
    });

    it('an old key is pruned only once the last credential it signed has expired', async () => {
      // Past the JWT-SVIDs' lifetime (5 min), within the X509-SVIDs' (1 h).
      skewMs = 30 * 60_000;
      await waitFor('the old JWT key to be pruned', async () => (keyOf(await listKeys(), 'jwt', 'old') ? undefined : true));
      expect(keyOf(await listKeys(), 'x509-ca', 'old')?.kid).toBe(oldKeys.ca.kid);
      expect((await jwks()).keys.map((k) => k.kid)).not.toContain(oldKeys.jwt.kid);
      expect((await caPem()).match(/BEGIN CERTIFICATE/g)).toHaveLength(2);

      skewMs = 2 * 3600_000;
      await waitFor('the old CA to be pruned', async () => (keyOf(await listKeys(), 'x509-ca', 'old') ? undefined : true));
      expect((await caPem()).match(/BEGIN CERTIFICATE/g)).toHaveLength(1);
      expect((await bundle()).keys.filter((k) => k.use === 'x509-svid')).toHaveLength(1);
      expect((await bed.anon.get(`/v1/crl/${oldKeys.ca.kid}`)).status).toBe(404);
      const pruned = (await bed.v.verifier.store.audit.list({ limit: 500 })).items.filter((e) => e.action === 'key.prune');
      expect(pruned.map((e) => [e.subject, e.details.kid])).toEqual([
        ['jwt', oldKeys.jwt.kid],
        ['x509-ca', oldKeys.ca.kid],
      ]);
      // The active keys are never pruned, however long.
      expect((await listKeys()).map((k) => k.state).sort()).toEqual(['active', 'active', 'active']);
    });
  });
}
