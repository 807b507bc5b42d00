/**
 * Two `attestor serve` processes (the built bin) on one PostgreSQL schema and one SoftHSM
 * token serve one fleet: a swtpm host enrolls at one and attests at the other, a nonce is
 * used once when both receive it at once, a revocation made at one is honoured by the other
 * at once (challenge, introspection, CRL), a key rotation asked of both happens once, and both
 * append to one audit chain that `attestor audit verify` finds intact.
 */
import { X509Certificate } from 'node:crypto';
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { decodeJwt, decodeProtectedHeader } from 'jose';
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import type { z } from 'zod';
import { buildAttestationRequest } from '../src/agent/evidence.js';
import { TpmSession } from '../src/agent/tpm-session.js';
import { ApiError, type ApiClient } from '../src/client/api-client.js';
import { runAgent } from '../src/cli/agent-program.js';
import { nextAuditEntry } from '../src/store/audit-chain.js';
import { AgentDetailBody, AttestationResponse, BaselineBody, ChallengeResponse, KeyList, TokenCreateResponse, type AttestationRequestInput } from '../src/wire/schemas.js';
import { postForm, refused } from './helpers/api.js';
import { runCli } from './helpers/cli.js';
import { crlSerials } from './helpers/crl.js';
import { freePort } from './helpers/ports.js';
import { ADMIN_TOKEN, caPemOf, childEnv, createProcessHarness, pinnedClient, type Serving } from './helpers/processes.js';
import { startSoftHsm, type SoftHsm } from './helpers/softhsm.js';
import { startSwtpm, type Swtpm } from './helpers/swtpm.js';
import { createTestSchema, dropTestSchema, schemaClient, TEST_PG_URL } from './store-pg.js';

const AUDIENCE = 'replica-service';

describe('two verifier processes on one PostgreSQL', { timeout: 120_000 }, () => {
  const processes = createProcessHarness();
  let tmp: string;
  let schema: string;
  let hsm: SoftHsm;
  let host: Swtpm;
  let one: Serving;
  let two: Serving;
  let caPem: string;
  /** Admin and anonymous clients of each replica. */
  let admin: [ApiClient, ApiClient];
  let anon: [ApiClient, ApiClient];
  let agentId: string;
  let lastJwt: string;
  let lastCertificate: string;

  const stateDir = () => join(tmp, 'host');

  beforeAll(async () => {
    tmp = mkdtempSync(join(tmpdir(), 'attestor-replicas-'));
    [schema, hsm, host] = await Promise.all([createTestSchema(), startSoftHsm({ tokenLabel: 'attestor' }), startSwtpm()]);
    const roots = join(tmp, 'ek-roots');
    mkdirSync(roots);
    writeFileSync(join(roots, 'root.pem'), host.rootCaCertPem);
    writeFileSync(join(roots, 'intermediate.pem'), host.caCertPem);
    const pinFile = join(tmp, 'pin');
    writeFileSync(pinFile, `${hsm.userPin}\n`, { mode: 0o600 });
    // One fleet, one public URL (a load balancer's in production; here the first replica's):
    // the JWT issuer, the JWKS and CRL URLs are the same whichever replica answers.
    const ports = [await freePort(), await freePort()];
    const publicUrl = `https://127.0.0.1:${ports[0]}`;
    const args = (name: string, port: number) => {
      const dataDir = join(tmp, name);
      mkdirSync(dataDir);
      return [
        '--listen', `127.0.0.1:${port}`,
        '--public-url', publicUrl,
        '--data-dir', dataDir,
        '--database', `${TEST_PG_URL}?schema=${schema}`,
        '--keys', `pkcs11:token=attestor?module-path=${hsm.modulePath}&pin-source=${pinFile}`,
        '--ek-roots', roots,
      ];
    };
    const env = childEnv({ SOFTHSM2_CONF: hsm.conf });
    // The first creates the keys and the first admin token; the second finds them in the database and the token.
    one = { ...(await processes.serve(args('one', ports[0]!), env)), url: `https://127.0.0.1:${ports[0]}` };
    const [, token] = await one.waitFor(ADMIN_TOKEN);
    two = { ...(await processes.serve(args('two', ports[1]!), env)), url: `https://127.0.0.1:${ports[1]}` };
    expect(two.fingerprint).toBe(one.fingerprint);
    expect(two.out()).not.toMatch(ADMIN_TOKEN);
    caPem = await caPemOf(one.url);
    admin = [await pinnedClient(one, token), await pinnedClient(two, token)];
    anon = [await pinnedClient(one), await pinnedClient(two)];
  }, 120_000);

  afterAll(async () => {
    for (const c of [...(admin ?? []), ...(anon ?? [])]) c.close();
    const stopped = await Promise.all([one?.stop(), two?.stop()]);
    processes.killAll();
    await Promise.all([host?.stop(), hsm?.stop(), schema && dropTestSchema(schema)]);
    if (tmp) rmSync(tmp, { recursive: true, force: true });
    for (const exit of stopped) if (exit) expect(exit.code, exit.err).toBe(0);
  });

  const challenge = (at: 0 | 1) => anon[at].call('POST', `/v1/agents/${agentId}/challenges`, ChallengeResponse, {});
  const attest = (at: 0 | 1, body: AttestationRequestInput) => anon[at].call('POST', `/v1/agents/${agentId}/attestations`, AttestationResponse, body);
  async function requestFor(at: 0 | 1): Promise<AttestationRequestInput> {
    const c = await challenge(at);
    const session = await TpmSession.open({ tcti: host.tcti, stateDir: stateDir() });
    try {
      return await buildAttestationRequest({ session, key: { kind: 'tpm' }, challenge: c, audience: AUDIENCE });
    } finally {
      await session.close();
    }
  }

  it('a host enrolled at one replica is known to the other; a baseline captured at one is enforced at the other', async () => {
    const r = await runCli(runAgent, ['enroll', '--server', one.url, '--ca-fingerprint', one.fingerprint, '--tcti', host.tcti, '--state-dir', stateDir()]);
    expect(r.code, r.err).toBe(0);
    agentId = /agent\/tpm\/([0-9a-f]+)/.exec(r.out)![1]!;
    expect((await admin[1].call('GET', `/v1/agents/${agentId}`, AgentDetailBody)).status).toBe('active');
    // No baseline yet: the evidence is kept, nothing issued.
    await refused(attest(1, await requestFor(0)), 'ERR_NO_BASELINE');
    const captured = await admin[1].call('POST', '/v1/baselines/capture', BaselineBody, { agentId, name: 'replicas', audiences: [AUDIENCE] });
    await admin[0].call('POST', `/v1/baselines/${captured.id}/enforce`, BaselineBody, {});
  });

  it('a challenge issued by one replica is consumed by the other', async () => {
    const answer = await attest(1, await requestFor(0));
    expect(answer.verdict.status).toBe('affirming');
    lastJwt = answer.credentials!.jwt!;
    lastCertificate = answer.credentials!.certificate;
    const other = await attest(0, await requestFor(1));
    expect(other.verdict.status).toBe('affirming');
  });

  it('a nonce sent to both replicas at once is used once', async () => {
    const request = await requestFor(0);
    const results = await Promise.allSettled(Array.from({ length: 8 }, (_, i) => attest((i % 2) as 0 | 1, request)));
    expect(results.filter((r) => r.status === 'fulfilled')).toHaveLength(1);
    for (const r of results) {
      if (r.status === 'rejected') expect((r.reason as ApiError).remoteCode).toBe('ERR_NONCE_UNKNOWN');
    }
  });

  it('a quarantine made at one replica is honoured by the other at once: challenge, introspection, CRL', async () => {
    const rp = await admin[0].call('POST', '/v1/tokens', TokenCreateResponse, { role: 'relying-party', label: 'replicas' });
    expect((await postForm(two.url, caPem, '/v1/introspect', { token: lastJwt }, rp.token)).body).toMatchObject({ active: true });
    const serial = new X509Certificate(lastCertificate).serialNumber.toLowerCase().replace(/^0+/, '');
    const crlBefore = (await anon[1].get('/v1/crl')).body;

    await admin[0].call('POST', `/v1/agents/${agentId}/quarantine`, AgentDetailBody.omit({ credentials: true }), {});
    // No waiting: the very next requests to the other replica see it.
    await refused(challenge(1), 'ERR_AGENT_NOT_ACTIVE');
    expect((await postForm(two.url, caPem, '/v1/introspect', { token: lastJwt }, rp.token)).body).toEqual({ active: false });
    const crlAfter = (await anon[1].get('/v1/crl')).body;
    expect(crlAfter.equals(crlBefore)).toBe(false);
    expect(crlSerials(crlAfter)).toContain(serial);

    await admin[1].call('POST', `/v1/agents/${agentId}/release`, AgentDetailBody.omit({ credentials: true }), {});
    expect((await challenge(0)).nonce).toHaveLength(32);
  });

  it('a JWT key rotation asked of both replicas at once happens once; both then sign with the new key, and the JWT from before still introspects active', async () => {
    // The JWT of a fresh attestation (the quarantine above revoked the earlier ones).
    const before = (await attest(1, await requestFor(0))).credentials!.jwt!;
    const oldKid = decodeProtectedHeader(before).kid;
    const answers = await Promise.all([admin[0], admin[1], admin[0], admin[1]].map((c) => c.call('POST', '/v1/keys/rotate', KeyList, { key: 'jwt', now: true })));
    const jwtKeys = (list: z.output<typeof KeyList>) => list.items.filter((k) => k.role === 'jwt');
    for (const answer of answers) expect(jwtKeys(answer).map((k) => k.state).sort()).toStrictEqual(['active', 'old']);
    const listed = jwtKeys(await admin[1].call('GET', '/v1/keys', KeyList));
    const active = listed.find((k) => k.state === 'active')!;
    expect(listed.find((k) => k.state === 'old')?.kid).toBe(oldKid);
    const client = await schemaClient(schema);
    try {
      const { rows } = await client.query("SELECT action FROM audit_entries WHERE action LIKE 'key.%' AND subject = 'jwt' AND action <> 'key.create'");
      expect(rows.map((r) => r.action).sort()).toStrictEqual(['key.activate', 'key.prepare', 'key.retire']);
    } finally {
      await client.end();
    }
    // Each replica reads the keys table every second: within a few, both publish and sign with the new key.
    await vi.waitFor(
      async () => {
        for (const at of [0, 1] as const) {
          const jwks = JSON.parse((await anon[at].get('/.well-known/jwks.json')).body.toString()) as { keys: { kid: string }[] };
          expect(jwks.keys.map((k) => k.kid).sort()).toStrictEqual([active.kid, oldKid].sort());
        }
      },
      { timeout: 5000, interval: 200 },
    );
    for (const [challengeAt, answerAt] of [[0, 1], [1, 0]] as const) {
      const answer = await attest(answerAt, await requestFor(challengeAt));
      expect(decodeProtectedHeader(answer.credentials!.jwt!).kid).toBe(active.kid);
    }
    const rp = await admin[1].call('POST', '/v1/tokens', TokenCreateResponse, { role: 'relying-party', label: 'after rotation' });
    for (const url of [one.url, two.url]) expect((await postForm(url, caPem, '/v1/introspect', { token: before }, rp.token)).body).toMatchObject({ active: true, jti: decodeJwt(before).jti });
  });

  it('both replicas appended to one hash chain, which `attestor audit verify` finds intact offline against the database and online at either replica', async () => {
    const offline = await processes.run(['audit', 'verify', '--database', `${TEST_PG_URL}?schema=${schema}`], childEnv({ SOFTHSM2_CONF: hsm.conf }));
    expect(offline.code, offline.err).toBe(0);
    expect(offline.out).toMatch(/^audit chain intact: \d+ entries/);
    const auditor = await admin[0].call('POST', '/v1/tokens', TokenCreateResponse, { role: 'auditor', label: 'replicas' });
    for (const s of [one, two]) {
      const online = await processes.run(['audit', 'verify', '--server', s.url, '--ca-fingerprint', s.fingerprint], childEnv({ ATTESTOR_TOKEN: auditor.token }));
      expect(online.code, online.err).toBe(0);
      expect(online.out).toMatch(/^audit chain intact: \d+ entries/);
    }
  });

  it('the chain in the database, recomputed here, links every entry in order with no gap', async () => {
    const client = await schemaClient(schema);
    try {
      const { rows } = await client.query('SELECT seq, at, actor, action, subject, details, prev_hash, hash FROM audit_entries ORDER BY seq');
      expect(rows.length).toBeGreaterThan(10);
      let head = { seq: 0, hash: '0'.repeat(64) };
      for (const r of rows) {
        const again = nextAuditEntry(head, { actor: r.actor, action: r.action, subject: r.subject, details: JSON.parse(r.details) }, Number(r.at));
        expect([Number(r.seq), r.prev_hash, r.hash]).toEqual([again.seq, again.prevHash, again.hash]);
        head = again;
      }
      const head2 = await client.query('SELECT seq, hash FROM audit_head');
      expect([Number(head2.rows[0].seq), head2.rows[0].hash]).toEqual([head.seq, head.hash]);
      expect(rows.map((r) => r.action)).toEqual(expect.arrayContaining(['agent.activate', 'attestation.verdict', 'credential.issue', 'agent.quarantine', 'agent.release']));
    } finally {
      await client.end();
    }
  });
});
