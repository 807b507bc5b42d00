import { createECDH } from 'node:crypto';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { bootstrapCa, createApiClient } from '../../dist/client/api-client.js';
import { startSoftHsm } from '../../dist/dev/softhsm.js';
import { openSqliteStore } from '../../dist/store/sqlite.js';
import { agentIdOf } from '../../dist/tpm/agent-id.js';
import { TPMA_OBJECT, TPM_ALG, TPM_ECC } from '../../dist/tpm/constants.js';
import { TpmWriter } from '../../dist/tpm/writer.js';
import { z } from 'zod';
import { percentile, startVerifierProcess, undoAll } from './attestation.mjs';
import { fmt } from './measure.mjs';

/*
 * Fleet size (SQLite): a verifier with 100 enrolled agents, then one with 100,000, each agent
 * seeded through the store's own activation with real EK and AK public areas. For the routes
 * called per host or per page, the p50 of sequential keep-alive HTTPS requests, and the
 * server's RSS after them. Targets: no route more than 1.5x slower with 100,000 agents than
 * with 100, and an RSS of at most 250 MB with 100,000.
 */

const SMALL = 100;
const LARGE = 100_000;
const REQUESTS = 300;
const WARMUP = 50;
const SEED_CHUNK = 1000;
const SLOWDOWN_TARGET = 1.5;
const RSS_TARGET_MB = 250;
const TOKEN_LABEL = 'attestor';

export async function benchFleet(root) {
  const work = mkdtempSync(join(tmpdir(), 'attestor-bench-fleet-'));
  const undo = [async () => rmSync(work, { recursive: true, force: true })];
  try {
    const hsm = await startSoftHsm({ tokenLabel: TOKEN_LABEL });
    undo.push(() => hsm.stop());
    const pinFile = join(work, 'hsm.pin');
    writeFileSync(pinFile, `${hsm.userPin}\n`, { mode: 0o600 });
    const keys = `pkcs11:token=${TOKEN_LABEL}?module-path=${hsm.modulePath}&pin-source=${pinFile}`;
    const small = await measureFleet(root, work, SMALL, keys, hsm.env);
    const large = await measureFleet(root, work, LARGE, keys, hsm.env);
    return report(small, large);
  } finally {
    await undoAll(undo);
  }
}

/** Seeds `count` agents into a fresh data dir, starts the verifier on it and times its routes. */
async function measureFleet(root, work, count, keys, env) {
  const dataDir = join(work, `fleet-${count}`);
  const ids = await seed(join(dataDir, 'attestor.db'), count);
  const config = join(work, `config-${count}.json`);
  writeFileSync(config, JSON.stringify({ limits: { challengesPerMinute: 1_000_000, agentRequestsPerMinute: 1_000_000 } }));
  const verifier = await startVerifierProcess(root, ['serve', '--data-dir', dataDir, '--config', config, '--listen', '127.0.0.1:0', '--keys', keys, '--log-level', 'warn'], env);
  try {
    const caPem = await bootstrapCa(verifier.url, verifier.caFingerprint);
    const anon = createApiClient({ server: verifier.url, caPem });
    const admin = createApiClient({ server: verifier.url, caPem, token: verifier.adminToken });
    const any = () => ids[Math.floor(Math.random() * ids.length)];
    // A full page of 100 from anywhere: after an id that has 100 agents after it (from the start when there are only 100).
    const sorted = [...ids].sort();
    const pageStart = () => (sorted.length > 100 ? `&after=${sorted[Math.floor(Math.random() * (sorted.length - 100))]}` : '');
    const body = z.unknown();
    const routes = [
      ['POST /v1/agents/{id}/challenges', () => anon.call('POST', `/v1/agents/${any()}/challenges`, body, {})],
      ['GET /v1/agents/{id}', () => admin.call('GET', `/v1/agents/${any()}`, body)],
      ['GET /v1/agents?limit=100 (a full page from anywhere)', () => admin.call('GET', `/v1/agents?limit=100${pageStart()}`, body)],
      ['GET /v1/audit?limit=100', () => admin.call('GET', '/v1/audit?limit=100', body)],
    ];
    const timings = {};
    for (const [name, call] of routes) timings[name] = await p50Of(call);
    const rssMb = Number(/^VmRSS:\s+(\d+) kB$/m.exec(readFileSync(`/proc/${verifier.pid}/status`, 'utf8'))?.[1]) / 1024;
    anon.close();
    admin.close();
    return { count, timings, rssMb };
  } finally {
    await verifier.stop();
  }
}

async function p50Of(call) {
  for (let i = 0; i < WARMUP; i++) await call();
  const times = [];
  for (let i = 0; i < REQUESTS; i++) {
    const t = performance.now();
    await call();
    times.push(performance.now() - t);
  }
  return percentile(times.sort((a, b) => a - b), 0.5);
}

/** `count` agents activated through the store (audited as enrollment audits them), in chunks that share a commit. */
async function seed(path, count) {
  const store = await openSqliteStore({ path });
  const ids = [];
  try {
    for (let done = 0; done < count; done += SEED_CHUNK) {
      const chunk = Array.from({ length: Math.min(SEED_CHUNK, count - done) }, () => {
        const ekPublic = eccPublic(EK_ATTRIBUTES, { symmetric: true });
        const id = agentIdOf(ekPublic);
        ids.push(id);
        return store.agents.activate(
          { id, ekPublic, akPublic: eccPublic(AK_ATTRIBUTES, { symmetric: false }), ekCertificate: null, labels: { fleet: 'bench' }, createdAt: Date.now() },
          { actor: `agent:${id}`, action: 'agent.activate', subject: id, details: { seeded: true } },
        );
      });
      await Promise.all(chunk);
    }
  } finally {
    await store.close();
  }
  return ids;
}

const EK_ATTRIBUTES =
  TPMA_OBJECT.fixedTPM | TPMA_OBJECT.fixedParent | TPMA_OBJECT.sensitiveDataOrigin | TPMA_OBJECT.adminWithPolicy | TPMA_OBJECT.restricted | TPMA_OBJECT.decrypt;
const AK_ATTRIBUTES =
  TPMA_OBJECT.fixedTPM | TPMA_OBJECT.fixedParent | TPMA_OBJECT.sensitiveDataOrigin | TPMA_OBJECT.userWithAuth | TPMA_OBJECT.restricted | TPMA_OBJECT.sign;

/** TPM2B_PUBLIC of a fresh ECC P-256 key: a storage key (the EK: AES-128-CFB) or an ECDSA SHA-256 signing key (the AK). */
function eccPublic(attributes, { symmetric }) {
  const point = createECDH('prime256v1').generateKeys();
  const w = new TpmWriter().u16(TPM_ALG.ECC).u16(TPM_ALG.SHA256).u32(attributes).tpm2b(new Uint8Array());
  if (symmetric) w.u16(TPM_ALG.AES).u16(128).u16(TPM_ALG.CFB).u16(TPM_ALG.NULL);
  else w.u16(TPM_ALG.NULL).u16(TPM_ALG.ECDSA).u16(TPM_ALG.SHA256);
  const area = w.u16(TPM_ECC.NIST_P256).u16(TPM_ALG.NULL).tpm2b(point.subarray(1, 33)).tpm2b(point.subarray(33)).finish();
  return new TpmWriter().tpm2b(area).finish();
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
