import { createHash, randomBytes } from 'node:crypto';
import { AttestorError } from '../errors.js';

/**
 * A fixed-window counter per key: DESIGN asks that enrollment attempts be rate limited,
 * challenges are durable writes anyone may ask for, and each attestation costs signature
 * checks and log replays. Keys are a client's network (src/server/client-network.ts), or an
 * agent with a client's network: an agent id is public, so a budget of the agent alone would
 * let anyone spend it and keep the host itself from renewing. Per verifier process.
 *
 * The counts are a count-min sketch (Cormode and Muthukrishnan, 2005), not a map: its memory
 * is fixed whatever clients do, and no number of keys fills it, so there is no "full" state in
 * which new clients go uncounted or are counted together with an attacker's. A key's count is
 * the least of its DEPTH counters, each in a row of WIDTH, never less than its true count and
 * more only where other keys share all its counters; the rows are chosen by a hash keyed with a
 * secret of this process, so no one can pick keys that collide. Updates are conservative (only
 * the counters at the least value grow), which keeps the excess small: 100,000 clients a minute
 * sending one request each add at most one to anyone's count.
 */
export function createRateLimiter(opts: { perMinute: number; now: () => number; what: string; per: 'address' | 'agent' }) {
  const secret = randomBytes(16);
  const counters = new Uint32Array(DEPTH * WIDTH);
  const slots = new Uint32Array(DEPTH);
  let windowStart = 0;
  return (key: string): void => {
    const now = opts.now();
    if (now - windowStart >= 60_000) {
      windowStart = now;
      counters.fill(0);
    }
    const digest = createHash('sha256').update(secret).update(key).digest();
    let least = Infinity;
    for (let row = 0; row < DEPTH; row++) {
      slots[row] = row * WIDTH + (digest.readUInt32LE(row * 4) & (WIDTH - 1));
      least = Math.min(least, counters[slots[row]!]!);
    }
    const n = least + 1;
    for (const slot of slots) if (counters[slot]! < n) counters[slot] = n;
    if (n > opts.perMinute) {
      const from = opts.per === 'address' ? 'from this address' : 'for this agent from this address';
      throw new AttestorError('ERR_RATE_LIMITED', `more than ${opts.perMinute} ${opts.what} a minute ${from}; wait and retry`);
    }
  };
}

/** Rows and counters per row: 2 MiB a limiter, six limiters. */
const DEPTH = 4;
const WIDTH = 1 << 17;

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
    address: createRateLimiter({ perMinute: perAddress, now, what, per: 'address' }),
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
