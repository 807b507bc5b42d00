// `npm run load -- --agents N --seconds S [--rate R]`: simulated agents attesting through the real HTTPS flow.
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { availableParallelism, tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { enrollAgent } from '../dist/agent/enroll.js';
import { buildAttestationRequest } from '../dist/agent/evidence.js';
import { ApiError, bootstrapCa, createApiClient } from '../dist/client/api-client.js';
import { ConfigSchema } from '../dist/config/config.js';
import { startSoftHsm } from '../dist/dev/softhsm.js';
import { AttestationResponse, BaselineBody, ChallengeResponse } from '../dist/wire/schemas.js';
import { cpuMsOf, ownCpuMs, percentile, postgresSchema, startVerifierProcess, undoAll } from './bench/attestation.mjs';
import { fmt } from './bench/measure.mjs';
import { createEkCa, createTpmAgent, startTpm } from './load-tpm.mjs';

/*
 * A verifier (`attestor serve` from dist/, in a child process, SQLite or --database PostgreSQL,
 * issuing keys in SoftHSM) and N agents in this process, each with its own TPM identity on a
 * pool of swtpm instances (load-tpm.mjs) and its own keep-alive HTTPS client. Each agent
 * enrolls (MakeCredential / ActivateCredential), then loops challenge -> TPM2_Certify +
 * TPM2_Quote -> attestation with a JWT audience, at --rate attestations/s in total (evenly
 * spaced) or as fast as it can. Nothing on the server side is bypassed: a baseline is
 * captured from the first agent and enforced like an operator would. Every ~5 s one line:
 * throughput, latency, errors, the verifier's RSS, heap and event-loop delay (its /metrics).
 * Exit 1 on any error, or when the verifier's RSS in the last third of the run (after a
 * warm-up) is more than --max-rss-growth above the first third.
 */

const root = fileURLToPath(new URL('..', import.meta.url));
const AUDIENCE = 'load-service';
const TOKEN_LABEL = 'attestor';
const REPORT_MS = 5_000;
const RSS_SAMPLE_MS = 1_000;
/** The verifier's RSS climbs while it warms up (JIT, heap, caches): the memory check starts after this. */
const WARMUP_SECONDS = 30;
/** Runs shorter than this leave too little after the warm-up: their RSS is reported, not judged. */
const MIN_JUDGED_SECONDS = 90;

const USAGE = `usage: npm run load -- --agents N --seconds S [--rate R] [--tpms K] [--database postgres://...] [--max-rss-growth 0.2] [--json]
  --agents N          simulated agents, each its own TPM identity (default 10)
  --seconds S         length of the measured run (default 60)
  --rate R            attestations per second in total, evenly spaced (default: as fast as possible)
  --tpms K            swtpm instances the agents share (default min(N, 4))
  --database URL      PostgreSQL (a private schema is created and dropped); default SQLite
  --max-rss-growth F  allowed growth of the verifier's RSS, last third over first third (default 0.2)
  --json              progress on stderr, one JSON summary on stdout`;

function options() {
  const { values } = parseArgs({
    options: {
      agents: { type: 'string', default: '10' },
      seconds: { type: 'string', default: '60' },
      rate: { type: 'string' },
      tpms: { type: 'string' },
      database: { type: 'string' },
      'max-rss-growth': { type: 'string', default: '0.2' },
      json: { type: 'boolean', default: false },
      help: { type: 'boolean', default: false },
    },
  });
  if (values.help) {
    console.log(USAGE);
    process.exit(0);
  }
  const number = (name, { integer = false, min = 0 } = {}) => {
    const v = Number(values[name]);
    if (!Number.isFinite(v) || v <= min || (integer && !Number.isInteger(v))) throw new Error(`--${name} must be a ${integer ? 'whole ' : ''}number above ${min}\n${USAGE}`);
    return v;
  };
  const agents = number('agents', { integer: true });
  return {
    agents,
    seconds: number('seconds'),
    rate: values.rate === undefined ? undefined : number('rate'),
    tpms: values.tpms === undefined ? Math.min(agents, 4) : Math.min(agents, number('tpms', { integer: true })),
    database: values.database,
    maxRssGrowth: number('max-rss-growth'),
    json: values.json,
  };
}

async function main() {
  const opts = options();
  const say = (line) => (opts.json ? process.stderr : process.stdout).write(`${line}\n`);
  const work = mkdtempSync(join(tmpdir(), 'attestor-load-'));
  const undo = [async () => rmSync(work, { recursive: true, force: true })];
  let stopEarly;
  const interrupted = new Promise((resolve) => (stopEarly = resolve));
  process.once('SIGINT', () => stopEarly());
  try {
    const setupStarted = performance.now();
    const { verifier, ekCa, admin, clientOf } = await startService(opts, work, undo);
    const pool = await startPool(opts.tpms, undo);
    const agents = await enrollAll(opts, pool, ekCa, clientOf);
    await enforceBaseline(agents[0], admin);
    say(
      `load: ${opts.agents} agents on ${opts.tpms} swtpm, ${opts.database ? 'PostgreSQL' : 'SQLite'}, ` +
        `${opts.rate ? `${opts.rate} attestations/s` : 'as fast as possible'} for ${opts.seconds} s ` +
        `(set-up ${fmt((performance.now() - setupStarted) / 1000, 1)} s; ${availableParallelism()} cores, shared with swtpm and the agents)`,
    );
    const result = await run(opts, { agents, pool, verifier, admin }, say, interrupted);
    const summary = summarize(opts, result);
    for (const line of summaryLines(summary)) say(line);
    if (opts.json) process.stdout.write(`${JSON.stringify(summary)}\n`);
    process.exitCode = summary.ok ? 0 : 1;
  } finally {
    await undoAll(undo);
  }
}

/**
 * Every per-minute budget the verifier has, raised: the whole fleet comes from 127.0.0.1, and
 * each simulated agent attests far more often than a real one renews. The other limits stay.
 */
function unthrottled() {
  const { limits } = ConfigSchema.parse({ dataDir: '.' });
  return Object.fromEntries(Object.keys(limits).filter((key) => key.endsWith('PerMinute')).map((key) => [key, 1_000_000]));
}

/** SoftHSM, the EK CA, the verifier; clients for it. */
async function startService(opts, work, undo) {
  const hsm = await startSoftHsm({ tokenLabel: TOKEN_LABEL });
  undo.push(() => hsm.stop());
  const ekCa = await createEkCa();
  const ekRoots = join(work, 'ek-roots');
  mkdirSync(ekRoots);
  writeFileSync(join(ekRoots, 'load-ek-ca.pem'), ekCa.pem);
  const pinFile = join(work, 'hsm.pin');
  writeFileSync(pinFile, `${hsm.userPin}\n`, { mode: 0o600 });
  const config = join(work, 'config.json');
  writeFileSync(config, JSON.stringify({ limits: unthrottled() }));
  const args = ['serve', '--data-dir', join(work, 'verifier'), '--config', config, '--listen', '127.0.0.1:0', '--ek-roots', ekRoots];
  args.push('--keys', `pkcs11:token=${TOKEN_LABEL}?module-path=${hsm.modulePath}&pin-source=${pinFile}`, '--log-level', 'warn');
  if (opts.database) {
    const db = await postgresSchema(opts.database);
    undo.push(() => db.drop());
    args.push('--database', `${opts.database}${opts.database.includes('?') ? '&' : '?'}schema=${db.schema}`);
  }
  const verifier = await startVerifierProcess(root, args, hsm.env);
  undo.push(() => verifier.stop());
  const caPem = await bootstrapCa(verifier.url, verifier.caFingerprint);
  const clientOf = (token) => {
    const client = createApiClient({ server: verifier.url, caPem, ...(token ? { token } : {}) });
    undo.push(async () => client.close());
    return client;
  };
  return { verifier, ekCa, admin: clientOf(verifier.adminToken), clientOf };
}

/** `count` swtpm instances, started side by side; each one started is stopped at the end, even when another failed to start. */
async function startPool(count, undo) {
  const started = await Promise.allSettled(Array.from({ length: count }, () => startTpm()));
  const pool = started.filter((s) => s.status === 'fulfilled').map((s) => s.value);
  for (const tpm of pool) undo.push(() => tpm.stop());
  const failed = started.find((s) => s.status === 'rejected');
  if (failed) throw failed.reason;
  return pool;
}

/** Each agent's TPM identity and enrollment; the instances in parallel, the agents of one in turn. */
async function enrollAll(opts, pool, ekCa, clientOf) {
  const agents = new Array(opts.agents);
  await Promise.all(
    pool.map(async (tpm, t) => {
      for (let i = t; i < opts.agents; i += pool.length) {
        const session = await createTpmAgent(tpm, ekCa);
        const client = clientOf();
        const { agentId } = await enrollAgent({ client, session, labels: { role: 'load' } });
        agents[i] = { index: i, id: agentId, client, tpm: session };
      }
    }),
  );
  return agents;
}

/** Captures a baseline from the first agent's evidence (every swtpm boots alike) and enforces it for all, with the JWT audience. */
async function enforceBaseline(agent, admin) {
  await attestOnce(agent).then(
    () => Promise.reject(new Error('an attestation without an enforced baseline was answered with credentials')),
    (e) => (e.code === 'ERR_NO_BASELINE' ? undefined : Promise.reject(e)),
  );
  const baseline = await admin.call('POST', '/v1/baselines/capture', BaselineBody, { agentId: agent.id, name: 'load', audiences: [AUDIENCE] });
  await admin.call('POST', `/v1/baselines/${baseline.id}/enforce`, BaselineBody, {});
}

/** A failed attestation, named by the server's problem code or the local error's. */
class AttestationFailure extends Error {
  constructor(code, message) {
    super(message);
    this.code = code;
  }
}

function failureOf(e) {
  if (e instanceof AttestationFailure) return e;
  if (e instanceof ApiError) return new AttestationFailure(e.remoteCode, e.message);
  return new AttestationFailure(e?.code ?? e?.name ?? 'Error', String(e?.message ?? e));
}

/**
 * challenge -> evidence from the agent's TPM -> attestation. `server`: the two HTTPS round
 * trips (what the verifier and the network cost); `total` adds the TPM, and the wait for the
 * agent's turn on its shared swtpm.
 */
async function attestOnce({ id, client, tpm }) {
  try {
    const t0 = performance.now();
    const challenge = await client.call('POST', `/v1/agents/${id}/challenges`, ChallengeResponse, {});
    const t1 = performance.now();
    const request = await tpm.attest((session) => buildAttestationRequest({ session, key: { kind: 'tpm' }, challenge, audience: AUDIENCE }));
    const t2 = performance.now();
    const { verdict, credentials } = await client.call('POST', `/v1/agents/${id}/attestations`, AttestationResponse, request);
    const t3 = performance.now();
    if (verdict.status !== 'affirming') throw new AttestationFailure(`VERDICT_${verdict.status.toUpperCase()}`, JSON.stringify(verdict.reasons));
    if (!credentials?.certificate || !credentials.jwt) throw new AttestationFailure('NO_CREDENTIALS', 'an affirming verdict without an X509-SVID and a JWT-SVID');
    return { total: t3 - t0, server: t1 - t0 + (t3 - t2) };
  } catch (e) {
    throw failureOf(e);
  }
}

/** Resident set size of a process in bytes, from /proc/<pid>/status. */
function rssOf(pid) {
  const kb = /^VmRSS:\s+(\d+) kB$/m.exec(readFileSync(`/proc/${pid}/status`, 'utf8'))?.[1];
  return Number(kb) * 1024;
}

/** Values of the verifier's own gauges in its Prometheus text. */
async function serverGauges(admin) {
  const { body } = await admin.get('/metrics');
  const gauge = (name) => Number(new RegExp(`^attestor_${name} ([0-9.e+-]+)$`, 'm').exec(body.toString())?.[1] ?? NaN);
  return { heapUsed: gauge('nodejs_heap_size_used_bytes'), eventLoopP99: gauge('nodejs_eventloop_lag_p99_seconds') * 1000 };
}

/** The timed run: every agent's loop, a sampler of the verifier's RSS and a report every REPORT_MS. */
async function run(opts, { agents, pool, verifier, admin }, say, interrupted) {
  const started = performance.now();
  let end = started + opts.seconds * 1000;
  let stop;
  const stopped = new Promise((resolve) => (stop = resolve));
  void stopped.then(() => (end = performance.now()));
  void interrupted.then(stop);
  const all = { total: [], server: [] };
  let interval = { total: [], server: [] };
  const errors = new Map();
  const noteError = (code, message) => {
    const seen = errors.get(code);
    errors.set(code, (seen ?? 0) + 1);
    if (seen === undefined) say(`load: first ${code}: ${message}`);
  };
  const rss = [];
  const sampleRss = () => {
    try {
      rss.push({ at: performance.now() - started, bytes: rssOf(verifier.pid) });
    } catch {
      noteError('VERIFIER_EXITED', 'the verifier process is gone; the run stops');
      stop();
    }
  };
  const reports = [];
  // NaN once a process is gone (the verifier that exited).
  const cpuOf = (pid) => {
    try {
      return cpuMsOf(pid);
    } catch {
      return NaN;
    }
  };
  const cpu = () => ({ verifier: cpuOf(verifier.pid), agents: ownCpuMs(), swtpm: pool.reduce((sum, tpm) => sum + cpuOf(tpm.pid), 0) });
  const cpuBefore = cpu();
  const sampler = setInterval(sampleRss, RSS_SAMPLE_MS);
  sampleRss();
  let lastReport = started;
  const report = async () => {
    const now = performance.now();
    const gauges = await serverGauges(admin).catch(() => ({ heapUsed: NaN, eventLoopP99: NaN }));
    const row = {
      at: (now - started) / 1000,
      rate: interval.total.length / ((now - lastReport) / 1000),
      latency: latencyOf(interval.total),
      server: latencyOf(interval.server),
      errors: Object.fromEntries(errors),
      rss: rss[rss.length - 1].bytes,
      ...gauges,
    };
    reports.push(row);
    say(reportLine(row));
    interval = { total: [], server: [] };
    lastReport = now;
  };
  const reporter = setInterval(() => void report(), REPORT_MS);

  const loop = async (agent) => {
    for (let slot = agent.index; ; slot += agents.length) {
      const due = opts.rate ? started + (slot * 1000) / opts.rate : performance.now();
      if (due >= end) return;
      const wait = due - performance.now();
      if (wait > 0) await Promise.race([new Promise((r) => setTimeout(r, wait)), stopped]);
      if (performance.now() >= end) return;
      try {
        const t = await attestOnce(agent);
        for (const key of ['total', 'server']) {
          all[key].push(t[key]);
          interval[key].push(t[key]);
        }
      } catch (e) {
        noteError(e.code, e.message);
      }
    }
  };
  try {
    await Promise.all(agents.map(loop));
  } finally {
    clearInterval(sampler);
    clearInterval(reporter);
  }
  const seconds = (performance.now() - started) / 1000;
  if (performance.now() - lastReport > REPORT_MS / 5) await report();
  const cpuAfter = cpu();
  const cpuMs = Object.fromEntries(Object.keys(cpuAfter).map((k) => [k, cpuAfter[k] - cpuBefore[k]]));
  return { all, errors, rss, reports, seconds, cpuMs };
}

function latencyOf(times) {
  const sorted = [...times].sort((a, b) => a - b);
  if (sorted.length === 0) return { n: 0 };
  return { n: sorted.length, p50: percentile(sorted, 50), p90: percentile(sorted, 90), p99: percentile(sorted, 99), max: sorted[sorted.length - 1] };
}

const mb = (bytes) => bytes / (1024 * 1024);
const ms = (x) => (Number.isFinite(x) ? fmt(x, 1) : '-');
const mbText = (bytes) => (Number.isFinite(bytes) ? fmt(mb(bytes), 1) : '-');
const latencyText = (l) => `p50 ${ms(l.p50)} p90 ${ms(l.p90)} p99 ${ms(l.p99)} max ${ms(l.max)} ms`;
const errorsText = (errors) => Object.entries(errors).map(([code, n]) => `${code} ${n}`).join(', ') || 'none';

function reportLine(r) {
  return (
    `${fmt(r.at, 0).padStart(5)} s  ${fmt(r.rate, 1).padStart(6)}/s  server ${latencyText(r.server)}  end-to-end p50 ${ms(r.latency.p50)} p99 ${ms(r.latency.p99)} ms  ` +
    `errors: ${errorsText(r.errors)}  RSS ${mbText(r.rss)} MB  heap ${mbText(r.heapUsed)} MB  event loop p99 ${ms(r.eventLoopP99)} ms`
  );
}

/** Mean RSS of the samples taken between `from` and `to` seconds into the run. */
function meanBetween(samples, from, to) {
  const picked = samples.filter((s) => s.at >= from * 1000 && s.at < to * 1000).map((s) => s.bytes);
  return picked.reduce((a, b) => a + b, 0) / picked.length;
}

function summarize(opts, r) {
  const attestations = r.all.total.length;
  const errors = Object.fromEntries(r.errors);
  const errorCount = Object.values(errors).reduce((a, b) => a + b, 0);
  // Thirds of the run after the warm-up; a run too short to be judged is reported whole.
  const judged = r.seconds >= MIN_JUDGED_SECONDS;
  const warmup = judged ? WARMUP_SECONDS : 0;
  const third = (r.seconds - warmup) / 3;
  const first = meanBetween(r.rss, warmup, warmup + third);
  const last = meanBetween(r.rss, r.seconds - third, Infinity);
  const growth = last / first - 1;
  const memoryOk = !judged || growth <= opts.maxRssGrowth;
  const heap = r.reports.map((x) => x.heapUsed).filter(Number.isFinite);
  const lag = r.reports.map((x) => x.eventLoopP99).filter(Number.isFinite);
  return {
    agents: opts.agents,
    tpms: opts.tpms,
    store: opts.database ? 'postgresql' : 'sqlite',
    requestedRate: opts.rate ?? null,
    seconds: r.seconds,
    attestations,
    throughput: attestations / r.seconds,
    latencyMs: { server: latencyOf(r.all.server), endToEnd: latencyOf(r.all.total) },
    cpuMsPerAttestation: attestations ? Object.fromEntries(Object.entries(r.cpuMs).map(([k, v]) => [k, v / attestations])) : null,
    errors,
    rss: {
      firstThirdMb: mb(first),
      lastThirdMb: mb(last),
      maxMb: mb(Math.max(...r.rss.map((s) => s.bytes))),
      growth,
      bound: opts.maxRssGrowth,
      warmupSeconds: warmup,
      judged,
    },
    heapUsedMb: heap.length ? { first: mb(heap[0]), last: mb(heap[heap.length - 1]), max: mb(Math.max(...heap)) } : null,
    eventLoopP99MsMax: lag.length ? Math.max(...lag) : null,
    intervals: r.reports,
    ok: errorCount === 0 && attestations > 0 && memoryOk,
  };
}

function summaryLines(s) {
  const pct = (x) => `${x >= 0 ? '+' : ''}${fmt(x * 100, 1)} %`;
  const rssVerdict = !s.rss.judged
    ? `not judged (a run under ${MIN_JUDGED_SECONDS} s leaves too little after the ${WARMUP_SECONDS} s warm-up)`
    : s.rss.growth <= s.rss.bound
      ? `flat (bound ${pct(s.rss.bound)})`
      : `GROWING (bound ${pct(s.rss.bound)})`;
  return [
    '',
    `attestations   ${s.attestations} in ${fmt(s.seconds, 1)} s = ${fmt(s.throughput, 1)}/s${s.requestedRate ? ` (requested ${s.requestedRate}/s)` : ''}; ` +
      (s.cpuMsPerAttestation ? `CPU each: ${Object.entries(s.cpuMsPerAttestation).map(([who, x]) => `${who} ${Number.isFinite(x) ? fmt(x, 2) : '-'} ms`).join(', ')}` : ''),
    `server         ${latencyText(s.latencyMs.server)} (challenge + attestation round trips)`,
    `end-to-end     ${latencyText(s.latencyMs.endToEnd)} (adds the TPM and the wait for the agent's turn on its swtpm)`,
    `errors         ${errorsText(s.errors)}`,
    `verifier RSS   after ${s.rss.warmupSeconds} s warm-up: first third ${fmt(s.rss.firstThirdMb, 1)} MB, last third ${fmt(s.rss.lastThirdMb, 1)} MB (${pct(s.rss.growth)}), max ${fmt(s.rss.maxMb, 1)} MB: ${rssVerdict}`,
    s.heapUsedMb ? `verifier heap  ${fmt(s.heapUsedMb.first, 1)} -> ${fmt(s.heapUsedMb.last, 1)} MB used (max ${fmt(s.heapUsedMb.max, 1)} MB); event loop p99 at most ${ms(s.eventLoopP99MsMax)} ms` : 'verifier heap  not reported by /metrics',
    s.ok ? 'load: PASS' : 'load: FAIL',
  ];
}

await main();
