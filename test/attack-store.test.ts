/**
 * Finding "The stored TPM clock can go back: concurrent attestations commit in any order"
 * (low), on both stores.
 *
 * The attestation flow checks the quote's clock against the agent's lastClock read before
 * appraisal, and attestations.record then sets last_clock unconditionally. Two attestations of
 * one agent in flight at once both pass the check against the same old clock; if the one with
 * the older quote commits last, lastClock goes back, and a TPM state restored to a clock
 * between the two passes the rollback check (DESIGN: "a clock that goes back without a reset
 * is refused"). The row lock record() already takes is the place to keep it monotonic.
 */
import { randomBytes, randomUUID } from 'node:crypto';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { openPostgresStore } from '../src/store/postgres.js';
import { openSqliteStore } from '../src/store/sqlite.js';
import type { AttestationRecord, Store, StoredClock } from '../src/store/store.js';
import { TEST_PG_URL, createTestSchema, dropTestSchema } from './store-pg.js';

const roots: string[] = [];
const schemas: string[] = [];

afterAll(async () => {
  await Promise.all(roots.map((root) => rm(root, { recursive: true, force: true })));
  await dropTestSchema(...schemas);
});

const stores: Record<'sqlite' | 'postgres', () => Promise<Store>> = {
  async sqlite() {
    const root = await mkdtemp(join(tmpdir(), 'attestor-attack-store-'));
    roots.push(root);
    return openSqliteStore({ path: join(root, 'attestor.db') });
  },
  async postgres() {
    const schema = await createTestSchema();
    schemas.push(schema);
    return openPostgresStore({ url: TEST_PG_URL, schema });
  },
};

function recordWith(agentId: string, clock: StoredClock): AttestationRecord {
  const verdict = { id: randomUUID(), agentId, at: Date.now(), status: 'contraindicated' as const, baselineId: null, baselineVersion: null, reasons: [], claims: {} };
  return { verdict, credentials: [], clock, evidence: null, audit: [{ actor: `agent:${agentId}`, action: 'attestation.verdict', subject: agentId, details: {} }] };
}

for (const dialect of ['sqlite', 'postgres'] as const) {
  describe(`The stored TPM clock can go back: concurrent attestations commit in any order (${dialect})`, () => {
    it('an older quote committed after a newer one does not move lastClock back', async () => {
      const store = await stores[dialect]();
      try {
        const id = randomBytes(32).toString('hex');
        await store.agents.activate(
          { id, ekPublic: randomBytes(64), akPublic: randomBytes(64), ekCertificate: null, labels: {}, createdAt: Date.now() },
          { actor: 'system', action: 'agent.activate', subject: id, details: {} },
        );
        // Both quotes passed the flow's check against the clock before them; the newer commits first.
        const newer: StoredClock = { clock: '200000', resetCount: 3, restartCount: 0, safe: true };
        const older: StoredClock = { clock: '100000', resetCount: 3, restartCount: 0, safe: true };
        await store.attestations.record(recordWith(id, newer));
        const second = await store.attestations.record(recordWith(id, older)).then(
          () => 'stored',
          (e: unknown) => (e as { code?: string }).code,
        );
        if (second === 'stored') expect((await store.agents.get(id))?.lastClock).toEqual(newer);
        else expect(second).toBe('ERR_QUOTE_CLOCK_ROLLBACK');
      } finally {
        await store.close();
      }
    });
  });
}
