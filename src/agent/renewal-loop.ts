import { AttestationRefusedError, describeReason, type Attested } from './attest.js';
import { backoffMs, classifyFailure, renewalDelayMs, type BackoffSettings, type Failure } from './renewal-policy.js';
import type { RunStatus } from './run-status.js';

/*
 * `attestor-agent run`: attest at start, then renew by a fresh attestation at about half the
 * credentials' lifetime, until stopped. A failure never ends the loop: the host enrolls again
 * when the verifier does not know it, and otherwise backs off and retries, saying why at each
 * step. What happened last is recorded (status.json) for `attestor-agent status`.
 */

export interface RenewalLoopDeps {
  /** One attestation from scratch; throws as attestOnce does. */
  attest(): Promise<Attested>;
  /** Enrolls this host again (the verifier did not know it). */
  enroll(): Promise<void>;
  /** Runs after each renewal (the operator's command, a signal); its failures are logged, not fatal. */
  afterRenewal(attested: Attested): Promise<void>;
  /** Keeps the status for `attestor-agent status`. */
  record(status: RunStatus): Promise<void>;
  readonly backoff: BackoffSettings;
  /** True when there is no usable enrollment yet: enroll first. */
  readonly enrollFirst: boolean;
  /** What an earlier run recorded, if anything: the credentials in hand and the last verdict. */
  readonly initial: RunStatus | null;
  now(): number;
  random(): number;
  /** Resolves after `ms`, or at once when `signal` aborts. */
  sleep(ms: number, signal: AbortSignal): Promise<void>;
  info(line: string): void;
  warn(line: string): void;
}

const iso = (ms: number) => new Date(ms).toISOString();

/** Human wait: 45s, 12m, 3h. */
export function describeWait(ms: number): string {
  const s = Math.max(0, Math.round(ms / 1000));
  return s < 120 ? `${s}s` : s < 7200 ? `${Math.round(s / 60)}m` : `${Math.round(s / 3600)}h`;
}

/** Runs until `signal` aborts; an attempt in flight is finished first. */
export async function runRenewalLoop(deps: RenewalLoopDeps, signal: AbortSignal): Promise<void> {
  let failures = 0;
  let enroll = deps.enrollFirst;
  let last: RunStatus = deps.initial ?? { updatedAt: iso(deps.now()), lastSuccess: null, lastFailure: null, lastVerdict: null, nextAttemptAt: null };
  let expirySaid = false;
  while (!signal.aborted) {
    let next: number;
    try {
      if (enroll) {
        await deps.enroll();
        enroll = false;
        deps.info('enrolled this host with the verifier');
      }
      const attested = await deps.attest();
      failures = 0;
      expirySaid = false;
      const now = deps.now();
      // The lifetime on the verifier's clock (the verdict's time to the expiry), waited on the host's:
      // a host clock that is off neither renews at once nor too late. Never sooner than the
      // first backoff, so credentials that expire at once do not make the host spin.
      const delay = renewalDelayMs(Date.parse(attested.verdict.at), Date.parse(attested.expiresAt), deps.random());
      next = now + Math.max(deps.backoff.minMs, delay);
      const kinds = attested.jwt ? 'X509-SVID and JWT-SVID' : 'X509-SVID';
      deps.info(`renewed: ${kinds} for ${attested.spiffeId}, verdict ${attested.verdict.status}, valid until ${attested.expiresAt}; next renewal in ${describeWait(next - now)}`);
      last = {
        updatedAt: iso(now),
        lastSuccess: { at: iso(now), spiffeId: attested.spiffeId, expiresAt: attested.expiresAt, jwt: attested.jwt },
        lastFailure: null,
        lastVerdict: attested.verdict,
        nextAttemptAt: iso(next),
      };
      await recordSafely(deps, last);
      try {
        await deps.afterRenewal(attested);
      } catch (e) {
        deps.warn(`after renewal: ${e instanceof Error ? e.message : String(e)}`);
      }
    } catch (e) {
      failures += 1;
      const failure = classifyFailure(e);
      if (failure.recovery === 'enroll' || failure.recovery === 'revoked') enroll = true;
      const now = deps.now();
      next = now + backoffMs(failure.recovery === 'revoked' ? Infinity : failures, deps.backoff, deps.random());
      deps.warn(`${describeFailure(failure)}; ${enroll ? 'enrolling again' : 'retrying'} in ${describeWait(next - now)}`);
      if (e instanceof AttestationRefusedError) for (const r of e.verdict.reasons) deps.warn(`  ${describeReason(r)}`);
      const held = last.lastSuccess?.expiresAt;
      if (held !== undefined && Date.parse(held) > now) {
        if (failures === 1) deps.info(`keeping the credentials in hand: valid until ${held}`);
      } else if (held !== undefined && !expirySaid) {
        deps.warn(`the credentials in hand expired at ${held}: this host has none valid until an attestation succeeds`);
        expirySaid = true;
      }
      last = {
        ...last,
        updatedAt: iso(now),
        lastFailure: { at: iso(now), reason: failure.reason, recovery: failure.recovery },
        lastVerdict: e instanceof AttestationRefusedError ? e.verdict : last.lastVerdict,
        nextAttemptAt: iso(next),
      };
      await recordSafely(deps, last);
    }
    await deps.sleep(Math.max(0, next - deps.now()), signal);
  }
}

function describeFailure({ recovery, reason }: Failure): string {
  if (recovery === 'revoked') return `revoked by the ${reason}; an operator decides whether this host may enroll again`;
  return `${recovery === 'refused' ? 'refused by the' : 'failed:'} ${reason}`;
}

/** A status that cannot be written (a full disk) is said, and the loop goes on: renewing matters more. */
async function recordSafely(deps: RenewalLoopDeps, status: RunStatus): Promise<void> {
  try {
    await deps.record(status);
  } catch (e) {
    deps.warn(`cannot record the status: ${e instanceof Error ? e.message : String(e)}`);
  }
}
