import { X509Certificate } from 'node:crypto';
import type { z } from 'zod';
import { equalBytes } from '../bytes.js';
import { ApiError, type ApiClient } from '../client/api-client.js';
import { AttestorError } from '../errors.js';
import { parseTpm2bPublic } from '../tpm/public.js';
import { publicKeyOf } from '../tpm/public-key.js';
import { AttestationResponse, ChallengeResponse, VerdictBody, type ReasonBody } from '../wire/schemas.js';
import type { AgentKey } from './agent-key.js';
import { agentIdOf } from '../tpm/agent-id.js';
import { buildAttestationRequest } from './evidence.js';
import type { LogSources } from './measurement-logs.js';
import { StateDir } from './state-dir.js';
import { removeStateFile, STATE_FILES, writeStateFile } from './state-files.js';
import { tss2PrivateKeyPem } from './tpm-key-file.js';
import type { TpmSession } from './tpm-session.js';
import { loadNodeTss } from './tss.js';

/*
 * One attestation: challenge -> evidence -> verdict -> credentials kept in the state directory.
 * Renewal is another attestation from scratch (DESIGN flow 4).
 */

/** The name TpmSession keeps the identity key's blobs under in the state directory. */
const IDENTITY_KEY_NAME = 'identity';

export interface AttestOptions {
  readonly client: ApiClient;
  readonly session: TpmSession;
  readonly agentId: string;
  readonly key: AgentKey;
  /** The state directory the session was opened on: the credentials are written there. */
  readonly stateDir: string;
  readonly logs?: LogSources;
  readonly audience?: string;
}

export type Verdict = z.output<typeof VerdictBody>;

export interface Attested {
  readonly verdict: Verdict;
  readonly spiffeId: string;
  /** RFC 3339, when the certificate (and any JWT) expires. */
  readonly expiresAt: string;
  /** Paths written, in the order written. */
  readonly files: readonly string[];
  /** Whether a JWT-SVID came (token.jwt). */
  readonly jwt: boolean;
}

/**
 * The verifier refused the attestation (ERR_ATTESTATION_REFUSED, ERR_NO_BASELINE, or affirmed
 * nothing it issued credentials for): the verdict says why. The message ends with one line per
 * reason, as the CLI prints it.
 */
export class AttestationRefusedError extends ApiError {
  constructor(
    status: number,
    remoteCode: string,
    problem: { readonly [key: string]: unknown },
    readonly verdict: Verdict,
  ) {
    super(status, remoteCode, problem);
    this.message = `${this.message} (verdict ${verdict.status})${verdict.reasons.map((r) => `\n  ${describeReason(r)}`).join('')}`;
  }
}

/** `<code> <bank>:<pcr> <message>`, with what the reason has of location and message. */
export function describeReason(r: ReasonBody): string {
  const where = r.pcr !== undefined ? `${r.bank ?? '?'}:${r.pcr}` : r.bank;
  return [
    r.code,
    where,
    r.event !== undefined ? `event ${r.event}` : undefined,
    r.path !== undefined ? r.path : undefined,
    r.component !== undefined ? r.component : undefined,
    r.message,
  ]
    .filter((part) => part !== undefined && part !== '')
    .join(' ');
}

/**
 * Attests once and keeps the credentials: the key file (key.pem, the TPM identity key loadable
 * by OpenSSL's tpm2 provider, or key.uri for a PKCS#11 key), bundle.pem, cert.pem and, when a
 * JWT came, token.jwt, each replaced atomically, key first and certificate after it, so a
 * reader never pairs a new certificate with an old key. A stale token.jwt or key file of the
 * other kind is removed. ERR_AGENT_STATE when `agentId` is not the session's TPM. A refusal
 * throws AttestationRefusedError; other errors of the verifier its ApiError.
 */
export async function attestOnce(opts: AttestOptions): Promise<Attested> {
  const { client, agentId } = opts;
  const tpmAgentId = agentIdOf(opts.session.ek.public);
  if (tpmAgentId !== agentId) {
    throw new AttestorError(
      'ERR_AGENT_STATE',
      `the state directory ${opts.stateDir} is agent ${agentId}, but this TPM is agent ${tpmAgentId}; enroll this TPM with its own state directory`,
    );
  }
  const base = `/v1/agents/${encodeURIComponent(agentId)}`;
  const challenge = await client.call('POST', `${base}/challenges`, ChallengeResponse, {});
  const request = await buildAttestationRequest({
    session: opts.session,
    key: opts.key,
    challenge,
    ...(opts.logs ? { logs: opts.logs } : {}),
    ...(opts.audience !== undefined ? { audience: opts.audience } : {}),
  });
  let response: AttestationResponse;
  try {
    response = await client.call('POST', `${base}/attestations`, AttestationResponse, request);
  } catch (e) {
    throw asRefusal(e) ?? e;
  }
  const { credentials, verdict } = response;
  if (!credentials) {
    const detail = 'the verifier issued no credentials';
    throw new AttestationRefusedError(200, 'ERR_ATTESTATION_REFUSED', { code: 'ERR_ATTESTATION_REFUSED', detail }, verdict);
  }
  const keyFile = await keyFileOf(opts);
  checkCertificateKey(credentials.certificate, keyFile.spki);

  const dir = opts.stateDir;
  const files = [
    await writeStateFile(dir, keyFile.name, keyFile.content),
    await writeStateFile(dir, STATE_FILES.bundle, credentials.bundle),
    await writeStateFile(dir, STATE_FILES.certificate, credentials.certificate),
  ];
  await removeStateFile(dir, keyFile.name === STATE_FILES.tpmKey ? STATE_FILES.pkcs11Key : STATE_FILES.tpmKey);
  if (credentials.jwt !== undefined) files.push(await writeStateFile(dir, STATE_FILES.token, `${credentials.jwt}\n`));
  else await removeStateFile(dir, STATE_FILES.token);
  return { verdict, spiffeId: credentials.spiffeId, expiresAt: credentials.expiresAt, files, jwt: credentials.jwt !== undefined };
}

/** An ApiError whose problem carries a verdict, as the typed refusal; undefined for anything else. */
function asRefusal(e: unknown): AttestationRefusedError | undefined {
  if (!(e instanceof ApiError)) return undefined;
  const verdict = VerdictBody.safeParse(e.problem.verdict);
  if (!verdict.success) return undefined;
  return new AttestationRefusedError(e.status, e.remoteCode, e.problem, verdict.data);
}

interface KeyFile {
  readonly name: string;
  readonly content: string;
  /** SubjectPublicKeyInfo DER of the key: the certificate must be issued to it. */
  readonly spki: Uint8Array;
}

async function keyFileOf(opts: AttestOptions): Promise<KeyFile> {
  const { key } = opts;
  if (key.kind === 'pkcs11') return { name: STATE_FILES.pkcs11Key, content: `${key.uri}\n`, spki: key.key.spki };
  const identity = await opts.session.identityKey();
  // TpmSession keeps the private blob to itself: read it from the state directory it keeps it in.
  const stateDir = await StateDir.open(opts.stateDir, loadNodeTss());
  const blobs = await stateDir.withLock(() => stateDir.readKey(IDENTITY_KEY_NAME));
  if (blobs === null || !equalBytes(blobs.public, identity.public)) {
    throw stateDir.keyError(IDENTITY_KEY_NAME, 'is not the identity key the TPM certified: was the directory changed meanwhile?');
  }
  const spki = publicKeyOf(parseTpm2bPublic(identity.public)).export({ type: 'spki', format: 'der' });
  return { name: STATE_FILES.tpmKey, content: tss2PrivateKeyPem(blobs), spki };
}

/** The certificate must certify the agent's key: anything else is not kept (ERR_SERVER_RESPONSE). */
function checkCertificateKey(pem: string, spki: Uint8Array): void {
  let cert: X509Certificate;
  try {
    cert = new X509Certificate(pem);
  } catch {
    throw new AttestorError('ERR_SERVER_RESPONSE', 'the verifier sent a certificate that is not a PEM X.509 certificate');
  }
  if (!equalBytes(cert.publicKey.export({ type: 'spki', format: 'der' }), spki)) {
    throw new AttestorError('ERR_SERVER_RESPONSE', "the verifier sent a certificate for another key than this agent's");
  }
}
