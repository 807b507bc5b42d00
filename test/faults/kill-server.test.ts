/**
 * `kill -9` of `attestor serve` (SQLite) in the middle of enrollments, attestations, token
 * creations and revocations: restarted on the same data dir, it holds every enrollment,
 * verdict, credential, revocation and audit entry it acknowledged, its audit chain verifies,
 * and it serves again.
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import BetterSqlite3 from 'better-sqlite3';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { childEnv, createProcessHarness } from '../helpers/processes.js';
import type { Swtpm } from '../helpers/swtpm.js';
import { counts, createVerifierProcess, enrollAndEnforce, fleetArgs, missing, startLoad, startLoadHosts, type LoadHost } from './load.js';

describe('kill -9 of the verifier during load', { timeout: 90_000 }, () => {
  const processes = createProcessHarness();
  let tmp: string;
  let hosts: Swtpm[];
  let verifier: ReturnType<typeof createVerifierProcess>;
  let attesting: LoadHost;
  let enrolling: LoadHost;
  let agentId: string;

  const dataDir = () => join(tmp, 'data');

  beforeAll(async () => {
    tmp = mkdtempSync(join(tmpdir(), 'attestor-fault-kill-'));
    ({ hosts, attesting, enrolling } = await startLoadHosts(tmp));
    verifier = createVerifierProcess(processes, ['--data-dir', dataDir(), ...fleetArgs(tmp, hosts)]);
    await verifier.start();
    agentId = await enrollAndEnforce(verifier.serving, verifier.admin, attesting);
  }, 90_000);

  afterAll(async () => {
    await verifier?.stop();
    processes.killAll();
    await Promise.all((hosts ?? []).map((h) => h.stop()));
    if (tmp) rmSync(tmp, { recursive: true, force: true });
  });

  it('holds everything it acknowledged after a restart, and its audit chain verifies', async () => {
    const load = startLoad({ admin: () => verifier.admin, anon: () => verifier.anon, enrolling, attesting: { host: attesting, agentId } });
    // Killed once the load is well under way: requests of every kind are in flight.
    const deadline = Date.now() + 20_000;
    while (!(load.acknowledged.verdicts.length >= 3 && load.acknowledged.activations.length >= 3 && load.acknowledged.revokedTokens.length >= 10)) {
      if (Date.now() > deadline) throw new Error(`the load did too little: ${JSON.stringify(counts(load.acknowledged))} ${JSON.stringify(load.failures.slice(0, 5))}`);
      await new Promise((r) => setTimeout(r, 50));
    }
    const before = load.failures.length;
    verifier.serving.child.kill('SIGKILL');
    const exit = await verifier.serving.exited;
    expect(exit.signal).toBe('SIGKILL');
    // The workers see the connection refused for a moment, then stop.
    await new Promise((r) => setTimeout(r, 300));
    await load.stop();
    // Before the kill, nothing failed.
    expect(load.failures.slice(0, before)).toStrictEqual([]);
    // After it, no answer came: nothing was refused with a status.
    expect(new Set(load.failures.map((f) => `${f.status} ${f.code}`))).toStrictEqual(new Set(['null ERR_SERVER_UNREACHABLE']));

    await verifier.start();
    const db = new BetterSqlite3(join(dataDir(), 'attestor.db'), { readonly: true, fileMustExist: true });
    try {
      expect(await missing(load.acknowledged, async (sql) => db.prepare(sql).all() as Record<string, unknown>[])).toStrictEqual([]);
      expect(db.pragma('integrity_check', { simple: true })).toBe('ok');
    } finally {
      db.close();
    }
    const verify = await processes.run(['audit', 'verify', '--data-dir', dataDir()], childEnv());
    expect(verify.code, verify.err).toBe(0);
    expect(verify.out).toMatch(/^audit chain intact: \d+ entries/);

    // And it serves again: a short load after the restart succeeds throughout.
    const after = startLoad({ admin: () => verifier.admin, anon: () => verifier.anon, enrolling, attesting: { host: attesting, agentId } });
    await new Promise((r) => setTimeout(r, 1500));
    await after.stop();
    expect(after.failures).toStrictEqual([]);
    expect(after.acknowledged.verdicts.length).toBeGreaterThan(0);
  });
});
