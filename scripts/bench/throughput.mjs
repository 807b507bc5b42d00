import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { Agent as HttpsAgent, request } from 'node:https';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { bootstrapCa, createApiClient } from '../../dist/client/api-client.js';
import { decodeBody, encodeBody } from '../../dist/wire/codec.js';
import { BaselineBody, ChallengeResponse } from '../../dist/wire/schemas.js';
import { cpuMsOf, ownCpuMs, percentile, startVerifierProcess, undoAll, verifierToken } from './attestation.mjs';
import { fmt } from './measure.mjs';
import { createSoftAgent, seedAgents } from './soft-agent.mjs';

/*
 * Full attestations per second with the verifier as the bottleneck (SQLite): software agents
 * (soft-agent.mjs, one ECDSA signature per quote and per certification) in this process,
 * CONCURRENCY of them in flight over keep-alive HTTPS, each attestation a challenge and an
 * attestation answered with an X509-SVID and a JWT-SVID through SoftHSM. Then the same at 300
 * attestations/s evenly spaced, for its p99. The load generator shares the 2 cores.
 */

const AGENTS = 200;
const CONCURRENCY = 32;
const SECONDS = 10;
const PACED_RATE = 300;
const AUDIENCE = 'bench-service';
const RATE_TARGET = 1500;
const P99_TARGET_MS = 20;

export async function benchThroughput(root) {
  const work = mkdtempSync(join(tmpdir(), 'attestor-bench-throughput-'));
  const undo = [async () => rmSync(work, { recursive: true, force: true })];
  try {
    const { hsm, keys } = await verifierToken(work, undo);
    const dataDir = join(work, 'data');
    const agents = Array.from({ length: AGENTS }, createSoftAgent);
    await seedAgents(join(dataDir, 'attestor.db'), agents);
    const config = join(work, 'config.json');
    writeFileSync(config, JSON.stringify({ limits: { challengesPerMinute: 10_000_000, agentRequestsPerMinute: 10_000_000, connectionsPerAddress: 4096 } }));
    const verifier = await startVerifierProcess(root, ['serve', '--data-dir', dataDir, '--config', config, '--listen', '127.0.0.1:0', '--keys', keys, '--log-level', 'warn'], hsm.env);
    undo.push(() => verifier.stop());
    const caPem = await bootstrapCa(verifier.url, verifier.caFingerprint);
    const admin = createApiClient({ server: verifier.url, caPem, token: verifier.adminToken });
    undo.push(async () => admin.close());

    const keepAlive = new HttpsAgent({ keepAlive: true, maxSockets: CONCURRENCY, ca: caPem });
    undo.push(async () => keepAlive.destroy());
    const post = postWith(verifier.url, keepAlive);
    // Without an enforced baseline the first agent's evidence is kept: captured, then enforced.
    await attestOnce(post, agents[0], undefined).then(
      () => Promise.reject(new Error('affirmed without a baseline')),
      (e) => (e.code === 'ERR_NO_BASELINE' ? undefined : Promise.reject(e)),
    );
    const baseline = await admin.call('POST', '/v1/baselines/capture', BaselineBody, { agentId: agents[0].id, name: 'bench', audiences: [AUDIENCE] });
    await admin.call('POST', `/v1/baselines/${baseline.id}/enforce`, BaselineBody, {});

    // A warm-up, then the measured runs.
    await run(post, agents, { seconds: 2 });
    const saturated = await measured(verifier.pid, () => run(post, agents, { seconds: SECONDS }));
    const paced = await measured(verifier.pid, () => run(post, agents, { seconds: SECONDS, rate: PACED_RATE }));
    return report(saturated, paced);
  } finally {
    await undoAll(undo);
  }
}

/** The run's figures and the CPU the verifier and this process spent per attestation. */
async function measured(pid, work) {
  const [v0, c0] = [cpuMsOf(pid), ownCpuMs()];
  const r = await work();
  return { ...r, verifierCpuMs: (cpuMsOf(pid) - v0) / r.done, clientCpuMs: (ownCpuMs() - c0) / r.done };
}

/** Attestations for `seconds`: CONCURRENCY at a time, or started evenly at `rate` a second. */
async function run(post, agents, { seconds, rate }) {
  const latencies = [];
  const errors = {};
  let next = 0;
  const started = performance.now();
  const end = started + seconds * 1000;
  const one = async (scheduled) => {
    const agent = agents[next++ % agents.length];
    try {
      await attestOnce(post, agent, AUDIENCE);
      latencies.push(performance.now() - scheduled);
    } catch (e) {
      errors[e.code ?? e.message] = (errors[e.code ?? e.message] ?? 0) + 1;
    }
  };
  if (rate) {
    const inFlight = [];
    for (let i = 0; ; i++) {
      const at = started + (i * 1000) / rate;
      if (at >= end) break;
      const wait = at - performance.now();
      if (wait > 0) await new Promise((r) => setTimeout(r, wait));
      inFlight.push(one(at));
    }
    await Promise.all(inFlight);
  } else {
    const worker = async () => {
      while (performance.now() < end) await one(performance.now());
    };
    await Promise.all(Array.from({ length: CONCURRENCY }, worker));
  }
  const seconds_ = (performance.now() - started) / 1000;
  latencies.sort((a, b) => a - b);
  return { done: latencies.length, rate: latencies.length / seconds_, p50: percentile(latencies, 50), p99: percentile(latencies, 99), errors };
}

async function attestOnce(post, agent, audience) {
  const challenge = ChallengeResponse.parse(await post(`/v1/agents/${agent.id}/challenges`, {}));
  const answer = await post(`/v1/agents/${agent.id}/attestations`, agent.evidence(challenge, audience));
  if (answer.verdict?.status !== 'affirming' || !answer.credentials?.jwt) throw new Error(`not affirmed with both credentials: ${JSON.stringify(answer.verdict)}`);
}

/** A keep-alive JSON POST; a problem answer rejects with its code. */
function postWith(base, agent) {
  return (path, value) =>
    new Promise((resolve, reject) => {
      const body = encodeBody(value, 'json');
      const req = request(`${base}${path}`, { method: 'POST', agent, headers: { 'content-type': 'application/json', 'content-length': body.length } }, (res) => {
        const chunks = [];
        res.on('data', (c) => chunks.push(c));
        res.on('end', () => {
          const decoded = decodeBody(Buffer.concat(chunks), 'json', 10_000);
          if (res.statusCode >= 300) reject(Object.assign(new Error(`${res.statusCode} ${decoded?.code}`), { code: decoded?.code }));
          else resolve(decoded);
        });
      });
      req.on('error', reject);
      req.end(body);
    });
}

function report(saturated, paced) {
  const errors = (r) => (Object.keys(r.errors).length ? `, errors ${JSON.stringify(r.errors)}` : ', 0 errors');
  return [
    {
      name: `full attestations/s, ${CONCURRENCY} in flight, keep-alive, SQLite, software agents`,
      value: saturated.rate,
      unit: 'attestations/s',
      ratio: saturated.rate / RATE_TARGET,
      target: 1,
      line:
        `${`full attestation, ${CONCURRENCY} in flight, keep-alive, SQLite`.padEnd(52)} ${fmt(saturated.rate)}/s (target >= ${fmt(RATE_TARGET)}), ` +
        `p50 ${fmt(saturated.p50, 1)} ms, p99 ${fmt(saturated.p99, 1)} ms; CPU per attestation: verifier ${fmt(saturated.verifierCpuMs, 2)} ms, ` +
        `load generator ${fmt(saturated.clientCpuMs, 2)} ms${errors(saturated)}`,
    },
    {
      name: `full attestation p99 at ${PACED_RATE}/s evenly spaced, SQLite`,
      value: paced.p99,
      unit: 'ms',
      ratio: P99_TARGET_MS / paced.p99,
      target: 1,
      line: `${`full attestation at ${PACED_RATE}/s evenly spaced, SQLite`.padEnd(52)} p50 ${fmt(paced.p50, 1)} ms, p99 ${fmt(paced.p99, 1)} ms (target <= ${P99_TARGET_MS} ms), ${fmt(paced.rate)}/s done${errors(paced)}`,
    },
  ];
}
