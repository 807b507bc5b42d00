import { ApiError } from '../client/api-client.js';
import { isAttestorError } from '../errors.js';

/*
 * When `attestor-agent run` renews, and what it does after a failure (pure; the loop in
 * renewal-loop.ts does the waiting). Renewal is a fresh attestation at half the credentials'
 * lifetime, spread by +-10 % of that half so that a fleet booted together does not renew
 * together. A failure is retried with an exponential backoff whose wait is drawn between half
 * and all of the step (never zero: a broken verifier is not hammered), and says why.
 */

export interface BackoffSettings {
  /** The first wait after a failure, ms. */
  readonly minMs: number;
  /** The longest wait, ms. */
  readonly maxMs: number;
}

/**
 * How long after credentials issued at `issuedAt` and expiring at `expiresAt` (ms, both read on
 * the verifier's clock: the host's may be off) to renew them; `random` in [0, 1).
 */
export function renewalDelayMs(issuedAt: number, expiresAt: number, random: number): number {
  const half = Math.max(0, expiresAt - issuedAt) / 2;
  return half * (0.9 + 0.2 * random);
}

/** The wait before retry number `failures` (1 for the first; Infinity: at the cap), ms. */
export function backoffMs(failures: number, settings: BackoffSettings, random: number): number {
  const step = Math.min(settings.maxMs, settings.minMs * 2 ** Math.min(Math.max(failures - 1, 0), 30));
  return Math.round(step / 2 + (step / 2) * random);
}

/**
 * What a failed attempt calls for:
 * - `enroll`: the verifier does not know this host, or the local enrollment is unusable:
 *   enroll again from scratch, then attest;
 * - `refused`: the verifier heard the host and said no (a contraindicated verdict, no
 *   baseline, a quarantined agent): only an operator or a change on the host can
 *   change the answer; the host asks again after the backoff, the credentials in hand kept;
 * - `revoked`: an operator revoked the host, which is final for its agent id: whether the
 *   same EK may enroll again is the verifier's decision, so the host enrolls again, but only
 *   at the longest backoff (the answer is not expected to change soon);
 * - `retry`: the verifier or the TPM could not be reached or failed: back off and retry.
 */
export type Recovery = 'enroll' | 'refused' | 'revoked' | 'retry';

const ENROLL_AGAIN = new Set(['ERR_AGENT_NOT_FOUND', 'ERR_AGENT_NOT_ENROLLED', 'ERR_AGENT_STATE', 'ERR_ENROLLMENT_NOT_FOUND']);
const REFUSED = new Set(['ERR_ATTESTATION_REFUSED', 'ERR_NO_BASELINE', 'ERR_AGENT_NOT_ACTIVE', 'ERR_AUDIENCE_NOT_ALLOWED', 'ERR_ENROLLMENT_CONFLICT']);

export interface Failure {
  readonly recovery: Recovery;
  /** One line: what failed, with its code; never a secret. */
  readonly reason: string;
}

export function classifyFailure(e: unknown): Failure {
  if (e instanceof ApiError) {
    const recovery: Recovery = ENROLL_AGAIN.has(e.remoteCode) ? 'enroll' : isRevoked(e) ? 'revoked' : REFUSED.has(e.remoteCode) ? 'refused' : 'retry';
    // A verifier answering 5xx or 429 is reachable but not serving: the same as unreachable to the host.
    return { recovery, reason: `verifier: ${firstLine(e.message)}` };
  }
  if (isAttestorError(e)) {
    if (ENROLL_AGAIN.has(e.code)) return { recovery: 'enroll', reason: `${e.code}: ${firstLine(e.message)}` };
    const what = e.code.startsWith('ERR_TSS_') || e.code.startsWith('ERR_TPM_') ? 'TPM' : e.code === 'ERR_SERVER_UNREACHABLE' ? 'verifier unreachable' : e.code;
    return { recovery: 'retry', reason: `${what}: ${what === e.code ? '' : `${e.code}: `}${firstLine(e.message)}` };
  }
  return { recovery: 'retry', reason: `unexpected: ${e instanceof Error ? firstLine(e.message) : String(e)}` };
}

/** ERR_AGENT_NOT_ACTIVE covers quarantined (an operator may release) and revoked (final): the problem's `agentStatus` says which. */
function isRevoked(e: ApiError): boolean {
  return e.remoteCode === 'ERR_AGENT_NOT_ACTIVE' && e.problem.agentStatus === 'revoked';
}

function firstLine(text: string): string {
  const nl = text.indexOf('\n');
  return nl < 0 ? text : text.slice(0, nl);
}
