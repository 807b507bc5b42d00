/**
 * What the attack tests share: a real verifier (test/helpers/verifier.ts) with one swtpm host
 * trusted by its EK roots, clients pinned to its CA, an agent enrolled through the HTTP API,
 * evidence built by the agent's own modules, and raw requests for bodies the API client would
 * not send.
 */
import { generateKeyPairSync, sign } from 'node:crypto';
import { mkdtempSync, rmSync } from 'node:fs';
import { request as httpsRequest } from 'node:https';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { z } from 'zod';
import { buildAttestationRequest } from '../src/agent/evidence.js';
import { quoteWithPcrValues } from '../src/agent/quote-with-values.js';
import { TpmSession } from '../src/agent/tpm-session.js';
import { CKK_EC, keyEvidenceMessage, type HsmKeyEvidence } from '../src/appraisal/hsm-key-report.js';
import { quoteQualifyingData } from '../src/appraisal/key-binding.js';
import { wirePcrs } from './helpers/api.js';
import { bootstrapCa, createApiClient, type ApiClient } from '../src/client/api-client.js';
import { ActivationResponse, BaselineBody, ChallengeResponse, EnrollmentResponse, type AttestationRequestInput, type ChallengeResponse as Challenge } from '../src/wire/schemas.js';
import { startSwtpm, type Swtpm } from './helpers/swtpm.js';
import { startTestVerifier, type TestVerifierOptions, type TestVerifier } from './helpers/verifier.js';

export interface AttackBed {
  readonly v: TestVerifier;
  readonly host: Swtpm;
  readonly caPem: string;
  readonly admin: ApiClient;
  readonly anon: ApiClient;
  /** A fresh state directory for the host's agent (AK and identity key blobs). */
  readonly stateDir: string;
  stop(): Promise<void>;
}

/** A verifier trusting the EK roots of one swtpm host; stop() removes all of it. */
export async function startAttackBed(opts: Omit<TestVerifierOptions, 'ekRootPems'> & { readonly moreEkRootPems?: readonly string[] } = {}): Promise<AttackBed> {
  const host = await startSwtpm();
  const tmp = mkdtempSync(join(tmpdir(), 'attestor-attack-'));
  let v: TestVerifier | undefined;
  try {
    const { moreEkRootPems = [], ...verifierOptions } = opts;
    v = await startTestVerifier({ ...verifierOptions, ekRootPems: [host.rootCaCertPem, host.caCertPem, ...moreEkRootPems] });
    const caPem = await bootstrapCa(v.url, v.caFingerprint);
    const admin = createApiClient({ server: v.url, caPem, token: v.adminToken });
    const anon = createApiClient({ server: v.url, caPem });
    const bed: AttackBed = {
      v,
      host,
      caPem,
      admin,
      anon,
      stateDir: join(tmp, 'agent'),
      async stop() {
        admin.close();
        anon.close();
        await v!.stop();
        await host.stop();
        rmSync(tmp, { recursive: true, force: true });
      },
    };
    return bed;
  } catch (e) {
    await v?.stop();
    await host.stop();
    rmSync(tmp, { recursive: true, force: true });
    throw e;
  }
}

/** Runs `use` with a TPM session on the bed's host (closed afterwards: swtpm has three object slots). */
export async function withSession<T>(bed: AttackBed, use: (s: TpmSession) => Promise<T>): Promise<T> {
  const session = await TpmSession.open({ tcti: bed.host.tcti, stateDir: bed.stateDir });
  try {
    return await use(session);
  } finally {
    await session.close();
  }
}

/** Enrolls (or re-enrolls) the host's EK and AK over the API with `labels`; the agent id. */
export async function enrollOverApi(bed: AttackBed, labels: Record<string, string>): Promise<string> {
  return withSession(bed, async (s) => {
    const e = await bed.anon.call('POST', '/v1/enrollments', EnrollmentResponse, {
      ekPublic: s.ek.public,
      ekCertificate: s.ek.certificate!,
      akPublic: s.ak.public,
      labels,
    });
    const secret = await s.activate(e.credentialBlob, e.encryptedSecret);
    const a = await bed.anon.call('POST', `/v1/enrollments/${e.enrollmentId}/activation`, ActivationResponse, { secret });
    return a.agentId;
  });
}

/** Adds a baseline (version 1 of `document`) and enforces it; its id. */
export async function enforceBaseline(bed: AttackBed, name: string, document: Record<string, unknown>): Promise<string> {
  const b = await bed.admin.call('POST', '/v1/baselines', BaselineBody, { name, document: { version: 1, ...document } });
  await bed.admin.call('POST', `/v1/baselines/${b.id}/enforce`, BaselineBody, {});
  return b.id;
}

export function challenge(bed: AttackBed, agentId: string): Promise<Challenge> {
  return bed.anon.call('POST', `/v1/agents/${agentId}/challenges`, ChallengeResponse, {});
}

/** The agent's correct answer to a fresh challenge (TPM identity key), the challenge edited first if asked. */
export async function evidenceFor(bed: AttackBed, agentId: string, edit?: (c: Challenge) => Challenge): Promise<AttestationRequestInput> {
  const c = await challenge(bed, agentId);
  return withSession(bed, (session) => buildAttestationRequest({ session, key: { kind: 'tpm' }, challenge: edit ? edit(c) : c }));
}



/** A problem+json or JSON answer of a raw request. */
export interface RawAnswer {
  readonly status: number;
  readonly body: { readonly [key: string]: unknown };
}

/** POSTs `body` as it is, with `contentType`, over TLS pinned to the bed's CA. */
export function postRaw(bed: AttackBed, path: string, contentType: string, body: Uint8Array): Promise<RawAnswer> {
  return new Promise((resolve, reject) => {
    const req = httpsRequest(
      new URL(path, bed.v.url),
      { method: 'POST', ca: bed.caPem, agent: false, headers: { 'content-type': contentType, 'content-length': String(body.length) } },
      (res) => {
        const chunks: Buffer[] = [];
        res.on('data', (c: Buffer) => chunks.push(c));
        res.on('end', () => {
          const text = Buffer.concat(chunks).toString('utf8');
          resolve({ status: res.statusCode ?? 0, body: z.record(z.string(), z.unknown()).parse(JSON.parse(text)) });
        });
        res.on('error', reject);
      },
    );
    req.on('error', reject);
    req.end(body);
  });
}

/**
 * A correct answer to a fresh challenge that names a software key as a PKCS#11 key, with
 * made-up attributes and token: the host's word is all the report is.
 */
export async function softwareKeyAnswer(bed: AttackBed, agentId: string): Promise<AttestationRequestInput> {
  const c = await challenge(bed, agentId);
  const software = generateKeyPairSync('ec', { namedCurve: 'P-256' });
  const evidence: HsmKeyEvidence = {
    publicKey: new Uint8Array(software.publicKey.export({ type: 'spki', format: 'der' })),
    attributes: { token: true, private: true, sensitive: true, extractable: false, neverExtractable: true, alwaysSensitive: true, local: true, keyType: CKK_EC },
    token: { manufacturer: 'Any Vendor', model: 'Any HSM', serial: '0001', label: 'made-up' },
    alg: 'ES256',
  };
  const signature = sign('sha256', keyEvidenceMessage(c.nonce, evidence), { key: software.privateKey, dsaEncoding: 'ieee-p1363' });
  const quote = await withSession(bed, (s) =>
    quoteWithPcrValues(s, c.pcrSelection as Record<string, number[]>, quoteQualifyingData(c.nonce, { kind: 'pkcs11', evidence })),
  );
  return { nonce: c.nonce, quote: quote.attest, signature: quote.signature, pcrs: wirePcrs(quote.values), key: { kind: 'pkcs11', report: { ...evidence, signature } } };
}

export { reasonCodes, refused, wirePcrs } from './helpers/api.js';
