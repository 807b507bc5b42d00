import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { clientNetwork } from '../src/server/client-network.js';
import { createRateLimiter } from '../src/server/rate-limit.js';

describe('clientNetwork: what a client is counted by', () => {
  it('an IPv4 address as itself, also IPv4-mapped; an IPv6 address by its /64, however it is written', () => {
    expect(clientNetwork('192.0.2.7')).toBe('192.0.2.7');
    expect(clientNetwork('::ffff:192.0.2.7')).toBe('192.0.2.7');
    expect(clientNetwork('::FFFF:192.0.2.7')).toBe('192.0.2.7');
    expect(clientNetwork('2001:db8::1')).toBe('2001:db8:0:0::/64');
    expect(clientNetwork('2001:0DB8:0000:0000:ffff::2')).toBe('2001:db8:0:0::/64');
    expect(clientNetwork('2001:db8:0:1::1')).toBe('2001:db8:0:1::/64');
    expect(clientNetwork('fe80::1%eth0')).toBe('fe80:0:0:0::/64');
    expect(clientNetwork('::1')).toBe('0:0:0:0::/64');
    expect(clientNetwork('64:ff9b::192.0.2.1')).toBe('64:ff9b:0:0::/64');
    expect(clientNetwork('')).toBe('');
  });

  it('every address of one /64 is one client, and two /64s are two', () => {
    const group = fc.integer({ min: 0, max: 0xffff });
    const groups = (n: number) => fc.array(group, { minLength: n, maxLength: n });
    fc.assert(
      fc.property(groups(4), groups(4), groups(4), (prefix, a, b) => {
        const write = (g: number[]) => g.map((x) => x.toString(16)).join(':');
        expect(clientNetwork(`${write(prefix)}:${write(a)}`)).toBe(clientNetwork(`${write(prefix)}:${write(b)}`));
        const other = [...prefix];
        other[3] = (other[3]! + 1) % 0x10000;
        expect(clientNetwork(`${write(prefix)}:${write(a)}`)).not.toBe(clientNetwork(`${write(other)}:${write(a)}`));
      }),
    );
  });
});

describe('createRateLimiter', () => {
  it('counts per key per minute, and holds at most maxKeys keys: a new key past them is refused until the window passes', () => {
    let now = 0;
    const limit = createRateLimiter({ perMinute: 2, now: () => now, what: 'challenges', per: 'address', maxKeys: 3 });
    for (const key of ['a', 'b', 'c', 'a']) limit(key);
    expect(() => limit('a')).toThrow(expect.objectContaining({ code: 'ERR_RATE_LIMITED', message: 'more than 2 challenges a minute from this address; wait and retry' }));
    expect(() => limit('d')).toThrow(expect.objectContaining({ code: 'ERR_RATE_LIMITED', message: 'more than 3 clients asked for challenges this minute; wait and retry' }));
    limit('b');
    now += 60_000;
    limit('d');
    limit('a');
  });
});
