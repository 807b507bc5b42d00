import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { clientNetwork, widerNetwork } from '../src/server/client-network.js';
import { createAgentRouteLimits, createRateLimiter } from '../src/server/rate-limit.js';

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

describe('widerNetwork: what a client is counted by when the map is full', () => {
  it('an IPv4 address by its /24, an IPv6 /64 by its /32, anything else as itself', () => {
    expect(widerNetwork('192.0.2.7')).toBe('192.0.2.0/24');
    expect(widerNetwork('2001:db8:0:1::/64')).toBe('2001:db8::/32');
    expect(widerNetwork(clientNetwork('2001:db8:ffff:1::1'))).toBe('2001:db8::/32');
    expect(widerNetwork('')).toBe('');
  });
});

describe('createRateLimiter', () => {
  it('counts per key per minute; past maxKeys keys a new key is counted under its wider key, refused when that map is full too, until the window passes', () => {
    let now = 0;
    const limit = createRateLimiter({ perMinute: 2, now: () => now, what: 'challenges', per: 'address', maxKeys: 3, wider: (key) => key[0]! });
    for (const key of ['a1', 'b1', 'c1', 'a1']) limit(key);
    expect(() => limit('a1')).toThrow(expect.objectContaining({ code: 'ERR_RATE_LIMITED', message: 'more than 2 challenges a minute from this address; wait and retry' }));
    // d1 and d2 share d's budget; e, f its map's other keys.
    limit('d1');
    limit('d2');
    expect(() => limit('d3')).toThrow(expect.objectContaining({ code: 'ERR_RATE_LIMITED', message: 'more than 2 challenges a minute from this address; wait and retry' }));
    limit('e1');
    limit('f1');
    expect(() => limit('g1')).toThrow(expect.objectContaining({ code: 'ERR_RATE_LIMITED', message: 'more than 3 client networks asked for challenges this minute; wait and retry' }));
    limit('b1');
    now += 60_000;
    limit('g1');
    limit('d3');
    limit('a1');
  });

  it('without a wider key, a new key past maxKeys is let through uncounted', () => {
    const limit = createRateLimiter({ perMinute: 1, now: () => 0, what: 'challenges', per: 'agent', maxKeys: 1 });
    limit('a');
    expect(() => limit('a')).toThrow(expect.objectContaining({ code: 'ERR_RATE_LIMITED' }));
    for (let i = 0; i < 5; i++) limit('b');
  });

  it("networks that fill the maps (/64s of one /32, an agent each) lock no one out: another network's agent still gets its challenges, the flooding /32 shares one budget", () => {
    const limits = createAgentRouteLimits({ enrollmentsPerMinute: 10, challengesPerMinute: 10, agentRequestsPerMinute: 5 }, () => 0);
    const admit = (client: string, agent: string) => {
      limits.challenge.address(client);
      limits.challenge.agent(`${agent} ${client}`);
    };
    // 100,100 /64s of 2001:db8::/32 (two /48s), one agent each: past both maps' 100,000 keys.
    let refused = 0;
    for (let net = 0; net < 100_100; net++) {
      try {
        admit(clientNetwork(`2001:db8:${(net >> 16).toString(16)}:${(net & 0xffff).toString(16)}::1`), `agent-${net}`);
      } catch (e) {
        expect(e).toMatchObject({ code: 'ERR_RATE_LIMITED' });
        refused++;
      }
    }
    // The 100 networks past the first map's bound share 2001:db8::/32's 10.
    expect(refused).toBe(90);
    for (let i = 0; i < 5; i++) admit(clientNetwork('192.0.2.7'), 'honest-agent');
    for (let i = 0; i < 10; i++) admit(clientNetwork(`2001:db9:0:${i}::1`), `other-${i}`);
    expect(() => admit(clientNetwork('2001:db8:ffff:1::1'), 'flood-again')).toThrow(expect.objectContaining({ code: 'ERR_RATE_LIMITED' }));
  });
});
