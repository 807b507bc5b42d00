import { createHash, generateKeyPairSync } from 'node:crypto';
import pkcs11js from 'pkcs11js';
import { startSoftHsm } from '../../dist/dev/softhsm.js';
import { createCaCertificate } from '../../dist/issuer/ca-certificate.js';
import { openPkcs11KeyManager } from '../../dist/issuer/pkcs11-keys.js';
import { createX509SvidIssuer } from '../../dist/issuer/x509-svid.js';
import { parsePkcs11Uri } from '../../dist/pkcs11/uri.js';
import { fmt, median } from './measure.mjs';

/*
 * Issuance through PKCS#11 (DESIGN "Targets"): X509-SVIDs issued per second through the key
 * manager (its session pool, C_Sign on worker threads) against raw pkcs11js C_SignInit +
 * C_Sign per second, synchronous on one session, with the same SoftHSM token and key;
 * rounds alternate so that load on the machine affects both alike. Rates are per second of
 * wall time: the pool's point is signing on other threads, which CPU time would not show.
 * Also the CPU a leaf costs without its signature, the part the issuer itself spends.
 */

const ROUNDS = 7;
const ROUND_MS = 300;
/** Issuances kept in flight, as concurrent attestations keep them. */
const IN_FLIGHT = 32;
const TARGET_RATIO = 0.5;
const BUILD_TARGET_US = 200;
const LABEL = 'x509-ca';

export async function benchIssuance() {
  const hsm = await startSoftHsm({ tokenLabel: 'bench' });
  let manager;
  let raw;
  try {
    const uri = parsePkcs11Uri(`pkcs11:token=${hsm.tokenLabel}?module-path=${hsm.modulePath}`);
    manager = await openPkcs11KeyManager(uri, { env: { ATTESTOR_PKCS11_PIN: hsm.userPin } });
    const signer = await manager.signer(LABEL);
    const now = new Date();
    const ca = await createCaCertificate({ signer, trustDomain: 'bench.example', now, lifetimeSeconds: 86400 });
    const request = {
      subjectSpki: generateKeyPairSync('ec', { namedCurve: 'P-256' }).publicKey.export({ type: 'spki', format: 'der' }),
      spiffeId: `spiffe://bench.example/agent/tpm/${'ab'.repeat(32)}`,
      notBefore: new Date(now.getTime() - 10_000),
      notAfter: new Date(now.getTime() + 3600_000),
    };
    const issuer = createX509SvidIssuer({ caCertificate: ca, signer, crlUrl: 'https://bench.example/v1/crl' });
    raw = rawSession(hsm);

    const rawRates = [];
    const issuanceRates = [];
    const ratios = [];
    await issuance(issuer, request, 100);
    raw.signPerSecond(100);
    for (let i = 0; i < ROUNDS; i++) {
      const r = raw.signPerSecond(ROUND_MS);
      const s = await issuance(issuer, request, ROUND_MS);
      rawRates.push(r);
      issuanceRates.push(s);
      ratios.push(s / r);
    }
    const build = await buildCpu(ca, signer, request);
    return report({ raw: median(rawRates), issuance: median(issuanceRates), ratio: median(ratios), build });
  } finally {
    raw?.close();
    await manager?.close();
    await hsm.stop();
  }
}

/** X509-SVIDs per wall second with IN_FLIGHT issuances always pending. */
async function issuance(issuer, request, ms) {
  let done = 0;
  const start = performance.now();
  const end = start + ms;
  const worker = async () => {
    while (performance.now() < end) {
      await issuer.issue(request);
      done++;
    }
  };
  await Promise.all(Array.from({ length: IN_FLIGHT }, worker));
  return (done * 1000) / (performance.now() - start);
}

/**
 * The baseline: pkcs11js as a caller would use it bare, C_SignInit(CKM_ECDSA) + C_Sign on a
 * SHA-256 digest in a loop. Its own PKCS11 instance of the module the key manager loaded:
 * Cryptoki and the login are per process, so it shares both and must end neither.
 */
function rawSession(hsm) {
  const p11 = new pkcs11js.PKCS11();
  p11.load(hsm.modulePath);
  try {
    p11.C_Initialize({ flags: pkcs11js.CKF_OS_LOCKING_OK });
  } catch (e) {
    if (!(e instanceof pkcs11js.Pkcs11Error) || e.message !== 'CKR_CRYPTOKI_ALREADY_INITIALIZED') throw e;
  }
  const slot = p11.C_GetSlotList(true).find((s) => p11.C_GetTokenInfo(s).label.trim() === hsm.tokenLabel);
  const session = p11.C_OpenSession(slot, pkcs11js.CKF_SERIAL_SESSION | pkcs11js.CKF_RW_SESSION);
  p11.C_FindObjectsInit(session, [
    { type: pkcs11js.CKA_CLASS, value: pkcs11js.CKO_PRIVATE_KEY },
    { type: pkcs11js.CKA_LABEL, value: LABEL },
  ]);
  const [key] = p11.C_FindObjects(session, 1);
  p11.C_FindObjectsFinal(session);
  const digest = createHash('sha256').update('tbsCertificate').digest();
  const signature = Buffer.alloc(64);
  return {
    signPerSecond(ms) {
      let n = 0;
      const start = performance.now();
      const end = start + ms;
      while (performance.now() < end) {
        for (let i = 0; i < 16; i++) {
          p11.C_SignInit(session, { mechanism: pkcs11js.CKM_ECDSA }, key);
          p11.C_Sign(session, digest, signature);
        }
        n += 16;
      }
      return (n * 1000) / (performance.now() - start);
    },
    close() {
      p11.C_CloseSession(session);
      p11.close();
    },
  };
}

/** CPU microseconds per leaf with a Signer that answers at once: everything but the signature. */
async function buildCpu(ca, signer, request) {
  const signature = new Uint8Array(64).fill(0x5a);
  const instant = { ...signer, sign: async () => signature };
  const issuer = createX509SvidIssuer({ caCertificate: ca, signer: instant, crlUrl: 'https://bench.example/v1/crl' });
  const runs = 20_000;
  for (let i = 0; i < 2000; i++) await issuer.issue(request);
  const times = [];
  for (let round = 0; round < 5; round++) {
    const before = process.cpuUsage();
    for (let i = 0; i < runs / 5; i++) await issuer.issue(request);
    const { user, system } = process.cpuUsage(before);
    times.push((user + system) / (runs / 5));
  }
  return median(times);
}

function report({ raw, issuance: rate, ratio, build }) {
  return [
    {
      name: 'X509-SVID issuance through PKCS#11',
      value: rate,
      unit: 'issuances/s (wall)',
      baseline: { name: 'raw pkcs11js C_Sign, one session', value: raw, unit: 'signatures/s (wall)' },
      ratio,
      target: TARGET_RATIO,
      line:
        `${'X509-SVID issuance, SoftHSM P-256'.padEnd(42)} raw pkcs11js C_Sign ${fmt(raw).padStart(7)}/s (one session, sync)   ` +
        `issuance ${fmt(rate).padStart(7)}/s (pool, ${IN_FLIGHT} in flight)   ratio ${fmt(ratio, 2)} (target >= ${TARGET_RATIO})`,
    },
    {
      name: 'X509-SVID build without the signature',
      value: build,
      unit: 'us CPU',
      ratio: BUILD_TARGET_US / build,
      target: 1,
      line: `${'X509-SVID build without the signature'.padEnd(42)} ${fmt(build, 1)} us CPU per leaf (target <= ${BUILD_TARGET_US} us)`,
    },
  ];
}
