/**
 * The renewal policy of `attestor-agent run` (pure) and its loop driven step by step: when it
 * renews, how it backs off, what each failure leads to, and that it stops when asked.
 */
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { AttestationRefusedError, type Attested } from '../src/agent/attest.js';
import { runRenewalLoop, type RenewalLoopDeps } from '../src/agent/renewal-loop.js';
import { backoffMs, classifyFailure, renewalDelayMs } from '../src/agent/renewal-policy.js';
import type { RunStatus } from '../src/agent/run-status.js';
import { ApiError } from '../src/client/api-client.js';
import { AttestorError } from '../src/errors.js';

describe('renewal policy', () => {
  it('renews at half the lifetime, +-10 % of that half', () => {
    fc.assert(
      fc.property(fc.integer({ min: 0, max: 2 ** 40 }), fc.integer({ min: 1, max: 2 ** 32 }), fc.double({ min: 0, max: 1, maxExcluded: true, noNaN: true }), (issued, lifetime, r) => {
        const delay = renewalDelayMs(issued, issued + lifetime, r);
        expect(delay).toBeGreaterThanOrEqual(0.45 * lifetime - 1e-6);
        expect(delay).toBeLessThanOrEqual(0.55 * lifetime + 1e-6);
      }),
    );
    expect([0, 0.5, 1 - Number.EPSILON].map((r) => Math.round(renewalDelayMs(0, 3_600_000, r)))).toStrictEqual([1_620_000, 1_800_000, 1_980_000]);
    expect(renewalDelayMs(3_600_000, 0, 0.5)).toBe(0);
  });

  it('backs off exponentially between half and all of the step, capped, never zero', () => {
    const settings = { minMs: 1000, maxMs: 60_000 };
    fc.assert(
      fc.property(fc.integer({ min: 1, max: 10_000 }), fc.double({ min: 0, max: 1, maxExcluded: true, noNaN: true }), (failures, r) => {
        const step = Math.min(60_000, 1000 * 2 ** (failures - 1));
        const wait = backoffMs(failures, settings, r);
        expect(wait).toBeGreaterThanOrEqual(step / 2);
        expect(wait).toBeLessThanOrEqual(step);
        expect(wait).toBeGreaterThan(0);
      }),
    );
    expect([1, 2, 3, 4, 10, Infinity].map((n) => backoffMs(n, settings, 1 - Number.EPSILON))).toStrictEqual([1000, 2000, 4000, 8000, 60_000, 60_000]);
  });

  it('classifies: unknown to the verifier -> enroll, revoked -> revoked, refusals -> refused, unreachable and TPM -> retry, with the reason', () => {
    const api = (status: number, code: string, detail = 'why', more: object = {}) => new ApiError(status, code, { code, detail, ...more });
    expect(classifyFailure(api(404, 'ERR_AGENT_NOT_FOUND'))).toStrictEqual({ recovery: 'enroll', reason: 'verifier: ERR_AGENT_NOT_FOUND: why' });
    expect(classifyFailure(api(403, 'ERR_AGENT_NOT_ACTIVE', 'the agent is quarantined', { agentStatus: 'quarantined' })).recovery).toBe('refused');
    // The status decides, not the words of the detail.
    expect(classifyFailure(api(403, 'ERR_AGENT_NOT_ACTIVE', 'the agent is revoked')).recovery).toBe('refused');
    expect(classifyFailure(api(403, 'ERR_AGENT_NOT_ACTIVE', 'the agent is revoked', { agentStatus: 'revoked' }))).toStrictEqual({
      recovery: 'revoked',
      reason: 'verifier: ERR_AGENT_NOT_ACTIVE: the agent is revoked',
    });
    expect(classifyFailure(api(403, 'ERR_ATTESTATION_REFUSED', 'revoked certificate in the evidence')).recovery).toBe('refused');
    expect(classifyFailure(api(422, 'ERR_NO_BASELINE')).recovery).toBe('refused');
    expect(classifyFailure(api(503, 'ERR_STORE_UNAVAILABLE')).recovery).toBe('retry');
    expect(classifyFailure(api(429, 'ERR_RATE_LIMITED')).recovery).toBe('retry');
    expect(classifyFailure(new AttestorError('ERR_SERVER_UNREACHABLE', '127.0.0.1:1: ECONNREFUSED'))).toStrictEqual({
      recovery: 'retry',
      reason: 'verifier unreachable: ERR_SERVER_UNREACHABLE: 127.0.0.1:1: ECONNREFUSED',
    });
    expect(classifyFailure(new AttestorError('ERR_TSS_TCTI', 'cannot connect')).reason).toBe('TPM: ERR_TSS_TCTI: cannot connect');
    expect(classifyFailure(new AttestorError('ERR_AGENT_STATE', 'agent.json is not JSON')).recovery).toBe('enroll');
    expect(classifyFailure(new Error('boom'))).toStrictEqual({ recovery: 'retry', reason: 'unexpected: boom' });
  });
});

const ATTESTED: Attested = {
  verdict: { id: '00000000-0000-4000-8000-000000000001', status: 'affirming', reasons: [], baseline: null, at: new Date(0).toISOString() },
  spiffeId: 'spiffe://example.org/agent/tpm/ab',
  expiresAt: new Date(100_000).toISOString(),
  files: [],
  jwt: false,
};

/** ATTESTED, issued at `at` (the verifier's clock) for `lifetime` ms. */
function issuedAt(at: number, lifetime: number): Attested {
  return { ...ATTESTED, verdict: { ...ATTESTED.verdict, at: new Date(at).toISOString() }, expiresAt: new Date(at + lifetime).toISOString() };
}

/** A loop on a fake clock: each sleep moves time; `steps` decides each attempt's outcome. */
function harness(steps: Array<() => Promise<Attested>>, overrides: Partial<RenewalLoopDeps> = {}) {
  let now = 0;
  const stop = new AbortController();
  const log: string[] = [];
  const statuses: RunStatus[] = [];
  const sleeps: number[] = [];
  let enrolls = 0;
  let renewals = 0;
  const deps: RenewalLoopDeps = {
    enrollFirst: false,
    initial: null,
    attest: async () => {
      const step = steps.shift();
      if (!step) {
        stop.abort();
        throw new AttestorError('ERR_SERVER_UNREACHABLE', 'end of script');
      }
      return step();
    },
    enroll: async () => {
      enrolls += 1;
    },
    afterRenewal: async () => {
      renewals += 1;
    },
    record: async (s) => {
      statuses.push(s);
    },
    backoff: { minMs: 1000, maxMs: 8000 },
    now: () => now,
    random: () => 0.5,
    sleep: async (ms) => {
      sleeps.push(ms);
      now += ms;
    },
    info: (line) => log.push(`info ${line}`),
    warn: (line) => log.push(`warn ${line}`),
    ...overrides,
  };
  return { deps, stop, log, statuses, sleeps, counts: () => ({ enrolls, renewals }) };
}

describe('renewal loop', () => {
  it('renews at half the lifetime, runs the after-renewal step each time, records the status', async () => {
    const h = harness([async () => ATTESTED, async () => issuedAt(50_000, 150_000)]);
    await runRenewalLoop(h.deps, h.stop.signal);
    expect(h.sleeps.slice(0, 2)).toStrictEqual([50_000, 75_000]);
    expect(h.counts()).toStrictEqual({ enrolls: 0, renewals: 2 });
    expect(h.statuses[0]).toMatchObject({ lastSuccess: { spiffeId: ATTESTED.spiffeId }, lastVerdict: { status: 'affirming' }, nextAttemptAt: new Date(50_000).toISOString() });
    expect(h.log[0]).toMatch(/^info renewed: X509-SVID for spiffe:\/\/example.org\/agent\/tpm\/ab, verdict affirming, valid until .*; next renewal in 50s$/);
  });

  it("waits half the lifetime on the verifier's clock whatever the host's says, and never less than the first backoff", async () => {
    // The host's clock is 10 min ahead of the verifier's: the credentials look expired on arrival.
    const h = harness([async () => issuedAt(0, 100_000), async () => issuedAt(50_000, 10)]);
    h.deps.now = ((base) => () => base() + 600_000)(h.deps.now);
    await runRenewalLoop(h.deps, h.stop.signal);
    expect(h.sleeps.slice(0, 2)).toStrictEqual([50_000, 1000]);
  });

  it('backs off while the verifier is unreachable, says why, and recovers', async () => {
    const down = async (): Promise<Attested> => {
      throw new AttestorError('ERR_SERVER_UNREACHABLE', 'verifier.example:443: ECONNREFUSED');
    };
    const h = harness([down, down, down, async () => ATTESTED]);
    await runRenewalLoop(h.deps, h.stop.signal);
    expect(h.sleeps.slice(0, 4)).toStrictEqual([750, 1500, 3000, 50_000]);
    expect(h.log[0]).toBe('warn failed: verifier unreachable: ERR_SERVER_UNREACHABLE: verifier.example:443: ECONNREFUSED; retrying in 1s');
    expect(h.statuses[2]).toMatchObject({ lastFailure: { recovery: 'retry' } });
    expect(h.statuses[3]).toMatchObject({ lastFailure: null, lastSuccess: { spiffeId: ATTESTED.spiffeId } });
  });

  it('enrolls again when the verifier no longer knows the host, then attests', async () => {
    const h = harness([
      async () => {
        throw new ApiError(404, 'ERR_AGENT_NOT_FOUND', { detail: 'no agent' });
      },
      async () => ATTESTED,
    ]);
    await runRenewalLoop(h.deps, h.stop.signal);
    expect(h.counts()).toStrictEqual({ enrolls: 1, renewals: 1 });
    expect(h.log[0]).toBe('warn failed: verifier: ERR_AGENT_NOT_FOUND: no agent; enrolling again in 1s');
    expect(h.log[1]).toBe('info enrolled this host with the verifier');
  });

  it('a refusal keeps the credentials in hand, logs the verdict reasons and records the verdict', async () => {
    const verdict = { ...ATTESTED.verdict, status: 'contraindicated' as const, reasons: [{ code: 'PCR_VALUE_NOT_ALLOWED', message: 'not allowed', bank: 'sha256', pcr: 15 }] };
    const refused = async (): Promise<Attested> => {
      throw new AttestationRefusedError(403, 'ERR_ATTESTATION_REFUSED', { detail: 'refused' }, verdict);
    };
    const h = harness([async () => ATTESTED, refused]);
    await runRenewalLoop(h.deps, h.stop.signal);
    expect(h.log.slice(1, 4)).toStrictEqual([
      'warn refused by the verifier: ERR_ATTESTATION_REFUSED: refused (verdict contraindicated); retrying in 1s',
      '  PCR_VALUE_NOT_ALLOWED sha256:15 not allowed'.replace(/^/, 'warn '),
      `info keeping the credentials in hand: valid until ${ATTESTED.expiresAt}`,
    ]);
    expect(h.statuses[1]).toMatchObject({ lastVerdict: { status: 'contraindicated' }, lastSuccess: { expiresAt: ATTESTED.expiresAt } });
  });

  it('a failing after-renewal step or status write is said and the loop goes on', async () => {
    const h = harness([async () => ATTESTED, async () => ATTESTED], {
      afterRenewal: async () => {
        throw new Error('the --exec command exited 3');
      },
      record: async () => {
        throw new Error('ENOSPC');
      },
    });
    await runRenewalLoop(h.deps, h.stop.signal);
    expect(h.log.filter((l) => l.startsWith('warn'))).toContain('warn after renewal: the --exec command exited 3');
    expect(h.log.filter((l) => l.startsWith('warn'))).toContain('warn cannot record the status: ENOSPC');
    expect(h.log.filter((l) => l.startsWith('info renewed'))).toHaveLength(2);
  });

  it('a revoked host says so, enrolls again and waits the longest backoff each time, not the shortest', async () => {
    const revoked = async (): Promise<Attested> => {
      throw new ApiError(403, 'ERR_AGENT_NOT_ACTIVE', { detail: 'the agent is revoked', agentStatus: 'revoked' });
    };
    const h = harness([revoked, revoked, async () => ATTESTED]);
    await runRenewalLoop(h.deps, h.stop.signal);
    // Equal jitter at the cap of 8 s with random 0.5: 6 s, from the first failure on.
    expect(h.sleeps.slice(0, 2)).toStrictEqual([6000, 6000]);
    expect(h.counts()).toStrictEqual({ enrolls: 2, renewals: 1 });
    expect(h.log[0]).toBe(
      'warn revoked by the verifier: ERR_AGENT_NOT_ACTIVE: the agent is revoked; an operator decides whether this host may enroll again; enrolling again in 6s',
    );
    expect(h.statuses[0]).toMatchObject({ lastFailure: { recovery: 'revoked' } });
  });

  it('starts from what an earlier run recorded: the credentials in hand are kept until they expire, then it says they expired', async () => {
    const initial: RunStatus = {
      updatedAt: new Date(0).toISOString(),
      lastSuccess: { at: new Date(0).toISOString(), spiffeId: ATTESTED.spiffeId, expiresAt: new Date(3000).toISOString(), jwt: false },
      lastFailure: null,
      lastVerdict: ATTESTED.verdict,
      nextAttemptAt: null,
    };
    const down = async (): Promise<Attested> => {
      throw new AttestorError('ERR_SERVER_UNREACHABLE', 'ECONNREFUSED');
    };
    const h = harness([down, down, down, down], { initial });
    await runRenewalLoop(h.deps, h.stop.signal);
    const notes = h.log.filter((l) => !l.startsWith('warn failed'));
    expect(notes).toStrictEqual([
      `info keeping the credentials in hand: valid until ${new Date(3000).toISOString()}`,
      `warn the credentials in hand expired at ${new Date(3000).toISOString()}: this host has none valid until an attestation succeeds`,
    ]);
    // The last verdict and renewal of the earlier run stay in the record while this one fails.
    expect(h.statuses[3]).toMatchObject({ lastSuccess: initial.lastSuccess, lastVerdict: { status: 'affirming' }, lastFailure: { recovery: 'retry' } });
  });

  it('stops when aborted, after the attempt in flight', async () => {
    const stop = new AbortController();
    let attempts = 0;
    const h = harness([], {
      attest: async () => {
        attempts += 1;
        stop.abort();
        return ATTESTED;
      },
    });
    await runRenewalLoop(h.deps, stop.signal);
    expect(attempts).toBe(1);
    expect(h.statuses).toHaveLength(1);
  });
});
