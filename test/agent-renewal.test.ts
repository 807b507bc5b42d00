/**
 * The renewal policy of `attestor-agent run` (pure) and its loop driven step by step: when it
 * renews, how it backs off, what each failure leads to, and that it stops when asked.
 */
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { AttestationRefusedError, type Attested } from '../src/agent/attest.js';
import { runRenewalLoop, type RenewalLoopDeps, type RunStatus } from '../src/agent/renewal-loop.js';
import { backoffMs, classifyFailure, renewalAt } from '../src/agent/renewal-policy.js';
import { ApiError } from '../src/client/api-client.js';
import { AttestorError } from '../src/errors.js';

describe('renewal policy', () => {
  it('renews between 40 % and 60 % of the lifetime', () => {
    fc.assert(
      fc.property(fc.integer({ min: 0, max: 2 ** 40 }), fc.integer({ min: 1, max: 2 ** 32 }), fc.double({ min: 0, max: 1, maxExcluded: true, noNaN: true }), (issued, lifetime, r) => {
        const at = renewalAt(issued, issued + lifetime, r);
        expect(at).toBeGreaterThanOrEqual(issued + 0.4 * lifetime - 1e-6);
        expect(at).toBeLessThanOrEqual(issued + 0.6 * lifetime + 1e-6);
      }),
    );
    expect(renewalAt(0, 3_600_000, 0.5)).toBe(1_800_000);
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
    expect([1, 2, 3, 4, 10].map((n) => backoffMs(n, settings, 1 - Number.EPSILON))).toStrictEqual([1000, 2000, 4000, 8000, 60_000]);
  });

  it('classifies: unknown to the verifier -> enroll, refusals -> refused, unreachable and TPM -> retry, with the reason', () => {
    const api = (status: number, code: string) => new ApiError(status, code, { code, detail: 'why' });
    expect(classifyFailure(api(404, 'ERR_AGENT_NOT_FOUND'))).toStrictEqual({ recovery: 'enroll', reason: 'verifier: ERR_AGENT_NOT_FOUND: why' });
    expect(classifyFailure(api(409, 'ERR_AGENT_NOT_ACTIVE')).recovery).toBe('refused');
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
  verdict: { id: '00000000-0000-4000-8000-000000000001', status: 'affirming', reasons: [], baseline: null, at: '2026-01-01T00:00:00.000Z' },
  spiffeId: 'spiffe://example.org/agent/tpm/ab',
  expiresAt: new Date(100_000).toISOString(),
  files: [],
  jwt: false,
};

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
    const h = harness([async () => ATTESTED, async () => ({ ...ATTESTED, expiresAt: new Date(200_000).toISOString() })]);
    await runRenewalLoop(h.deps, h.stop.signal);
    expect(h.sleeps.slice(0, 2)).toStrictEqual([50_000, 75_000]);
    expect(h.counts()).toStrictEqual({ enrolls: 0, renewals: 2 });
    expect(h.statuses[0]).toMatchObject({ lastSuccess: { spiffeId: ATTESTED.spiffeId }, lastVerdict: { status: 'affirming' }, nextAttemptAt: new Date(50_000).toISOString() });
    expect(h.log[0]).toMatch(/^info renewed: X509-SVID for spiffe:\/\/example.org\/agent\/tpm\/ab, verdict affirming, valid until .*; next renewal in 50s$/);
  });

  it('backs off while the verifier is unreachable, says why, and recovers', async () => {
    const down = async (): Promise<Attested> => {
      throw new AttestorError('ERR_SERVER_UNREACHABLE', 'verifier.example:443: ECONNREFUSED');
    };
    const h = harness([down, down, down, async () => ATTESTED]);
    await runRenewalLoop(h.deps, h.stop.signal);
    expect(h.sleeps.slice(0, 4)).toStrictEqual([750, 1500, 3000, (100_000 - 5250) / 2]);
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
