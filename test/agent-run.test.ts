/**
 * `attestor-agent run` as a service runs it: the built bin as a child process, a swtpm host, the
 * real verifier over HTTPS behind a TCP relay the test can cut, credentials that live 4 s. It
 * enrolls, is refused until a baseline is enforced, renews at about half the lifetime with its
 * files replaced atomically and --exec run after each renewal, backs off and says why while the
 * verifier is unreachable or refuses the quarantined host, recovers, follows a rotation of the
 * verifier's CA, waits the longest backoff once revoked, and stops on SIGTERM, also when the
 * verifier holds an attempt without answering. `attestor-agent status` reads it all back offline.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { X509Certificate } from 'node:crypto';
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { createServer, connect, type Server, type Socket } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { bootstrapCa, createApiClient, type ApiClient } from '../src/client/api-client.js';
import { runAgent } from '../src/cli/agent-program.js';
import { AgentDetailBody, BaselineBody, KeyList } from '../src/wire/schemas.js';
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

/** A TCP server that accepts connections and never answers: a verifier that hangs. */
async function startBlackHole(): Promise<{ url: string; close(): Promise<void> }> {
  const sockets = new Set<Socket>();
  const server = createServer((s) => {
    sockets.add(s);
    s.on('error', () => undefined);
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  return {
    url: `https://127.0.0.1:${(server.address() as { port: number }).port}`,
    close: () =>
      new Promise<void>((resolve) => {
        for (const s of sockets) s.destroy();
        server.close(() => resolve());
      }),
  };
}

const CERTIFICATES = /-----BEGIN CERTIFICATE-----[^-]+-----END CERTIFICATE-----/g;

describe('attestor-agent run: usage', () => {
  it('exits 2 before touching the TPM or the network when called wrongly', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'attestor-agent-run-usage-'));
    try {
      const both = await runCli(runAgent, ['run', '--state-dir', dir, '--signal-pid', '5', '--pid-file', join(dir, 'pid')]);
      expect([both.code, both.err]).toStrictEqual([2, "error: option '--signal-pid <pid>' cannot be used with option '--pid-file <file>'\n"]);
      const backoff = await runCli(runAgent, ['run', '--state-dir', dir, '--min-backoff', '10', '--max-backoff', '5']);
      expect([backoff.code, backoff.err]).toStrictEqual([2, 'error: --min-backoff must not exceed --max-backoff\n']);
      const unenrolled = await runCli(runAgent, ['run', '--state-dir', dir, '--no-event-log', '--no-ima-log']);
      expect(unenrolled.code).toBe(2);
      expect(unenrolled.err).toMatch(/^error: this host is not enrolled: .*; or give --server and --ca-fingerprint \(or ATTESTOR_SERVER, ATTESTOR_CA_FINGERPRINT\) for run to enroll\n$/);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});

describe('attestor-agent run', { timeout: 120_000 }, () => {
  const processes = createProcessHarness(AGENT_BIN);
  let host: Swtpm;
  let v: TestVerifier;
  let admin: ApiClient;
  let relay: ReturnType<typeof createRelay>;
  let tmp: string;
  /** A service that reloads on SIGUSR1, which run signals through --pid-file after each renewal. */
  let reloader: ChildProcess;
  let reloads = 0;
  let run: Started;
  let agentId: string;

  const stateDir = () => join(tmp, 'state');
  const hookLog = () => join(tmp, 'renewed.log');
  const hookLines = () => (existsSync(hookLog()) ? readFileSync(hookLog(), 'utf8').trim().split('\n').length : 0);
  const serial = () => new X509Certificate(readFileSync(join(stateDir(), 'cert.pem'))).serialNumber;

  /** Where stdout and stderr are now, to look at what the process says after it. */
  interface Mark {
    readonly out: number;
    readonly err: number;
  }
  const mark = (): Mark => ({ out: run.out().length, err: run.err().length });
  const START: Mark = { out: 0, err: 0 };
  /** What the process said on stdout, then on stderr, after `from`. */
  const since = (from: Mark) => `${run.out().slice(from.out)}\n${run.err().slice(from.err)}`;

  /** Waits until `re` has matched `count` times in what the process said after `from`. */
  async function seen(re: RegExp, { from = START, count = 1, within = 20_000 } = {}): Promise<number> {
    const deadline = Date.now() + within;
    for (;;) {
      const matches = [...since(from).matchAll(new RegExp(re.source, `${re.flags.replace('g', '')}g`))];
      if (matches.length >= count) return matches.length;
      if (Date.now() > deadline) throw new Error(`not seen ${count}x ${re} within ${within} ms:\n${run.out()}\n${run.err()}`);
      await new Promise((r) => setTimeout(r, 100));
    }
  }

  async function waitFor(what: string, probe: () => boolean | Promise<boolean>, within = 20_000): Promise<void> {
    const deadline = Date.now() + within;
    while (!(await probe())) {
      if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}:\n${run.out()}\n${run.err()}`);
      await new Promise((r) => setTimeout(r, 200));
    }
  }

  beforeAll(async () => {
    host = await startSwtpm();
    tmp = mkdtempSync(join(tmpdir(), 'attestor-agent-run-'));
    v = await startTestVerifier({
      ekRootPems: [host.rootCaCertPem, host.caCertPem],
      config: { attestation: { x509TtlSeconds: 4, jwtTtlSeconds: 4 }, keyRotation: { activationDelaySeconds: 4 } },
    });
    admin = createApiClient({ server: v.url, caPem: await bootstrapCa(v.url, v.caFingerprint), token: v.adminToken });
    relay = createRelay(v.verifier.port);
    await relay.open();
    reloader = spawn(process.execPath, ['-e', "process.on('SIGUSR1', () => console.log('reload')); setInterval(() => {}, 1 << 30); console.log('ready');"]);
    reloader.stdout!.on('data', (d: Buffer) => (reloads += d.toString().split('\n').filter((l) => l === 'reload').length));
    await new Promise((resolve) => reloader.stdout!.once('data', resolve));
    writeFileSync(join(tmp, 'reloader.pid'), `${reloader.pid}\n`);
  }, 120_000);

  afterAll(async () => {
    processes.killAll();
    reloader?.kill();
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
        '--pid-file', join(tmp, 'reloader.pid'), '--signal', 'USR1', '--min-backoff', '1', '--max-backoff', '2',
      ],
      childEnv(),
    );
    await seen(/^enrolled this host with the verifier$/m);
    await seen(/^refused by the verifier: ERR_NO_BASELINE: .*; retrying in \ds$/m);
    agentId = JSON.parse(readFileSync(join(stateDir(), 'agent.json'), 'utf8')).agentId;
    expect((await admin.call('GET', `/v1/agents/${agentId}`, AgentDetailBody)).labels).toEqual({ role: 'run' });
    expect(existsSync(join(stateDir(), 'cert.pem'))).toBe(false);
  });

  it('once a baseline is enforced it gets credentials, runs --exec, signals --pid-file, and renews at about half their lifetime with files replaced whole', async () => {
    const captured = await admin.call('POST', '/v1/baselines/capture', BaselineBody, { agentId, name: 'run-hosts' });
    await admin.call('POST', `/v1/baselines/${captured.id}/enforce`, BaselineBody, {});
    const from = mark();
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
    // The --exec hook runs after the renewal's log line: its third line may still be on its way.
    await waitFor('the --exec hook to have run 3 times', () => hookLines() >= 3);
    expect(readFileSync(hookLog(), 'utf8')).toContain(`/agent/tpm/${agentId}`);
    expect(await seen(new RegExp(`^sent SIGUSR1 to process ${reloader.pid}$`, 'm'), { from, count: 3 })).toBeGreaterThanOrEqual(3);
    await waitFor('the reloader to have reloaded 3 times', () => reloads >= 3);
  });

  it('backs off while the verifier is unreachable, says why, and renews again once it is back', async () => {
    await relay.close();
    const from = mark();
    await seen(/^failed: verifier unreachable: ERR_SERVER_UNREACHABLE: .*; retrying in \ds$/m, { from, count: 2 });
    await relay.open();
    await seen(/^renewed: /m, { from });
  });

  it('a quarantined host is told so and retries at its backoff, not in a tight loop; released, it renews again', async () => {
    await admin.call('POST', `/v1/agents/${agentId}/quarantine`, AgentDetailBody.omit({ credentials: true }), {});
    const from = mark();
    await seen(/^refused by the verifier: ERR_AGENT_NOT_ACTIVE: the agent is quarantined; retrying in \ds$/m, { from });
    await new Promise((r) => setTimeout(r, 4000));
    // Backoff of 1-2 s: a handful of attempts in 4 s, not hundreds.
    const attempts = [...since(from).matchAll(/ERR_AGENT_NOT_ACTIVE/g)].length;
    expect(attempts).toBeGreaterThanOrEqual(2);
    expect(attempts).toBeLessThanOrEqual(6);
    await admin.call('POST', `/v1/agents/${agentId}/release`, AgentDetailBody.omit({ credentials: true }), {});
    await seen(/^renewed: /m, { from });
  });

  it("follows a rotation of the verifier's CA: the roots of the last bundle are trusted, so the new CA's TLS certificate does not strand it", async () => {
    const pinnedRoot = readFileSync(join(stateDir(), 'ca.pem'), 'utf8');
    await admin.call('POST', '/v1/keys/rotate', KeyList, { key: 'x509-ca' });
    // The operator's client follows the rotation the same way: it trusts both published CAs.
    const published = (await admin.get('/v1/ca.pem')).body.toString();
    expect(published.match(CERTIFICATES)).toHaveLength(2);
    admin.close();
    admin = createApiClient({ server: v.url, caPem: published, token: v.adminToken });
    const newCa = new X509Certificate(published.match(CERTIFICATES)![1]!);
    // A renewal within the activation delay brings the bundle with the prepared CA.
    await waitFor('bundle.pem with both CAs', () => readFileSync(join(stateDir(), 'bundle.pem'), 'utf8').match(CERTIFICATES)?.length === 2);
    // Once the new CA is active, the verifier's TLS certificate no longer chains to the pinned root.
    await waitFor('the TLS certificate of the new CA', async () => {
      // A new client each time: a kept-alive connection would keep the certificate of its handshake.
      const pinnedOnly = createApiClient({ server: v.url, caPem: pinnedRoot });
      try {
        return await pinnedOnly.get('/healthz').then(() => false, (e: unknown) => (e as { code?: string }).code === 'ERR_SERVER_UNTRUSTED');
      } finally {
        pinnedOnly.close();
      }
    });
    const from = mark();
    await seen(/^renewed: /m, { from, count: 2 });
    expect(since(from)).not.toMatch(/^failed: /m);
    const leaf = new X509Certificate(readFileSync(join(stateDir(), 'cert.pem')));
    expect([leaf.checkIssued(newCa), leaf.verify(newCa.publicKey)]).toStrictEqual([true, true]);
  });

  it('status shows the identity, the credentials with their expiry and the last verdict, offline', async () => {
    const r = await runCli(runAgent, ['status', '--state-dir', stateDir()]);
    expect(r.code, r.err).toBe(0);
    expect(r.out).toContain(`agent id        ${agentId}`);
    expect(r.out).toMatch(/x509-svid +[0-9a-f]+ +\S+Z +\S+Z +(\ds left|EXPIRED) +URI:spiffe:\/\/\S+\/agent\/tpm\//);
    expect(r.out).toMatch(/last verdict +affirming at \S+, baseline \S+ v1/);
    const json = JSON.parse((await runCli(runAgent, ['status', '--state-dir', stateDir(), '--json'])).out);
    expect(json).toMatchObject({ agentId, credentials: [{ kind: 'x509-svid' }], run: { lastVerdict: { status: 'affirming' } } });
  });

  it('a revoked host says so, enrolls again (the verifier keeps it revoked) and waits the longest backoff, not in a tight loop', async () => {
    await admin.call('POST', `/v1/agents/${agentId}/revoke`, AgentDetailBody.omit({ credentials: true }), {});
    const from = mark();
    const revoked = /^revoked by the verifier: ERR_AGENT_NOT_ACTIVE: the agent is revoked; an operator decides whether this host may enroll again; enrolling again in [12]s$/m;
    await seen(revoked, { from });
    await seen(/^enrolled this host with the verifier$/m, { from });
    await new Promise((r) => setTimeout(r, 4000));
    // At the longest backoff (1-2 s here) from the first refusal: a few attempts in 4 s.
    const attempts = [...since(from).matchAll(new RegExp(revoked.source, 'gm'))].length;
    expect(attempts).toBeGreaterThanOrEqual(2);
    expect(attempts).toBeLessThanOrEqual(5);
    expect(JSON.parse(readFileSync(join(stateDir(), 'agent.json'), 'utf8')).agentId).toBe(agentId);
    const json = JSON.parse((await runCli(runAgent, ['status', '--state-dir', stateDir(), '--json'])).out);
    expect(json.run.lastFailure).toMatchObject({ recovery: 'revoked', reason: 'verifier: ERR_AGENT_NOT_ACTIVE: the agent is revoked' });
  });

  it('stops on SIGTERM with exit status 0', async () => {
    run.child.kill('SIGTERM');
    const exit = await run.exited;
    expect([exit.code, exit.signal]).toStrictEqual([0, null]);
    // The revoked host's attempt in flight (an enrollment) may end between the two lines.
    expect(exit.out).toMatch(/SIGTERM: stopping once the attempt in flight has ended\n(?:enrolled this host with the verifier\n)?stopped\n$/);
  });

  it('backs off while the TPM is unreachable and says so', async () => {
    run = processes.start(
      ['run', '--tcti', 'swtpm:host=127.0.0.1,port=1', '--state-dir', stateDir(), '--no-event-log', '--no-ima-log', '--min-backoff', '1', '--max-backoff', '2'],
      childEnv(),
    );
    await seen(/^failed: TPM: ERR_TSS_\w+: .*; retrying in [12]s$/m, { count: 2 });
    run.child.kill('SIGTERM');
    expect((await run.exited).code).toBe(0);
  });

  it('stops on SIGTERM within the grace period when the verifier holds the attempt in flight without answering', async () => {
    const hole = await startBlackHole();
    try {
      run = processes.start(['run', '--server', hole.url, '--tcti', host.tcti, '--state-dir', stateDir(), '--no-event-log', '--no-ima-log'], childEnv());
      await run.waitFor(/^attestor-agent run: /m);
      await new Promise((r) => setTimeout(r, 1000));
      const stopped = Date.now();
      run.child.kill('SIGTERM');
      const exit = await run.exited;
      expect([exit.code, exit.signal]).toStrictEqual([0, null]);
      expect(Date.now() - stopped).toBeLessThan(15_000);
      expect(exit.err).toContain('the attempt in flight did not end within 10s: stopping without it\n');
    } finally {
      await hole.close();
    }
  });
});
