/**
 * The verifier's PostgreSQL (a private server: its own data dir and port) restarted under
 * load: while it is down every request that needs it is answered 503 ERR_STORE_UNAVAILABLE,
 * none hangs or fails otherwise, the verifier keeps running, serves again once the database is
 * back without a restart, and the database holds everything acknowledged before, during and
 * after; the audit chain verifies.
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { childEnv, createProcessHarness } from '../helpers/processes.js';
import type { Swtpm } from '../helpers/swtpm.js';
import { createVerifierProcess, enrollAndEnforce, fleetArgs, missing, startLoad, startLoadHosts, type LoadHost } from './load.js';
import { startPrivatePostgres, type PrivatePostgres } from './private-postgres.js';

/** Until `done` holds, checking every 100 ms; fails after `ms`. */
async function until(what: string, done: () => boolean | Promise<boolean>, ms = 20_000): Promise<void> {
  const deadline = Date.now() + ms;
  while (!(await done())) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

describe('PostgreSQL restarted during load', { timeout: 90_000 }, () => {
  const processes = createProcessHarness();
  let tmp: string;
  let hosts: Swtpm[];
  let postgres: PrivatePostgres;
  let verifier: ReturnType<typeof createVerifierProcess>;
  let attesting: LoadHost;
  let enrolling: LoadHost;
  let agentId: string;

  beforeAll(async () => {
    tmp = mkdtempSync(join(tmpdir(), 'attestor-fault-pg-'));
    [{ hosts, attesting, enrolling }, postgres] = await Promise.all([startLoadHosts(tmp), startPrivatePostgres()]);
    verifier = createVerifierProcess(processes, ['--data-dir', join(tmp, 'data'), '--database', postgres.url, ...fleetArgs(tmp, hosts)]);
    await verifier.start();
    agentId = await enrollAndEnforce(verifier.serving, verifier.admin, attesting);
  }, 90_000);

  afterAll(async () => {
    await verifier?.stop();
    processes.killAll();
    await Promise.all([...(hosts ?? []).map((h) => h.stop()), postgres?.destroy()]);
    if (tmp) rmSync(tmp, { recursive: true, force: true });
  });

  it('answers 503 ERR_STORE_UNAVAILABLE while it is down, serves again once it is back, and loses nothing acknowledged', async () => {
    const load = startLoad({ admin: () => verifier.admin, anon: () => verifier.anon, enrolling, attesting: { host: attesting, agentId } });
    try {
      await until('the load to get going', () => load.acknowledged.verdicts.length >= 2 && load.acknowledged.revokedTokens.length >= 5);
      expect(load.failures).toStrictEqual([]);
      const down = Date.now();
      await postgres.stop();
      // Down for a while: every kind of request meets the outage.
      await until('failures during the outage', () => load.failures.length >= 20);
      await new Promise((r) => setTimeout(r, Math.max(0, 2000 - (Date.now() - down))));
      const duringOutage = load.failures.length;
      await postgres.start();
      const up = Date.now();
      // Without restarting the verifier, the load succeeds again (the pool connects anew).
      const acknowledgedAtStart = load.succeeded();
      await until('requests to succeed again', () => load.succeeded() >= acknowledgedAtStart + 20, 15_000);
      const recovered = load.failures.length;
      await new Promise((r) => setTimeout(r, 1500));
      // The verifier answered every failed request, each a 503 with the store's code.
      expect(load.failures.filter((f) => f.status !== 503 || f.code !== 'ERR_STORE_UNAVAILABLE')).toStrictEqual([]);
      expect(duringOutage).toBeGreaterThanOrEqual(20);
      // Failures only between the stop and shortly after the start, none once it served again.
      expect(load.failures.filter((f) => f.at < down || f.at > up + 5000)).toStrictEqual([]);
      expect(load.failures.length).toBe(recovered);
    } finally {
      await load.stop();
    }
    expect(verifier.serving.child.exitCode).toBeNull();

    const client = new pg.Client({ connectionString: postgres.url });
    await client.connect();
    try {
      expect(await missing(load.acknowledged, async (sql) => (await client.query(sql)).rows)).toStrictEqual([]);
    } finally {
      await client.end();
    }
    const verify = await processes.run(['audit', 'verify', '--database', postgres.url], childEnv());
    expect(verify.code, verify.err).toBe(0);
    expect(verify.out).toMatch(/^audit chain intact: \d+ entries/);
  });
});
