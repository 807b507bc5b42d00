/**
 * Denial-of-service findings of the security review against the real verifier (SQLite, file
 * keys, swtpm host). Each `describe` is one finding, named by its title; the tests assert the
 * secure behaviour found missing then and fixed since: they stay as regression tests.
 */
import { once } from 'node:events';
import { connect as netConnect } from 'node:net';
import { connect as tlsConnect, type TLSSocket } from 'node:tls';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ApiError, createApiClient } from '../src/client/api-client.js';
import { AttestorError } from '../src/errors.js';
import { ChallengeResponse } from '../src/wire/schemas.js';
import { enrollOverApi, startAttackBed, type AttackBed } from './attack-harness.js';

/** Connection slots of the verifier under test (config limits.maxConnections). */
const MAX_CONNECTIONS = 4;
/** Its enrollment rate limit (config limits.enrollmentsPerMinute); challenges are limited to twice that. */
const PER_MINUTE = 10;

let bed: AttackBed;
let agentId: string;

beforeAll(async () => {
  bed = await startAttackBed({ config: { limits: { maxConnections: MAX_CONNECTIONS, connectionsPerAddress: MAX_CONNECTIONS / 2, enrollmentsPerMinute: PER_MINUTE, challengesPerMinute: 2 * PER_MINUTE } } });
  agentId = await enrollOverApi(bed, {});
}, 120_000);

afterAll(async () => {
  await bed?.stop();
});

describe('Challenges are unlimited and unauthenticated: each one a durable write', () => {
  it('one client asking for far more challenges than any agent needs is rate limited', async () => {
    // Anyone who knows an agent id (it is in every X509-SVID the agent shows) can ask; each
    // answer is a row written with synchronous=FULL, and every challenge also reads every
    // enforced and staged baseline document.
    const codes: string[] = [];
    for (let i = 0; i < 5 * PER_MINUTE; i++) {
      codes.push(
        await bed.anon.call('POST', `/v1/agents/${agentId}/challenges`, ChallengeResponse, {}).then(
          () => 'created',
          (e: unknown) => (e instanceof ApiError ? e.remoteCode : String(e)),
        ),
      );
    }
    // Before the fix: 50 x "created", 50 open challenges for one agent.
    expect(codes).toContain('ERR_RATE_LIMITED');
  });
});

describe('One client address can hold every connection slot', () => {
  /** A TLS connection that completed its handshake and then sends nothing; null when the verifier dropped it. */
  function idleTls(localAddress: string): Promise<TLSSocket | null> {
    return new Promise((resolve) => {
      const url = new URL(bed.v.url);
      const tcp = netConnect({ host: url.hostname, port: Number(url.port), localAddress });
      const socket = tlsConnect({ socket: tcp, ca: bed.caPem, servername: 'localhost' }, () => resolve(socket));
      socket.once('error', () => {
        socket.destroy();
        tcp.destroy();
        resolve(null);
      });
    });
  }

  /** Idle TLS connections, from `addresses` in turn, opened until the verifier drops one: every slot is then taken. */
  async function fillSlots(addresses: readonly string[]): Promise<TLSSocket[]> {
    const idle: TLSSocket[] = [];
    for (let i = 0; i <= MAX_CONNECTIONS; i++) {
      const socket = await idleTls(addresses[i % addresses.length]!);
      if (socket === null) break;
      idle.push(socket);
    }
    return idle;
  }

  /** The agent's GET /healthz: its status, or the client's error code when it could not connect. */
  async function agentHealth(): Promise<string> {
    const agent = createApiClient({ server: bed.v.url, caPem: bed.caPem });
    try {
      return await agent.get('/healthz').then(
        (r) => String(r.status),
        (e: unknown) => (e instanceof AttestorError ? e.code : String(e)),
      );
    } finally {
      agent.close();
    }
  }

  it('idle connections from one address do not lock out a client from another address', async () => {
    // The loopback net is 127/8: 127.0.0.2 plays the attacker, 127.0.0.1 the agent.
    const idle = await fillSlots(['127.0.0.2']);
    try {
      expect(idle.length).toBeLessThanOrEqual(MAX_CONNECTIONS);
      // Before the fix: the agent's connection is dropped (ERR_SERVER_UNREACHABLE) for as long as the attacker holds the slots.
      expect(await agentHealth()).toBe('200');
    } finally {
      for (const s of idle) s.destroy();
    }
  });

  it('idle connections from several addresses that fill every slot do not lock out a client from another address: it takes the oldest of the heaviest', async () => {
    const idle = await fillSlots(['127.0.0.4', '127.0.0.5']);
    try {
      expect(idle.length).toBeGreaterThan(MAX_CONNECTIONS / 2);
      const closed = Promise.race(idle.map((s) => once(s, 'close')));
      // Node's maxConnections dropped the agent's connection for as long as the attackers held the slots.
      expect(await agentHealth()).toBe('200');
      await closed;
    } finally {
      for (const s of idle) s.destroy();
    }
  });
});
