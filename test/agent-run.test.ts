/**
 * `attestor-agent run` as a service runs it: the built bin as a child process, a swtpm host, the
 * real verifier over HTTPS behind a TCP relay the test can cut, credentials that live 4 s. It
 * enrolls, is refused until a baseline is enforced, renews at about half the lifetime with its
 * files replaced atomically and --exec run after each renewal, backs off and says why while the
 * verifier is unreachable or refuses the quarantined host, recovers, and stops on SIGTERM.
 * `attestor-agent status` reads it all back offline.
 */
import { X509Certificate } from 'node:crypto';
import { existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { createServer, connect, type Server, type Socket } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { bootstrapCa, createApiClient, type ApiClient } from '../src/client/api-client.js';
import { runAgent } from '../src/cli/agent-program.js';
import { AgentDetailBody, BaselineBody } from '../src/wire/schemas.js';
import { runCli } from './helpers/cli.js';
import { childEnv, createProcessHarness, type Started } from './helpers/processes.js';
import { startSwtpm, type Swtpm } from './helpers/swtpm.js';
import { startTestVerifier, type TestVerifier } from './helpers/verifier.js';

const AGENT_BIN = join(fileURLToPath(new URL('..', import.meta.url)), 'dist', 'cli', 'attestor-agent.js');

/** A TCP relay to the verifier on a fixed port, which the test closes and opens again. */
function createRelay(target: number) {
  const sockets = new Set<Socket>();
  let server: Server | undefined;
  let port = 0;
  const open = () =>
    new Promise<void>((resolve, reject) => {
      server = createServer((client) => {
        const upstream = connect(target, '127.0.0.1');
        for (const s of [client, upstream]) {
          sockets.add(s);
          s.on('close', () => sockets.delete(s));
          s.on('error', () => undefined);
        }
        client.pipe(upstream).pipe(client);
      });
      server.once('error', reject);
      server.listen(port, '127.0.0.1', () => {
        port = (server!.address() as { port: number }).port;
        resolve();
      });
    });
  const close = () =>
    new Promise<void>((resolve) => {
      for (const s of sockets) s.destroy();
      if (server) server.close(() => resolve());
      else resolve();
      server = undefined;
    });
  return { open, close, url: () => `https://127.0.0.1:${port}` };
}

describe('attestor-agent run', { timeout: 120_000 }, () => {
  const processes = createProcessHarness(AGENT_BIN);
  let host: Swtpm;
  let v: TestVerifier;
  let admin: ApiClient;
  let relay: ReturnType<typeof createRelay>;
  let tmp: string;
  let run: Started;
  let agentId: string;

  const stateDir = () => join(tmp, 'state');
  const hookLog = () => join(tmp, 'renewed.log');
  const hookLines = () => (existsSync(hookLog()) ? readFileSync(hookLog(), 'utf8').trim().split('\n').length : 0);
  const serial = () => new X509Certificate(readFileSync(join(stateDir(), 'cert.pem'))).serialNumber;

  /** Waits until `re` has matched `count` times in the process's stdout + stderr after `from` characters. */
  async function seen(re: RegExp, { from = 0, count = 1, within = 20_000 } = {}): Promise<number> {
    const deadline = Date.now() + within;
    for (;;) {
      const text = (run.out() + run.err()).slice(from);
      const matches = [...text.matchAll(new RegExp(re.source, `${re.flags.replace('g', '')}g`))];
      if (matches.length >= count) return matches.length;
      if (Date.now() > deadline) throw new Error(`not seen ${count}x ${re} within ${within} ms:\n${run.out()}\n${run.err()}`);
      await new Promise((r) => setTimeout(r, 100));
    }
  }
  const logLength = () => (run.out() + run.err()).length;

  beforeAll(async () => {
    host = await startSwtpm();
    tmp = mkdtempSync(join(tmpdir(), 'attestor-agent-run-'));
    v = await startTestVerifier({
      ekRootPems: [host.rootCaCertPem, host.caCertPem],
      config: { attestation: { x509TtlSeconds: 4, jwtTtlSeconds: 4 } },
    });
    admin = createApiClient({ server: v.url, caPem: await bootstrapCa(v.url, v.caFingerprint), token: v.adminToken });
    relay = createRelay(v.verifier.port);
    await relay.open();
  }, 120_000);

  afterAll(async () => {
    processes.killAll();
    admin?.close();
    await relay?.close();
    await v?.stop();
    await host?.stop();
    if (tmp) rmSync(tmp, { recursive: true, force: true });
  });

  it('enrolls a host that is not enrolled yet and says why it is refused until a baseline applies', async () => {
    run = processes.start(
      [
        'run', '--server', relay.url(), '--ca-fingerprint', v.caFingerprint, '--tcti', host.tcti, '--state-dir', stateDir(),
        '--no-event-log', '--no-ima-log', '--label', 'role=run', '--exec', `echo "$ATTESTOR_SPIFFE_ID" >> ${hookLog()}`,
        '--min-backoff', '1', '--max-backoff', '2',
      ],
      childEnv(),
    );
    await seen(/^enrolled this host with the verifier$/m);
    await seen(/^refused by the verifier: ERR_NO_BASELINE: .*; retrying in \ds$/m);
    agentId = JSON.parse(readFileSync(join(stateDir(), 'agent.json'), 'utf8')).agentId;
    expect((await admin.call('GET', `/v1/agents/${agentId}`, AgentDetailBody)).labels).toEqual({ role: 'run' });
    expect(existsSync(join(stateDir(), 'cert.pem'))).toBe(false);
  });

  it('once a baseline is enforced it gets credentials, runs --exec, and renews at about half their lifetime with files replaced whole', async () => {
    const captured = await admin.call('POST', '/v1/baselines/capture', BaselineBody, { agentId, name: 'run-hosts' });
    await admin.call('POST', `/v1/baselines/${captured.id}/enforce`, BaselineBody, {});
    const from = logLength();
    await seen(/^renewed: X509-SVID for spiffe:\/\/\S+, verdict affirming, valid until \S+; next renewal in [12]s$/m, { from });
    const first = serial();
    // A reader polling cert.pem all through the next renewals never sees a partial file.
    let reads = 0;
    let torn = 0;
    const polling = (async () => {
      const end = Date.now() + 5000;
      while (Date.now() < end) {
        try {
          new X509Certificate(readFileSync(join(stateDir(), 'cert.pem')));
        } catch {
          torn += 1;
        }
        reads += 1;
        await new Promise((r) => setImmediate(r));
      }
    })();
    await seen(/^renewed: /m, { from, count: 3 });
    await polling;
    expect(serial()).not.toBe(first);
    expect([reads > 100, torn]).toStrictEqual([true, 0]);
    expect(hookLines()).toBeGreaterThanOrEqual(3);
    expect(readFileSync(hookLog(), 'utf8')).toContain(`/agent/tpm/${agentId}`);
  });

  it('backs off while the verifier is unreachable, says why, and renews again once it is back', async () => {
    await relay.close();
    const from = logLength();
    await seen(/^failed: verifier unreachable: ERR_SERVER_UNREACHABLE: .*; retrying in \ds$/m, { from, count: 2 });
    await relay.open();
    await seen(/^renewed: /m, { from });
  });

  it('a quarantined host is told so and retries at its backoff, not in a tight loop; released, it renews again', async () => {
    await admin.call('POST', `/v1/agents/${agentId}/quarantine`, AgentDetailBody.omit({ credentials: true }), {});
    const from = logLength();
    await seen(/^refused by the verifier: ERR_AGENT_NOT_ACTIVE: the agent is quarantined; retrying in \ds$/m, { from });
    await new Promise((r) => setTimeout(r, 4000));
    // Backoff of 1-2 s: a handful of attempts in 4 s, not hundreds.
    const attempts = [...(run.out() + run.err()).slice(from).matchAll(/ERR_AGENT_NOT_ACTIVE/g)].length;
    expect(attempts).toBeGreaterThanOrEqual(2);
    expect(attempts).toBeLessThanOrEqual(6);
    await admin.call('POST', `/v1/agents/${agentId}/release`, AgentDetailBody.omit({ credentials: true }), {});
    await seen(/^renewed: /m, { from });
  });

  it('status shows the identity, the credentials with their expiry and the last verdict, offline', async () => {
    const r = await runCli(runAgent, ['status', '--state-dir', stateDir()]);
    expect(r.code, r.err).toBe(0);
    expect(r.out).toContain(`agent id        ${agentId}`);
    expect(r.out).toMatch(/x509-svid +[0-9a-f]+ +\S+Z +(\ds left|EXPIRED) +URI:spiffe:\/\/\S+\/agent\/tpm\//);
    expect(r.out).toMatch(/last verdict +affirming at \S+, baseline \S+ v1/);
    const json = JSON.parse((await runCli(runAgent, ['status', '--state-dir', stateDir(), '--json'])).out);
    expect(json).toMatchObject({ agentId, credentials: [{ kind: 'x509-svid' }], run: { lastVerdict: { status: 'affirming' } } });
  });

  it('stops on SIGTERM with exit status 0', async () => {
    run.child.kill('SIGTERM');
    const exit = await run.exited;
    expect([exit.code, exit.signal]).toStrictEqual([0, null]);
    expect(exit.out).toMatch(/SIGTERM: stopping once the attempt in flight has ended\nstopped\n$/);
  });
});
