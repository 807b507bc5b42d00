/**
 * The TPM dies in the middle of an attestation of `attestor-agent run` (the built bin as a
 * child process): swtpm is first stopped (SIGSTOP) so that the agent's next renewal hangs in a
 * TPM command, then killed (SIGKILL). The agent says why it failed (TPM: ...), backs off
 * instead of looping, and renews again once swtpm is back on the same port with the same
 * state (a TPM reset: resetCount grows, which the verifier accepts).
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { bootstrapCa, createApiClient, type ApiClient } from '../../src/client/api-client.js';
import { AgentBody, AgentDetailBody, BaselineBody, pageOf } from '../../src/wire/schemas.js';
import { childEnv, createProcessHarness, type Started } from '../helpers/processes.js';
import { startSwtpm, type Swtpm } from '../helpers/swtpm.js';
import { startTestVerifier, type TestVerifier } from '../helpers/verifier.js';

const escape = (text: string) => text.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');
const AGENT_BIN = join(fileURLToPath(new URL('../..', import.meta.url)), 'dist', 'cli', 'attestor-agent.js');

describe('swtpm killed during an attestation of attestor-agent run', { timeout: 90_000 }, () => {
  const processes = createProcessHarness(AGENT_BIN);
  let host: Swtpm;
  let v: TestVerifier;
  let admin: ApiClient;
  let tmp: string;
  let run: Started;

  /** Where stdout and stderr are now, to look at what the agent says after it. */
  interface Mark {
    readonly out: number;
    readonly err: number;
  }
  const mark = (): Mark => ({ out: run.out().length, err: run.err().length });
  const since = (from: Mark) => `${run.out().slice(from.out)}\n${run.err().slice(from.err)}`;
  /** Waits until `re` matched `count` times in what the agent said after `from`; the matching lines. */
  async function seen(re: RegExp, from: Mark, count = 1, within = 20_000): Promise<string[]> {
    const deadline = Date.now() + within;
    for (;;) {
      const matches = [...since(from).matchAll(new RegExp(re.source, 'gm'))].map((m) => m[0]);
      if (matches.length >= count) return matches;
      if (Date.now() > deadline) throw new Error(`not seen ${count}x ${re} within ${within} ms:\n${run.out()}\n${run.err()}`);
      await new Promise((r) => setTimeout(r, 100));
    }
  }

  beforeAll(async () => {
    host = await startSwtpm();
    tmp = mkdtempSync(join(tmpdir(), 'attestor-fault-swtpm-'));
    // Credentials of 4 s: the agent renews about every 2 s.
    v = await startTestVerifier({ ekRootPems: [host.rootCaCertPem, host.caCertPem], config: { attestation: { x509TtlSeconds: 4, jwtTtlSeconds: 4 } } });
    admin = createApiClient({ server: v.url, caPem: await bootstrapCa(v.url, v.caFingerprint), token: v.adminToken });
  }, 90_000);

  afterAll(async () => {
    processes.killAll();
    admin?.close();
    await v?.stop();
    await host?.stop();
    if (tmp) rmSync(tmp, { recursive: true, force: true });
  });

  it('says the TPM failed, backs off, and renews again once swtpm is back', async () => {
    run = processes.start(
      [
        'run', '--server', v.url, '--ca-fingerprint', v.caFingerprint, '--tcti', host.tcti, '--state-dir', join(tmp, 'state'),
        '--no-event-log', '--no-ima-log', '--min-backoff', '1', '--max-backoff', '2',
      ],
      childEnv(),
    );
    const start = mark();
    await seen(/^refused by the verifier: ERR_NO_BASELINE: .*$/, start);
    const agentId = (await admin.call('GET', '/v1/agents', pageOf(AgentBody))).items[0]!.id;
    const captured = await admin.call('POST', '/v1/baselines/capture', BaselineBody, { agentId, name: 'swtpm-kill' });
    await admin.call('POST', `/v1/baselines/${captured.id}/enforce`, BaselineBody, {});
    await seen(/^renewed: .*$/, start);

    // The TPM hangs: the next renewal (due within about 2 s) blocks in a TPM command...
    process.kill(host.pid, 'SIGSTOP');
    const stopped = mark();
    await new Promise((r) => setTimeout(r, 3000));
    expect(since(stopped)).not.toMatch(/^(renewed|failed): /m);
    // ...and dies under it.
    await host.kill();
    const tpm = `TPM at "${host.tcti}"`;
    await seen(new RegExp(`^failed: TPM: ERR_TSS_UNREACHABLE: ${escape(tpm)}: .*; retrying in [12]s$`), stopped);

    // Down for 4 s: retried at its backoff (1-2 s), not in a tight loop, each time saying why.
    await new Promise((r) => setTimeout(r, 4000));
    const attempts = (await seen(/^failed: TPM: .*$/, stopped)).length;
    expect(since(stopped)).not.toMatch(/^failed: (?!TPM: ERR_TSS_UNREACHABLE: )/m);
    expect(attempts).toBeGreaterThanOrEqual(2);
    expect(attempts).toBeLessThanOrEqual(6);
    expect(since(stopped)).not.toMatch(/^renewed: /m);

    // Back on the same port with the same state: renewals resume without restarting the agent.
    const restarted = mark();
    await host.restart();
    await seen(/^renewed: X509-SVID for spiffe:\/\/\S+, verdict affirming, .*$/, restarted, 2);
    expect(run.child.exitCode).toBeNull();
    expect((await admin.call('GET', `/v1/agents/${agentId}`, AgentDetailBody)).status).toBe('active');

    run.child.kill('SIGTERM');
    const exit = await run.exited;
    expect([exit.code, exit.signal]).toStrictEqual([0, null]);
  });
});
