import { AttestorError } from '../errors.js';

/**
 * A fixed-window counter per key (client address): DESIGN asks that enrollment attempts be
 * rate limited, and challenges are durable writes anyone may ask for. Per verifier process; the window map is pruned as windows pass, so it stays
 * as large as the number of clients of the last minute.
 */
export function createRateLimiter(opts: { perMinute: number; now: () => number; what: string }) {
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
    if (n > opts.perMinute) throw new AttestorError('ERR_RATE_LIMITED', `more than ${opts.perMinute} ${opts.what} a minute from this address; wait and retry`);
  };
}
