import { createHash, randomBytes, randomUUID } from 'node:crypto';
import { appraise, type Appraisal, type ImaProgressState } from '../../appraisal/appraise.js';
import { DEFAULT_PCR_SELECTION, pcrSelectionOf } from '../../baseline/document.js';
import { equalBytes } from '../../bytes.js';
import { AgentNotActiveError, AttestorError } from '../../errors.js';
import { parseTpm2bPublic, type TpmPublic } from '../../tpm/public.js';
import type { PcrValues } from '../../tpm/pcr-selection.js';
import type { AttestingAgent, AuditInput, Credential, Json, Store, StoredClock, Verdict } from '../../store/store.js';
import type { AttestationRequest } from '../../wire/schemas.js';
import type { ProblemError } from '../app.js';
import type { CredentialAuthority } from '../credential-authority.js';
import type { Metrics } from '../metrics.js';
import { pem } from '../pem.js';
import { spiffeIdOf } from '../spiffe.js';
import type { BaselineSelector, BaselinesFor, SelectedBaseline } from './baseline-selection.js';

/*
 * DESIGN flows 3 and 4, in the order SERVICE.md fixes: the nonce is consumed atomically, the
 * evidence appraised (pure), credentials signed outside any transaction, then one transaction
 * stores the verdict, the credentials, the agent's clock and evidence, IMA progress and the
 * audit entries, and only then does the agent get an answer. A failed commit releases nothing.
 *
 * Evidence that is not the agent's own (a quote another AK signed, a wrong nonce) is refused
 * as an error and changes nothing: were it recorded as a verdict, anyone could spoil an
 * agent's record with garbage. Authentic evidence that fails the baseline is recorded.
 */

export interface AttestationDeps {
  readonly store: Store;
  readonly authority: CredentialAuthority;
  readonly baselinesInForce: () => Promise<BaselineSelector>;
  readonly trustDomain: string;
  readonly ttl: {
    readonly freshnessSeconds: number;
    readonly nonceTtlSeconds: number;
    readonly x509TtlSeconds: number;
    readonly jwtTtlSeconds: number;
  };
  readonly allowSha1: boolean;
  /** Quarantine the agent when an enforced baseline refuses its authentic evidence. */
  readonly quarantineOnFailure: boolean;
  readonly now: () => number;
  readonly metrics: Metrics;
  /** Builds the problem a refusal is answered with (src/server/app.ts ProblemError). */
  readonly refusal: (code: 'ERR_ATTESTATION_REFUSED' | 'ERR_NO_BASELINE', message: string, verdict: VerdictView) => ProblemError;
}

export interface VerdictView {
  readonly id: string;
  readonly status: Verdict['status'];
  readonly reasons: Appraisal['reasons'];
  readonly baseline: { readonly id: string; readonly version: number } | null;
  readonly at: string;
}

export interface IssuedCredentials {
  readonly certificate: string;
  readonly bundle: string;
  readonly jwt?: string;
  readonly expiresAt: string;
  readonly spiffeId: string;
}

export interface AttestationResult {
  readonly agentId: string;
  readonly verdict: VerdictView;
  readonly credentials: IssuedCredentials;
}

export interface IssuedChallenge {
  readonly nonce: Uint8Array;
  readonly expiresAt: number;
  readonly pcrSelection: { readonly [bank: string]: readonly number[] };
}

/** How many parsed AKs a verifier keeps (each is a few hundred bytes). */
const AK_CACHE = 10_000;

export function createAttestationFlow(deps: AttestationDeps) {
  const aks = new Map<string, { bytes: Uint8Array; ak: TpmPublic }>();
  const akOf = (agent: AttestingAgent): TpmPublic => {
    const cached = aks.get(agent.id);
    if (cached && equalBytes(cached.bytes, agent.akPublic)) return cached.ak;
    const ak = parseTpm2bPublic(agent.akPublic);
    if (aks.size >= AK_CACHE) aks.delete(aks.keys().next().value!);
    aks.set(agent.id, { bytes: agent.akPublic, ak });
    return ak;
  };

  const activeAgent = async (agentId: string): Promise<AttestingAgent> => {
    const agent = await deps.store.agents.attesting(agentId);
    if (!agent) throw new AttestorError('ERR_AGENT_NOT_FOUND', 'no enrolled agent with this id');
    if (agent.status !== 'active') throw new AgentNotActiveError(agent.status, `the agent is ${agent.status}`);
    return agent;
  };
  /**
   * The agent and the baselines that apply to it, read together: a store on another thread
   * gets both reads in one message (each message wakes it, 20-30 us of this thread's CPU).
   */
  const agentAndBaselines = async (agentId: string): Promise<{ agent: AttestingAgent } & BaselinesFor> => {
    const [agent, select] = await Promise.all([activeAgent(agentId), deps.baselinesInForce()]);
    return { agent, ...select(agent.labels) };
  };

  return {
    async challenge(agentId: string): Promise<IssuedChallenge> {
      const { enforced } = await agentAndBaselines(agentId);
      const pcrSelection = enforced ? pcrSelectionOf(enforced.document) : DEFAULT_PCR_SELECTION;
      const nonce = randomBytes(32);
      const now = deps.now();
      const expiresAt = now + deps.ttl.nonceTtlSeconds * 1000;
      await deps.store.challenges.create({ nonce: nonce.toString('hex'), agentId, createdAt: now, expiresAt, baselineId: enforced?.id ?? null, pcrSelection });
      return { nonce, expiresAt, pcrSelection };
    },

    async attest(agentId: string, req: AttestationRequest): Promise<AttestationResult> {
      const { agent, enforced, staged } = await agentAndBaselines(agentId);
      // Without an enforced baseline nothing is issued anyway, and the evidence is still kept for capture.
      if (enforced && req.audience !== undefined && !enforced.document.audiences.includes(req.audience)) {
        throw new AttestorError('ERR_AUDIENCE_NOT_ALLOWED', `the audience "${req.audience}" is not allowed for this agent by its baseline`);
      }
      // Read with the nonce's use, in the same message to a store on another thread; only an
      // IMA list continues from it (one statement fewer per attestation without one).
      const [consumed, progress] = await Promise.all([
        deps.store.challenges.consume(Buffer.from(req.nonce).toString('hex'), agentId, deps.now()),
        req.imaLog ? deps.store.attestations.imaProgress(agentId) : null,
      ]);
      if (!consumed.ok) {
        throw consumed.reason === 'expired'
          ? new AttestorError('ERR_NONCE_EXPIRED', 'the challenge has expired; ask for a new one')
          : new AttestorError('ERR_NONCE_UNKNOWN', 'no open challenge with this nonce for this agent (unknown or already used)');
      }
      const appraisal = rejectedCounted(deps.metrics, () => appraise({
        akPublic: akOf(agent),
        ...(agent.lastClock ? { lastClock: clockOf(agent.lastClock) } : {}),
        nonce: req.nonce,
        evidence: {
          quote: req.quote,
          signature: req.signature,
          pcrs: pcrValuesOf(req.pcrs),
          ...(req.eventLog ? { eventLog: req.eventLog } : {}),
          ...(req.imaLog ? { imaLog: req.imaLog } : {}),
          key: req.key,
        },
        ...(enforced ? { baseline: enforced } : {}),
        staged,
        ...(progress ? { ima: { state: progress.state as unknown as ImaProgressState, resetCount: progress.resetCount } } : {}),
        allowSha1: deps.allowSha1,
      }));

      const now = deps.now();
      const verdict: Verdict = {
        id: randomUUID(),
        agentId,
        at: now,
        status: appraisal.status,
        baselineId: enforced?.id ?? null,
        baselineVersion: enforced?.version ?? null,
        reasons: appraisal.reasons as unknown as Json,
        claims: appraisal.claims as unknown as Json,
      };
      const view: VerdictView = {
        id: verdict.id,
        status: verdict.status,
        reasons: appraisal.reasons,
        baseline: enforced ? { id: enforced.id, version: enforced.version } : null,
        at: new Date(now).toISOString(),
      };
      const audit: AuditInput[] = [
        {
          actor: `agent:${agentId}`,
          action: 'attestation.verdict',
          subject: agentId,
          details: { verdictId: verdict.id, status: verdict.status, baseline: view.baseline, reasons: appraisal.reasons.map((r) => r.code) } as { [k: string]: Json },
        },
      ];
      const base = {
        verdict,
        clock: storedClock(appraisal),
        // Only a quote of everything the challenge asked for is evidence to capture a baseline from:
        // a host must not choose which PCRs a captured baseline pins.
        evidence: (appraisal.evidence && covers(appraisal.evidence.pcrs, consumed.challenge.pcrSelection) ? appraisal.evidence : null) as unknown as Json,
        ...(appraisal.ima ? { ima: { agentId, resetCount: appraisal.ima.resetCount, state: appraisal.ima.state as unknown as Json } } : {}),
      };

      if (appraisal.status === 'contraindicated' || !appraisal.key || !enforced) {
        // Evidence asked for under another baseline (changed since the challenge) is refused, not held against the host.
        const quarantine =
          enforced && appraisal.status === 'contraindicated' && appraisal.hostFailed && deps.quarantineOnFailure && consumed.challenge.baselineId === enforced.id;
        await deps.store.attestations.record({
          ...base,
          credentials: [],
          audit,
          ...(quarantine && {
            quarantine: {
              audit: { actor: 'system', action: 'agent.quarantine', subject: agentId, details: { reason: 'contraindicated verdict', verdictId: verdict.id } },
              challengedAt: consumed.challenge.createdAt,
            },
          }),
        });
        deps.metrics.attestations.inc({ result: appraisal.status });
        const noBaseline = !enforced;
        throw deps.refusal(
          noBaseline ? 'ERR_NO_BASELINE' : 'ERR_ATTESTATION_REFUSED',
          noBaseline
            ? 'no enforced baseline applies to this agent: the evidence is verified and kept for capture, no credentials'
            : 'the evidence was appraised and refused: see the verdict',
          view,
        );
      }

      const issued = await issue(deps, agent, enforced, appraisal, verdict.id, req.audience, now);
      for (const c of issued.records) {
        audit.push({ actor: 'system', action: 'credential.issue', subject: agentId, details: { kind: c.kind, id: c.id, expiresAt: new Date(c.expiresAt).toISOString() } });
      }
      await deps.store.attestations.record({ ...base, credentials: issued.records, audit });
      deps.metrics.attestations.inc({ result: appraisal.status });
      for (const c of issued.records) deps.metrics.credentials.inc({ kind: c.kind });
      return { agentId, verdict: view, credentials: issued.credentials };
    },
  };
}

export type AttestationFlow = ReturnType<typeof createAttestationFlow>;

/** Evidence that is not the agent's own throws: counted as `rejected`, then passed on. */
function rejectedCounted<T>(metrics: Metrics, work: () => T): T {
  try {
    return work();
  } catch (e) {
    metrics.attestations.inc({ result: 'rejected' });
    throw e;
  }
}

/**
 * Signs the X509-SVID and (when an audience was asked for) the JWT-SVID. Lifetimes: never
 * past the attestation freshness window nor the CA certificate; the JWT never past the
 * certificate it is bound to (cnf).
 */
async function issue(
  deps: AttestationDeps,
  agent: AttestingAgent,
  baseline: SelectedBaseline,
  appraisal: Appraisal,
  verdictId: string,
  audience: string | undefined,
  now: number,
): Promise<{ credentials: IssuedCredentials; records: Credential[] }> {
  const caps = baseline.document.credentials;
  const spiffeId = spiffeIdOf(deps.trustDomain, agent.id);
  const notAfter = Math.min(
    now + Math.min(caps?.x509TtlSeconds ?? Infinity, deps.ttl.x509TtlSeconds) * 1000,
    now + deps.ttl.freshnessSeconds * 1000,
    deps.authority.caNotAfter,
  );
  if (notAfter <= now) throw new AttestorError('ERR_ISSUANCE', 'the CA certificate has expired: no credential can be issued');
  const x509 = await deps.authority.issueX509Svid({
    subjectSpki: appraisal.key!.spki,
    spiffeId,
    notBefore: new Date(now - 10_000),
    notAfter: new Date(notAfter),
  });
  const certificateSha256 = createHash('sha256').update(x509.der).digest();
  const records: Credential[] = [
    {
      id: x509.serial,
      kind: 'x509-svid',
      agentId: agent.id,
      verdictId,
      issuedAt: now,
      expiresAt: notAfter,
      certificateSha256: certificateSha256.toString('hex'),
      revoked: false,
      issuerKid: x509.issuerKid,
    },
  ];
  let jwt: string | undefined;
  if (audience !== undefined) {
    const jwtExp = Math.min(now + Math.min(caps?.jwtTtlSeconds ?? Infinity, deps.ttl.jwtTtlSeconds) * 1000, notAfter);
    const jti = randomUUID();
    const signed = await deps.authority.issueJwtSvid({
      sub: spiffeId,
      aud: audience,
      iat: Math.floor(now / 1000),
      exp: Math.floor(jwtExp / 1000),
      jti,
      cnf: { 'x5t#S256': certificateSha256.toString('base64url') },
      attestation: {
        baseline: { id: baseline.id, version: baseline.version },
        verdict: appraisal.status,
        pcrDigest: appraisal.claims.pcrDigest,
        evidenceHash: appraisal.claims.evidenceHash,
        keyResidence: appraisal.key!.kind,
      },
    });
    jwt = signed.token;
    records.push({
      id: jti,
      kind: 'jwt-svid',
      agentId: agent.id,
      verdictId,
      issuedAt: now,
      expiresAt: Math.floor(jwtExp / 1000) * 1000,
      certificateSha256: certificateSha256.toString('hex'),
      revoked: false,
      issuerKid: signed.kid,
    });
  }
  return {
    credentials: {
      certificate: pem('CERTIFICATE', x509.der),
      bundle: deps.authority.bundlePem,
      ...(jwt ? { jwt } : {}),
      expiresAt: new Date(notAfter).toISOString(),
      spiffeId,
    },
    records,
  };
}

function clockOf(c: StoredClock) {
  return { clock: BigInt(c.clock), resetCount: c.resetCount, restartCount: c.restartCount, safe: c.safe };
}

function storedClock(a: Appraisal): StoredClock {
  return { clock: a.clock.clock.toString(), resetCount: a.clock.resetCount, restartCount: a.clock.restartCount, safe: a.clock.safe };
}

/** Whether `pcrs` holds a value for every PCR of `selection`. */
function covers(pcrs: { readonly [bank: string]: { readonly [index: string]: string } }, selection: { readonly [bank: string]: readonly number[] }): boolean {
  return Object.entries(selection).every(([bank, indexes]) => indexes.every((i) => pcrs[bank]?.[String(i)] !== undefined));
}

/** The wire's PCR values ({bank: {"index": bytes}}) as the core takes them. */
function pcrValuesOf(pcrs: AttestationRequest['pcrs']): PcrValues {
  const out: Record<string, Record<number, Uint8Array>> = {};
  for (const [bank, values] of Object.entries(pcrs)) {
    const byIndex: Record<number, Uint8Array> = {};
    for (const [index, value] of Object.entries(values ?? {})) byIndex[Number(index)] = value;
    out[bank] = byIndex;
  }
  return out;
}
