import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { clientNetwork } from '../src/server/client-network.js';
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

describe('createRateLimiter', () => {
  it('counts per key per minute, refuses past the budget with what and whose, until the window passes', () => {
    let now = 0;
    const limit = createRateLimiter({ perMinute: 2, now: () => now, what: 'challenges', per: 'address' });
    for (const key of ['a', 'b', 'a']) limit(key);
    expect(() => limit('a')).toThrow(expect.objectContaining({ code: 'ERR_RATE_LIMITED', message: 'more than 2 challenges a minute from this address; wait and retry' }));
    limit('b');
    expect(() => limit('b')).toThrow(expect.objectContaining({ code: 'ERR_RATE_LIMITED' }));
    now += 59_999;
    expect(() => limit('a')).toThrow(expect.objectContaining({ code: 'ERR_RATE_LIMITED' }));
    now += 1;
    limit('a');
    limit('a');
  });

  /** How many calls `admit` takes before its first refusal (ERR_RATE_LIMITED), up to `most` + 1. */
  const admittedBeforeRefusal = (admit: () => void, most: number): number => {
    for (let n = 0; n <= most; n++) {
      try {
        admit();
      } catch (e) {
        expect(e).toMatchObject({ code: 'ERR_RATE_LIMITED' });
        return n;
      }
    }
    return most + 1;
  };

  // A sketch may count a key a little high (others share its counters), never low: after
  // 200,000 keys in a minute, by at most one (30 runs measured), here allowed two.
  it('has no full state: after 200,000 keys in a minute a new key is still counted, its budget all but a request or two', () => {
    const limit = createRateLimiter({ perMinute: 20, now: () => 0, what: 'challenges', per: 'agent' });
    for (let i = 0; i < 200_000; i++) limit(`agent-${i} 2001:db8:${(i >> 16).toString(16)}:${(i & 0xffff).toString(16)}::/64`);
    expect(admittedBeforeRefusal(() => limit('late-agent 192.0.2.7'), 20)).toBeGreaterThanOrEqual(18);
    expect(() => limit('late-agent 192.0.2.7')).toThrow(expect.objectContaining({ message: 'more than 20 challenges a minute for this agent from this address; wait and retry' }));
  });

  it("100,100 /64s of one /32 (an agent each) lock no one out: another client of that /32 and of another network each get their budget; a flooding /64 is refused past its own", () => {
    const limits = createAgentRouteLimits({ enrollmentsPerMinute: 20, challengesPerMinute: 20, agentRequestsPerMinute: 5 }, () => 0);
    const admit = (client: string, agent: string) => {
      limits.challenge.address(client);
      limits.challenge.agent(`${agent} ${client}`);
    };
    for (let net = 0; net < 100_100; net++) admit(clientNetwork(`2001:db8:${(net >> 16).toString(16)}:${(net & 0xffff).toString(16)}::1`), `agent-${net}`);
    for (const client of ['2001:db8:ffff:1::1', '192.0.2.7']) {
      let i = 0;
      expect(admittedBeforeRefusal(() => admit(clientNetwork(client), `honest-${i++}`), 20), client).toBeGreaterThanOrEqual(18);
    }
    // It sent one in the flood: at most 19 more.
    let j = 0;
    expect(admittedBeforeRefusal(() => admit(clientNetwork('2001:db8:0:1::1'), `again-${j++}`), 20)).toBeLessThanOrEqual(19);
  });
});
