import { mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { Agent as HttpsAgent, request } from 'node:https';
import { cpus, tmpdir } from 'node:os';
import { join } from 'node:path';
import { bootstrapCa, createApiClient } from '../../dist/client/api-client.js';
import { decodeBody, encodeBody } from '../../dist/wire/codec.js';
import { BaselineBody, ChallengeResponse } from '../../dist/wire/schemas.js';
import { cpuMsOf, mainThreadCpuMsOf, ownCpuMs, percentile, PG_URL, postgresSchema, startVerifierProcess, undoAll, verifierToken, withSchema } from './attestation.mjs';
import { fmt } from './measure.mjs';
import { createSoftAgent, seedAgents } from './soft-agent.mjs';

/*
 * Full attestations per second with the verifier as the bottleneck: software agents
 * (soft-agent.mjs, one ECDSA signature per quote and per certification) in this process,
 * CONCURRENCY of them in flight over HTTPS, each attestation a challenge and an attestation
 * answered with an X509-SVID and a JWT-SVID through SoftHSM. On SQLite: over keep-alive
 * connections, then at 300 attestations/s evenly spaced for its p99, then with a new TLS
 * connection (a full handshake) per attestation. On PostgreSQL: one verifier over keep-alive
 * and with new connections, then two verifier processes on the same database, the load split
 * between them. The load generator shares the 2 cores; the CPU each part spent per
 * attestation (verifiers, PostgreSQL's processes, this one) is reported beside each rate.
 */

const AGENTS = 200;
const CONCURRENCY = 32;
const SECONDS = 10;
const WARMUP_SECONDS = 2;
const PACED_RATE = 300;
const AUDIENCE = 'bench-service';
const RATE_TARGET = 1500;
const P99_TARGET_MS = 20;
const REPLICAS_TARGET = 1.6;

export async function benchThroughput(root) {
  const work = mkdtempSync(join(tmpdir(), 'attestor-bench-throughput-'));
  const undo = [async () => rmSync(work, { recursive: true, force: true })];
  try {
    const { hsm, keys } = await verifierToken(work, undo);
    const agents = Array.from({ length: AGENTS }, createSoftAgent);
    const setup = { root, work, keys, env: hsm.env, agents };
    const config = join(work, 'config.json');
    writeFileSync(config, JSON.stringify({ limits: { challengesPerMinute: 10_000_000, agentRequestsPerMinute: 10_000_000, connectionsPerAddress: 4096 } }));
    setup.config = config;

    const sqlite = await startFleet(setup, { name: 'sqlite' });
    const sqliteRuns = await runsOn(sqlite, { paced: true });
    await sqlite.stop();

    const db = await postgresSchema();
    undo.push(() => db.drop());
    const postgres = await startFleet(setup, { name: 'postgres', database: withSchema(PG_URL, db.schema) });
    undo.push(() => postgres.stop());
    const postgresRuns = await runsOn(postgres, { paced: false });
    await postgres.addReplica();
    const twoReplicas = await measured(postgres.pids, () => run(postgres.connect(), agents, { seconds: SECONDS }));
    return report(sqliteRuns, postgresRuns, twoReplicas);
  } finally {
    await undoAll(undo);
  }
}

/**
 * Verifiers on one store (SQLite in its data directory, or `database`) with the agents
 * enrolled and a baseline captured from the first one's evidence enforced. `connect(opts)`
 * gives the attestations' way to them, spread over every verifier started.
 */
async function startFleet(setup, { name, database }) {
  const undo = [];
  const dataDir = (i) => join(setup.work, `${name}-${i}`);
  const where = database ? { database } : { dataDir: dataDir(0) };
  await seedAgents(where, setup.agents);
  const verifiers = [];
  const start = async (replica) => {
    const args = ['serve', '--data-dir', dataDir(verifiers.length), '--config', setup.config, '--listen', '127.0.0.1:0', '--keys', setup.keys, '--log-level', 'warn'];
    const verifier = await startVerifierProcess(setup.root, database ? [...args, '--database', database] : args, setup.env, { replica });
    undo.push(() => verifier.stop());
    verifiers.push(verifier);
    return verifier;
  };
  const first = await start(false);
  const caPem = await bootstrapCa(first.url, first.caFingerprint);
  const admin = createApiClient({ server: first.url, caPem, token: first.adminToken });
  undo.push(async () => admin.close());
  const connect = ({ fresh = false } = {}) => connectTo(verifiers.map((v) => v.url), caPem, { fresh });

  // Without an enforced baseline the first agent's evidence is kept: captured, then enforced.
  const once = connect();
  await attestOnce(once.next().post, setup.agents[0], undefined).then(
    () => Promise.reject(new Error('affirmed without a baseline')),
    (e) => (e.code === 'ERR_NO_BASELINE' ? undefined : Promise.reject(e)),
  );
  once.close();
  const baseline = await admin.call('POST', '/v1/baselines/capture', BaselineBody, { agentId: setup.agents[0].id, name: 'bench', audiences: [AUDIENCE] });
  await admin.call('POST', `/v1/baselines/${baseline.id}/enforce`, BaselineBody, {});
  return {
    agents: setup.agents,
    get pids() {
      return verifiers.map((v) => v.pid);
    },
    connect,
    /**
     * The first verifier's event loop from its /metrics: its delay since the previous call
     * (node's monitorEventLoopDelay: each scrape reads the histogram and resets it), and its
     * garbage collections so far (counts and seconds by kind, cumulative: callers subtract).
     */
    async loopStats() {
      const text = (await admin.get('/metrics')).body.toString();
      const value = (metric) => Number(new RegExp(`^attestor_${metric} ([0-9.e+-]+)$`, 'm').exec(text)?.[1] ?? NaN);
      const ms = (name) => 1000 * value(`nodejs_eventloop_lag_${name}_seconds`);
      const gc = (kind, part) => value(`nodejs_gc_duration_seconds_${part}\\{${part === 'bucket' ? 'le="0.01",' : ''}kind="${kind}"\\}`) || 0;
      const minor = { count: gc('minor', 'count'), seconds: gc('minor', 'sum'), within10ms: gc('minor', 'bucket') };
      const seconds = ['minor', 'major', 'incremental', 'weakcb'].reduce((sum, kind) => sum + gc(kind, 'sum'), 0);
      return { p99: ms('p99'), max: ms('max'), gc: { minor, seconds } };
    },
    addReplica: () => start(true),
    stop: () => undoAll(undo.splice(0)),
  };
}

/** The runs on one verifier: saturated over keep-alive, evenly spaced (`paced`), and with a new connection per attestation. */
async function runsOn(fleet, { paced }) {
  await run(fleet.connect(), fleet.agents, { seconds: WARMUP_SECONDS });
  const keepAlive = await measured(fleet.pids, () => run(fleet.connect(), fleet.agents, { seconds: SECONDS }));
  let evenly;
  if (paced) {
    const before = await fleet.loopStats();
    evenly = await measured(fleet.pids, () => run(fleet.connect(), fleet.agents, { seconds: SECONDS, rate: PACED_RATE }));
    const after = await fleet.loopStats();
    const minor = (key) => after.gc.minor[key] - before.gc.minor[key];
    evenly.loop = { p99: after.p99, max: after.max, gcMs: 1000 * (after.gc.seconds - before.gc.seconds), scavenges: minor('count'), scavengeMs: 1000 * minor('seconds'), scavengesOver10ms: minor('count') - minor('within10ms') };
  }
  const fresh = await measured(fleet.pids, () => run(fleet.connect({ fresh: true }), fleet.agents, { seconds: SECONDS }));
  return { keepAlive, paced: evenly, fresh };
}

/**
 * The run's figures, the CPU the verifiers, PostgreSQL's processes and this process spent per
 * attestation, and how much of the machine's CPU time went unused (`idle`, 0-1).
 */
async function measured(pids, work) {
  const cpu = () => pids.reduce((sum, pid) => sum + cpuMsOf(pid), 0);
  // The event loop's thread apart: the store's thread and V8's helpers run beside it.
  const loop = () => pids.reduce((sum, pid) => sum + mainThreadCpuMsOf(pid), 0);
  const [v0, l0, p0, c0, m0] = [cpu(), loop(), postgresCpu(), ownCpuMs(), machineTicks()];
  const r = await work();
  const m1 = machineTicks();
  const l1 = loop();
  const p1 = postgresCpu();
  // A backend that started meanwhile (a verifier's pool opening connections) spent all its CPU
  // in the run; one that ended meanwhile is left out.
  const postgresMs = [...p1].reduce((sum, [pid, ms]) => sum + ms - (p0.get(pid) ?? 0), 0);
  const idle = (m1.idle - m0.idle) / (m1.total - m0.total);
  return { ...r, idle, verifierCpuMs: (cpu() - v0) / r.done, eventLoopCpuMs: (l1 - l0) / r.done, postgresCpuMs: postgresMs / r.done, clientCpuMs: (ownCpuMs() - c0) / r.done };
}

/** The machine's CPU time so far, all cores, in clock ticks (/proc/stat): idle (and waiting for I/O) and total. */
function machineTicks() {
  const ticks = readFileSync('/proc/stat', 'utf8').split('\n', 1)[0].trim().split(/\s+/).slice(1).map(Number);
  return { idle: ticks[3] + ticks[4], total: ticks.reduce((sum, t) => sum + t, 0) };
}

/** CPU ms by pid of PostgreSQL's processes on this machine (its backends hold the verifiers' pooled connections). */
function postgresCpu() {
  const found = new Map();
  for (const pid of readdirSync('/proc').filter((name) => /^[0-9]+$/.test(name))) {
    try {
      if (readFileSync(`/proc/${pid}/comm`, 'utf8').trim() === 'postgres') found.set(pid, cpuMsOf(pid));
    } catch {
      // ended meanwhile
    }
  }
  return found;
}

/**
 * How each attestation reaches the verifiers (taken in turn): the keep-alive connections of
 * one agent per verifier, or (`fresh`) an agent of its own, so a new TLS connection with a
 * full handshake (an agent caches TLS sessions for its own connections only).
 */
function connectTo(urls, caPem, { fresh }) {
  let turn = 0;
  if (fresh) {
    return {
      next() {
        const agent = new HttpsAgent({ keepAlive: true, maxSockets: 1, ca: caPem });
        return { post: postWith(urls[turn++ % urls.length], agent), done: () => agent.destroy() };
      },
      close() {},
    };
  }
  const agents = urls.map(() => new HttpsAgent({ keepAlive: true, maxSockets: CONCURRENCY, ca: caPem }));
  const posts = urls.map((url, i) => postWith(url, agents[i]));
  return {
    next: () => ({ post: posts[turn++ % posts.length], done() {} }),
    close: () => agents.forEach((a) => a.destroy()),
  };
}

/** Attestations for `seconds`: CONCURRENCY at a time, or started evenly at `rate` a second. */
async function run(connection, agents, { seconds, rate }) {
  const latencies = [];
  const errors = {};
  let next = 0;
  const started = performance.now();
  const end = started + seconds * 1000;
  const one = async (scheduled) => {
    const agent = agents[next++ % agents.length];
    const { post, done } = connection.next();
    try {
      await attestOnce(post, agent, AUDIENCE);
      latencies.push(performance.now() - scheduled);
    } catch (e) {
      errors[e.code ?? e.message] = (errors[e.code ?? e.message] ?? 0) + 1;
    } finally {
      done();
    }
  };
  try {
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
  } finally {
    connection.close();
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

/** A JSON POST through `agent`; a problem answer rejects with its code. */
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

function report(sqlite, postgres, twoReplicas) {
  const errors = (r) => (Object.keys(r.errors).length ? `, errors ${JSON.stringify(r.errors)}` : ', 0 errors');
  // What the machine's cores allow at that CPU per attestation, every part on them busy all the time.
  const cpu = (r) => {
    const total = r.verifierCpuMs + r.postgresCpuMs + r.clientCpuMs;
    // PostgreSQL's own share bounds the rate whatever the verifiers cost.
    const postgresPart = r.postgresCpuMs > 0.05 ? `PostgreSQL ${fmt(r.postgresCpuMs, 2)} ms (alone at most ${fmt((cpus().length * 1000) / r.postgresCpuMs)}/s), ` : '';
    return `CPU per attestation: verifier ${fmt(r.verifierCpuMs, 2)} ms (${fmt(r.eventLoopCpuMs, 2)} on its event loop's thread), ${postgresPart}load generator ${fmt(r.clientCpuMs, 2)} ms (${cpus().length} cores: at most ${fmt((cpus().length * 1000) / total)}/s); the cores ${fmt(100 * r.idle)} % idle`;
  };
  const saturatedRow = (r, store, how) => ({
    name: `full attestations/s, ${CONCURRENCY} in flight, ${how}, ${store}, software agents`,
    value: r.rate,
    unit: 'attestations/s',
    ratio: r.rate / RATE_TARGET,
    target: 1,
    line: `${`full attestation, ${CONCURRENCY} in flight, ${how}, ${store}`.padEnd(60)} ${fmt(r.rate)}/s (target >= ${fmt(RATE_TARGET)}), p50 ${fmt(r.p50, 1)} ms, p99 ${fmt(r.p99, 1)} ms; ${cpu(r)}${errors(r)}`,
  });
  // Beside the keep-alive figure it is measured against: what a TLS handshake per attestation costs.
  const freshRow = (r, keepAlive, store) => ({
    name: `full attestations/s, ${CONCURRENCY} in flight, a new TLS connection each, ${store}, software agents`,
    value: r.rate,
    unit: 'attestations/s',
    baseline: { name: `the same over keep-alive`, value: keepAlive.rate, unit: 'attestations/s' },
    ratio: r.rate / keepAlive.rate,
    line: `${`  the same, a new TLS connection each, ${store}`.padEnd(60)} ${fmt(r.rate)}/s (${fmt(r.rate / keepAlive.rate, 2)}x keep-alive), p50 ${fmt(r.p50, 1)} ms, p99 ${fmt(r.p99, 1)} ms; ${cpu(r)}${errors(r)}`,
  });
  return [
    saturatedRow(sqlite.keepAlive, 'SQLite', 'keep-alive'),
    {
      name: `full attestation p99 at ${PACED_RATE}/s evenly spaced, SQLite`,
      value: sqlite.paced.p99,
      unit: 'ms',
      ratio: P99_TARGET_MS / sqlite.paced.p99,
      target: 1,
      line:
        `${`  at ${PACED_RATE}/s evenly spaced, SQLite`.padEnd(60)} p50 ${fmt(sqlite.paced.p50, 1)} ms, p99 ${fmt(sqlite.paced.p99, 1)} ms (target <= ${P99_TARGET_MS} ms), ${fmt(sqlite.paced.rate)}/s done; ` +
        // How busy the thread every request passes through was: what requests queue behind.
        `the verifier's event loop busy ${fmt((sqlite.paced.eventLoopCpuMs * sqlite.paced.rate) / 10)} % of the time, its delay p99 ${fmt(sqlite.paced.loop.p99, 1)} ms ` +
        `(max ${fmt(sqlite.paced.loop.max, 1)}); garbage collection held it ${fmt(sqlite.paced.loop.gcMs)} ms in the run, of which ${fmt(sqlite.paced.loop.scavenges)} young-generation ` +
        `collections ${fmt(sqlite.paced.loop.scavengeMs)} ms (${fmt(sqlite.paced.loop.scavengeMs / sqlite.paced.loop.scavenges, 1)} ms each, ${fmt(sqlite.paced.loop.scavengesOver10ms)} over 10 ms); ` +
        `the whole verifier ${fmt(sqlite.paced.verifierCpuMs, 2)} ms of CPU per attestation${errors(sqlite.paced)}`,
    },
    freshRow(sqlite.fresh, sqlite.keepAlive, 'SQLite'),
    saturatedRow(postgres.keepAlive, 'PostgreSQL', 'keep-alive'),
    freshRow(postgres.fresh, postgres.keepAlive, 'PostgreSQL'),
    {
      name: `full attestations/s, two verifier processes on one PostgreSQL, vs one`,
      value: twoReplicas.rate,
      unit: 'attestations/s',
      baseline: { name: 'one verifier process', value: postgres.keepAlive.rate, unit: 'attestations/s' },
      ratio: twoReplicas.rate / postgres.keepAlive.rate,
      target: REPLICAS_TARGET,
      line:
        `${'  two verifier processes on one PostgreSQL'.padEnd(60)} ${fmt(twoReplicas.rate)}/s, ${fmt(twoReplicas.rate / postgres.keepAlive.rate, 2)}x one (target >= ${REPLICAS_TARGET}x), ` +
        `p50 ${fmt(twoReplicas.p50, 1)} ms, p99 ${fmt(twoReplicas.p99, 1)} ms; ${cpu(twoReplicas)}${errors(twoReplicas)}; ` +
        // A second process can only use the CPU time the first left: its ceiling on these cores.
        `one verifier left ${fmt(100 * postgres.keepAlive.idle)} % of the cores idle: two at the same CPU per attestation can reach at most ${fmt(1 / (1 - postgres.keepAlive.idle), 2)}x`,
    },
  ];
}
