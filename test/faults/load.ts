/**
 * What the fault tests share. The load: workers that enroll a swtpm host again and again,
 * attest another, and create and revoke operator tokens, all at once through the real HTTPS
 * API, each remembering what the verifier acknowledged (a 2xx answer) and how every other
 * attempt failed; after the fault, `missing` names each acknowledged thing the database does
 * not hold. And the fleet: `attestor serve` as a process that a test restarts, its EK roots,
 * an enrolled host with an enforced baseline, one attestation.
 */
import { createHash, X509Certificate } from 'node:crypto';
import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { decodeJwt } from 'jose';
import type { z } from 'zod';
import { buildAttestationRequest } from '../../src/agent/evidence.js';
import { TpmSession } from '../../src/agent/tpm-session.js';
import { ApiError, bootstrapCa, createApiClient, type ApiClient } from '../../src/client/api-client.js';
import { runAgent } from '../../src/cli/agent-program.js';
import { ActivationResponse, AttestationResponse, BaselineBody, ChallengeResponse, EnrollmentResponse, TokenCreateResponse, TokenBody } from '../../src/wire/schemas.js';
import { runCli } from '../helpers/cli.js';
import { ADMIN_TOKEN, childEnv, pinnedClient, type createProcessHarness, type Exit, type Serving } from '../helpers/processes.js';
import { startSwtpm, type Swtpm } from '../helpers/swtpm.js';

export const AUDIENCE = 'faults';

/** What the verifier answered with a 2xx, by kind. */
export interface Acknowledged {
  readonly tokens: string[];
  readonly revokedTokens: string[];
  readonly enrollments: string[];
  readonly activations: string[];
  readonly verdicts: string[];
  /** SHA-256 (hex) of each X509-SVID's DER. */
  readonly certificates: string[];
  readonly jtis: string[];
}

/** A failed request: its HTTP status and problem code, or the client's code when no answer came. */
export interface Failure {
  readonly status: number | null;
  readonly code: string;
  readonly at: number;
}

/** A swtpm host the load drives: its TCTI and agent state dir. */
export interface LoadHost {
  readonly tcti: string;
  readonly stateDir: string;
}

export interface LoadOptions {
  /** The clients to use now (the test may swap them, e.g. after a restart). */
  readonly admin: () => ApiClient;
  readonly anon: () => ApiClient;
  /** Enrolled again and again (its agent exists or is created by the first activation). */
  readonly enrolling: LoadHost;
  /** Enrolled, with an enforced baseline: each attestation ends in credentials. */
  readonly attesting: { readonly host: LoadHost; readonly agentId: string };
  /** Concurrent token workers (default 3). */
  readonly tokenWorkers?: number;
}

export interface Load {
  readonly acknowledged: Acknowledged;
  readonly failures: Failure[];
  /** Successful requests so far (any kind). */
  succeeded(): number;
  /** Stops the workers after their request in flight; resolves when all have stopped. */
  stop(): Promise<void>;
}

const sha256Hex = (der: Uint8Array) => createHash('sha256').update(der).digest('hex');

export function startLoad(opts: LoadOptions): Load {
  const acknowledged: Acknowledged = { tokens: [], revokedTokens: [], enrollments: [], activations: [], verdicts: [], certificates: [], jtis: [] };
  const failures: Failure[] = [];
  let ok = 0;
  let stopping = false;

  /** Runs one request; a failure is recorded and answers undefined. */
  async function attempt<T>(work: () => Promise<T>): Promise<T | undefined> {
    try {
      const value = await work();
      ok += 1;
      return value;
    } catch (e) {
      failures.push(
        e instanceof ApiError
          ? { status: e.status, code: e.remoteCode, at: Date.now() }
          : { status: null, code: (e as { code?: string }).code ?? String(e), at: Date.now() },
      );
      // A short pause: a fault makes every request fail at once.
      await new Promise((r) => setTimeout(r, 50));
      return undefined;
    }
  }

  async function tokens(worker: number): Promise<void> {
    for (let i = 0; !stopping; i++) {
      const created = await attempt(() => opts.admin().call('POST', '/v1/tokens', TokenCreateResponse, { role: 'auditor', label: `load-${worker}-${i}` }));
      if (!created) continue;
      acknowledged.tokens.push(created.id);
      if (await attempt(() => opts.admin().call('POST', `/v1/tokens/${created.id}/revoke`, TokenBody, {}))) acknowledged.revokedTokens.push(created.id);
    }
  }

  /** Runs `work` again and again on one TPM session of `host` (its opening counted as a request). */
  async function withTpm(host: LoadHost, work: (session: TpmSession) => Promise<void>): Promise<void> {
    let session: TpmSession | undefined;
    try {
      while (!stopping) {
        session ??= await attempt(() => TpmSession.open({ tcti: host.tcti, stateDir: host.stateDir }));
        if (session) await work(session);
      }
    } finally {
      await session?.close();
    }
  }

  const enrolling = () =>
    withTpm(opts.enrolling, async (session) => {
      const request = { ekPublic: session.ek.public, ...(session.ek.certificate ? { ekCertificate: session.ek.certificate } : {}), akPublic: session.ak.public };
      const enrollment = await attempt(() => opts.anon().call('POST', '/v1/enrollments', EnrollmentResponse, request));
      if (!enrollment) return;
      acknowledged.enrollments.push(enrollment.enrollmentId);
      const secret = await session.activate(enrollment.credentialBlob, enrollment.encryptedSecret);
      const path = `/v1/enrollments/${enrollment.enrollmentId}/activation`;
      if (await attempt(() => opts.anon().call('POST', path, ActivationResponse, { secret }))) acknowledged.activations.push(enrollment.enrollmentId);
    });

  const attesting = () =>
    withTpm(opts.attesting.host, async (session) => {
      const answer = await attempt(() => attestWith(opts.anon(), session, opts.attesting.agentId));
      if (!answer) return;
      acknowledged.verdicts.push(answer.verdict.id);
      acknowledged.certificates.push(sha256Hex(new X509Certificate(answer.credentials!.certificate).raw));
      acknowledged.jtis.push(decodeJwt(answer.credentials!.jwt!).jti!);
    });

  const workers = [enrolling(), attesting(), ...Array.from({ length: opts.tokenWorkers ?? 3 }, (_, i) => tokens(i))];
  return {
    acknowledged,
    failures,
    succeeded: () => ok,
    async stop() {
      stopping = true;
      await Promise.all(workers);
    },
  };
}

/** Reads rows from the verifier's database (SQLite or PostgreSQL). */
export type ReadRows = (sql: string) => Promise<readonly { readonly [column: string]: unknown }[]>;

/** Each acknowledged thing the database does not hold, as `kind id` (empty when nothing was lost). */
export async function missing(ack: Acknowledged, read: ReadRows): Promise<string[]> {
  const ids = async (sql: string) => new Set((await read(sql)).map((r) => String(Object.values(r)[0])));
  const tokens = await ids('SELECT id FROM operator_tokens');
  const revoked = await ids('SELECT id FROM operator_tokens WHERE revoked_at IS NOT NULL');
  const verdicts = await ids('SELECT id FROM verdicts');
  const certificates = await ids("SELECT certificate_sha256 FROM credentials WHERE kind = 'x509-svid'");
  const jtis = await ids("SELECT id FROM credentials WHERE kind = 'jwt-svid'");
  const audit = (await read('SELECT action, subject, details FROM audit_entries')).map((r) => ({
    action: String(r.action),
    subject: String(r.subject),
    details: JSON.parse(String(r.details)) as { enrollmentId?: string; verdictId?: string; id?: string },
  }));
  const audited = (action: string, key: (e: (typeof audit)[number]) => string | undefined) => new Set(audit.filter((e) => e.action === action).map(key));
  const checks: [string, readonly string[], ReadonlySet<string | undefined>][] = [
    ['token', ack.tokens, tokens],
    ['token.create audit entry', ack.tokens, audited('token.create', (e) => e.subject)],
    ['token revocation', ack.revokedTokens, revoked],
    ['token.revoke audit entry', ack.revokedTokens, audited('token.revoke', (e) => e.subject)],
    ['enrollment.create audit entry', ack.enrollments, audited('enrollment.create', (e) => e.details.enrollmentId)],
    ['agent.activate audit entry', ack.activations, audited('agent.activate', (e) => e.details.enrollmentId)],
    ['verdict', ack.verdicts, verdicts],
    ['attestation.verdict audit entry', ack.verdicts, audited('attestation.verdict', (e) => e.details.verdictId)],
    ['X509-SVID', ack.certificates, certificates],
    ['JWT-SVID', ack.jtis, jtis],
    ['credential.issue audit entry', ack.jtis, audited('credential.issue', (e) => e.details.id)],
  ];
  return checks.flatMap(([kind, wanted, held]) => wanted.filter((id) => !held.has(id)).map((id) => `${kind} ${id}`));
}

/** Counts of what was acknowledged, for a test's message and a check that the load did something. */
export function counts(ack: Acknowledged): Record<keyof Acknowledged, number> {
  return Object.fromEntries(Object.entries(ack).map(([k, v]) => [k, (v as string[]).length])) as Record<keyof Acknowledged, number>;
}

/** The EK roots of `hosts` in `dir`/ek-roots and a config without rate limits in the way of the load; the serve arguments naming both. */
export function fleetArgs(dir: string, hosts: readonly Swtpm[]): string[] {
  const roots = join(dir, 'ek-roots');
  mkdirSync(roots, { recursive: true });
  hosts.forEach((h, i) => {
    writeFileSync(join(roots, `root-${i}.pem`), h.rootCaCertPem);
    writeFileSync(join(roots, `intermediate-${i}.pem`), h.caCertPem);
  });
  const config = join(dir, 'load-config.json');
  writeFileSync(config, JSON.stringify({ limits: { enrollmentsPerMinute: 100_000, challengesPerMinute: 100_000, agentRequestsPerMinute: 100_000 } }));
  return ['--ek-roots', roots, '--config', config];
}

/** Enrolls `host` with the agent CLI and enforces a baseline captured from it; resolves with its agent id. */
export async function enrollAndEnforce(s: Serving, admin: ApiClient, host: LoadHost): Promise<string> {
  const r = await runCli(runAgent, ['enroll', '--server', s.url, '--ca-fingerprint', s.fingerprint, '--tcti', host.tcti, '--state-dir', host.stateDir]);
  if (r.code !== 0) throw new Error(`enroll failed: ${r.err}`);
  const agentId = /agent\/tpm\/([0-9a-f]+)/.exec(r.out)![1]!;
  // No baseline yet: the first attestation is verified and kept, for the capture.
  const anon = createApiClient({ server: s.url, caPem: await bootstrapCa(s.url, s.fingerprint) });
  try {
    const refused = await attestOnce(anon, host, agentId).catch((e: unknown) => e);
    if (!(refused instanceof ApiError && refused.remoteCode === 'ERR_NO_BASELINE')) throw new Error(`expected ERR_NO_BASELINE, got ${String(refused)}`);
  } finally {
    anon.close();
  }
  const captured = await admin.call('POST', '/v1/baselines/capture', BaselineBody, { agentId, name: 'faults', audiences: [AUDIENCE] });
  await admin.call('POST', `/v1/baselines/${captured.id}/enforce`, BaselineBody, {});
  return agentId;
}

/** One attestation of `host` through `anon`: a challenge, a fresh quote, the answer. */
export async function attestOnce(anon: ApiClient, host: LoadHost, agentId: string): Promise<z.output<typeof AttestationResponse>> {
  const session = await TpmSession.open({ tcti: host.tcti, stateDir: host.stateDir });
  try {
    return await attestWith(anon, session, agentId);
  } finally {
    await session.close();
  }
}

async function attestWith(anon: ApiClient, session: TpmSession, agentId: string): Promise<z.output<typeof AttestationResponse>> {
  const challenge = await anon.call('POST', `/v1/agents/${agentId}/challenges`, ChallengeResponse, {});
  const request = await buildAttestationRequest({ session, key: { kind: 'tpm' }, challenge, audience: AUDIENCE });
  return anon.call('POST', `/v1/agents/${agentId}/attestations`, AttestationResponse, request);
}

/**
 * `attestor serve` under test, started again on the same state as often as a test needs, with
 * an admin and an anonymous client pinned to its root (the admin token is the one its first
 * start printed).
 */
export function createVerifierProcess(processes: ReturnType<typeof createProcessHarness>, args: readonly string[], env: NodeJS.ProcessEnv = childEnv()) {
  let serving: Serving | undefined;
  let admin: ApiClient | undefined;
  let anon: ApiClient | undefined;
  let adminToken: string | undefined;
  const closeClients = () => {
    admin?.close();
    anon?.close();
  };
  return {
    get serving(): Serving {
      return serving!;
    },
    get admin(): ApiClient {
      return admin!;
    },
    get anon(): ApiClient {
      return anon!;
    },
    async start(): Promise<void> {
      serving = await processes.serve(args, env);
      adminToken ??= (await serving.waitFor(ADMIN_TOKEN))[1]!;
      closeClients();
      admin = await pinnedClient(serving, adminToken);
      anon = await pinnedClient(serving);
    },
    /** SIGTERM, then its exit (undefined when it was never started). */
    stop(): Promise<Exit | undefined> {
      closeClients();
      return serving ? serving.stop() : Promise.resolve(undefined);
    },
  };
}

/** The two swtpm hosts of a load: one attests, the other enrolls again and again; agent state below `dir`. */
export async function startLoadHosts(dir: string): Promise<{ hosts: Swtpm[]; attesting: LoadHost; enrolling: LoadHost }> {
  const hosts = await Promise.all([startSwtpm(), startSwtpm()]);
  return { hosts, attesting: { tcti: hosts[0]!.tcti, stateDir: join(dir, 'attesting') }, enrolling: { tcti: hosts[1]!.tcti, stateDir: join(dir, 'enrolling') } };
}
