/**
 * `attestor-agent enroll` and `attestor-agent attest` (src/cli/commands/agent-*.ts and the agent
 * modules behind them) against a real swtpm and SoftHSM, talking HTTPS to a verifier played here
 * with the core's own checks: MakeCredential for enrollment, verifyCertify / verifyQuote /
 * verifyHsmKey for attestations, X.509 leaves issued with @peculiar/x509. It checks what the
 * agent sends, keeps and prints, the pinned CA, refusals with their reasons, and every usage
 * error (exit 2, before the TPM or the network is touched).
 */
import { createHash, KeyObject, randomBytes, randomUUID, timingSafeEqual, webcrypto, X509Certificate } from 'node:crypto';
import { spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import type { IncomingMessage, ServerResponse } from 'node:http';
import { createServer, type Server } from 'node:https';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import '../src/reflect-metadata.js';
import * as x509 from '@peculiar/x509';
import { describeReason } from '../src/agent/attest.js';
import { StateDir } from '../src/agent/state-dir.js';
import { tss2PrivateKeyPem } from '../src/agent/tpm-key-file.js';
import { loadNodeTss } from '../src/agent/tss.js';
import { quoteQualifyingData } from '../src/appraisal/key-binding.js';
import { verifyCertify } from '../src/appraisal/verify-certify.js';
import { verifyHsmKey } from '../src/appraisal/verify-hsm-key.js';
import { verifyQuote } from '../src/appraisal/verify-quote.js';
import { runAgent } from '../src/cli/agent-program.js';
import { isAttestorError } from '../src/errors.js';
import { makeCredential } from '../src/tpm/make-credential.js';
import { objectName } from '../src/tpm/name.js';
import { parseTpm2bPublic, type TpmPublic } from '../src/tpm/public.js';
import { publicKeyOf } from '../src/tpm/public-key.js';
import { decodeBody, encodeBody, formatOf, type BodyFormat } from '../src/wire/codec.js';
import { AttestationRequest, EnrollmentRequest } from '../src/wire/schemas.js';
import { runCli, type CliRun } from './helpers/cli.js';
import { startSoftHsm, type SoftHsm } from './helpers/softhsm.js';
import { startSwtpm, type Swtpm } from './helpers/swtpm.js';
import { vector } from './vectors.js';

// ---- a verifier for the agent to talk to ----------------------------------------------------

type Mode = 'affirm' | 'refuse' | 'no-credentials' | 'forget-nonce' | 'wrong-key' | 'wrong-agent-id' | 'fail-activation';

interface Received {
  format: BodyFormat | undefined;
  enrollment?: EnrollmentRequest;
  attestation?: AttestationRequest;
  secret?: Buffer;
}

interface Verifier {
  readonly url: string;
  readonly fingerprint: string;
  readonly rootPem: string;
  mode: Mode;
  /** Whether GET /v1/roots/{fingerprint} answers (the agent must fetch the root only when it has not kept it). */
  servesRoot: boolean;
  readonly received: Received[];
  stop(): Promise<void>;
}

const TRUST_DOMAIN = 'example.org';
const SELECTION = { sha256: [0, 1, 2, 3, 4, 5, 6, 7] };
const BASELINE_ID = '3f1c2a9e-8d4b-4c6f-9a2e-5b7d1e0c4a11';
const REFUSAL_REASONS = [
  { code: 'ERR_PCR_VALUE', bank: 'sha256', pcr: 7, message: 'PCR 7 holds no allowed value' },
  { code: 'ERR_IMA_NOT_ALLOWED', path: '/usr/bin/unknown', message: 'file is not in the allowlist' },
];

async function startVerifier(): Promise<Verifier> {
  const subtle = webcrypto.subtle;
  const alg = { name: 'ECDSA', namedCurve: 'P-256', hash: 'SHA-256' };
  const rootKeys = (await subtle.generateKey(alg, true, ['sign', 'verify'])) as webcrypto.CryptoKeyPair;
  const root = await x509.X509CertificateGenerator.createSelfSigned({
    name: 'CN=attestor test root',
    keys: rootKeys as never,
    signingAlgorithm: alg,
    extensions: [new x509.BasicConstraintsExtension(true, undefined, true), new x509.KeyUsagesExtension(x509.KeyUsageFlags.keyCertSign, true)],
  });
  const issue = (subject: string, publicKey: x509.PublicKeyType, extensions: x509.Extension[]) =>
    x509.X509CertificateGenerator.create({
      subject,
      issuer: root.subject,
      notBefore: new Date(Date.now() - 10_000),
      notAfter: new Date(Date.now() + 3_600_000),
      publicKey,
      signingKey: rootKeys.privateKey as never,
      signingAlgorithm: alg,
      extensions,
    });
  const tlsKeys = (await subtle.generateKey(alg, true, ['sign', 'verify'])) as webcrypto.CryptoKeyPair;
  const tlsCert = await issue('CN=127.0.0.1', tlsKeys.publicKey as never, [new x509.SubjectAlternativeNameExtension([{ type: 'ip', value: '127.0.0.1' }])]);
  const rootPem = root.toString('pem');

  const enrollments = new Map<string, { agentId: string; ak: TpmPublic; secret: Buffer }>();
  const agents = new Map<string, TpmPublic>();
  const nonces = new Map<string, string>();
  const received: Received[] = [];

  const send = (res: ServerResponse, status: number, body: unknown, format: BodyFormat) => {
    res.writeHead(status, { 'content-type': format === 'cbor' ? 'application/cbor' : 'application/json' });
    res.end(encodeBody(body, format));
  };
  const problem = (res: ServerResponse, status: number, code: string, detail: string, extra: object = {}) => {
    res.writeHead(status, { 'content-type': 'application/problem+json' });
    res.end(JSON.stringify({ type: 'about:blank', title: code, status, detail, code, ...extra }));
  };
  const verdict = (status: string, reasons: object[]) => ({
    id: randomUUID(),
    status,
    reasons,
    baseline: { id: BASELINE_ID, version: 3 },
    at: new Date().toISOString(),
  });

  async function handle(req: IncomingMessage, res: ServerResponse, v: Verifier): Promise<void> {
    const chunks: Buffer[] = [];
    for await (const c of req) chunks.push(c as Buffer);
    const format = formatOf(req.headers['content-type']);
    const accept = formatOf(req.headers.accept) ?? 'json';
    const body = format ? decodeBody(Buffer.concat(chunks), format) : undefined;
    const path = req.url ?? '';
    let m: RegExpMatchArray | null;
    if (req.method === 'GET' && (m = path.match(/^\/v1\/roots\/([0-9a-f]{64})$/))) {
      if (!v.servesRoot || m[1] !== v.fingerprint) return problem(res, 404, 'ERR_NOT_FOUND', 'no such root');
      res.writeHead(200, { 'content-type': 'application/pem-certificate-chain' });
      return void res.end(rootPem);
    }
    if (req.method === 'POST' && path === '/v1/enrollments') {
      const e = EnrollmentRequest.parse(body);
      received.push({ format, enrollment: e });
      const ek = parseTpm2bPublic(e.ekPublic);
      const ak = parseTpm2bPublic(e.akPublic);
      // The agent id from the EK certificate's key: the EK public the agent sent must be that key.
      const certKey = new X509Certificate(Buffer.from(e.ekCertificate!)).publicKey;
      if (!certKey.equals(publicKeyOf(ek))) return problem(res, 403, 'ERR_EK_CERT_KEY_MISMATCH', 'the EK certificate is for another key');
      const agentId = createHash('sha256').update(certKey.export({ type: 'spki', format: 'der' })).digest('hex');
      const secret = randomBytes(32);
      const enrollmentId = randomUUID();
      enrollments.set(enrollmentId, { agentId, ak, secret });
      const made = makeCredential(ek, objectName(ak), secret);
      return send(res, 201, { enrollmentId, agentId: v.mode === 'wrong-agent-id' ? 'ef'.repeat(32) : agentId, ...made, expiresAt: new Date(Date.now() + 300_000).toISOString() }, accept);
    }
    if (req.method === 'POST' && (m = path.match(/^\/v1\/enrollments\/([0-9a-f-]+)\/activation$/))) {
      const pending = enrollments.get(m[1]!);
      enrollments.delete(m[1]!);
      const secret = Buffer.from((body as { secret: Uint8Array | string }).secret as never, typeof (body as { secret: unknown }).secret === 'string' ? 'base64url' : undefined);
      received.push({ format, secret });
      if (!pending || v.mode === 'fail-activation' || secret.length !== 32 || !timingSafeEqual(secret, pending.secret)) {
        return problem(res, 403, 'ERR_ACTIVATION_FAILED', 'activation failed');
      }
      agents.set(pending.agentId, pending.ak);
      return send(res, 200, { agentId: pending.agentId, spiffeId: `spiffe://${TRUST_DOMAIN}/agent/tpm/${pending.agentId}` }, accept);
    }
    if (req.method === 'POST' && (m = path.match(/^\/v1\/agents\/([0-9a-f]{64})\/challenges$/))) {
      if (!agents.has(m[1]!)) return problem(res, 404, 'ERR_AGENT_NOT_FOUND', 'no such agent');
      const nonce = randomBytes(32);
      nonces.set(nonce.toString('hex'), m[1]!);
      return send(res, 201, { nonce, expiresAt: new Date(Date.now() + 60_000).toISOString(), pcrSelection: SELECTION }, accept);
    }
    if (req.method === 'POST' && (m = path.match(/^\/v1\/agents\/([0-9a-f]{64})\/attestations$/))) {
      const agentId = m[1]!;
      const a = AttestationRequest.parse(body);
      received.push({ format, attestation: a });
      const nonceKey = Buffer.from(a.nonce).toString('hex');
      if (v.mode === 'forget-nonce') nonces.delete(nonceKey);
      if (nonces.get(nonceKey) !== agentId) return problem(res, 403, 'ERR_NONCE_UNKNOWN', 'unknown nonce');
      nonces.delete(nonceKey);
      const ak = agents.get(agentId)!;
      let spki: Uint8Array;
      try {
        const quote = { quote: a.quote, signature: a.signature, pcrs: a.pcrs };
        if (a.key.kind === 'tpm') {
          const keyPublic = parseTpm2bPublic(a.key.public);
          verifyCertify(ak, { keyPublic, certifyInfo: a.key.certifyInfo, signature: a.key.signature }, { qualifyingData: a.nonce });
          verifyQuote(ak, quote, { qualifyingData: quoteQualifyingData(a.nonce, { kind: 'tpm', public: a.key.public }), requiredPcrs: SELECTION });
          spki = publicKeyOf(keyPublic).export({ type: 'spki', format: 'der' });
        } else {
          const quoted = verifyQuote(ak, quote, { qualifyingData: quoteQualifyingData(a.nonce, { kind: 'pkcs11', evidence: a.key.report }), requiredPcrs: SELECTION });
          spki = verifyHsmKey(a.key.report, { nonce: a.nonce, quotedQualifyingData: quoted.attest.extraData }).publicKey.export({ type: 'spki', format: 'der' });
        }
      } catch (e) {
        if (isAttestorError(e)) return problem(res, 403, e.code, 'the evidence does not verify');
        throw e;
      }
      if (v.mode === 'refuse') {
        return problem(res, 403, 'ERR_ATTESTATION_REFUSED', 'the evidence does not satisfy the baseline', { verdict: verdict('contraindicated', REFUSAL_REASONS) });
      }
      if (v.mode === 'no-credentials') return send(res, 200, { agentId, verdict: verdict('warning', [{ code: 'ERR_BASELINE_STAGED', message: 'staged only' }]) }, accept);
      const spiffeId = `spiffe://${TRUST_DOMAIN}/agent/tpm/${agentId}`;
      const subjectKey = v.mode === 'wrong-key' ? ((await subtle.generateKey(alg, true, ['sign'])) as webcrypto.CryptoKeyPair).publicKey : spki;
      const leaf = await issue('', subjectKey as never, [new x509.SubjectAlternativeNameExtension([{ type: 'url', value: spiffeId }], true)]);
      const expiresAt = leaf.notAfter.toISOString();
      const jwt = a.audience === undefined ? {} : { jwt: `${Buffer.from('{"alg":"ES256"}').toString('base64url')}.${Buffer.from(JSON.stringify({ aud: a.audience })).toString('base64url')}.c2ln` };
      return send(res, 200, { agentId, verdict: verdict('affirming', []), credentials: { certificate: leaf.toString('pem'), bundle: rootPem, ...jwt, expiresAt, spiffeId } }, accept);
    }
    problem(res, 404, 'ERR_NOT_FOUND', `no route ${req.method} ${path}`);
  }

  const key = KeyObject.from(tlsKeys.privateKey as never).export({ type: 'pkcs8', format: 'pem' });
  const server: Server = createServer({ key, cert: tlsCert.toString('pem') });
  const verifier: Verifier = {
    url: '',
    fingerprint: createHash('sha256').update(Buffer.from(root.rawData)).digest('hex'),
    rootPem,
    mode: 'affirm',
    servesRoot: true,
    received,
    stop: () => new Promise((resolve) => server.close(() => resolve())),
  };
  server.on('request', (req, res) => {
    handle(req, res, verifier).catch((e: unknown) => problem(res, 500, 'ERR_INTERNAL', String(e)));
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  (verifier as { url: string }).url = `https://127.0.0.1:${(server.address() as AddressInfo).port}`;
  return verifier;
}

// ---- the tests ---------------------------------------------------------------------------------

let sw: Swtpm;
let hsm: SoftHsm;
let verifier: Verifier;
let tmp: string;

beforeAll(async () => {
  [sw, hsm, verifier] = await Promise.all([startSwtpm(), startSoftHsm(), startVerifier()]);
  tmp = mkdtempSync(join(tmpdir(), 'attestor-agent-attest-'));
});
afterAll(async () => {
  await verifier?.stop();
  await Promise.all([sw?.stop(), hsm?.stop()]);
  if (tmp) rmSync(tmp, { recursive: true, force: true });
});
afterEach(() => {
  verifier.mode = 'affirm';
  verifier.servesRoot = true;
});

let seq = 0;
const freshDir = (what: string) => join(tmp, `${what}-${seq++}`);
const agent = (args: string[]) => runCli(runAgent, args);
const mode = (path: string) => statSync(path).mode & 0o777;

const connection = (stateDir: string, o: { server?: string; fingerprint?: string; tcti?: string } = {}) => [
  '--server',
  o.server ?? verifier.url,
  '--ca-fingerprint',
  o.fingerprint ?? verifier.fingerprint,
  '--tcti',
  o.tcti ?? sw.tcti,
  '--state-dir',
  stateDir,
];

function expectRefused(r: CliRun, code: string): void {
  expect(r.code, r.err).toBe(1);
  expect(r.err).toMatch(new RegExp(`^error: ${code}: `));
}

/** A state directory enrolled with the verifier. */
async function enrolled(format: BodyFormat = 'json'): Promise<string> {
  const dir = freshDir('state');
  const r = await agent(['enroll', ...connection(dir), '--format', format]);
  expect(r.code, r.err).toBe(0);
  return dir;
}

/** The attest command line for `dir`: no logs unless asked (this host's securityfs is not the swtpm's). */
const attestArgs = (dir: string, ...more: string[]) => ['attest', '--state-dir', dir, '--tcti', sw.tcti, '--no-event-log', '--no-ima-log', ...more];

const pkcs11Uri = (label = 'agent-key') => `pkcs11:token=${hsm.tokenLabel};object=${label}?module-path=${hsm.modulePath}`;

/** Runs `fn` with `vars` set (undefined: unset) in process.env, where commander reads env defaults, restoring it after. */
async function withEnv<T>(vars: Record<string, string | undefined>, fn: () => Promise<T>): Promise<T> {
  const saved = Object.fromEntries(Object.keys(vars).map((k) => [k, process.env[k]]));
  const apply = (values: Record<string, string | undefined>) => {
    for (const [k, v] of Object.entries(values)) {
      if (v === undefined) delete process.env[k];
      else process.env[k] = v;
    }
  };
  apply(vars);
  try {
    return await fn();
  } finally {
    apply(saved);
  }
}

describe('attestor-agent enroll', () => {
  it('enrolls the TPM (EK, EK certificate, AK, labels), keeps agent.json and the pinned ca.pem (0600, directory 0700)', async () => {
    const dir = freshDir('state');
    const before = verifier.received.length;
    const r = await agent(['enroll', ...connection(dir), '--label', 'role=gpu-node', '--label', 'zone=eu-1']);
    expect(r.code, r.err).toBe(0);

    const state = JSON.parse(readFileSync(join(dir, 'agent.json'), 'utf8'));
    const pinned = new X509Certificate(readFileSync(join(dir, 'ca.pem')));
    expect(pinned.toString()).toBe(new X509Certificate(verifier.rootPem).toString());
    expect(state).toEqual({
      agentId: expect.stringMatching(/^[0-9a-f]{64}$/),
      spiffeId: `spiffe://${TRUST_DOMAIN}/agent/tpm/${state.agentId}`,
      server: verifier.url,
      caFingerprint: verifier.fingerprint,
    });
    expect(r.out).toBe(
      `enrolled this host's TPM with ${verifier.url}\n` +
        `agent id   ${state.agentId}\n` +
        `SPIFFE ID  ${state.spiffeId}\n` +
        `wrote      ${join(dir, 'agent.json')}, ${join(dir, 'ca.pem')}\n` +
        `next       attestor-agent attest --state-dir ${dir}\n`,
    );
    for (const f of ['agent.json', 'ca.pem']) expect(mode(join(dir, f))).toBe(0o600);
    expect(mode(dir)).toBe(0o700);

    const [enrollment, activation] = verifier.received.slice(before);
    expect(enrollment?.format).toBe('json');
    expect(enrollment?.enrollment?.labels).toEqual({ role: 'gpu-node', zone: 'eu-1' });
    expect(Buffer.from(enrollment!.enrollment!.akPublic).equals(readFileSync(join(dir, 'ak.pub')))).toBe(true);
    // The secret the TPM recovered went back once; it appears nowhere in what was printed.
    const secret = activation!.secret!;
    for (const text of [r.out, r.err]) {
      for (const encoding of ['hex', 'base64', 'base64url'] as const) expect(text).not.toContain(secret.toString(encoding));
    }
  });

  it('speaks CBOR with --format cbor, and takes the server and fingerprint from the environment', async () => {
    const dir = freshDir('state');
    const before = verifier.received.length;
    const r = await withEnv({ ATTESTOR_SERVER: verifier.url, ATTESTOR_CA_FINGERPRINT: verifier.fingerprint }, () =>
      agent(['enroll', '--tcti', sw.tcti, '--state-dir', dir, '--format', 'cbor']),
    );
    expect(r.code, r.err).toBe(0);
    expect(verifier.received.slice(before).map((x) => x.format)).toEqual(['cbor', 'cbor']);
  });

  it('refuses a server whose root CA does not have the pinned fingerprint (ERR_SERVER_UNTRUSTED), writing no agent.json', async () => {
    const dir = freshDir('state');
    expectRefused(await agent(['enroll', ...connection(dir, { fingerprint: 'ab'.repeat(32) })]), 'ERR_SERVER_UNTRUSTED');
    expect(existsSync(join(dir, 'agent.json'))).toBe(false);
    expect(existsSync(join(dir, 'ca.pem'))).toBe(false);
  });

  it('refuses an enrollment the verifier made for another agent id (ERR_SERVER_RESPONSE)', async () => {
    verifier.mode = 'wrong-agent-id';
    const dir = freshDir('state');
    const r = await agent(['enroll', ...connection(dir)]);
    expectRefused(r, 'ERR_SERVER_RESPONSE');
    expect(r.err).toContain(`the verifier enrolled agent ${'ef'.repeat(32)}, but this TPM's EK makes agent id `);
    expect(existsSync(join(dir, 'agent.json'))).toBe(false);
  });

  it("prints the verifier's code when it refuses the activation, and never the secret", async () => {
    verifier.mode = 'fail-activation';
    const dir = freshDir('state');
    const r = await agent(['enroll', ...connection(dir)]);
    expectRefused(r, 'ERR_ACTIVATION_FAILED');
    const secret = verifier.received.at(-1)!.secret!;
    for (const encoding of ['hex', 'base64', 'base64url'] as const) expect(r.err).not.toContain(secret.toString(encoding));
    expect(existsSync(join(dir, 'agent.json'))).toBe(false);
  });
});

describe('attestor-agent attest --key tpm', () => {
  it('attests, keeps cert.pem, bundle.pem, key.pem and token.jwt (0600) and says what it did', async () => {
    const dir = await enrolled();
    const state = JSON.parse(readFileSync(join(dir, 'agent.json'), 'utf8'));
    const r = await agent(attestArgs(dir, '--audience', 'spiffe://example.org/db'));
    expect(r.code, r.err).toBe(0);

    const cert = new X509Certificate(readFileSync(join(dir, 'cert.pem')));
    const files = ['key.pem', 'bundle.pem', 'cert.pem', 'token.jwt'].map((f) => join(dir, f));
    expect(r.out).toBe(
      `agent id   ${state.agentId}\n` +
        `SPIFFE ID  ${state.spiffeId}\n` +
        `verdict    affirming (baseline ${BASELINE_ID} version 3)\n` +
        `wrote      ${files[0]}\n` +
        files.slice(1).map((f) => `           ${f}\n`).join('') +
        `expires    ${new Date(cert.validTo).toISOString()}\n`,
    );
    for (const f of files) expect(mode(f)).toBe(0o600);
    expect(readFileSync(join(dir, 'bundle.pem'), 'utf8')).toBe(verifier.rootPem);
    expect(JSON.parse(Buffer.from(readFileSync(join(dir, 'token.jwt'), 'utf8').split('.')[1]!, 'base64url').toString())).toEqual({ aud: 'spiffe://example.org/db' });
    expect(cert.subjectAltName).toBe(`URI:${state.spiffeId}`);
    // No temporary file is left beside them.
    expect(readdirSync(dir).filter((f) => f.endsWith('.tmp'))).toEqual([]);

    // key.pem is the identity key the certificate is for, as a TSS2 PRIVATE KEY of the blobs the TPM made.
    const stateDir = await StateDir.open(dir, loadNodeTss());
    const blobs = (await stateDir.withLock(() => stateDir.readKey('identity')))!;
    expect(readFileSync(join(dir, 'key.pem'), 'utf8')).toBe(tss2PrivateKeyPem(blobs));
    expect(cert.publicKey.equals(publicKeyOf(parseTpm2bPublic(blobs.public)))).toBe(true);
    // ... which OpenSSL's tpm2 provider loads from the same TPM, reading out the certificate's key.
    const pkey = spawnSync('openssl', ['pkey', '-provider', 'tpm2', '-provider', 'default', '-in', join(dir, 'key.pem'), '-pubout'], {
      encoding: 'utf8',
      env: { ...process.env, TPM2OPENSSL_TCTI: sw.tcti, TSS2_LOG: 'all+none' },
    });
    expect(pkey.status, `OpenSSL's tpm2 provider (tpm2-openssl) must load key.pem: ${pkey.stderr}`).toBe(0);
    expect(pkey.stdout).toBe(cert.publicKey.export({ type: 'spki', format: 'pem' }));
  });

  it('answers the challenge with the quote and the logs given, and sends none with --no-event-log / --no-ima-log', async () => {
    const dir = await enrolled();
    const eventLog = join(tmp, `bios-${seq++}.bin`);
    writeFileSync(eventLog, vector('eventlog/event-arch-linux.bin'));
    const imaLog = join(tmp, `ima-${seq++}.txt`);
    writeFileSync(imaLog, vector('ima/ascii_runtime_measurements'));
    const r = await agent(['attest', '--state-dir', dir, '--tcti', sw.tcti, '--event-log', eventLog, '--ima-log', imaLog, '--format', 'cbor']);
    expect(r.code, r.err).toBe(0);
    const sent = verifier.received.at(-1)!;
    expect(sent.format).toBe('cbor');
    expect(Buffer.from(sent.attestation!.eventLog!).equals(readFileSync(eventLog))).toBe(true);
    expect(Buffer.from(sent.attestation!.imaLog!).equals(readFileSync(imaLog))).toBe(true);
    expect(sent.attestation!.audience).toBeUndefined();
    expect(Object.keys(sent.attestation!.pcrs.sha256!)).toEqual(['0', '1', '2', '3', '4', '5', '6', '7']);

    expect((await agent(attestArgs(dir))).code).toBe(0);
    const bare = verifier.received.at(-1)!.attestation!;
    expect(bare.eventLog).toBeUndefined();
    expect(bare.imaLog).toBeUndefined();
  });

  it('prints one JSON object with --json; a later attestation without an audience removes the old token.jwt', async () => {
    const dir = await enrolled();
    expect((await agent(attestArgs(dir, '--audience', 'db'))).code).toBe(0);
    expect(existsSync(join(dir, 'token.jwt'))).toBe(true);
    const r = await agent(attestArgs(dir, '--json'));
    expect(r.code, r.err).toBe(0);
    const out = JSON.parse(r.out);
    expect(out).toMatchObject({
      agentId: JSON.parse(readFileSync(join(dir, 'agent.json'), 'utf8')).agentId,
      verdict: { status: 'affirming', reasons: [] },
      files: ['key.pem', 'bundle.pem', 'cert.pem'].map((f) => join(dir, f)),
      jwt: false,
    });
    expect(existsSync(join(dir, 'token.jwt'))).toBe(false);
  });

  it('keeps the root CA it pinned: no fetch while the fingerprint is the same, a new fetch for another one', async () => {
    const dir = await enrolled();
    verifier.servesRoot = false;
    expect((await agent(attestArgs(dir))).code).toBe(0);
    // Another fingerprint given: the kept root is not it, and the server has no such root.
    expectRefused(await agent(attestArgs(dir, '--ca-fingerprint', 'ab'.repeat(32))), 'ERR_SERVER_UNTRUSTED');
    expect(readFileSync(join(dir, 'ca.pem'), 'utf8')).toBe(new X509Certificate(verifier.rootPem).toString());
  });

  it('prints a refusal with the verdict\'s reasons (exit 1) and keeps the credentials it had', async () => {
    const dir = await enrolled();
    expect((await agent(attestArgs(dir))).code).toBe(0);
    const cert = readFileSync(join(dir, 'cert.pem'), 'utf8');
    verifier.mode = 'refuse';
    const r = await agent(attestArgs(dir));
    expect(r.code).toBe(1);
    expect(r.err).toBe(
      'error: ERR_ATTESTATION_REFUSED: the evidence does not satisfy the baseline (verdict contraindicated)\n' +
        '  ERR_PCR_VALUE sha256:7 PCR 7 holds no allowed value\n' +
        '  ERR_IMA_NOT_ALLOWED /usr/bin/unknown file is not in the allowlist\n',
    );
    expect(r.out).toBe('');
    expect(readFileSync(join(dir, 'cert.pem'), 'utf8')).toBe(cert);

    const json = await agent(attestArgs(dir, '--json'));
    expect(json.code).toBe(1);
    expect(JSON.parse(json.out)).toMatchObject({ refused: 'ERR_ATTESTATION_REFUSED', verdict: { status: 'contraindicated', reasons: REFUSAL_REASONS } });
  });

  it("treats an answer without credentials as a refusal, and prints the verifier's own code for other refusals", async () => {
    const dir = await enrolled();
    verifier.mode = 'no-credentials';
    const none = await agent(attestArgs(dir));
    expect(none.code).toBe(1);
    expect(none.err).toBe('error: ERR_ATTESTATION_REFUSED: the verifier issued no credentials (verdict warning)\n  ERR_BASELINE_STAGED staged only\n');
    verifier.mode = 'forget-nonce';
    expectRefused(await agent(attestArgs(dir)), 'ERR_NONCE_UNKNOWN');
    expect(readdirSync(dir).filter((f) => f.endsWith('.pem'))).toEqual(['ca.pem']);
  });

  it('keeps nothing of a certificate issued to another key (ERR_SERVER_RESPONSE)', async () => {
    const dir = await enrolled();
    verifier.mode = 'wrong-key';
    const r = await agent(attestArgs(dir));
    expectRefused(r, 'ERR_SERVER_RESPONSE');
    expect(r.err).toContain("a certificate for another key than this agent's");
    for (const f of ['cert.pem', 'bundle.pem', 'key.pem']) expect(existsSync(join(dir, f))).toBe(false);
  });

  it('is ERR_AGENT_NOT_ENROLLED in a state directory without agent.json, and creates no AK there', async () => {
    const dir = freshDir('state');
    mkdirSync(dir, { mode: 0o700 });
    expectRefused(await agent(attestArgs(dir)), 'ERR_AGENT_NOT_ENROLLED');
    expect(readdirSync(dir)).toEqual([]);
  });

  it("is ERR_AGENT_STATE when agent.json is another TPM's enrollment", async () => {
    const dir = await enrolled();
    const state = JSON.parse(readFileSync(join(dir, 'agent.json'), 'utf8'));
    writeFileSync(join(dir, 'agent.json'), JSON.stringify({ ...state, agentId: '12'.repeat(32) }));
    const r = await agent(attestArgs(dir));
    expectRefused(r, 'ERR_AGENT_STATE');
    expect(r.err).toContain(`is agent ${'12'.repeat(32)}, but this TPM is agent ${state.agentId}`);
  });
});

describe('attestor-agent attest --key pkcs11:...', () => {
  it('attests a SoftHSM key (PIN from ATTESTOR_AGENT_PKCS11_PIN), keeps key.uri without the PIN and drops a key.pem', async () => {
    const dir = await enrolled();
    expect((await agent(attestArgs(dir))).code).toBe(0);
    expect(existsSync(join(dir, 'key.pem'))).toBe(true);

    const r = await withEnv({ ATTESTOR_AGENT_PKCS11_PIN: hsm.userPin }, () => agent(attestArgs(dir, '--key', pkcs11Uri())));
    expect(r.code, r.err).toBe(0);
    expect(readFileSync(join(dir, 'key.uri'), 'utf8')).toBe(`${pkcs11Uri()}\n`);
    expect(mode(join(dir, 'key.uri'))).toBe(0o600);
    expect(existsSync(join(dir, 'key.pem'))).toBe(false);
    const sent = verifier.received.at(-1)!.attestation!;
    if (sent.key.kind !== 'pkcs11') throw new Error('not a PKCS#11 key');
    const cert = new X509Certificate(readFileSync(join(dir, 'cert.pem')));
    expect(Buffer.from(cert.publicKey.export({ type: 'spki', format: 'der' })).equals(Buffer.from(sent.key.report.publicKey))).toBe(true);
    for (const text of [r.out, r.err, readFileSync(join(dir, 'key.uri'), 'utf8')]) expect(text).not.toContain(hsm.userPin);
  });

  it('uses the label attestor-agent when the URI names no object, and takes the PIN from pin-source', async () => {
    const dir = await enrolled();
    const pinFile = join(tmp, `pin-${seq++}`);
    writeFileSync(pinFile, `${hsm.userPin}\n`, { mode: 0o600 });
    const uri = `pkcs11:token=${hsm.tokenLabel}?module-path=${hsm.modulePath}&pin-source=${pinFile}`;
    const r = await agent(attestArgs(dir, '--key', uri));
    expect(r.code, r.err).toBe(0);
    expect(readFileSync(join(dir, 'key.uri'), 'utf8')).toBe(`pkcs11:token=${hsm.tokenLabel};object=attestor-agent?module-path=${hsm.modulePath}&pin-source=${pinFile}\n`);
  });

  it('is ERR_KEYS_URI without a PIN, ERR_PKCS11_LOGIN with a wrong one', async () => {
    const dir = await enrolled();
    const none = await withEnv({ ATTESTOR_AGENT_PKCS11_PIN: undefined }, () => agent(attestArgs(dir, '--key', pkcs11Uri())));
    expectRefused(none, 'ERR_KEYS_URI');
    const wrong = await withEnv({ ATTESTOR_AGENT_PKCS11_PIN: 'not-the-pin' }, () => agent(attestArgs(dir, '--key', pkcs11Uri())));
    expectRefused(wrong, 'ERR_PKCS11_LOGIN');
    expect(wrong.err).not.toContain('not-the-pin');
  });
});

describe('describeReason', () => {
  it('prints the code, where the reason points, and its message', () => {
    expect(describeReason({ code: 'ERR_PCR_VALUE', bank: 'sha256', pcr: 7, message: 'PCR 7 holds no allowed value' })).toBe(
      'ERR_PCR_VALUE sha256:7 PCR 7 holds no allowed value',
    );
    expect(describeReason({ code: 'ERR_EVENTLOG_RULE', pcr: 4, event: 12 })).toBe('ERR_EVENTLOG_RULE ?:4 event 12');
    expect(describeReason({ code: 'ERR_BANK', bank: 'sha1', message: 'legacy' })).toBe('ERR_BANK sha1 legacy');
    expect(describeReason({ code: 'ERR_BOOT_COMPONENT', component: 'shimx64.efi', message: '' })).toBe('ERR_BOOT_COMPONENT shimx64.efi');
    expect(describeReason({ code: 'ERR_X' })).toBe('ERR_X');
  });
});

describe('usage errors exit 2, before the TPM or the server is used', () => {
  // A TPM and a server that are not there: exit 2 shows neither was tried.
  const nowhere = { server: 'https://127.0.0.1:1', tcti: 'swtpm:host=127.0.0.1,port=1' };
  const enroll = (...more: string[]) => ['enroll', ...connection(freshDir('state'), nowhere), ...more];
  const attest = (...more: string[]) => ['attest', ...connection(freshDir('state'), nowhere), ...more];
  const without = (args: string[], option: string) => args.filter((_, i) => args[i] !== option && args[i - 1] !== option);

  it.each([
    ['enroll without --server', () => without(enroll(), '--server')],
    ['enroll without --ca-fingerprint', () => without(enroll(), '--ca-fingerprint')],
    ['an http:// server', () => enroll('--server', 'http://127.0.0.1:1')],
    ['a server URL with a path', () => enroll('--server', 'https://127.0.0.1:1/v1')],
    ['a server that is not a URL', () => enroll('--server', 'verifier')],
    ['a fingerprint that is not 64 hex digits', () => enroll('--ca-fingerprint', 'abc')],
    ['a label without =', () => enroll('--label', 'role')],
    ['a label name in capitals', () => enroll('--label', 'Role=x')],
    ['a label given twice', () => enroll('--label', 'role=a', '--label', 'role=b')],
    ['an unknown --format', () => enroll('--format', 'xml')],
    ['a --key that is neither tpm nor a PKCS#11 URI', () => attest('--key', 'file:/etc/key.pem')],
    ['a PKCS#11 URI without module-path', () => attest('--key', 'pkcs11:token=t')],
    ['an --event-log that does not exist', () => attest('--event-log', join(tmp, 'no-such-log'))],
    ['an --ima-log that does not exist', () => attest('--ima-log', join(tmp, 'no-such-log'))],
    ['an audience with a space', () => attest('--audience', 'a b')],
    ['an unknown option', () => attest('--ak-type', 'rsa')],
  ])('%s', async (_name, args) => {
    const r = await withEnv({ ATTESTOR_SERVER: undefined, ATTESTOR_CA_FINGERPRINT: undefined }, () => agent(args()));
    expect(r.code, r.err).toBe(2);
    expect(r.err).toMatch(/^error: /);
  });

  it('names the mistake, and never repeats a PIN given in the URI', async () => {
    expect((await agent(enroll('--label', 'role=a', '--label', 'role=b'))).err).toBe(
      "error: option '--label <name=value>' argument 'role=b' is invalid. label \"role\" is given twice\n",
    );
    expect((await agent(attest('--event-log', join(tmp, 'no-such-log')))).err).toBe(`error: cannot read --event-log ${join(tmp, 'no-such-log')}: ENOENT\n`);
    const r = await agent(attest('--key', 'pkcs11:token=t;slot=3?module-path=/m.so&pin-value=SECRET-PIN-1234'));
    expect(r.code).toBe(2);
    expect(r.err).toBe('error: --key: path attribute "slot" is not supported (token, object)\n');
  });

  it('an environment fingerprint is checked like the flag', async () => {
    const r = await withEnv({ ATTESTOR_SERVER: nowhere.server, ATTESTOR_CA_FINGERPRINT: 'xyz' }, () =>
      agent(['enroll', '--tcti', nowhere.tcti, '--state-dir', freshDir('state')]),
    );
    expect(r.code).toBe(2);
    expect(r.err).toMatch(/ATTESTOR_CA_FINGERPRINT/);
  });
});
