import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { bootstrapCa, createApiClient } from '../../dist/client/api-client.js';
import { agentIdOf } from '../../dist/tpm/agent-id.js';
import { z } from 'zod';
import { percentile, startVerifierProcess, undoAll, verifierToken } from './attestation.mjs';
import { fmt } from './measure.mjs';
import { seedAgents, softAkPublic, softEkPublic } from './soft-agent.mjs';

/*
 * Fleet size (SQLite): a verifier with 100 enrolled agents and one with 100,000, each agent
 * seeded through the store's own activation with real EK and AK public areas, both running at
 * once. For the routes called per host or per page, the p50 of sequential keep-alive HTTPS
 * requests, sent to the two verifiers in turn (so a busy moment of this machine slows both
 * alike), and each server's RSS after them. Targets: no route more than 1.5x slower with
 * 100,000 agents than with 100, and an RSS of at most 250 MB with 100,000.
 */

const SMALL = 100;
const LARGE = 100_000;
const REQUESTS = 300;
const WARMUP = 50;
const SLOWDOWN_TARGET = 1.5;
const RSS_TARGET_MB = 250;

export async function benchFleet(root) {
  const work = mkdtempSync(join(tmpdir(), 'attestor-bench-fleet-'));
  const undo = [async () => rmSync(work, { recursive: true, force: true })];
  try {
    const { hsm, keys } = await verifierToken(work, undo);
    const small = await startFleet(root, work, SMALL, keys, hsm.env, undo);
    const large = await startFleet(root, work, LARGE, keys, hsm.env, undo);
    const timings = { small: {}, large: {} };
    for (const name of Object.keys(small.routes)) {
      const [onSmall, onLarge] = await p50sInTurn(small.routes[name], large.routes[name]);
      timings.small[name] = onSmall;
      timings.large[name] = onLarge;
    }
    return report({ timings: timings.small, rssMb: small.rssMb() }, { timings: timings.large, rssMb: large.rssMb() });
  } finally {
    await undoAll(undo);
  }
}

/** Seeds `count` agents into a fresh data dir and starts a verifier on it: its routes to time, and its RSS. */
async function startFleet(root, work, count, keys, env, undo) {
  const dataDir = join(work, `fleet-${count}`);
  const ids = await seed(dataDir, count);
  const config = join(work, `config-${count}.json`);
  writeFileSync(config, JSON.stringify({ limits: { challengesPerMinute: 1_000_000, agentRequestsPerMinute: 1_000_000 } }));
  const verifier = await startVerifierProcess(root, ['serve', '--data-dir', dataDir, '--config', config, '--listen', '127.0.0.1:0', '--keys', keys, '--log-level', 'warn'], env);
  undo.push(() => verifier.stop());
  const caPem = await bootstrapCa(verifier.url, verifier.caFingerprint);
  const anon = createApiClient({ server: verifier.url, caPem });
  const admin = createApiClient({ server: verifier.url, caPem, token: verifier.adminToken });
  undo.push(async () => {
    anon.close();
    admin.close();
  });
  const any = () => ids[Math.floor(Math.random() * ids.length)];
  const sorted = [...ids].sort();
  const pageStart = () => (sorted.length > 100 ? `&after=${sorted[Math.floor(Math.random() * (sorted.length - 100))]}` : '');
  const body = z.unknown();
  return {
    routes: {
      'POST /v1/agents/{id}/challenges': () => anon.call('POST', `/v1/agents/${any()}/challenges`, body, {}),
      'GET /v1/agents/{id}': () => admin.call('GET', `/v1/agents/${any()}`, body),
      'GET /v1/agents?limit=100 (a full page from anywhere)': () => admin.call('GET', `/v1/agents?limit=100${pageStart()}`, body),
      'GET /v1/audit?limit=100': () => admin.call('GET', '/v1/audit?limit=100', body),
    },
    rssMb: () => Number(/^VmRSS:\s+(\d+) kB$/m.exec(readFileSync(`/proc/${verifier.pid}/status`, 'utf8'))?.[1]) / 1024,
  };
}

/** The p50 of `a` and of `b`, called one after the other in turns, the first of each turn alternating. */
async function p50sInTurn(a, b) {
  for (let i = 0; i < WARMUP; i++) await Promise.all([a(), b()]);
  const times = [[], []];
  const timed = async (call, into) => {
    const t = performance.now();
    await call();
    into.push(performance.now() - t);
  };
  for (let i = 0; i < REQUESTS; i++) {
    if (i % 2 === 0) {
      await timed(a, times[0]);
      await timed(b, times[1]);
    } else {
      await timed(b, times[1]);
      await timed(a, times[0]);
    }
  }
  return times.map((t) => percentile(t.sort((x, y) => x - y), 50));
}

/** `count` agents enrolled (seeded) in the SQLite database of `dataDir`, their ids. */
async function seed(dataDir, count) {
  const agents = Array.from({ length: count }, () => {
    const ekPublic = softEkPublic();
    return { id: agentIdOf(ekPublic), ekPublic, akPublic: softAkPublic() };
  });
  await seedAgents({ dataDir }, agents);
  return agents.map((a) => a.id);
}

function report(small, large) {
  const rows = Object.keys(small.timings).map((name) => {
    const ratio = small.timings[name] / large.timings[name];
    return {
      name: `${name} with ${fmt(LARGE)} agents`,
      value: large.timings[name],
      unit: 'ms p50',
      baseline: { name: `the same with ${SMALL} agents`, value: small.timings[name], unit: 'ms p50' },
      ratio,
      // No more than 1.5x slower: the ratio small/large at least 1/1.5.
      target: 1 / SLOWDOWN_TARGET,
      line: `${name.padEnd(54)} p50 ${fmt(small.timings[name], 2)} ms with ${SMALL} agents, ${fmt(large.timings[name], 2)} ms with ${fmt(LARGE)} (${fmt(large.timings[name] / small.timings[name], 2)}x, target <= ${SLOWDOWN_TARGET}x)`,
    };
  });
  rows.push({
    name: `verifier RSS with ${fmt(LARGE)} agents`,
    value: large.rssMb,
    unit: 'MB',
    baseline: { name: `with ${SMALL} agents`, value: small.rssMb, unit: 'MB' },
    ratio: RSS_TARGET_MB / large.rssMb,
    target: 1,
    line: `${'verifier RSS after the requests'.padEnd(54)} ${fmt(small.rssMb, 1)} MB with ${SMALL} agents, ${fmt(large.rssMb, 1)} MB with ${fmt(LARGE)} (target <= ${RSS_TARGET_MB} MB)`,
  });
  return rows;
}
