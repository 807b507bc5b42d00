import { AttestorError } from '../errors.js';

/**
 * A fixed-window counter per key (client address or agent id): DESIGN asks that enrollment
 * attempts be rate limited, challenges are durable writes anyone may ask for, and each
 * attestation costs signature checks and log replays; an agent id is public, so a per-agent
 * budget bounds what many addresses together can spend on one agent. Per verifier process; the
 * window map is pruned as windows pass, so it stays as large as the number of keys of the last
 * minute.
 */
export function createRateLimiter(opts: { perMinute: number; now: () => number; what: string; per: 'address' | 'agent' }) {
  let windowStart = 0;
  let counts = new Map<string, number>();
  return (key: string): void => {
    const now = opts.now();
    if (now - windowStart >= 60_000) {
      windowStart = now;
      counts = new Map();
    }
    const n = (counts.get(key) ?? 0) + 1;
    counts.set(key, n);
    if (n > opts.perMinute) throw new AttestorError('ERR_RATE_LIMITED', `more than ${opts.perMinute} ${opts.what} a minute ${opts.per === 'address' ? 'from this address' : 'for this agent'}; wait and retry`);
  };
}

export type RateLimit = (key: string) => void;

/** The budgets of the agent routes: per client address, and per agent id from all addresses together. */
export interface AgentRouteLimits {
  readonly enrollment: { readonly address: RateLimit; readonly agent: RateLimit };
  readonly challenge: { readonly address: RateLimit; readonly agent: RateLimit };
  readonly attestation: { readonly address: RateLimit; readonly agent: RateLimit };
}

export function createAgentRouteLimits(
  limits: { readonly enrollmentsPerMinute: number; readonly challengesPerMinute: number; readonly agentRequestsPerMinute: number },
  now: () => number,
): AgentRouteLimits {
  const pair = (perAddress: number, what: string) => ({
    address: createRateLimiter({ perMinute: perAddress, now, what, per: 'address' }),
    agent: createRateLimiter({ perMinute: limits.agentRequestsPerMinute, now, what, per: 'agent' }),
  });
  return {
    enrollment: pair(limits.enrollmentsPerMinute, 'enrollment requests'),
    challenge: pair(limits.challengesPerMinute, 'challenges'),
    // Each attestation spends a challenge: the same budget per address.
    attestation: pair(limits.challengesPerMinute, 'attestations'),
  };
}
