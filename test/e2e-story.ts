/**
 * The end-to-end story, run once per store (test/e2e-sqlite.test.ts, test/e2e-postgres.test.ts):
 * the real verifier (HTTPS on a free port, issuing keys in a SoftHSM token), two swtpm hosts
 * enrolling and attesting through the real attestor-agent CLI and the agent modules, the
 * operator over HTTPS, OpenSSL and jose as relying parties. Every refusal asserts its code and
 * that nothing was issued.
 */
import { spawnSync } from 'node:child_process';
import { createHash, randomBytes, X509Certificate } from 'node:crypto';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createLocalJWKSet, decodeProtectedHeader, jwtVerify } from 'jose';
import pkcs11js from 'pkcs11js';
import { afterAll, beforeAll, expect, it } from 'vitest';
import { z } from 'zod';
import { closeAgentKey, openAgentKey, type AgentKey } from '../src/agent/agent-key.js';
import { buildAttestationRequest } from '../src/agent/evidence.js';
import { findKey, makeKeyReport } from '../src/agent/pkcs11-key.js';
import { quoteWithPcrValues } from '../src/agent/quote-with-values.js';
import { TpmSession } from '../src/agent/tpm-session.js';
import { identityKeyTemplate, srkTemplate } from '../src/agent/tpm-templates.js';
import { quoteQualifyingData } from '../src/appraisal/key-binding.js';
import { ApiError, bootstrapCa, createApiClient, type ApiClient } from '../src/client/api-client.js';
import { runAgent } from '../src/cli/agent-program.js';
import { runAttestor } from '../src/cli/program.js';
import { EV } from '../src/eventlog/event-types.js';
import { ecP256KeyPairTemplates } from '../src/pkcs11/ec-key.js';
import { agentIdOf } from '../src/tpm/agent-id.js';
import { TPMA_OBJECT } from '../src/tpm/constants.js';
import { publicKeyOf } from '../src/tpm/public-key.js';
import { parseTpm2bPublic } from '../src/tpm/public.js';
import {
  ActivationResponse,
  AgentDetailBody,
  AttestationResponse,
  BaselineBody,
  ChallengeResponse,
  EnrollmentResponse,
  TokenCreateResponse,
  type AttestationRequestInput,
  type ChallengeResponse as Challenge,
} from '../src/wire/schemas.js';
import { agileLog } from './eventlog-fixtures.js';
import { postForm, reasonCodes, refused, wirePcrs } from './helpers/api.js';
import { runCli } from './helpers/cli.js';
import { startSwtpm, tpm2, type Swtpm } from './helpers/swtpm.js';
import { startTestVerifier, type TestVerifier } from './helpers/verifier.js';

const AUDIENCE = 'e2e-service';
const TRUST_DOMAIN = 'attestor.internal';

export function e2eStory(store: 'sqlite' | 'postgres'): void {
  let hostA: Swtpm;
  let hostB: Swtpm;
  let v: TestVerifier;
  let tmp: string;
  let admin: ApiClient;
  let anon: ApiClient;
  let agentA: string;
  let agentB: string;
  let caPem: string;
  /** Agent A's last JWT-SVID and a relying party's token, for introspection. */
  let lastJwt = '';
  let relyingPartyToken = '';
  /** Shifts the verifier's clock (expired nonces). */
  let skewMs = 0;

  const dirA = () => join(tmp, 'host-a');
  const dirB = () => join(tmp, 'host-b');
  /** Host B's measured-boot log (written by the event-log test). */
  const eventLogPath = () => join(tmp, 'eventlog.bin');
  const issued = () => v.verifier.store.attestations.countCredentials();
  const lastVerdictOf = async (id: string) => (await v.verifier.store.agents.get(id))?.lastVerdictId ?? null;
  const agentCli = (args: string[]) => runCli(runAgent, args);
  const serverArgs = () => ['--server', v.url, '--ca-fingerprint', v.caFingerprint];

  beforeAll(async () => {
    [hostA, hostB] = await Promise.all([startSwtpm(), startSwtpm()]);
    tmp = mkdtempSync(join(tmpdir(), `attestor-e2e-${store}-`));
    v = await startTestVerifier({
      store,
      keys: 'softhsm',
      // The agent's token must exist before the verifier initialises the module in this process.
      extraTokens: ['agent-keys'],
      ekRootPems: [hostA.rootCaCertPem, hostA.caCertPem, hostB.rootCaCertPem, hostB.caCertPem],
      now: () => Date.now() + skewMs,
      // The freshness watchdog looks every second (the freshness test moves the clock past the window).
      config: { attestation: { watchdogSeconds: 1 } },
    });
    caPem = await bootstrapCa(v.url, v.caFingerprint);
    admin = createApiClient({ server: v.url, caPem, token: v.adminToken });
    anon = createApiClient({ server: v.url, caPem });
  }, 120_000);

  afterAll(async () => {
    admin?.close();
    anon?.close();
    await v?.stop();
    await Promise.all([hostA?.stop(), hostB?.stop()]);
    if (tmp) rmSync(tmp, { recursive: true, force: true });
  });

  /** A TPM session on a host's state dir, closed after `use` (swtpm has three object slots). */
  async function withSession<T>(sw: Swtpm, dir: string, use: (s: TpmSession) => Promise<T>): Promise<T> {
    const session = await TpmSession.open({ tcti: sw.tcti, stateDir: dir });
    try {
      return await use(session);
    } finally {
      await session.close();
    }
  }

  async function challenge(agentId: string): Promise<Challenge> {
    return anon.call('POST', `/v1/agents/${agentId}/challenges`, ChallengeResponse, {});
  }

  function attest(agentId: string, body: unknown): Promise<z.output<typeof AttestationResponse>> {
    return anon.call('POST', `/v1/agents/${agentId}/attestations`, AttestationResponse, body);
  }



  /** A correct attestation request of host A with a TPM key, for a fresh challenge. */
  const tpmKey: AgentKey = { kind: 'tpm' };
  async function requestFor(sw: Swtpm, dir: string, agentId: string, edit?: (c: Challenge) => Challenge): Promise<AttestationRequestInput> {
    const c = await challenge(agentId);
    return withSession(sw, dir, (session) => buildAttestationRequest({ session, key: tpmKey, challenge: edit ? edit(c) : c }));
  }

  it('a host enrolls through attestor-agent enroll: EK certificate, AK activation', async () => {
    const r = await agentCli(['enroll', ...serverArgs(), '--tcti', hostA.tcti, '--state-dir', dirA(), '--label', 'role=e2e']);
    expect(r.code, r.err).toBe(0);
    agentA = JSON.parse(readFileSync(join(dirA(), 'agent.json'), 'utf8')).agentId;
    expect(r.out).toContain(`spiffe://${TRUST_DOMAIN}/agent/tpm/${agentA}`);
    const agent = await admin.call('GET', `/v1/agents/${agentA}`, AgentDetailBody);
    expect(agent).toMatchObject({ id: agentA, status: 'active', labels: { role: 'e2e' }, lastVerdict: null });
  });

  it('every operator route refuses a missing, unknown or under-privileged token, and changes nothing', async () => {
    const rp = await admin.call('POST', '/v1/tokens', TokenCreateResponse, { role: 'relying-party', label: 'e2e' });
    const auditor = await admin.call('POST', '/v1/tokens', TokenCreateResponse, { role: 'auditor' });
    const clients = {
      none: anon,
      unknown: createApiClient({ server: v.url, caPem: await bootstrapCa(v.url, v.caFingerprint), token: randomBytes(32).toString('base64url') }),
      malformed: createApiClient({ server: v.url, caPem: await bootstrapCa(v.url, v.caFingerprint), token: 'not a token' }),
      relyingParty: createApiClient({ server: v.url, caPem: await bootstrapCa(v.url, v.caFingerprint), token: rp.token }),
      auditor: createApiClient({ server: v.url, caPem: await bootstrapCa(v.url, v.caFingerprint), token: auditor.token }),
    };
    const before = await v.verifier.store.audit.head();
    const operatorRoutes = v.verifier.routes.filter((r) => r.access !== 'public' && r.access !== 'agent');
    expect(operatorRoutes.length).toBeGreaterThanOrEqual(9);
    for (const r of operatorRoutes) {
      const path = r.path.replace(':id', r.path.startsWith('/v1/agents') ? agentA : '00000000-0000-4000-8000-000000000000');
      const body = r.method === 'post' ? {} : undefined;
      const call = (c: ApiClient) => c.call(r.method.toUpperCase(), path, z.unknown(), body);
      await refused(call(clients.none), 'ERR_UNAUTHENTICATED');
      await refused(call(clients.unknown), 'ERR_UNAUTHENTICATED');
      await refused(call(clients.malformed), 'ERR_UNAUTHENTICATED');
      if (r.access !== 'introspect') await refused(call(clients.relyingParty), 'ERR_FORBIDDEN');
      if (r.access.endsWith(':write')) await refused(call(clients.auditor), 'ERR_FORBIDDEN');
    }
    expect(await v.verifier.store.audit.head()).toEqual(before);
    for (const c of Object.values(clients)) if (c !== anon) c.close();
  });

  it('without an enforced baseline the evidence is verified and kept, and nothing is issued (fail closed)', async () => {
    // An agent asking for a JWT audience already is judged the same way: no baseline, no credentials, evidence kept.
    const r = await agentCli(['attest', ...serverArgs(), '--tcti', hostA.tcti, '--state-dir', dirA(), '--key', 'tpm', '--audience', AUDIENCE, '--no-event-log', '--no-ima-log']);
    expect(r.code).toBe(1);
    expect(r.err).toMatch(/ERR_NO_BASELINE/);
    expect(await issued()).toBe(0);
    expect((await v.verifier.store.agents.get(agentA))?.lastEvidence).not.toBeNull();
  });

  it('the operator captures a baseline from that evidence and enforces it', async () => {
    const captured = await admin.call('POST', '/v1/baselines/capture', BaselineBody, { agentId: agentA, name: 'e2e-fleet', audiences: [AUDIENCE] });
    expect(captured).toMatchObject({ status: 'staged', version: 1, name: 'e2e-fleet' });
    const enforced = await admin.call('POST', `/v1/baselines/${captured.id}/enforce`, BaselineBody, {});
    expect(enforced.status).toBe('enforced');
  });

  it('affirming: an X509-SVID for the TPM-resident key that OpenSSL verifies, and a JWT-SVID bound to it that jose verifies', async () => {
    const r = await agentCli(['attest', ...serverArgs(), '--tcti', hostA.tcti, '--state-dir', dirA(), '--key', 'tpm', '--audience', AUDIENCE, '--no-event-log', '--no-ima-log']);
    expect(r.code, r.err).toBe(0);
    const certPath = join(dirA(), 'cert.pem');
    const bundlePath = join(dirA(), 'bundle.pem');
    const ossl = spawnSync('openssl', ['verify', '-x509_strict', '-purpose', 'sslclient', '-CAfile', bundlePath, certPath], { encoding: 'utf8' });
    expect(ossl.stdout + ossl.stderr).toContain(`${certPath}: OK`);

    const cert = new X509Certificate(readFileSync(certPath));
    expect(cert.subjectAltName).toBe(`URI:spiffe://${TRUST_DOMAIN}/agent/tpm/${agentA}`);
    expect(cert.verify(new X509Certificate(readFileSync(bundlePath)).publicKey)).toBe(true);
    // The subject key is the identity key inside the TPM, which the AK certified fixedTPM.
    const identity = await withSession(hostA, dirA(), (s) => s.identityKey());
    const identityPublic = parseTpm2bPublic(identity.public);
    expect(identityPublic.objectAttributes & TPMA_OBJECT.fixedTPM).not.toBe(0);
    expect(cert.publicKey.export({ type: 'spki', format: 'der' })).toEqual(publicKeyOf(identityPublic).export({ type: 'spki', format: 'der' }));
    expect(readFileSync(join(dirA(), 'key.pem'), 'utf8')).toContain('-----BEGIN TSS2 PRIVATE KEY-----');
    // Its CRL distribution point serves a CRL signed by the CA, against which the certificate checks out.
    const crl = await anon.get('/v1/crl');
    expect(crl.type).toBe('application/pkix-crl');
    const crlPath = join(tmp, 'crl.pem');
    writeFileSync(crlPath, `-----BEGIN X509 CRL-----\n${crl.body.toString('base64')}\n-----END X509 CRL-----\n`);
    const crlCheck = spawnSync('openssl', ['verify', '-crl_check', '-CRLfile', crlPath, '-CAfile', bundlePath, certPath], { encoding: 'utf8' });
    expect(crlCheck.stdout + crlCheck.stderr).toContain(`${certPath}: OK`);

    const jwt = readFileSync(join(dirA(), 'token.jwt'), 'utf8').trim();
    const discovery = JSON.parse((await anon.get('/.well-known/openid-configuration')).body.toString());
    expect(discovery.jwks_uri).toBe(`${v.url}/.well-known/jwks.json`);
    const jwks = JSON.parse((await anon.get('/.well-known/jwks.json')).body.toString());
    const { payload } = await jwtVerify(jwt, createLocalJWKSet(jwks), { issuer: discovery.issuer, audience: AUDIENCE, algorithms: ['ES256'] });
    expect(Object.keys(decodeProtectedHeader(jwt)).sort()).toEqual(['alg', 'kid', 'typ']);
    expect(payload.sub).toBe(`spiffe://${TRUST_DOMAIN}/agent/tpm/${agentA}`);
    expect((payload.cnf as Record<string, string>)['x5t#S256']).toBe(createHash('sha256').update(cert.raw).digest('base64url'));
    expect(payload.exp! * 1000).toBeLessThanOrEqual(Date.parse(cert.validTo));
    expect(payload.attestation).toMatchObject({ verdict: 'affirming', keyResidence: 'tpm' });
    expect(await issued()).toBe(2);

    // A relying party asks the verifier whether the token is live (RFC 7662).
    const rp = await admin.call('POST', '/v1/tokens', TokenCreateResponse, { role: 'relying-party', label: 'e2e introspection' });
    relyingPartyToken = rp.token;
    const live = await postForm(v.url, caPem, '/v1/introspect', { token: jwt }, rp.token);
    expect(live).toEqual({ status: 200, body: { active: true, iss: discovery.issuer, sub: payload.sub, aud: AUDIENCE, iat: payload.iat, exp: payload.exp, jti: payload.jti, cnf: payload.cnf } });
    lastJwt = jwt;
    expect((await postForm(v.url, caPem, '/v1/introspect', { token: `${jwt.slice(0, -4)}AAAA` }, rp.token)).body).toEqual({ active: false });
    expect((await postForm(v.url, caPem, '/v1/introspect', { token: 'not.a.jwt' }, rp.token)).body).toEqual({ active: false });
    const denied = await postForm(v.url, caPem, '/v1/introspect', { token: jwt });
    expect(denied).toMatchObject({ status: 401, body: { code: 'ERR_UNAUTHENTICATED' } });
  });

  it('a nonce is used once, even by concurrent requests; a replay is refused', async () => {
    const before = await issued();
    const request = await requestFor(hostA, dirA(), agentA);
    const results = await Promise.allSettled(Array.from({ length: 8 }, () => attest(agentA, request)));
    expect(results.filter((r) => r.status === 'fulfilled')).toHaveLength(1);
    for (const r of results.filter((x) => x.status === 'rejected')) {
      expect(((r as PromiseRejectedResult).reason as ApiError).remoteCode).toBe('ERR_NONCE_UNKNOWN');
    }
    await refused(attest(agentA, request), 'ERR_NONCE_UNKNOWN');
    expect(await issued()).toBe(before + 1);
  });

  it('an expired nonce is refused and nothing is issued', async () => {
    const before = [await issued(), await lastVerdictOf(agentA)];
    const request = await requestFor(hostA, dirA(), agentA);
    skewMs = 61_000;
    try {
      await refused(attest(agentA, request), 'ERR_NONCE_EXPIRED');
    } finally {
      skewMs = 0;
    }
    expect([await issued(), await lastVerdictOf(agentA)]).toEqual(before);
  });

  it('a wrong activation secret drops the pending enrollment; an unactivated enrollment cannot attest', async () => {
    await withSession(hostB, dirB(), async (session) => {
      agentB = agentIdOf(session.ek.public);
      const body = { ekPublic: session.ek.public, ekCertificate: session.ek.certificate!, akPublic: session.ak.public, labels: { role: 'evlog' } };
      const e = await anon.call('POST', '/v1/enrollments', EnrollmentResponse, body);
      expect(e.agentId).toBe(agentB);
      await refused(anon.call('POST', `/v1/agents/${agentB}/challenges`, ChallengeResponse, {}), 'ERR_AGENT_NOT_FOUND');
      const wrong = await refused(anon.call('POST', `/v1/enrollments/${e.enrollmentId}/activation`, ActivationResponse, { secret: randomBytes(32) }), 'ERR_ACTIVATION_FAILED');
      expect(wrong.problem.detail).toBeUndefined();
      const secret = await session.activate(e.credentialBlob, e.encryptedSecret);
      await refused(anon.call('POST', `/v1/enrollments/${e.enrollmentId}/activation`, ActivationResponse, { secret }), 'ERR_ENROLLMENT_NOT_FOUND');
      expect(await v.verifier.store.agents.get(agentB)).toBeNull();
    });
    // Enrolled properly, it becomes an agent.
    const r = await agentCli(['enroll', ...serverArgs(), '--tcti', hostB.tcti, '--state-dir', dirB(), '--label', 'role=evlog']);
    expect(r.code, r.err).toBe(0);
    expect((await v.verifier.store.agents.get(agentB))?.status).toBe('active');
  });

  it('re-enrolling an id with another AK, or sending another EK certificate, is refused', async () => {
    await withSession(hostA, join(tmp, 'host-a-second-ak'), async (session) => {
      expect(agentIdOf(session.ek.public)).toBe(agentA);
      const body = { ekPublic: session.ek.public, ekCertificate: session.ek.certificate!, akPublic: session.ak.public };
      await refused(anon.call('POST', '/v1/enrollments', EnrollmentResponse, body), 'ERR_ENROLLMENT_CONFLICT');
      const otherEkCert = await withSession(hostB, dirB(), async (b) => b.ek.certificate!);
      await refused(anon.call('POST', '/v1/enrollments', EnrollmentResponse, { ...body, ekCertificate: otherEkCert }), 'ERR_EK_CERT_KEY_MISMATCH');
    });
    const stored = (await v.verifier.store.agents.get(agentA))!.akPublic;
    expect(Buffer.from(stored)).toEqual(await withSession(hostA, dirA(), async (s) => Buffer.from(s.ak.public)));
  });

  it("a quote signed by another agent's AK is refused and changes nothing", async () => {
    const before = [await issued(), await lastVerdictOf(agentA)];
    const c = await challenge(agentA);
    const forged = await withSession(hostB, dirB(), (session) => buildAttestationRequest({ session, key: tpmKey, challenge: c }));
    await refused(attest(agentA, forged), 'ERR_SIGNATURE_INVALID');
    expect([await issued(), await lastVerdictOf(agentA)]).toEqual(before);
  });

  it('a PCR the baseline needs outside the signed selection is refused (supplied unsigned values are ignored)', async () => {
    const before = await issued();
    const request = await requestFor(hostA, dirA(), agentA, (c) => ({ ...c, pcrSelection: { sha256: c.pcrSelection.sha256!.filter((p) => p !== 7) } }));
    const withUnsigned = { ...request, pcrs: { sha256: { ...request.pcrs.sha256, '7': Buffer.alloc(32) } } };
    const e = await refused(attest(agentA, withUnsigned), 'ERR_ATTESTATION_REFUSED');
    expect(reasonCodes(e)).toContain('ERR_QUOTE_PCR_NOT_SIGNED');
    expect(await issued()).toBe(before);
    // Evidence that cannot vouch for the host quarantines it; an operator releases it.
    expect((await admin.call('GET', `/v1/agents/${agentA}`, AgentDetailBody)).status).toBe('quarantined');
    await admin.call('POST', `/v1/agents/${agentA}/release`, AgentDetailBody.omit({ credentials: true }), {});
  });

  it('a certification of a key that is not fixedTPM is refused', async () => {
    const before = await issued();
    const c = await challenge(agentA);
    const body = await withSession(hostA, dirA(), async (session) => {
      const tpm = session.tpm;
      const srk = await tpm.createPrimary('owner', srkTemplate('ecc'));
      const template = Buffer.from(identityKeyTemplate());
      // TPM2B_PUBLIC: size, type, nameAlg, then objectAttributes: clear fixedTPM and fixedParent (a duplicable key).
      template.writeUInt32BE((template.readUInt32BE(6) & ~(TPMA_OBJECT.fixedTPM | TPMA_OBJECT.fixedParent)) >>> 0, 6);
      expect(parseTpm2bPublic(template).objectAttributes & TPMA_OBJECT.fixedTPM).toBe(0);
      const blobs = await tpm.create(srk.handle, template);
      const handle = await tpm.load(srk.handle, blobs.private, blobs.public);
      await tpm.flushContext(srk.handle);
      try {
        const certify = await session.certifyObject(handle, c.nonce);
        const quote = await quoteWithPcrValues(session, c.pcrSelection as Record<string, number[]>, quoteQualifyingData(c.nonce, { kind: 'tpm', public: blobs.public }));
        return {
          nonce: c.nonce,
          quote: quote.attest,
          signature: quote.signature,
          pcrs: wirePcrs(quote.values),
          key: { kind: 'tpm' as const, public: blobs.public, certifyInfo: certify.attest, signature: certify.signature },
        };
      } finally {
        await tpm.flushContext(handle);
      }
    });
    const e = await refused(attest(agentA, body), 'ERR_ATTESTATION_REFUSED');
    expect(reasonCodes(e)).toContain('ERR_CERTIFY_KEY_ATTRIBUTES');
    expect(await issued()).toBe(before);
    // A refused key is the request's fault, not the host's: the agent stays active.
    expect((await admin.call('GET', `/v1/agents/${agentA}`, AgentDetailBody)).status).toBe('active');
  });

  it('an extractable PKCS#11 key is refused', async () => {
    const before = await issued();
    const key = await openAgentKey({ kind: 'pkcs11', uri: { token: 'agent-keys', object: 'e2e-agent', modulePath: v.softHsm!.modulePath, pinValue: v.softHsm!.userPin } });
    try {
      if (key.kind !== 'pkcs11') throw new Error('unreachable');
      const t = ecP256KeyPairTemplates('exportable', randomBytes(16));
      const privateKey = t.privateKey.map((a) =>
        a.type === pkcs11js.CKA_EXTRACTABLE ? { ...a, value: true } : a.type === pkcs11js.CKA_SENSITIVE ? { ...a, value: false } : a,
      );
      await key.session.run('C_GenerateKeyPair', (p11, s) => p11.C_GenerateKeyPair(s, { mechanism: pkcs11js.CKM_EC_KEY_PAIR_GEN }, t.publicKey, privateKey));
      const exportable = await findKey(key.session, 'exportable');
      const c = await challenge(agentA);
      const report = await makeKeyReport(key.session, exportable, c.nonce);
      const { signature: _, ...evidence } = report;
      const body = await withSession(hostA, dirA(), async (session) => {
        const quote = await quoteWithPcrValues(session, c.pcrSelection as Record<string, number[]>, quoteQualifyingData(c.nonce, { kind: 'pkcs11', evidence }));
        return { nonce: c.nonce, quote: quote.attest, signature: quote.signature, pcrs: wirePcrs(quote.values), key: { kind: 'pkcs11' as const, report } };
      });
      const e = await refused(attest(agentA, body), 'ERR_ATTESTATION_REFUSED');
      expect(reasonCodes(e)).toContain('ERR_HSM_KEY_ATTRIBUTES');
      // The token says the key can leave it: the baseline's policy refuses the key, not the host.
      expect((await admin.call('GET', `/v1/agents/${agentA}`, AgentDetailBody)).status).toBe('active');
    } finally {
      await closeAgentKey(key);
    }
    expect(await issued()).toBe(before);
  });

  it('a tampered event log is refused; the untampered one is affirmed', async () => {
    // Host B boots "a stage" into PCR 8, measured in its event log.
    const stage = Buffer.from('attestor e2e boot stage');
    const sha1 = createHash('sha1').update(stage).digest('hex');
    const sha256 = createHash('sha256').update(stage).digest();
    await tpm2(hostB, ['tpm2_pcrextend', `8:sha1=${sha1},sha256=${sha256.toString('hex')}`]);
    const pcr8 = createHash('sha256').update(Buffer.alloc(32)).update(sha256).digest('hex');
    const document = {
      version: 1,
      selector: { labels: { role: 'evlog' } },
      eventlog: { pcrs: { sha256: { '8': [pcr8] } } },
      // PKCS#11 identity keys are opted in to (the default is TPM keys only).
      key: { residence: ['tpm', 'pkcs11'] },
      audiences: [AUDIENCE],
    };
    const baseline = await admin.call('POST', '/v1/baselines', BaselineBody, { name: 'evlog-hosts', document });
    await admin.call('POST', `/v1/baselines/${baseline.id}/enforce`, BaselineBody, {});

    const good = eventLogPath();
    writeFileSync(good, agileLog([{ pcr: 8, type: EV.IPL, data: stage }]));
    const tampered = join(tmp, 'eventlog-tampered.bin');
    writeFileSync(tampered, agileLog([{ pcr: 8, type: EV.IPL, data: Buffer.from('attestor e2e boot stagE') }]));

    const before = await issued();
    const bad = await withSession(hostB, dirB(), async (session) =>
      buildAttestationRequest({ session, key: tpmKey, challenge: await challenge(agentB), logs: { eventLog: { path: tampered, ifPresent: false } } }),
    );
    const e = await refused(attest(agentB, bad), 'ERR_ATTESTATION_REFUSED');
    expect(reasonCodes(e)).toContain('EVENTLOG_PCR_MISMATCH');
    expect(await issued()).toBe(before);
    // Refused by an enforced baseline: quarantined in the same commit, until an operator releases it.
    expect((await admin.call('GET', `/v1/agents/${agentB}`, AgentDetailBody)).status).toBe('quarantined');
    await refused(challenge(agentB), 'ERR_AGENT_NOT_ACTIVE');
    await admin.call('POST', `/v1/agents/${agentB}/release`, AgentDetailBody.omit({ credentials: true }), {});

    const ok = await withSession(hostB, dirB(), async (session) =>
      buildAttestationRequest({ session, key: tpmKey, challenge: await challenge(agentB), logs: { eventLog: { path: good, ifPresent: false } } }),
    );
    const affirmed = await attest(agentB, ok);
    expect(affirmed.verdict).toMatchObject({ status: 'affirming', baseline: { id: baseline.id } });
    expect(await issued()).toBe(before + 1);
  });

  it('a PKCS#11 identity key (CBOR on the wire, event log from a file) gets a certificate for exactly that key', async () => {
    const uri = `pkcs11:token=agent-keys;object=e2e-agent?module-path=${v.softHsm!.modulePath}`;
    const before = await issued();
    const r = await runCliWithEnv({ ATTESTOR_AGENT_PKCS11_PIN: v.softHsm!.userPin }, () =>
      agentCli(['attest', ...serverArgs(), '--tcti', hostB.tcti, '--state-dir', dirB(), '--key', uri, '--format', 'cbor', '--event-log', eventLogPath(), '--no-ima-log', '--audience', AUDIENCE]),
    );
    expect(r.code, r.err).toBe(0);
    expect(r.out).not.toContain(v.softHsm!.userPin);
    const cert = new X509Certificate(readFileSync(join(dirB(), 'cert.pem')));
    const key = await openAgentKey({ kind: 'pkcs11', uri: { token: 'agent-keys', object: 'e2e-agent', modulePath: v.softHsm!.modulePath, pinValue: v.softHsm!.userPin } });
    try {
      expect(key.kind === 'pkcs11' && Buffer.from(key.key.spki)).toEqual(cert.publicKey.export({ type: 'spki', format: 'der' }));
    } finally {
      await closeAgentKey(key);
    }
    expect(readFileSync(join(dirB(), 'key.uri'), 'utf8')).toContain('object=e2e-agent');
    expect(await issued()).toBe(before + 2);
  });

  it('an agent given no credentials within the freshness window goes stale (audited, counted, listed), and an affirming attestation makes it fresh', async () => {
    const operatorEnv = { ATTESTOR_SERVER: v.url, ATTESTOR_CA_FINGERPRINT: v.caFingerprint, ATTESTOR_TOKEN: v.adminToken };
    const staleSince = async () => (await admin.call('GET', `/v1/agents/${agentB}`, AgentDetailBody)).staleSince;
    expect(await staleSince()).toBeNull();
    skewMs = (v.config.attestation.freshnessSeconds + 60) * 1000;
    try {
      const deadline = Date.now() + 10_000;
      while ((await staleSince()) === null && Date.now() < deadline) await new Promise((r) => setTimeout(r, 200));
      expect(await staleSince()).not.toBeNull();
      const entries = (await v.verifier.store.audit.list({ limit: 500 })).items;
      // Both hosts: neither got credentials within the window.
      const stale = entries.filter((e) => e.action === 'agent.stale');
      expect(stale.map((e) => [e.actor, e.subject]).sort()).toEqual([['system', agentA], ['system', agentB]].sort());
      expect((await anon.get('/metrics')).body.toString()).toMatch(/^attestor_agents_stale_total 2$/m);
      const listed = await runCliWithEnv(operatorEnv, () => runCli(runAttestor, ['agent', 'list']));
      expect(listed.out).toMatch(new RegExp(`${agentB}\\s+active \\(stale\\)`));

      const ok = await withSession(hostB, dirB(), async (session) =>
        buildAttestationRequest({ session, key: tpmKey, challenge: await challenge(agentB), logs: { eventLog: { path: eventLogPath(), ifPresent: false } } }),
      );
      expect((await attest(agentB, ok)).verdict.status).toBe('affirming');
      expect(await staleSince()).toBeNull();
      const fresh = (await v.verifier.store.audit.list({ limit: 500 })).items.filter((e) => e.action === 'agent.fresh');
      expect(fresh.map((e) => e.subject)).toEqual([agentB]);
    } finally {
      skewMs = 0;
    }
  });

  it('a changed PCR contradicts the baseline: refused with its reason, stored, nothing issued', async () => {
    const before = await issued();
    await tpm2(hostA, ['tpm2_pcrextend', `15:sha256=${createHash('sha256').update('changed').digest('hex')}`]);
    const r = await agentCli(['attest', ...serverArgs(), '--tcti', hostA.tcti, '--state-dir', dirA(), '--key', 'tpm', '--no-event-log', '--no-ima-log']);
    expect(r.code).toBe(1);
    expect(r.err).toMatch(/ERR_ATTESTATION_REFUSED/);
    expect(r.err).toMatch(/PCR_VALUE_NOT_ALLOWED sha256:15/);
    expect(await issued()).toBe(before);
    const agent = await admin.call('GET', `/v1/agents/${agentA}`, AgentDetailBody);
    expect(agent.lastVerdict?.status).toBe('contraindicated');
    expect(agent.lastVerdict?.reasons.map((x) => x.code)).toContain('PCR_VALUE_NOT_ALLOWED');
    expect(agent.status).toBe('quarantined');
    expect(agent.credentials.every((c) => c.revoked || Date.parse(c.expiresAt) <= Date.now())).toBe(true);
  });

  it('quarantine revokes the credentials (the CRL lists them, OpenSSL refuses the certificate) and stops attestation until release; revoke is final', async () => {
    const before = await issued();
    const certPath = join(dirA(), 'cert.pem');
    const operatorEnv = { ATTESTOR_SERVER: v.url, ATTESTOR_CA_FINGERPRINT: v.caFingerprint, ATTESTOR_TOKEN: v.adminToken };
    const q = await runCliWithEnv(operatorEnv, () => runCli(runAttestor, ['agent', 'quarantine', agentA]));
    expect(q.code, q.err).toBe(0);
    expect(q.out).toBe(`agent ${agentA} is quarantined\n`);

    const crl = await anon.get('/v1/crl');
    const crlPath = join(tmp, 'crl-revoked.pem');
    writeFileSync(crlPath, `-----BEGIN X509 CRL-----\n${crl.body.toString('base64')}\n-----END X509 CRL-----\n`);
    const serial = new X509Certificate(readFileSync(certPath)).serialNumber.toLowerCase();
    const listed = spawnSync('openssl', ['crl', '-in', crlPath, '-noout', '-text'], { encoding: 'utf8' }).stdout.toLowerCase().replace(/:/g, '');
    expect(listed).toContain(serial.replace(/^0+/, ''));
    const check = spawnSync('openssl', ['verify', '-crl_check', '-CRLfile', crlPath, '-CAfile', join(dirA(), 'bundle.pem'), certPath], { encoding: 'utf8' });
    expect(check.status).not.toBe(0);
    expect(check.stdout + check.stderr).toMatch(/certificate revoked/);

    await refused(challenge(agentA), 'ERR_AGENT_NOT_ACTIVE');
    // Its JWT-SVID introspects inactive from now on.
    expect((await postForm(v.url, caPem, '/v1/introspect', { token: lastJwt }, relyingPartyToken)).body).toEqual({ active: false });
    const released = await admin.call('POST', `/v1/agents/${agentA}/release`, AgentDetailBody.omit({ credentials: true }), {});
    expect(released.status).toBe('active');
    expect((await challenge(agentA)).nonce).toHaveLength(32);

    const r = await runCliWithEnv(operatorEnv, () => runCli(runAttestor, ['agent', 'revoke', agentA, '--json']));
    expect(r.code, r.err).toBe(0);
    expect(JSON.parse(r.out)).toMatchObject({ id: agentA, status: 'revoked' });
    expect((await refused(challenge(agentA), 'ERR_AGENT_NOT_ACTIVE')).problem.agentStatus).toBe('revoked');
    await refused(admin.call('POST', `/v1/agents/${agentA}/release`, AgentDetailBody, {}), 'ERR_AGENT_NOT_ACTIVE');
    expect(await issued()).toBe(before);
  });
}


/** Runs `work` with extra environment variables set for the in-process CLI, then restores them. */
async function runCliWithEnv<T>(env: Record<string, string>, work: () => Promise<T>): Promise<T> {
  const saved = Object.fromEntries(Object.keys(env).map((k) => [k, process.env[k]]));
  Object.assign(process.env, env);
  try {
    return await work();
  } finally {
    for (const [k, value] of Object.entries(saved)) {
      if (value === undefined) delete process.env[k];
      else process.env[k] = value;
    }
  }
}
