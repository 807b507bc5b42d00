import { spawn, spawnSync } from 'node:child_process';
import { createHash, randomBytes, verify } from 'node:crypto';
import { mkdirSync, mkdtempSync, readdirSync, readFileSync, readlinkSync, rmSync, writeFileSync } from 'node:fs';
import { createServer } from 'node:https';
import { availableParallelism, tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import pg from 'pg';
import pkcs11js from 'pkcs11js';
import { z } from 'zod';
import { enrollAgent } from '../../dist/agent/enroll.js';
import { buildAttestationRequest } from '../../dist/agent/evidence.js';
import { TpmSession } from '../../dist/agent/tpm-session.js';
import { bootstrapCa, createApiClient } from '../../dist/client/api-client.js';
import { startSoftHsm } from '../../dist/dev/softhsm.js';
import { startSwtpm } from '../../dist/dev/swtpm.js';
import { Pkcs11Session } from '../../dist/pkcs11/module.js';
import { curveInfo } from '../../dist/tpm/constants.js';
import { leftPad, publicKeyOf } from '../../dist/tpm/public-key.js';
import { parseTpm2bPublic } from '../../dist/tpm/public.js';
import { parseSignature } from '../../dist/tpm/signature.js';
import { AttestationResponse, BaselineBody, ChallengeResponse } from '../../dist/wire/schemas.js';
import { fmt, rate } from './measure.mjs';

/*
 * The service end to end on this machine, once on SQLite and once on PostgreSQL: a verifier
 * (`attestor serve`, its issuing keys in SoftHSM) in a child process, so that its CPU time is
 * its own, and in this process an agent on one swtpm with a keep-alive HTTPS client. One
 * attestation = challenge request -> TPM2_Certify + TPM2_Quote (the agent modules) ->
 * attestation request -> X509-SVID and JWT-SVID. Figures: the latency of sequential
 * attestations and its split, the rate of one client loop, and the CPU each process spends
 * per attestation (from /proc/<pid>/stat, all threads; for PostgreSQL also the backends
 * serving the verifier's connections). Baselines from the same run: crypto.verify of the
 * AK's quote signature, SoftHSM C_Sign with the verifier's CA key, and a keep-alive POST of
 * the same body to a bare node:https server in a child process. DESIGN's >= 1,500/s is for
 * many concurrent clients without a TPM in the loop, which one sequential client with a TPM
 * cannot reach: it is shown next to the ceiling the server's CPU allows, informational, not
 * checked; no figure here has a target.
 */

const SEQUENTIAL = 300;
/** Enrollments timed per store: the agent's TPM side (a CreatePrimary of the EK, ActivateCredential) is most of each. */
const ENROLLMENTS = 40;
const WARMUP = 20;
const LOOP_MS = 10_000;
const FLOOR_REQUESTS = 2000;
const FLOOR_WARMUP = 200;
const AUDIENCE = 'bench-service';
const TOKEN_LABEL = 'attestor';
export const PG_URL = 'postgres://postgres@127.0.0.1:5432/test';
const PG_PORT = 5432;
/** DESIGN "Targets": full HTTPS attestations with issuance per second on 2 cores. */
const DESIGN_RATE = 1500;
/** argv[2] that makes this module the bare HTTPS server of the floor baseline. */
const FLOOR_SERVER = '--https-floor-server';

export async function benchAttestation(root) {
  const work = mkdtempSync(join(tmpdir(), 'attestor-bench-'));
  const undo = [async () => rmSync(work, { recursive: true, force: true })];
  try {
    const sw = await startSwtpm();
    undo.push(() => sw.stop());
    const { hsm, keys } = await verifierToken(work, undo);
    const ekRoots = join(work, 'ek-roots');
    mkdirSync(ekRoots);
    writeFileSync(join(ekRoots, 'swtpm-root.pem'), sw.rootCaCertPem);
    writeFileSync(join(ekRoots, 'swtpm-issuer.pem'), sw.caCertPem);
    const session = await TpmSession.open({ tcti: sw.tcti, stateDir: join(work, 'agent') });
    undo.push(() => session.close());

    const setup = { root, work, sw, hsm, session, ekRoots, keys };
    const stores = [await benchStore(setup, 'sqlite'), await benchStore(setup, 'postgres')];
    // A quote of this run, for the crypto.verify baseline and as the body of the bare POSTs.
    const { request } = stores[1];
    const baselines = {
      verify: quoteVerifyRate(session, request),
      sign: await cSignRate(hsm),
      https: await httpsFloor(work, request),
    };
    return report(stores, baselines);
  } finally {
    await undoAll(undo);
  }
}

/**
 * A SoftHSM token for the verifier's issuing keys, its PIN in a file of `work` (stopped by
 * `undo`): the `--keys` URI and the token, whose `env` `attestor serve` is started with.
 */
export async function verifierToken(work, undo) {
  const hsm = await startSoftHsm({ tokenLabel: TOKEN_LABEL });
  undo.push(() => hsm.stop());
  const pinFile = join(work, 'hsm.pin');
  writeFileSync(pinFile, `${hsm.userPin}\n`, { mode: 0o600 });
  return { hsm, keys: `pkcs11:token=${TOKEN_LABEL}?module-path=${hsm.modulePath}&pin-source=${pinFile}` };
}

/** Runs clean-up steps last first, each even when an earlier one failed; failures are reported, not thrown over the bench's own error. */
export async function undoAll(steps) {
  for (const step of steps.reverse()) await step().catch((e) => console.error(`clean-up failed: ${e.message}`));
}

/** One verifier on `store`: enroll, capture and enforce a baseline, then the timed runs. */
async function benchStore(setup, store) {
  const undo = [];
  try {
    const dataDir = join(setup.work, `verifier-${store}`);
    // One client attesting back to back is the load measured here, not an abuse: no per-address challenge limit.
    const config = join(setup.work, `config-${store}.json`);
    writeFileSync(config, JSON.stringify({ limits: { challengesPerMinute: 1_000_000, agentRequestsPerMinute: 1_000_000, enrollmentsPerMinute: 1_000_000 } }));
    const args = ['serve', '--data-dir', dataDir, '--config', config, '--listen', '127.0.0.1:0', '--ek-roots', setup.ekRoots, '--keys', setup.keys, '--log-level', 'warn'];
    let db;
    if (store === 'postgres') {
      db = await postgresSchema();
      undo.push(() => db.drop());
      args.push('--database', withSchema(PG_URL, db.schema));
    }
    const verifier = await startVerifierProcess(setup.root, args, setup.hsm.env);
    undo.push(() => verifier.stop());
    const caPem = await bootstrapCa(verifier.url, verifier.caFingerprint);
    const client = createApiClient({ server: verifier.url, caPem });
    undo.push(async () => client.close());
    const admin = createApiClient({ server: verifier.url, caPem, token: verifier.adminToken });
    undo.push(async () => admin.close());

    const { agentId } = await enrollAgent({ client, session: setup.session, labels: { role: 'bench' } });
    const agent = { client, session: setup.session, agentId };
    // Without an enforced baseline the evidence is verified and kept, and nothing is issued.
    await attestOnce(agent).then(
      () => Promise.reject(new Error('an attestation without an enforced baseline was answered with credentials')),
      (e) => (e.remoteCode === 'ERR_NO_BASELINE' ? undefined : Promise.reject(e)),
    );
    const baseline = await admin.call('POST', '/v1/baselines/capture', BaselineBody, { agentId, name: 'bench', audiences: [AUDIENCE] });
    await admin.call('POST', `/v1/baselines/${baseline.id}/enforce`, BaselineBody, {});
    const issuing = { ...agent, audience: AUDIENCE };

    for (let i = 0; i < WARMUP; i++) await attestOnce(issuing);
    const sequential = [];
    for (let i = 0; i < SEQUENTIAL; i++) sequential.push(await attestOnce(issuing));

    const processes = { verifier: verifier.pid, swtpm: setup.sw.pid };
    const before = await cpuSnapshot(processes, db);
    const started = performance.now();
    const end = started + LOOP_MS;
    let done = 0;
    let last;
    while (performance.now() < end) {
      last = await attestOnce(issuing);
      done++;
    }
    const seconds = (performance.now() - started) / 1000;
    const after = await cpuSnapshot(processes, db);
    return {
      store: store === 'sqlite' ? 'SQLite' : 'PostgreSQL',
      latency: latencyOf(sequential),
      loop: { done, seconds, cpu: cpuPerAttestation(before, after, done) },
      enrollment: await timedEnrollments(setup.session, client, processes, db),
      request: last.request,
    };
  } finally {
    await undoAll(undo);
  }
}

/**
 * ENROLLMENTS enrollments of the agent again, one after another: the verifier checks the EK
 * certificate and makes a credential (POST /v1/enrollments), the agent's TPM activates it, and
 * the verifier checks the answer (POST .../activation). Their rate, latency and the CPU each
 * process spent per enrollment.
 */
async function timedEnrollments(session, client, processes, db) {
  const times = [];
  const before = await cpuSnapshot(processes, db);
  const started = performance.now();
  for (let i = 0; i < ENROLLMENTS; i++) {
    const t = performance.now();
    await enrollAgent({ client, session, labels: { role: 'bench' } });
    times.push(performance.now() - t);
  }
  const seconds = (performance.now() - started) / 1000;
  const after = await cpuSnapshot(processes, db);
  times.sort((a, b) => a - b);
  return { n: ENROLLMENTS, rate: ENROLLMENTS / seconds, p50: percentile(times, 50), cpu: cpuPerAttestation(before, after, ENROLLMENTS) };
}

/** challenge -> evidence from the TPM -> attestation; wall times of the three steps in ms. */
async function attestOnce({ client, session, agentId, audience }) {
  const t0 = performance.now();
  const challenge = await client.call('POST', `/v1/agents/${agentId}/challenges`, ChallengeResponse, {});
  const t1 = performance.now();
  const request = await buildAttestationRequest({ session, key: { kind: 'tpm' }, challenge, ...(audience ? { audience } : {}) });
  const t2 = performance.now();
  const response = await client.call('POST', `/v1/agents/${agentId}/attestations`, AttestationResponse, request);
  const t3 = performance.now();
  if (response.verdict.status !== 'affirming' || !response.credentials?.jwt) {
    throw new Error(`attestation not affirmed with both credentials: ${response.verdict.status} ${JSON.stringify(response.verdict.reasons)}`);
  }
  return { challenge: t1 - t0, tpm: t2 - t1, attest: t3 - t2, total: t3 - t0, request };
}

/**
 * `attestor serve` in a child process with SoftHSM's config in its environment; resolves once
 * it printed its URL, CA fingerprint and first admin token (`replica`: another on a store
 * already set up, which prints none).
 */
export function startVerifierProcess(root, args, env, { replica = false } = {}) {
  // ATTESTOR_PROFILE_DIR=<dir>: the verifier writes a V8 CPU profile there when it stops (docs/performance.md).
  const profile = process.env.ATTESTOR_PROFILE_DIR ? ['--cpu-prof', `--cpu-prof-dir=${process.env.ATTESTOR_PROFILE_DIR}`] : [];
  const child = spawn(process.execPath, [...profile, join(root, 'dist', 'cli', 'attestor.js'), ...args], { env, stdio: ['ignore', 'pipe', 'pipe'] });
  let stderr = '';
  child.stderr.on('data', (d) => (stderr = (stderr + d).slice(-4000)));
  const exited = new Promise((resolve) => child.once('exit', resolve));
  const stop = async () => {
    if (child.exitCode === null && child.signalCode === null) {
      const timer = setTimeout(() => child.kill('SIGKILL'), 10_000);
      child.kill('SIGTERM');
      await exited;
      clearTimeout(timer);
    }
  };
  return new Promise((resolve, reject) => {
    let out = '';
    const fail = (why) => {
      clearTimeout(timer);
      void stop().then(() => reject(new Error(`attestor serve ${why}:\n${out}${stderr}`)));
    };
    const timer = setTimeout(() => fail('did not start within 60 s'), 60_000);
    void exited.then((code) => fail(`exited (${code})`));
    child.stdout.on('data', (d) => {
      out += d;
      const url = /listening on (https:\S+)/.exec(out)?.[1];
      const caFingerprint = /Root CA fingerprint: ([0-9a-f]{64})/.exec(out)?.[1];
      const adminToken = /First admin token[^:]*: (\S+)/.exec(out)?.[1];
      if (url && caFingerprint && (adminToken || replica)) {
        clearTimeout(timer);
        resolve({ pid: child.pid, url, caFingerprint, adminToken, stop });
      }
    });
  });
}

/** `url` with Attestor's `schema` parameter. */
export function withSchema(url, schema) {
  const u = new URL(url);
  u.searchParams.set('schema', schema);
  return u.toString();
}

/** A private schema in the PostgreSQL at `url`, and a connection to look up the verifier's backends with. */
export async function postgresSchema(url = PG_URL) {
  const client = new pg.Client({ connectionString: url, connectionTimeoutMillis: 10_000 });
  await client.connect();
  const schema = `attestor_bench_${randomBytes(8).toString('hex')}`;
  await client.query(`CREATE SCHEMA ${schema}`);
  return {
    schema,
    /** Process ids of the backends serving `pid`'s connections. */
    async backendsOf(pid) {
      const ports = tcpPortsTo(pid, PG_PORT);
      const { rows } = await client.query('SELECT pid FROM pg_stat_activity WHERE client_port = ANY($1::int[])', [ports]);
      return rows.map((r) => r.pid);
    },
    async drop() {
      try {
        await client.query(`DROP SCHEMA IF EXISTS ${schema} CASCADE`);
      } finally {
        await client.end();
      }
    },
  };
}

/** Local ports of `pid`'s TCP connections to `remotePort` (its socket inodes, looked up in /proc/net/tcp{,6}). */
function tcpPortsTo(pid, remotePort) {
  const inodes = new Set();
  for (const fd of readdirSync(`/proc/${pid}/fd`)) {
    try {
      const m = /^socket:\[(\d+)\]$/.exec(readlinkSync(`/proc/${pid}/fd/${fd}`));
      if (m) inodes.add(m[1]);
    } catch {
      // Closed since the listing.
    }
  }
  const ports = [];
  for (const table of ['tcp', 'tcp6']) {
    for (const line of readFileSync(`/proc/${pid}/net/${table}`, 'utf8').split('\n').slice(1)) {
      const f = line.trim().split(/\s+/);
      if (f.length < 10 || !inodes.has(f[9])) continue;
      if (parseInt(f[2].split(':')[1], 16) === remotePort) ports.push(parseInt(f[1].split(':')[1], 16));
    }
  }
  return ports;
}

/** Milliseconds per clock tick of /proc/<pid>/stat. */
const TICK_MS = 1000 / (Number(spawnSync('getconf', ['CLK_TCK'], { encoding: 'utf8' }).stdout) || 100);

/** CPU time (user + system, every thread) a process has used, in ms; 10 ms resolution. */
export function cpuMsOf(pid) {
  return ticksMs(readFileSync(`/proc/${pid}/stat`, 'utf8'));
}

/** CPU ms of the thread `pid` runs its event loop on (its main thread, whose id is the pid's). */
export function mainThreadCpuMsOf(pid) {
  return ticksMs(readFileSync(`/proc/${pid}/task/${pid}/stat`, 'utf8'));
}

function ticksMs(stat) {
  const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  // Fields 14 and 15 of proc(5), utime and stime; `fields` starts at field 3.
  return (Number(fields[11]) + Number(fields[12])) * TICK_MS;
}

export function ownCpuMs() {
  const { user, system } = process.cpuUsage();
  return (user + system) / 1000;
}

async function cpuSnapshot(processes, db) {
  const backends = new Map();
  for (const pid of db ? await db.backendsOf(processes.verifier) : []) {
    try {
      backends.set(pid, cpuMsOf(pid));
    } catch {
      // The backend ended meanwhile.
    }
  }
  return { verifier: cpuMsOf(processes.verifier), swtpm: cpuMsOf(processes.swtpm), client: ownCpuMs(), backends, db: Boolean(db) };
}

/** CPU ms per attestation of each process between two snapshots; a backend that started in between counts whole. */
function cpuPerAttestation(before, after, n) {
  let db = 0;
  for (const [pid, ms] of after.backends) db += ms - (before.backends.get(pid) ?? 0);
  return {
    verifier: (after.verifier - before.verifier) / n,
    db: after.db ? db / n : undefined,
    client: (after.client - before.client) / n,
    swtpm: (after.swtpm - before.swtpm) / n,
  };
}

export function percentile(sorted, p) {
  return sorted[Math.min(sorted.length - 1, Math.ceil((p / 100) * sorted.length) - 1)];
}

function latencyOf(runs) {
  const sorted = (key) => runs.map((r) => r[key]).sort((a, b) => a - b);
  const total = sorted('total');
  const p50 = (key) => percentile(sorted(key), 50);
  return {
    n: runs.length,
    p50: percentile(total, 50),
    p90: percentile(total, 90),
    p99: percentile(total, 99),
    challenge: p50('challenge'),
    tpm: p50('tpm'),
    attest: p50('attest'),
  };
}

/** Bare crypto.verify of the AK's ECDSA signature over a quote of this run, per CPU second. */
function quoteVerifyRate(session, request) {
  const ak = parseTpm2bPublic(session.ak.public);
  const key = publicKeyOf(ak);
  const sig = parseSignature(request.signature);
  const { size } = curveInfo(ak.curve);
  const signature = Buffer.concat([leftPad(sig.r, size), leftPad(sig.s, size)]);
  const raw = { key, dsaEncoding: 'ieee-p1363' };
  if (!verify('sha256', request.quote, raw, signature)) throw new Error('the quote signature does not verify');
  rate(() => verify('sha256', request.quote, raw, signature), 100);
  return rate(() => verify('sha256', request.quote, raw, signature), 1000);
}

/**
 * C_SignInit(CKM_ECDSA) + C_Sign of a SHA-256 digest with the verifier's CA key, through
 * pkcs11js on one logged-in session of the same token, per CPU second of this process.
 */
async function cSignRate(hsm) {
  const session = await Pkcs11Session.open({ modulePath: hsm.modulePath, tokenLabel: hsm.tokenLabel, pin: hsm.userPin });
  try {
    const [key] = await session.find([
      { type: pkcs11js.CKA_CLASS, value: pkcs11js.CKO_PRIVATE_KEY },
      { type: pkcs11js.CKA_LABEL, value: 'x509-ca' },
    ]);
    if (!key) throw new Error('the verifier generated no x509-ca key in the token');
    const digest = createHash('sha256').update('tbsCertificate').digest();
    const signature = Buffer.alloc(64);
    return await session.run('C_Sign', (p11, s) => {
      const sign = () => {
        p11.C_SignInit(s, { mechanism: pkcs11js.CKM_ECDSA }, key);
        p11.C_Sign(s, digest, signature);
      };
      rate(sign, 100);
      return rate(sign, 1000);
    });
  } finally {
    await session.close();
  }
}

/**
 * The floor of one request: keep-alive POSTs of an attestation's body through the same client
 * to a node:https server that reads it and answers `{}`, in a child process (P-256 TLS key,
 * as the verifier's). Median round trip, and that server's CPU per request.
 */
async function httpsFloor(work, body) {
  const key = join(work, 'floor-key.pem');
  const cert = join(work, 'floor-cert.pem');
  const made = spawnSync(
    'openssl',
    ['req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256', '-nodes', '-keyout', key, '-out', cert, '-days', '1', '-subj', '/CN=127.0.0.1', '-addext', 'subjectAltName=IP:127.0.0.1'],
    { encoding: 'utf8' },
  );
  if (made.status !== 0) throw new Error(`openssl req failed: ${made.stderr}`);
  const child = spawn(process.execPath, [fileURLToPath(import.meta.url), FLOOR_SERVER, key, cert], { stdio: ['ignore', 'pipe', 'inherit'] });
  const exited = new Promise((resolve) => child.once('exit', resolve));
  try {
    const port = await new Promise((resolve, reject) => {
      child.stdout.once('data', (d) => resolve(Number(String(d).trim())));
      void exited.then((code) => reject(new Error(`the floor server exited (${code})`)));
    });
    const client = createApiClient({ server: `https://127.0.0.1:${port}`, caPem: readFileSync(cert, 'utf8') });
    try {
      for (let i = 0; i < FLOOR_WARMUP; i++) await client.call('POST', '/', z.unknown(), body);
      const cpuBefore = cpuMsOf(child.pid);
      const times = [];
      for (let i = 0; i < FLOOR_REQUESTS; i++) {
        const t = performance.now();
        await client.call('POST', '/', z.unknown(), body);
        times.push(performance.now() - t);
      }
      return { n: FLOOR_REQUESTS, p50: percentile(times.sort((a, b) => a - b), 50), serverCpu: (cpuMsOf(child.pid) - cpuBefore) / FLOOR_REQUESTS };
    } finally {
      client.close();
    }
  } finally {
    child.kill('SIGTERM');
    await exited;
  }
}

function floorServer(keyPath, certPath) {
  const server = createServer({ key: readFileSync(keyPath), cert: readFileSync(certPath) }, (req, res) => {
    req.resume();
    req.on('end', () => res.writeHead(200, { 'content-type': 'application/json' }).end('{}'));
  });
  server.listen(0, '127.0.0.1', () => process.stdout.write(`${server.address().port}\n`));
  process.once('SIGTERM', () => process.exit(0));
}

if (process.argv[2] === FLOOR_SERVER) floorServer(process.argv[3], process.argv[4]);

function report(stores, b) {
  const cores = availableParallelism();
  const us = (perSecond) => `${fmt(1e6 / perSecond, 1)} us`;
  // The server work no attestation can avoid: its two requests, the quote and certify verifications, the two signatures.
  const floorMs = 2 * b.https.serverCpu + 2 * (1000 / b.verify) + 2 * (1000 / b.sign);
  const rows = [];
  for (const s of stores) {
    const l = s.latency;
    const { cpu } = s.loop;
    const label = s.store.padEnd(11);
    const serverMs = cpu.verifier + (cpu.db ?? 0);
    rows.push({
      name: `${s.store}: sequential full attestation with a TPM, p99`,
      value: l.p99,
      unit: 'ms',
      line:
        `${label}${`full attestation over HTTPS (n=${l.n}, sequential)`.padEnd(48)} p50 ${fmt(l.p50, 1)} ms  p90 ${fmt(l.p90, 1)} ms  p99 ${fmt(l.p99, 1)} ms; ` +
        `p50 split: challenge ${fmt(l.challenge, 2)} + agent TPM ${fmt(l.tpm, 2)} + attestation ${fmt(l.attest, 2)} ms ` +
        `(the two round trips ${fmt(l.challenge + l.attest, 2)} ms vs ${fmt(2 * b.https.p50, 2)} ms for two bare POSTs)`,
    });
    rows.push({
      name: `${s.store}: one client loop with a TPM`,
      value: s.loop.done / s.loop.seconds,
      unit: 'attestations/s',
      line:
        `${label}${`one client loop, ${fmt(s.loop.seconds, 1)} s`.padEnd(48)} ${fmt(s.loop.done / s.loop.seconds, 1)} attestations/s (${s.loop.done}); ` +
        `CPU per attestation: verifier ${fmt(cpu.verifier, 2)} ms${cpu.db === undefined ? '' : `, PostgreSQL backends ${fmt(cpu.db, 2)} ms`}, ` +
        `agent + client ${fmt(cpu.client, 2)} ms, swtpm ${fmt(cpu.swtpm, 2)} ms`,
    });
    rows.push({
      name: `${s.store}: server CPU per attestation`,
      value: serverMs,
      unit: 'ms',
      baseline: { name: '2 bare POSTs + 2 verifies + 2 C_Sign', value: floorMs, unit: 'ms' },
      line:
        `${label}${'server CPU per attestation'.padEnd(48)} ${fmt(serverMs, 2)} ms = ${fmt(serverMs / floorMs, 1)}x the baselines' ${fmt(floorMs, 2)} ms ` +
        `(2 bare POSTs + 2 verifies + 2 C_Sign); ceiling ${cores} cores / ${fmt(serverMs, 2)} ms = ${fmt((cores * 1000) / serverMs)}/s ` +
        `(DESIGN >= ${fmt(DESIGN_RATE)}/s with many clients and no TPM: informational, not checked)`,
    });
    const e = s.enrollment;
    const enrollServerMs = e.cpu.verifier + (e.cpu.db ?? 0);
    rows.push({
      name: `${s.store}: enrollments/s, sequential, with a TPM (MakeCredential + ActivateCredential + activation)`,
      value: e.rate,
      unit: 'enrollments/s',
      line:
        `${label}${`enrollment, sequential (n=${e.n})`.padEnd(48)} ${fmt(e.rate, 1)}/s, p50 ${fmt(e.p50, 1)} ms; CPU per enrollment: verifier ${fmt(e.cpu.verifier, 2)} ms` +
        `${e.cpu.db === undefined ? '' : `, PostgreSQL backends ${fmt(e.cpu.db, 2)} ms`}, agent + client ${fmt(e.cpu.client, 2)} ms, swtpm ${fmt(e.cpu.swtpm, 2)} ms; ` +
        `the server's ceiling ${cores} cores / ${fmt(enrollServerMs, 2)} ms = ${fmt((cores * 1000) / enrollServerMs)}/s`,
    });
  }
  const base = 'baseline'.padEnd(11);
  rows.push(
    { name: 'crypto.verify, AK quote signature (P-256)', value: b.verify, unit: 'verifications/s', line: `${base}${'crypto.verify, the AK quote signature (P-256)'.padEnd(48)} ${fmt(b.verify)}/s (${us(b.verify)} CPU each)` },
    { name: 'SoftHSM C_Sign (P-256)', value: b.sign, unit: 'signatures/s', line: `${base}${'SoftHSM C_Sign, the CA key (P-256, pkcs11js)'.padEnd(48)} ${fmt(b.sign)}/s (${us(b.sign)} CPU each)` },
    {
      name: 'bare node:https keep-alive POST, server CPU',
      value: b.https.serverCpu * 1000,
      unit: 'us',
      line: `${base}${'bare node:https keep-alive POST, same body'.padEnd(48)} p50 ${fmt(b.https.p50, 3)} ms round trip (n=${b.https.n}); server CPU ${fmt(b.https.serverCpu * 1000)} us per request`,
    },
  );
  return rows;
}
