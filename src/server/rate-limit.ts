import { AttestorError } from '../errors.js';
import { widerNetwork } from './client-network.js';

/**
 * A fixed-window counter per key: DESIGN asks that enrollment attempts be rate limited,
 * challenges are durable writes anyone may ask for, and each attestation costs signature
 * checks and log replays. Keys are a client's network (src/server/client-network.ts), or an
 * agent with a client's network: an agent id is public, so a budget of the agent alone would
 * let anyone spend it and keep the host itself from renewing. Per verifier process; the
 * window's map holds at most MAX_KEYS keys, so a full map must not become a way to lock
 * everyone else out: past it, a new key is counted under `wider(key)` in a second map of the
 * same bound (refused only when that is full too), or, without `wider`, not counted.
 */
export function createRateLimiter(opts: {
  perMinute: number;
  now: () => number;
  what: string;
  per: 'address' | 'agent';
  maxKeys?: number;
  wider?: (key: string) => string;
}) {
  const maxKeys = opts.maxKeys ?? MAX_KEYS;
  let windowStart = 0;
  let counts = new Map<string, number>();
  let widerCounts = new Map<string, number>();
  const refuse = (why: string) => new AttestorError('ERR_RATE_LIMITED', `${why}; wait and retry`);
  return (key: string): void => {
    const now = opts.now();
    if (now - windowStart >= 60_000) {
      windowStart = now;
      counts = new Map();
      widerCounts = new Map();
    }
    let map = counts;
    if (!counts.has(key) && counts.size >= maxKeys) {
      if (!opts.wider) return;
      key = opts.wider(key);
      map = widerCounts;
      if (!map.has(key) && map.size >= maxKeys) throw refuse(`more than ${maxKeys} client networks asked for ${opts.what} this minute`);
    }
    const n = (map.get(key) ?? 0) + 1;
    map.set(key, n);
    if (n > opts.perMinute) throw refuse(`more than ${opts.perMinute} ${opts.what} a minute ${opts.per === 'address' ? 'from this address' : 'for this agent from this address'}`);
  };
}

/** Enough for a large fleet's minute, and a bounded map (about 10 MB) whatever clients do. */
const MAX_KEYS = 100_000;

export type RateLimit = (key: string) => void;

/**
 * The budgets of the agent routes: per client network, and per agent from each client
 * network. Every key is a string the verifier built, bounded in length.
 */
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
    address: createRateLimiter({ perMinute: perAddress, now, what, per: 'address', wider: widerNetwork }),
    // Always behind the address budget, which counts every request it lets through.
    agent: createRateLimiter({ perMinute: limits.agentRequestsPerMinute, now, what, per: 'agent' }),
  });
  return {
    enrollment: pair(limits.enrollmentsPerMinute, 'enrollment requests'),
    challenge: pair(limits.challengesPerMinute, 'challenges'),
    // Each attestation spends a challenge: the same budget per address.
    attestation: pair(limits.challengesPerMinute, 'attestations'),
  };
}
