/**
 * A CRL served lists every revocation committed before it was asked for, even when the request
 * arrives while this process is already making one from an earlier reading (the key ring over
 * a real SQLite store and key files; the store's CRL read is held at a gate to order the race).
 */
import { randomBytes, randomUUID } from 'node:crypto';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { pino } from 'pino';
import { afterAll, expect, it } from 'vitest';
import { openFileKeyManager } from '../src/issuer/file-keys.js';
import { openKeyRing } from '../src/server/issuing-keys.js';
import { openStore } from '../src/store/open.js';
import type { Store } from '../src/store/store.js';
import { crlSerials } from './helpers/crl.js';

const dirs: string[] = [];
afterAll(() => dirs.forEach((d) => rmSync(d, { recursive: true, force: true })));

/** An agent with an X509-SVID of `issuerKid`, quarantined: the serial its CA's CRL must list. */
async function revokedSerial(store: Store, issuerKid: string, now: number): Promise<string> {
  const agentId = randomBytes(32).toString('hex');
  const system = (action: string) => ({ actor: 'system', action, subject: agentId, details: {} });
  await store.agents.activate({ id: agentId, ekPublic: randomBytes(100), akPublic: randomBytes(90), ekCertificate: null, labels: {}, createdAt: now }, system('agent.activate'));
  const verdictId = randomUUID();
  const serial = `7${randomBytes(15).toString('hex')}`;
  await store.attestations.record({
    verdict: { id: verdictId, agentId, at: now, status: 'affirming', baselineId: null, baselineVersion: null, reasons: [], claims: {} },
    credentials: [{ id: serial, kind: 'x509-svid', agentId, verdictId, issuedAt: now, expiresAt: now + 3_600_000, certificateSha256: randomBytes(32).toString('hex'), revoked: false, issuerKid }],
    clock: null,
    evidence: null,
    audit: [system('attestation.verdict')],
  });
  await store.agents.setStatus(agentId, 'quarantined', now, system('agent.quarantine'));
  return serial;
}

it('a CRL asked for after a revocation lists it, though a CRL from the reading before was being made', async () => {
  const data = mkdtempSync(join(tmpdir(), 'attestor-crl-'));
  dirs.push(data);
  const now = Date.now();
  const store = await openStore({ dataDir: data });
  let gate: Promise<void> | undefined;
  const gated: Store = { ...store, keys: { ...store.keys, crl: async (kid) => (await gate, store.keys.crl(kid)) } };
  const keys = await openFileKeyManager(join(data, 'keys'));
  try {
    const ring = await openKeyRing({ store: gated, keys, trustDomain: 'example.org', publicUrl: 'https://v.example', caLifetimeDays: 30, now: () => now, logger: pino({ level: 'silent' }) });
    const caKid = ring.active('x509-ca').key.kid;
    let open!: () => void;
    gate = new Promise((r) => (open = r));
    // The first request reads the revoked set (empty), then waits at the gate.
    const first = ring.crl(now);
    await new Promise((r) => setTimeout(r, 50));
    const serial = await revokedSerial(store, caKid, now);
    const second = ring.crl(now);
    gate = undefined;
    open();
    const [a, b] = await Promise.all([first, second]);
    expect(crlSerials(Buffer.from(b!))).toContain(serial);
    // The first request's answer is no older: it was served after the revocation too.
    expect(crlSerials(Buffer.from(a!))).toContain(serial);
  } finally {
    await keys.close();
    await store.close();
  }
});
