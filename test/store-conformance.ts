import { createHash, randomBytes, randomUUID } from 'node:crypto';
import { afterAll, describe, expect, it, onTestFinished } from 'vitest';
import { verifyStoredChain } from '../src/audit/verify-stored-chain.js';
import { canonicalJson } from '../src/store/canonical-json.js';
import type {
  Agent,
  AttestationRecord,
  AuditInput,
  Baseline,
  Challenge,
  Credential,
  IssuingKey,
  Json,
  OperatorToken,
  PendingEnrollment,
  Store,
  Verdict,
} from '../src/store/store.js';
import { rejection } from './helpers/rejection.js';

/** A new, empty database of the dialect under test. */
export interface TestDatabase {
  /** A Store on this database; each call opens another instance (connection, pool) to race the others. */
  open(clock?: () => number): Promise<Store>;
  /** Raw SQL ($1, $2 ... placeholders) for what the interface cannot do: set an agent's status, read rows. */
  sql(text: string, params?: readonly unknown[]): Promise<Record<string, unknown>[]>;
  /** Closes its stores and connections and removes the database. */
  dispose(): Promise<void>;
}

/**
 * The behaviour every Store must have, as one suite: test/store-sqlite.test.ts and
 * test/store-postgres.test.ts call it with their dialect. Each test gets a database of its
 * own from `open`; `cleanup` runs after the suite.
 */
export function storeConformance(name: string, open: () => Promise<TestDatabase>, cleanup: () => Promise<void>, variant: { title?: string; clock?: boolean } = {}): void {
  /*
   * The tests that set the store's clock: a store on a worker thread reads its own (a function
   * cannot cross to it); its code is the in-process store's, which runs them.
   */
  const withClock = variant.clock === false ? () => undefined : it;
  describe(`Store conformance: ${variant.title ?? name}`, () => {
    afterAll(cleanup);

    async function fresh(clock?: () => number): Promise<{ db: TestDatabase; store: Store }> {
      const db = await open();
      onTestFinished(() => db.dispose());
      return { db, store: await db.open(clock) };
    }

    /** A clock that ticks one millisecond per reading, from `start`. */
    function ticking(start: number): () => number {
      let now = start;
      return () => now++;
    }

    it('answers ping and names its dialect', async () => {
      const { store } = await fresh();
      await store.ping();
      expect(store.dialect).toBe(name);
    });

    describe('enrollments', () => {
      it('round-trips every field, and take uses an enrollment up', async () => {
        const { store } = await fresh();
        const withCert = enrollment({ ekCertificate: bytesOf(700), labels: { rack: 'r1', 'zone-é': '☃' } });
        const noCert = enrollment({ ekCertificate: null, labels: {} });
        const emptyCert = enrollment({ ekCertificate: new Uint8Array(0) });
        for (const e of [withCert, noCert, emptyCert]) await store.enrollments.create(e, audit('enrollment.create', e.agentId));
        for (const e of [withCert, noCert, emptyCert]) {
          expect(await store.enrollments.take(e.id, NOW)).toStrictEqual(e);
          expect(await store.enrollments.take(e.id, NOW)).toBeNull();
        }
        expect(await store.enrollments.take(randomUUID(), NOW)).toBeNull();
        // Three created, three spent (each audited once); a take of nothing records nothing.
        const head = (await store.audit.head())!;
        expect(head.seq).toBe(6);
        expect(head).toMatchObject({ action: 'enrollment.spend', subject: emptyCert.agentId, details: { enrollmentId: emptyCert.id, expired: false } });
      });

      it('take refuses an expired enrollment and removes it', async () => {
        const { store } = await fresh();
        const e = enrollment({ expiresAt: NOW + 1000 });
        await store.enrollments.create(e, audit('enrollment.create', e.agentId));
        expect(await store.enrollments.take(e.id, NOW + 1000)).toBeNull();
        expect(await store.enrollments.take(e.id, NOW)).toBeNull();
      });

      it('purgeExpired removes only the expired ones', async () => {
        const { store } = await fresh();
        const expired = [enrollment({ expiresAt: NOW - 1 }), enrollment({ expiresAt: NOW })];
        const live = enrollment({ expiresAt: NOW + 1 });
        for (const e of [...expired, live]) await store.enrollments.create(e, audit('enrollment.create', e.agentId));
        expect(await store.enrollments.purgeExpired(NOW)).toBe(2);
        expect(await store.enrollments.purgeExpired(NOW)).toBe(0);
        expect(await store.enrollments.take(live.id, NOW)).toStrictEqual(live);
      });
    });

    describe('agents', () => {
      it('round-trips every field of an activated agent', async () => {
        const { store } = await fresh();
        const input = newAgent({ labels: { role: 'gpu', 'ünï': 'cødé' } });
        const activated = await store.agents.activate(input, audit('agent.activate', input.id));
        const expected: Agent = { ...input, status: 'active', lastClock: null, lastEvidence: null, lastVerdictId: null, lastAttestedAt: null, lastAffirmedAt: null, staleAt: null };
        expect(activated).toStrictEqual(expected);
        expect(await store.agents.get(input.id)).toStrictEqual(expected);
        const noCert = newAgent({ ekCertificate: null });
        await store.agents.activate(noCert, audit('agent.activate', noCert.id));
        expect((await store.agents.get(noCert.id))?.ekCertificate).toBeNull();
        expect(await store.agents.get('f'.repeat(64))).toBeNull();
        // What challenges and attestations read: the same, without the certificate and the last evidence.
        const { id, akPublic, labels, status, lastClock } = expected;
        expect(await store.agents.attesting(input.id)).toStrictEqual({ id, akPublic, labels, status, lastClock });
        expect(await store.agents.attesting('f'.repeat(64))).toBeNull();
        expect(await store.agents.count()).toBe(2);
      });

      it('activating the same EK and AK again returns the agent unchanged: labels stay those of the first activation', async () => {
        const { store } = await fresh();
        const input = newAgent({ labels: { a: '1' } });
        await store.agents.activate(input, audit('agent.activate', input.id));
        const again = await store.agents.activate({ ...input, labels: { a: '2', b: '3' }, createdAt: NOW + 5000 }, audit('agent.activate', input.id));
        expect(again.labels).toStrictEqual({ a: '1' });
        expect(again.createdAt).toBe(input.createdAt);
        expect(await store.agents.get(input.id)).toStrictEqual(again);
        expect(await store.agents.count()).toBe(1);
        expect((await store.audit.head())?.seq).toBe(2);
      });

      it('refuses another EK or AK under the same id, and an EK under another id (ERR_ENROLLMENT_CONFLICT)', async () => {
        const { store } = await fresh();
        const input = newAgent();
        const stored = await store.agents.activate(input, audit('agent.activate', input.id));
        await rejection(store.agents.activate({ ...input, akPublic: bytesOf(90) }, audit('agent.activate', input.id)), 'ERR_ENROLLMENT_CONFLICT');
        await rejection(store.agents.activate({ ...input, ekPublic: bytesOf(300) }, audit('agent.activate', input.id)), 'ERR_ENROLLMENT_CONFLICT');
        await rejection(store.agents.activate({ ...input, id: randomHex(32) }, audit('agent.activate', input.id)), 'ERR_ENROLLMENT_CONFLICT');
        expect(await store.agents.get(input.id)).toStrictEqual(stored);
        expect(await store.agents.count()).toBe(1);
        expect((await store.audit.head())?.seq).toBe(1);
      });

      it('lists in pages of a stable order', async () => {
        const { store } = await fresh();
        const ids: string[] = [];
        for (let i = 0; i < 7; i++) {
          const a = newAgent();
          ids.push(a.id);
          await store.agents.activate(a, audit('agent.activate', a.id));
        }
        const pages = await allPages((after) => store.agents.list({ limit: 3, ...(after ? { after } : {}) }));
        expect(pages.map((p) => p.length)).toStrictEqual([3, 3, 1]);
        expect(pages.flat().map((a) => a.id)).toStrictEqual([...ids].sort());
        const exact = await store.agents.list({ limit: 7 });
        expect(exact.items).toHaveLength(7);
        expect(exact.next).toBeNull();
        expect(await store.agents.count()).toBe(7);
      });

      it('refuses page limits outside 1..1000 (ERR_INPUT)', async () => {
        const { store } = await fresh();
        for (const limit of [0, -1, 1.5, 1001, Number.NaN]) await rejection(store.agents.list({ limit }), 'ERR_INPUT');
        await rejection(store.audit.list({ limit: 10, after: 'x' }), 'ERR_INPUT');
        await rejection(store.audit.list({ limit: 10, after: '-1' }), 'ERR_INPUT');
      });

      it('of 20 concurrent activations of one id with different AKs, one creates the agent', async () => {
        const { db, store } = await fresh();
        const other = await db.open();
        const input = newAgent();
        const attempts = Array.from({ length: 20 }, () => ({ ...input, akPublic: bytesOf(90) }));
        const results = await Promise.allSettled(attempts.map((a, i) => (i % 2 ? other : store).agents.activate(a, audit('agent.activate', a.id))));
        const won = results.flatMap((r, i) => (r.status === 'fulfilled' ? [i] : []));
        expect(won).toHaveLength(1);
        for (const r of results) if (r.status === 'rejected') expect(r.reason).toMatchObject({ code: 'ERR_ENROLLMENT_CONFLICT' });
        expect(await store.agents.count()).toBe(1);
        expect((await other.agents.get(input.id))?.akPublic).toStrictEqual(attempts[won[0]!]!.akPublic);
        await expectIntactChain(db, 1);
      });
    });

    describe('challenges', () => {
      it('round-trips a challenge and consumes it once', async () => {
        const { store } = await fresh();
        const agent = await activated(store);
        const baseline = await store.baselines.create(newBaseline('host'), audit('baseline.create', 'host'));
        const withBaseline = challenge(agent.id, { baselineId: baseline.id, pcrSelection: { sha256: [0, 1, 7, 14], sha384: [] } });
        const without = challenge(agent.id, { baselineId: null, pcrSelection: {} });
        for (const c of [withBaseline, without]) {
          await store.challenges.create(c);
          expect(await store.challenges.consume(c.nonce, agent.id, NOW)).toStrictEqual({ ok: true, challenge: c });
          expect(await store.challenges.consume(c.nonce, agent.id, NOW)).toStrictEqual({ ok: false, reason: 'unknown' });
        }
      });

      it("another agent's nonce is unknown to it and stays for its agent", async () => {
        const { store } = await fresh();
        const owner = await activated(store);
        const intruder = await activated(store);
        const c = challenge(owner.id);
        await store.challenges.create(c);
        expect(await store.challenges.consume(c.nonce, intruder.id, NOW)).toStrictEqual({ ok: false, reason: 'unknown' });
        expect(await store.challenges.consume(c.nonce, owner.id, NOW)).toStrictEqual({ ok: true, challenge: c });
      });

      it('an expired challenge is reported expired and deleted', async () => {
        const { store } = await fresh();
        const agent = await activated(store);
        const c = challenge(agent.id, { expiresAt: NOW + 60_000 });
        await store.challenges.create(c);
        expect(await store.challenges.consume(c.nonce, agent.id, NOW + 60_000)).toStrictEqual({ ok: false, reason: 'expired' });
        expect(await store.challenges.consume(c.nonce, agent.id, NOW)).toStrictEqual({ ok: false, reason: 'unknown' });
      });

      it('purgeExpired removes only the expired ones', async () => {
        const { store } = await fresh();
        const agent = await activated(store);
        const expired = challenge(agent.id, { expiresAt: NOW });
        const live = challenge(agent.id, { expiresAt: NOW + 1 });
        await store.challenges.create(expired);
        await store.challenges.create(live);
        expect(await store.challenges.purgeExpired(NOW)).toBe(1);
        expect(await store.challenges.consume(live.nonce, agent.id, NOW)).toMatchObject({ ok: true });
      });

      it('refuses a nonce that exists (ERR_STORE_CONFLICT) and keeps the first', async () => {
        const { store } = await fresh();
        const agent = await activated(store);
        const other = await activated(store);
        const c = challenge(agent.id);
        await store.challenges.create(c);
        await rejection(store.challenges.create({ ...c, agentId: other.id }), 'ERR_STORE_CONFLICT');
        expect(await store.challenges.consume(c.nonce, agent.id, NOW)).toStrictEqual({ ok: true, challenge: c });
      });

      it('refuses a challenge for an agent that does not exist (ERR_STORE)', async () => {
        const { store } = await fresh();
        await rejection(store.challenges.create(challenge(randomHex(32))), 'ERR_STORE');
      });

      it('of 50 concurrent consumers of one nonce, exactly one gets it', async () => {
        const { db, store } = await fresh();
        const other = await db.open();
        const agent = await activated(store);
        const c = challenge(agent.id);
        await store.challenges.create(c);
        const results = await Promise.all(Array.from({ length: 50 }, (_, i) => (i % 2 ? other : store).challenges.consume(c.nonce, agent.id, NOW)));
        expect(results.filter((r) => r.ok)).toStrictEqual([{ ok: true, challenge: c }]);
        expect(results.filter((r) => !r.ok && r.reason === 'unknown')).toHaveLength(49);
      });
    });

    describe('baselines', () => {
      it('numbers the versions of a name from 1 and round-trips every field', async () => {
        const { store } = await fresh();
        const document: Json = { pcrs: { sha256: { '0': 'ab'.repeat(32) } }, rules: [{ secureBoot: true, n: 1.5, none: null }], text: 'ü\u0000"' };
        const created: Baseline[] = [];
        for (const name of ['host', 'host', 'gpu', 'host']) {
          const input = { ...newBaseline(name), document };
          const b = await store.baselines.create(input, audit('baseline.create', input.id));
          expect(b).toStrictEqual({ ...input, version: b.version, enforcedAt: null, retiredAt: null });
          expect(await store.baselines.get(b.id)).toStrictEqual(b);
          created.push(b);
        }
        expect(created.map((b) => `${b.name}:${b.version}`)).toStrictEqual(['host:1', 'host:2', 'gpu:1', 'host:3']);
        expect(await store.baselines.get(randomUUID())).toBeNull();
      });

      it('creates baselines staged only (ERR_BASELINE_STATE)', async () => {
        const { store } = await fresh();
        await rejection(store.baselines.create({ ...newBaseline('host'), status: 'enforced' }, audit('baseline.create', 'x')), 'ERR_BASELINE_STATE');
        expect(await store.baselines.list({ limit: 10 })).toStrictEqual({ items: [], next: null });
      });

      withClock('moves staged -> enforced -> retired; enforcing retires the enforced baseline of the same name', async () => {
        const { store } = await fresh(ticking(NOW));
        const v1 = await store.baselines.create(newBaseline('host'), audit('baseline.create', 'host'));
        const v2 = await store.baselines.create(newBaseline('host'), audit('baseline.create', 'host'));
        const gpu = await store.baselines.create(newBaseline('gpu'), audit('baseline.create', 'gpu'));
        const enforced1 = await store.baselines.setStatus(v1.id, 'enforced', NOW + 10, audit('baseline.enforce', v1.id));
        expect(enforced1).toStrictEqual({ ...v1, status: 'enforced', enforcedAt: NOW + 10 });
        await store.baselines.setStatus(gpu.id, 'enforced', NOW + 11, audit('baseline.enforce', gpu.id));
        const enforced2 = await store.baselines.setStatus(v2.id, 'enforced', NOW + 20, audit('baseline.enforce', v2.id));
        expect(enforced2).toStrictEqual({ ...v2, status: 'enforced', enforcedAt: NOW + 20 });
        expect(await store.baselines.get(v1.id)).toStrictEqual({ ...enforced1, status: 'retired', retiredAt: NOW + 20 });
        expect((await store.baselines.get(gpu.id))?.status).toBe('enforced');
        const tail = (await store.audit.list({ limit: 100 })).items.slice(-2);
        expect(tail.map((e) => [e.action, e.subject, e.details])).toStrictEqual([
          ['baseline.retire', v1.id, { supersededBy: v2.id }],
          ['baseline.enforce', v2.id, { n: 1 }],
        ]);
        const retired = await store.baselines.setStatus(v2.id, 'retired', NOW + 30, audit('baseline.retire', v2.id));
        expect(retired).toStrictEqual({ ...enforced2, status: 'retired', retiredAt: NOW + 30 });
        const staged = await store.baselines.create(newBaseline('host'), audit('baseline.create', 'host'));
        expect((await store.baselines.setStatus(staged.id, 'retired', NOW + 40, audit('baseline.retire', staged.id))).retiredAt).toBe(NOW + 40);
      });

      it('refuses other transitions (ERR_BASELINE_STATE) and unknown ids (ERR_BASELINE_NOT_FOUND), changing nothing', async () => {
        const { store } = await fresh();
        const enforced = await store.baselines.create(newBaseline('host'), audit('baseline.create', 'host'));
        await store.baselines.setStatus(enforced.id, 'enforced', NOW, audit('baseline.enforce', enforced.id));
        const retired = await store.baselines.create(newBaseline('host'), audit('baseline.create', 'host'));
        await store.baselines.setStatus(retired.id, 'retired', NOW, audit('baseline.retire', retired.id));
        const before = await store.audit.head();
        await rejection(store.baselines.setStatus(enforced.id, 'enforced', NOW, audit('baseline.enforce', enforced.id)), 'ERR_BASELINE_STATE');
        await rejection(store.baselines.setStatus(retired.id, 'enforced', NOW, audit('baseline.enforce', retired.id)), 'ERR_BASELINE_STATE');
        await rejection(store.baselines.setStatus(retired.id, 'retired', NOW, audit('baseline.retire', retired.id)), 'ERR_BASELINE_STATE');
        await rejection(store.baselines.setStatus(randomUUID(), 'enforced', NOW, audit('baseline.enforce', 'x')), 'ERR_BASELINE_NOT_FOUND');
        expect(await store.audit.head()).toStrictEqual(before);
        expect((await store.baselines.get(enforced.id))?.status).toBe('enforced');
      });

      it('transactions asked for at once each commit or fail alone: a failing one among them changes nothing and the audit chain holds the others', async () => {
        const { store } = await fresh();
        const before = (await store.audit.head())?.seq ?? 0;
        const outcomes = await Promise.allSettled([
          store.baselines.create({ ...newBaseline('one'), createdAt: NOW }, audit('baseline.create', 'one')),
          store.baselines.setStatus(randomUUID(), 'enforced', NOW, audit('baseline.enforce', 'nothing')),
          store.baselines.create({ ...newBaseline('two'), createdAt: NOW }, audit('baseline.create', 'two')),
        ]);
        expect(outcomes.map((o) => o.status)).toStrictEqual(['fulfilled', 'rejected', 'fulfilled']);
        expect((outcomes[1] as PromiseRejectedResult).reason).toMatchObject({ code: 'ERR_BASELINE_NOT_FOUND' });
        expect((await store.baselines.inForce()).map((b) => b.status)).toStrictEqual(['staged', 'staged']);
        const head = (await store.audit.head())!;
        expect(head.seq).toBe(before + 2);
        expect((await verifyStoredChain(store)).verdict.ok).toBe(true);
      });

      it('inForce: the enforced and staged, newest enforcement, or creation, first', async () => {
        const { store } = await fresh();
        const make = async (name: string, createdAt: number) => store.baselines.create({ ...newBaseline(name), createdAt }, audit('baseline.create', name));
        const a = await make('a', NOW + 3);
        const b = await make('b', NOW + 1);
        const c = await make('c', NOW + 2);
        const d = await make('d', NOW + 4);
        await store.baselines.setStatus(a.id, 'enforced', NOW + 20, audit('baseline.enforce', a.id));
        await store.baselines.setStatus(b.id, 'enforced', NOW + 30, audit('baseline.enforce', b.id));
        await store.baselines.setStatus(c.id, 'retired', NOW + 40, audit('baseline.retire', c.id));
        expect(await store.baselines.inForce()).toStrictEqual([
          { id: b.id, version: 1, status: 'enforced' },
          { id: a.id, version: 1, status: 'enforced' },
          { id: d.id, version: 1, status: 'staged' },
        ]);
      });

      it('lists in pages ordered by name and version, filtered by status', async () => {
        const { store } = await fresh();
        const made: Baseline[] = [];
        for (const name of ['b', 'a', 'b', 'c', 'a', 'b']) made.push(await store.baselines.create(newBaseline(name), audit('baseline.create', name)));
        await store.baselines.setStatus(made[0]!.id, 'enforced', NOW, audit('baseline.enforce', made[0]!.id));
        await store.baselines.setStatus(made[3]!.id, 'retired', NOW, audit('baseline.retire', made[3]!.id));
        const pages = await allPages((after) => store.baselines.list({ limit: 4, ...(after ? { after } : {}) }));
        expect(pages.map((p) => p.length)).toStrictEqual([4, 2]);
        expect(pages.flat().map((b) => `${b.name}${b.version}`)).toStrictEqual(['a1', 'a2', 'b1', 'b2', 'b3', 'c1']);
        const staged = await allPages((after) => store.baselines.list({ limit: 2, status: 'staged', ...(after ? { after } : {}) }));
        expect(staged.flat().map((b) => `${b.name}${b.version}`)).toStrictEqual(['a1', 'a2', 'b2', 'b3']);
        expect((await store.baselines.list({ limit: 5, status: 'enforced' })).items.map((b) => b.id)).toStrictEqual([made[0]!.id]);
      });

      it('concurrent creations under one name get consecutive versions', async () => {
        const { db, store } = await fresh();
        const other = await db.open();
        const made = await Promise.all(Array.from({ length: 12 }, (_, i) => (i % 2 ? other : store).baselines.create(newBaseline('host'), audit('baseline.create', 'host'))));
        expect(made.map((b) => b.version).sort((x, y) => x - y)).toStrictEqual(Array.from({ length: 12 }, (_, i) => i + 1));
        await expectIntactChain(db, 12);
      });

      it('concurrent enforcements under one name leave one enforced, the others retired', async () => {
        const { db, store } = await fresh();
        const other = await db.open();
        const made: Baseline[] = [];
        for (let i = 0; i < 8; i++) made.push(await store.baselines.create(newBaseline('host'), audit('baseline.create', 'host')));
        await Promise.all(made.map((b, i) => (i % 2 ? other : store).baselines.setStatus(b.id, 'enforced', NOW + i, audit('baseline.enforce', b.id))));
        const statuses = await Promise.all(made.map(async (b) => (await store.baselines.get(b.id))!.status));
        expect(statuses.filter((s) => s === 'enforced')).toHaveLength(1);
        expect(statuses.filter((s) => s === 'retired')).toHaveLength(7);
        // Each enforcement after the first retired the one before it: 8 creations, 8 enforcements, 7 retirements.
        await expectIntactChain(db, 23);
      });
    });

    describe('agent status', () => {
      it('quarantine revokes unexpired credentials (the CRL lists the X509-SVIDs), release re-activates, revoke is final', async () => {
        const { store } = await fresh();
        const agent = await activated(store);
        const rec = attestation(agent.id);
        await store.attestations.record(rec);
        const [x509, jwt] = rec.credentials;
        expect(await store.attestations.revokedCertificates(NOW, CA_KID)).toStrictEqual([]);
        expect(await store.attestations.credential(x509!.id)).toStrictEqual(x509);

        const quarantined = await store.agents.setStatus(agent.id, 'quarantined', NOW + 10, audit('agent.quarantine', agent.id));
        expect(quarantined.status).toBe('quarantined');
        expect(await store.attestations.revokedCertificates(NOW + 20, CA_KID)).toStrictEqual([{ serial: x509!.id, revokedAt: NOW + 10 }]);
        expect((await store.attestations.credential(jwt!.id))?.revoked).toBe(true);
        // Expired serials leave the CRL.
        expect(await store.attestations.revokedCertificates(x509!.expiresAt, CA_KID)).toStrictEqual([]);
        expect(await rejection(store.attestations.record(attestation(agent.id)), 'ERR_AGENT_NOT_ACTIVE')).toMatchObject({ agentStatus: 'quarantined' });

        expect((await store.agents.setStatus(agent.id, 'active', NOW + 30, audit('agent.release', agent.id))).status).toBe('active');
        expect((await store.agents.setStatus(agent.id, 'active', NOW + 31, audit('agent.release', agent.id))).status).toBe('active');
        expect((await store.agents.setStatus(agent.id, 'revoked', NOW + 40, audit('agent.revoke', agent.id))).status).toBe('revoked');
        await rejection(store.agents.setStatus(agent.id, 'active', NOW + 50, audit('agent.release', agent.id)), 'ERR_AGENT_NOT_ACTIVE');
        await rejection(store.agents.setStatus('f'.repeat(64), 'revoked', NOW, audit('agent.revoke', 'x')), 'ERR_AGENT_NOT_FOUND');
        const actions = (await store.audit.list({ limit: 100 })).items.map((e) => e.action);
        expect(actions.filter((a) => a.startsWith('agent.') && a !== 'agent.activate')).toStrictEqual(['agent.quarantine', 'agent.release', 'agent.revoke']);
      });
    });

    describe('freshness', () => {
      it('marks agents without credentials issued within the window stale once, audited; credentials make them fresh', async () => {
        const { store } = await fresh();
        const old = await activated(store, { createdAt: NOW - 10_000 });
        const recent = await activated(store, { createdAt: NOW - 10 });
        const quarantined = await activated(store, { createdAt: NOW - 10_000 });
        await store.agents.setStatus(quarantined.id, 'quarantined', NOW, audit('agent.quarantine', quarantined.id));

        expect(await store.agents.markStale(NOW - 1000, NOW, 100)).toStrictEqual([old.id]);
        expect(await store.agents.markStale(NOW - 1000, NOW + 1, 100)).toStrictEqual([]);
        expect((await store.agents.get(old.id))?.staleAt).toBe(NOW);
        expect((await store.agents.get(recent.id))?.staleAt).toBeNull();
        const stale = (await store.audit.list({ limit: 100 })).items.filter((e) => e.action === 'agent.stale');
        expect(stale.map((e) => [e.actor, e.subject])).toStrictEqual([['system', old.id]]);

        // A refused attestation leaves it stale; one that issues credentials makes it fresh, audited.
        await store.attestations.record({ ...attestation(old.id, { status: 'contraindicated', at: NOW + 5 }), credentials: [] });
        expect((await store.agents.get(old.id))?.staleAt).toBe(NOW);
        const affirmed = attestation(old.id, { at: NOW + 10 });
        await store.attestations.record(affirmed);
        expect(await store.agents.get(old.id)).toMatchObject({ staleAt: null, lastAffirmedAt: NOW + 10 });
        expect((await store.audit.head())?.action).toBe('agent.fresh');
        // Measured from the last affirmation now, not from activation.
        expect(await store.agents.markStale(NOW - 5, NOW + 20, 100)).toStrictEqual([recent.id]);
        expect(await store.agents.markStale(NOW + 10, NOW + 20, 100)).toStrictEqual([]);
        expect(await store.agents.markStale(NOW + 11, NOW + 20, 100)).toStrictEqual([old.id]);
      });

      it('marks at most `limit` agents per call, oldest first', async () => {
        const { store } = await fresh();
        const agents = [];
        for (let i = 0; i < 3; i++) agents.push(await activated(store, { createdAt: NOW - 100 + i }));
        expect(await store.agents.markStale(NOW, NOW, 2)).toStrictEqual([agents[0]!.id, agents[1]!.id]);
        expect(await store.agents.markStale(NOW, NOW, 2)).toStrictEqual([agents[2]!.id]);
      });

      it('replicas marking at once mark each agent once', async () => {
        const db = await open();
        onTestFinished(() => db.dispose());
        const stores = [await db.open(), await db.open(), await db.open()];
        const ids = new Set<string>();
        for (let i = 0; i < 20; i++) ids.add((await activated(stores[0]!, { createdAt: NOW - 100 })).id);
        const marked = (await Promise.all(stores.flatMap((s) => [s.agents.markStale(NOW, NOW, 7), s.agents.markStale(NOW, NOW, 7)]))).flat();
        const again = await stores[0]!.agents.markStale(NOW, NOW, 100);
        expect(new Set([...marked, ...again])).toStrictEqual(ids);
        expect(marked.length + again.length).toBe(20);
        const entries = (await stores[0]!.audit.list({ limit: 1000 })).items.filter((e) => e.action === 'agent.stale');
        expect(entries.length).toBe(20);
      });
    });

    describe('attestations', () => {
      it('a record with a quarantine quarantines the agent and revokes its credentials in the same transaction', async () => {
        const { store } = await fresh();
        const agent = await activated(store);
        const first = attestation(agent.id);
        await store.attestations.record(first);
        const quarantine = { audit: audit('agent.quarantine', agent.id), challengedAt: first.verdict.at + 1 };
        const refused = { ...attestation(agent.id, { status: 'contraindicated', at: NOW + 100 }), credentials: [], quarantine };
        await store.attestations.record(refused);
        expect((await store.agents.get(agent.id))?.status).toBe('quarantined');
        expect(await store.attestations.revokedCertificates(NOW + 200, CA_KID)).toStrictEqual([{ serial: first.credentials[0]!.id, revokedAt: NOW + 100 }]);
        expect(await store.attestations.verdict(refused.verdict.id)).toStrictEqual(refused.verdict);
        expect((await store.audit.head())?.action).toBe('agent.quarantine');
      });

      it('a late answer to a challenge older than the last recorded attestation is stored but quarantines nothing', async () => {
        const { store } = await fresh();
        const agent = await activated(store);
        const first = attestation(agent.id);
        await store.attestations.record(first);
        const quarantine = { audit: audit('agent.quarantine', agent.id), challengedAt: first.verdict.at - 1 };
        const late = { ...attestation(agent.id, { status: 'contraindicated', at: NOW + 100 }), credentials: [], quarantine };
        await store.attestations.record(late);
        expect((await store.agents.get(agent.id))?.status).toBe('active');
        expect((await store.agents.get(agent.id))?.lastVerdictId).toBe(late.verdict.id);
        expect((await store.attestations.credential(first.credentials[0]!.id))?.revoked).toBe(false);
        expect((await store.audit.list({ limit: 100 })).items.map((e) => e.action)).not.toContain('agent.quarantine');
      });

      withClock('records verdict, credentials, clock, evidence, IMA progress and audit entries together', async () => {
        const { db, store } = await fresh(ticking(NOW));
        const agent = await activated(store);
        const baseline = await store.baselines.create(newBaseline('host'), audit('baseline.create', 'host'));
        const rec = attestation(agent.id, { baselineId: baseline.id, baselineVersion: 1 });
        await store.attestations.record(rec);
        expect(await store.attestations.verdict(rec.verdict.id)).toStrictEqual(rec.verdict);
        expect(await store.attestations.imaProgress(agent.id)).toStrictEqual(rec.ima);
        expect(await store.agents.get(agent.id)).toStrictEqual({
          ...agent,
          lastClock: rec.clock,
          lastEvidence: rec.evidence,
          lastVerdictId: rec.verdict.id,
          lastAttestedAt: rec.verdict.at,
          lastAffirmedAt: rec.verdict.at,
        });
        const credentials = await store.attestations.credentialsOf(agent.id, { limit: 10 });
        expect(credentials).toStrictEqual({ items: [...rec.credentials].reverse(), next: null });
        expect(await store.attestations.countCredentials()).toBe(2);
        const entries = (await store.audit.list({ limit: 10 })).items;
        expect(entries.slice(-2).map(({ action, subject, details }) => ({ action, subject, details }))).toStrictEqual(
          rec.audit.map(({ action, subject, details }) => ({ action, subject, details })),
        );
        await expectIntactChain(db, 4);
      });

      it('keeps the last clock, evidence and IMA progress when a record has none', async () => {
        const { store } = await fresh();
        const agent = await activated(store);
        const first = attestation(agent.id);
        await store.attestations.record(first);
        const second: AttestationRecord = { ...attestation(agent.id, { status: 'contraindicated' }), clock: null, evidence: null, credentials: [] };
        delete (second as { ima?: unknown }).ima;
        await store.attestations.record(second);
        const after = await store.agents.get(agent.id);
        expect(after).toMatchObject({ lastClock: first.clock, lastEvidence: first.evidence, lastVerdictId: second.verdict.id, lastAttestedAt: second.verdict.at });
        expect(await store.attestations.imaProgress(agent.id)).toStrictEqual(first.ima);
        const third = attestation(agent.id, {}, { resetCount: 8, state: { entries: 12 } });
        await store.attestations.record(third);
        expect(await store.attestations.imaProgress(agent.id)).toStrictEqual(third.ima);
      });

      for (const status of ['revoked', 'quarantined'] as const) {
        it(`stores nothing for a ${status} agent (ERR_AGENT_NOT_ACTIVE)`, async () => {
          const { db, store } = await fresh();
          const agent = await activated(store);
          await store.attestations.record(attestation(agent.id));
          await db.sql('UPDATE agents SET status = $1 WHERE id = $2', [status, agent.id]);
          const before = { agent: await store.agents.get(agent.id), head: await store.audit.head(), ima: await store.attestations.imaProgress(agent.id) };
          const refused = attestation(agent.id, {}, { resetCount: 99, state: { x: 1 } });
          await rejection(store.attestations.record(refused), 'ERR_AGENT_NOT_ACTIVE');
          expect(await store.attestations.verdict(refused.verdict.id)).toBeNull();
          expect(await store.attestations.countCredentials()).toBe(2);
          expect({ agent: await store.agents.get(agent.id), head: await store.audit.head(), ima: await store.attestations.imaProgress(agent.id) }).toStrictEqual(before);
        });
      }

      it('refuses a record for an unknown agent (ERR_AGENT_NOT_FOUND)', async () => {
        const { store } = await fresh();
        await rejection(store.attestations.record(attestation(randomHex(32))), 'ERR_AGENT_NOT_FOUND');
        expect(await store.attestations.countCredentials()).toBe(0);
      });

      it('a statement failing inside record rolls all of it back (ERR_STORE_CONFLICT)', async () => {
        const { store } = await fresh();
        const agent = await activated(store);
        const head = await store.audit.head();
        const rec = attestation(agent.id);
        const twice = { ...rec, credentials: [rec.credentials[0]!, { ...rec.credentials[1]!, id: rec.credentials[0]!.id }] };
        await rejection(store.attestations.record(twice), 'ERR_STORE_CONFLICT');
        expect(await store.attestations.verdict(rec.verdict.id)).toBeNull();
        expect(await store.agents.get(agent.id)).toStrictEqual(agent);
        expect(await store.attestations.imaProgress(agent.id)).toBeNull();
        expect(await store.attestations.countCredentials()).toBe(0);
        expect(await store.audit.head()).toStrictEqual(head);
      });

      it('pages credentials newest first', async () => {
        const { store } = await fresh();
        const agent = await activated(store);
        const other = await activated(store);
        const issued: Credential[] = [];
        for (let i = 0; i < 3; i++) {
          const rec = attestation(agent.id, { at: NOW + i * 1000 });
          issued.push(...rec.credentials);
          await store.attestations.record(rec);
        }
        await store.attestations.record(attestation(other.id));
        const pages = await allPages((after) => store.attestations.credentialsOf(agent.id, { limit: 4, ...(after ? { after } : {}) }));
        expect(pages.map((p) => p.length)).toStrictEqual([4, 2]);
        const newestFirst = [...issued].sort((a, b) => b.issuedAt - a.issuedAt || (a.id < b.id ? 1 : -1));
        expect(pages.flat()).toStrictEqual(newestFirst);
        expect(await store.attestations.countCredentials()).toBe(8);
        expect(await store.attestations.credentialsOf(randomHex(32), { limit: 5 })).toStrictEqual({ items: [], next: null });
      });
    });

    describe('keys', () => {
      it('insertIfNoActive stores the first key of a name and returns it to later callers', async () => {
        const { store } = await fresh();
        const first = issuingKey('x509-ca', { certificate: bytesOf(500), notAfter: NOW + 10 * 365 * 86_400_000 });
        expect(await store.keys.insertIfNoActive(first, audit('key.create', 'x509-ca'))).toStrictEqual(first);
        const second = issuingKey('x509-ca');
        expect(await store.keys.insertIfNoActive(second, audit('key.create', 'x509-ca'))).toStrictEqual(first);
        const jwt = issuingKey('jwt', { state: 'prepared' });
        expect(await store.keys.insertIfNoActive(jwt, audit('key.create', 'jwt'))).toStrictEqual({ ...jwt, state: 'active' });
        expect(await store.keys.list('x509-ca')).toStrictEqual([first]);
        expect(await store.keys.list('audit')).toStrictEqual([]);
        expect((await store.keys.list()).map((k) => k.name)).toStrictEqual(['jwt', 'x509-ca']);
        expect((await store.audit.head())?.seq).toBe(2);
      });

      it('of replicas inserting at once, all use the one key stored first', async () => {
        const { db, store } = await fresh();
        const other = await db.open();
        const keys = Array.from({ length: 10 }, () => issuingKey('jwt'));
        const got = await Promise.all(keys.map((k, i) => (i % 2 ? other : store).keys.insertIfNoActive(k, audit('key.create', 'jwt'))));
        expect(new Set(got.map((k) => k.kid)).size).toBe(1);
        expect(await store.keys.list('jwt')).toStrictEqual([got[0]]);
        await expectIntactChain(db, 1);
      });

      it('prepare -> promote -> prune: one prepared, one active, old until its last credential expired; each change audited and sequenced', async () => {
        const { db, store } = await fresh();
        const first = await store.keys.insertIfNoActive(issuingKey('jwt', { kid: JWT_KID }), audit('key.create', 'jwt'));
        const sequence = await store.keys.sequence();
        const next = issuingKey('jwt', { state: 'prepared', createdAt: NOW + 10, activatedAt: null });
        // Not the successor of a key that is not active: nothing prepared.
        expect(await store.keys.prepare(next, next.kid, audit('key.prepare', 'jwt'))).toStrictEqual([first]);
        expect(await store.keys.prepare(next, first.kid, audit('key.prepare', 'jwt'))).toStrictEqual([first, next]);
        // One prepared key per name: a second prepare leaves the first.
        expect(await store.keys.prepare(issuingKey('jwt', { state: 'prepared', activatedAt: null, createdAt: NOW + 11 }), first.kid, audit('key.prepare', 'jwt'))).toStrictEqual([first, next]);
        expect(await store.keys.sequence()).toBe(sequence + 1);
        // A credential the first key signed, valid until NOW + 3_600_001.
        const agent = await activated(store);
        await store.attestations.record(attestation(agent.id));

        // Promotion expecting another active key changes nothing.
        expect(await store.keys.promote('jwt', next.kid, NOW + 20, 'token:x')).toStrictEqual([first, next]);
        const promoted = await store.keys.promote('jwt', first.kid, NOW + 20, 'token:x');
        expect(promoted).toStrictEqual([
          { ...first, state: 'old', retiredAt: NOW + 20 },
          { ...next, state: 'active', activatedAt: NOW + 20 },
        ]);
        expect(await store.keys.sequence()).toBe(sequence + 2);
        // Again with the old expectation: already done, nothing changes.
        expect(await store.keys.promote('jwt', first.kid, NOW + 30, 'token:x')).toStrictEqual(promoted);
        // Nothing prepared: nothing to promote.
        expect(await store.keys.promote('jwt', next.kid, NOW + 30, 'token:x')).toStrictEqual(promoted);

        // The old key signed a credential still valid: kept; and never one retired after `retiredBefore`.
        expect(await store.keys.prune(NOW + 3_600_000, NOW + 21)).toStrictEqual([]);
        expect(await store.keys.prune(NOW + 3_600_001, NOW + 20)).toStrictEqual([]);
        expect(await store.keys.prune(NOW + 3_600_001, NOW + 21)).toStrictEqual([{ ...first, state: 'old', retiredAt: NOW + 20 }]);
        expect(await store.keys.list('jwt')).toStrictEqual([promoted[1]]);
        // The active key is never pruned, whatever it signed.
        expect(await store.keys.prune(NOW + 10 ** 12, NOW + 10 ** 12)).toStrictEqual([]);
        expect(await store.keys.sequence()).toBe(sequence + 3);
        const ring = await store.keys.ring();
        expect(ring.sequence).toBe(sequence + 3);
        expect(ring.keys).toStrictEqual([promoted[1]]);

        const actions = (await store.audit.list({ limit: 100 })).items.filter((e) => e.action.startsWith('key.'));
        expect(actions.map((e) => [e.action, e.actor, e.details.kid ?? null])).toStrictEqual([
          ['key.create', 'system', null],
          ['key.prepare', 'system', null],
          ['key.activate', 'token:x', next.kid],
          ['key.retire', 'token:x', first.kid],
          ['key.prune', 'system', first.kid],
        ]);
        await expectIntactChain(db, 8);
      });

      it('old audit keys are never pruned', async () => {
        const { store } = await fresh();
        const first = await store.keys.insertIfNoActive(issuingKey('audit'), audit('key.create', 'audit'));
        await store.keys.prepare(issuingKey('audit', { state: 'prepared', activatedAt: null, createdAt: NOW + 1 }), first.kid, audit('key.prepare', 'audit'));
        await store.keys.promote('audit', first.kid, NOW + 1, 'system');
        expect(await store.keys.prune(NOW + 10 ** 12, NOW + 10 ** 12)).toStrictEqual([]);
        expect((await store.keys.list('audit')).map((k) => k.state)).toStrictEqual(['old', 'active']);
      });

      it('of replicas preparing and promoting at once, one key is prepared and one rotation happens, audited once', async () => {
        const { db, store } = await fresh();
        const stores = [store, await db.open(), await db.open()];
        const first = await store.keys.insertIfNoActive(issuingKey('x509-ca'), audit('key.create', 'x509-ca'));
        const candidates = Array.from({ length: 9 }, (_, i) => issuingKey('x509-ca', { state: 'prepared', activatedAt: null, createdAt: NOW + 1 + i }));
        const prepared = (await Promise.all(candidates.map((k, i) => stores[i % 3]!.keys.prepare(k, first.kid, audit('key.prepare', 'x509-ca'))))).map(
          (keys) => keys.find((k) => k.state === 'prepared')!,
        );
        expect(new Set(prepared.map((k) => k.kid)).size).toBe(1);
        const after = await Promise.all(Array.from({ length: 9 }, (_, i) => stores[i % 3]!.keys.promote('x509-ca', first.kid, NOW + 100, 'system')));
        for (const keys of after) expect(keys.map((k) => [k.kid, k.state])).toStrictEqual([[first.kid, 'old'], [prepared[0]!.kid, 'active']]);
        const entries = (await store.audit.list({ limit: 100 })).items;
        expect(entries.filter((e) => e.action === 'key.prepare')).toHaveLength(1);
        expect(entries.filter((e) => e.action === 'key.activate')).toHaveLength(1);
        expect(entries.filter((e) => e.action === 'key.retire')).toHaveLength(1);
        await expectIntactChain(db, 4);
      });

      it('a CRL number is more than the stored one: the first of replicas saving at once wins, the others get its CRL', async () => {
        const { db, store } = await fresh();
        const other = await db.open();
        const crl = (number: number, tag: number) => ({ caKid: CA_KID, number, der: bytesOf(100 + tag), serialsSha256: randomHex(32), renewAt: NOW + tag });
        expect(await store.keys.crl(CA_KID)).toBeNull();
        const one = crl(1, 1);
        const [a, b] = await Promise.all([store.keys.saveCrl(one, null), other.keys.saveCrl(crl(1, 2), null)]);
        expect(a).toStrictEqual(b);
        const second = await Promise.all([0, 1, 2, 3].map((i) => (i % 2 ? other : store).keys.saveCrl(crl(2, 10 + i), 1)));
        expect(new Set(second.map((c) => Buffer.from(c.der).toString('hex'))).size).toBe(1);
        expect((await store.keys.crl(CA_KID))?.number).toBe(2);
        // Saving on top of a number that is no longer stored changes nothing.
        expect(await store.keys.saveCrl(crl(2, 30), 1)).toStrictEqual(second[0]);
        await rejection(store.keys.saveCrl(crl(2, 40), 2), 'ERR_STORE');
        expect((await store.keys.saveCrl(crl(7, 50), 2)).number).toBe(7);
        expect(await store.keys.crl('another-ca')).toBeNull();
      });
    });

    describe('tokens', () => {
      it('round-trips tokens; findByHash skips revoked ones; a hash is unique (ERR_STORE_CONFLICT)', async () => {
        const { store } = await fresh();
        const live = token('operator', { createdAt: NOW });
        const revoked = token('auditor', { createdAt: NOW + 1, revokedAt: NOW + 2 });
        await store.tokens.create(live, audit('token.create', live.id));
        await store.tokens.create(revoked, audit('token.create', revoked.id));
        expect(await store.tokens.findByHash(live.hash)).toStrictEqual(live);
        expect(await store.tokens.findByHash(revoked.hash)).toBeNull();
        expect(await store.tokens.findByHash(randomHex(32))).toBeNull();
        expect(await store.tokens.list()).toStrictEqual([live, revoked]);
        await rejection(store.tokens.create(token('admin', { hash: live.hash }), audit('token.create', 'x')), 'ERR_STORE_CONFLICT');
        expect((await store.audit.head())?.seq).toBe(2);
      });

      it('revoke: the token is found no more, once audited; again changes nothing; unknown ids are ERR_NOT_FOUND', async () => {
        const { store } = await fresh();
        const live = token('admin', { createdAt: NOW });
        await store.tokens.create(live, audit('token.create', live.id));
        const revoked = await store.tokens.revoke(live.id, NOW + 10, audit('token.revoke', live.id));
        expect(revoked).toStrictEqual({ ...live, revokedAt: NOW + 10 });
        expect(await store.tokens.findByHash(live.hash)).toBeNull();
        expect(await store.tokens.revoke(live.id, NOW + 20, audit('token.revoke', live.id))).toStrictEqual(revoked);
        await rejection(store.tokens.revoke(randomUUID(), NOW, audit('token.revoke', 'x')), 'ERR_NOT_FOUND');
        const head = (await store.audit.head())!;
        expect(head).toMatchObject({ seq: 2, action: 'token.revoke', subject: live.id });
      });

      it('createFirstAdmin creates one admin, once', async () => {
        const { store } = await fresh();
        const first = token('admin');
        expect(await store.tokens.createFirstAdmin(first, audit('token.create', first.id))).toBe(true);
        expect(await store.tokens.createFirstAdmin(token('admin'), audit('token.create', 'x'))).toBe(false);
        expect(await store.tokens.list()).toStrictEqual([first]);
        await rejection(store.tokens.createFirstAdmin(token('operator'), audit('token.create', 'x')), 'ERR_INPUT');
        expect((await store.audit.head())?.seq).toBe(1);
      });

      it('createFirstAdmin creates nothing when an admin exists', async () => {
        const { store } = await fresh();
        await store.tokens.create(token('admin'), audit('token.create', 'a'));
        expect(await store.tokens.createFirstAdmin(token('admin'), audit('token.create', 'b'))).toBe(false);
        expect(await store.tokens.list()).toHaveLength(1);
      });

      it('of replicas starting at once, one creates the first admin', async () => {
        const { db, store } = await fresh();
        const other = await db.open();
        const candidates = Array.from({ length: 10 }, () => token('admin'));
        const created = await Promise.all(candidates.map((t, i) => (i % 2 ? other : store).tokens.createFirstAdmin(t, audit('token.create', t.id))));
        expect(created.filter(Boolean)).toHaveLength(1);
        expect(await store.tokens.list()).toStrictEqual([candidates[created.indexOf(true)]]);
        await expectIntactChain(db, 1);
      });
    });

    describe('audit chain', () => {
      withClock('links every entry to the one before, with the hash recomputed from the rows', async () => {
        const { db, store } = await fresh(ticking(NOW));
        expect(await store.audit.head()).toBeNull();
        expect(await store.audit.list({ limit: 5 })).toStrictEqual({ items: [], next: null });
        const details: AuditInput['details'] = { nested: { z: [1, 'two', null, { b: true, a: false }], a: -0.5 }, text: '☃ "quoted" \\ \u0001' };
        await store.tokens.create(token('operator'), { actor: 'token:1', action: 'token.create', subject: 'tok', details });
        const agent = await activated(store);
        await store.attestations.record(attestation(agent.id));
        const entries = await expectIntactChain(db, 4);
        // One reading of the clock per transaction, taken once the chain's head is locked.
        expect(entries.map((e) => e.at - entries[0]!.at)).toStrictEqual([0, 1, 2, 2]);
        expect(entries[0]).toMatchObject({ seq: 1, actor: 'token:1', action: 'token.create', subject: 'tok', details, prevHash: '0'.repeat(64) });
        expect(await store.audit.head()).toStrictEqual(entries[3]);
        const pages = await allPages((after) => store.audit.list({ limit: 3, ...(after ? { after } : {}) }));
        expect(pages.map((p) => p.map((e) => e.seq))).toStrictEqual([[1, 2, 3], [4]]);
        expect(pages.flat()).toStrictEqual(entries);
      });

      it('a transaction with more entries and credentials than one statement inserts (8) keeps them all, in order', async () => {
        const { db, store } = await fresh();
        const agent = await activated(store);
        const rec = attestation(agent.id);
        const credentials = Array.from({ length: 11 }, (_, i) => ({ ...rec.credentials[i % 2]!, id: i % 2 ? randomUUID() : randomHex(16), issuedAt: NOW + i }));
        const entries = Array.from({ length: 19 }, (_, i) => audit('attestation.verdict', agent.id, { i }));
        await store.attestations.record({ ...rec, credentials, audit: entries });
        const chain = await expectIntactChain(db, 20);
        expect(chain.slice(1).map((e) => e.details.i)).toStrictEqual(Array.from({ length: 19 }, (_, i) => i));
        for (const c of credentials) expect(await store.attestations.credential(c.id)).toStrictEqual(c);
      });

      it('refuses details that have no JSON form (ERR_INPUT), changing nothing', async () => {
        const { store } = await fresh();
        const t = token('operator');
        await rejection(store.tokens.create(t, audit('token.create', t.id, { n: Number.NaN })), 'ERR_INPUT');
        expect(await store.tokens.list()).toStrictEqual([]);
      });

      it('concurrent audited writes make one gap-free chain', async () => {
        const { db, store } = await fresh();
        const other = await db.open();
        await Promise.all(Array.from({ length: 40 }, (_, i) => {
          const t = token('operator');
          return (i % 2 ? other : store).tokens.create(t, audit('token.create', t.id, { i }));
        }));
        const entries = await expectIntactChain(db, 40);
        expect(entries.map((e) => e.details.i).sort((a, b) => Number(a) - Number(b))).toStrictEqual(Array.from({ length: 40 }, (_, i) => i));
      });

      it('reads the recorded head, ranges of entries, and the first entry past the head', async () => {
        const { db, store } = await fresh();
        expect(await store.audit.recordedHead()).toStrictEqual({ seq: 0, hash: '0'.repeat(64) });
        for (let i = 0; i < 5; i++) await store.tokens.create(token('operator'), audit('token.create', `t${i}`));
        const entries = await expectIntactChain(db, 5);
        expect(await store.audit.recordedHead()).toStrictEqual({ seq: 5, hash: entries[4]!.hash });
        expect(await store.audit.range(0, 5, 2)).toStrictEqual(entries.slice(0, 2));
        expect(await store.audit.range(2, 4, 10)).toStrictEqual(entries.slice(2, 4));
        await rejection(store.audit.range(0, 5, 0), 'ERR_INPUT');
        expect(await store.audit.pastHead()).toBeNull();
        // A row written around the chain's lock: the head does not know it.
        await db.sql("INSERT INTO audit_entries (seq, at, actor, action, subject, details, prev_hash, hash) VALUES (7, 1, 'x', 'y', 'z', '{}', 'p', 'h')");
        expect(await store.audit.pastHead()).toMatchObject({ seq: 7, actor: 'x', prevHash: 'p', hash: 'h' });
        expect(await store.audit.range(0, 5, 100)).toHaveLength(5);
      });

      it('checkpoints: one per seq, the first stored kept, listed by seq; storing one appends no entry', async () => {
        const { store } = await fresh();
        for (let i = 0; i < 3; i++) await store.tokens.create(token('operator'), audit('token.create', `t${i}`));
        const head = await store.audit.recordedHead();
        expect(await store.audit.lastCheckpoint()).toBeNull();
        expect(await store.audit.checkpoints({ limit: 10 })).toStrictEqual({ items: [], next: null });
        const second = { seq: 2, hash: randomHex(32), at: NOW, kid: randomHex(32), signature: bytesOf(64) };
        expect(await store.audit.checkpoint(second)).toStrictEqual(second);
        expect(await store.audit.checkpoint({ ...second, at: NOW + 1, kid: 'other', signature: bytesOf(64) })).toStrictEqual(second);
        const third = { seq: 3, hash: head.hash, at: NOW + 2, kid: second.kid, signature: bytesOf(64) };
        await store.audit.checkpoint(third);
        expect(await store.audit.lastCheckpoint()).toStrictEqual(third);
        const pages = await allPages((after) => store.audit.checkpoints({ limit: 1, ...(after ? { after } : {}) }));
        expect(pages).toStrictEqual([[second], [third]]);
        await rejection(store.audit.checkpoints({ limit: 1, after: 'x' }), 'ERR_INPUT');
        expect(await store.audit.recordedHead()).toStrictEqual(head);
      });

      it('replicas checkpointing one seq at once store one checkpoint', async () => {
        const { db, store } = await fresh();
        const other = await db.open();
        await store.tokens.create(token('operator'), audit('token.create', 't'));
        const { seq, hash } = await store.audit.recordedHead();
        const made = Array.from({ length: 12 }, (_, i) => ({ seq, hash, at: NOW + i, kid: `kid-${i}`, signature: bytesOf(64) }));
        const stored = await Promise.all(made.map((c, i) => (i % 2 ? other : store).audit.checkpoint(c)));
        expect(new Set(stored.map((c) => c.kid)).size).toBe(1);
        expect(made).toContainEqual(stored[0]);
        expect((await store.audit.checkpoints({ limit: 100 })).items).toStrictEqual([stored[0]]);
      });
    });
  });
}

const NOW = 1_750_000_000_000;
/** The kids of the keys the credentials of `attestation` are signed with. */
const CA_KID = 'ca-kid-of-the-tests';
const JWT_KID = 'jwt-kid-of-the-tests';

function randomHex(bytes: number): string {
  return randomBytes(bytes).toString('hex');
}

/** Plain Uint8Arrays, as callers hand them in (the store returns the same type). */
function bytesOf(n: number): Uint8Array {
  return new Uint8Array(randomBytes(n));
}

export function audit(action: string, subject: string, details: AuditInput['details'] = { n: 1 }): AuditInput {
  return { actor: 'system', action, subject, details };
}

function enrollment(overrides: Partial<PendingEnrollment> = {}): PendingEnrollment {
  return {
    id: randomUUID(),
    agentId: randomHex(32),
    ekPublic: bytesOf(314),
    akPublic: bytesOf(90),
    ekCertificate: bytesOf(900),
    labels: { env: 'test' },
    secretHash: bytesOf(32),
    createdAt: NOW,
    expiresAt: NOW + 300_000,
    ...overrides,
  };
}

type NewAgent = Parameters<Store['agents']['activate']>[0];

function newAgent(overrides: Partial<NewAgent> = {}): NewAgent {
  return { id: randomHex(32), ekPublic: bytesOf(314), akPublic: bytesOf(90), ekCertificate: bytesOf(900), labels: {}, createdAt: NOW, ...overrides };
}

export async function activated(store: Store, overrides: Parameters<typeof newAgent>[0] = {}): Promise<Agent> {
  const a = newAgent(overrides);
  return store.agents.activate(a, audit('agent.activate', a.id));
}

function challenge(agentId: string, overrides: Partial<Challenge> = {}): Challenge {
  return { nonce: randomHex(32), agentId, createdAt: NOW - 1000, expiresAt: NOW + 59_000, baselineId: null, pcrSelection: { sha256: [0, 7] }, ...overrides };
}

function newBaseline(name: string): Parameters<Store['baselines']['create']>[0] {
  return { id: randomUUID(), name, status: 'staged', document: { name }, createdAt: NOW, createdBy: 'token:operator' };
}

export function attestation(agentId: string, verdict: Partial<Verdict> = {}, ima: { resetCount: number; state: Json } = { resetCount: 3, state: { entries: 10, pcr: 'ab'.repeat(32) } }): AttestationRecord {
  const v: Verdict = {
    id: randomUUID(),
    agentId,
    at: NOW,
    status: 'affirming',
    baselineId: null,
    baselineVersion: null,
    reasons: [{ code: 'OK', detail: 'all good' }],
    claims: { pcrDigest: 'cd'.repeat(32), facts: { secureBoot: true } },
    ...verdict,
  };
  const credential = (kind: Credential['kind'], issuedAt: number, revoked: boolean): Credential => ({
    id: kind === 'x509-svid' ? randomHex(16) : randomUUID(),
    kind,
    agentId,
    verdictId: v.id,
    issuedAt,
    expiresAt: issuedAt + 3_600_000,
    certificateSha256: randomHex(32),
    revoked,
    issuerKid: kind === 'x509-svid' ? CA_KID : JWT_KID,
  });
  return {
    verdict: v,
    credentials: [credential('x509-svid', v.at, false), credential('jwt-svid', v.at + 1, true)],
    clock: { clock: '18446744073709551615', resetCount: 4_294_967_295, restartCount: 2, safe: true },
    evidence: { pcrs: { sha256: { '7': 'ef'.repeat(32) } }, facts: { secureBoot: true, kernel: 'vmlinuz\u0000' } },
    ima: { agentId, ...ima },
    audit: [audit('attestation.verdict', agentId, { verdict: v.id }), audit('credential.issue', agentId, { count: 2 })],
  };
}

function issuingKey(name: IssuingKey['name'], overrides: Partial<IssuingKey> = {}): IssuingKey {
  return {
    name,
    kid: randomHex(32),
    uri: `pkcs11:token=attestor;object=${name}`,
    state: 'active',
    publicKeySpki: bytesOf(91),
    certificate: null,
    createdAt: NOW,
    notAfter: null,
    activatedAt: NOW,
    retiredAt: null,
    ...overrides,
  };
}

function token(role: OperatorToken['role'], overrides: Partial<OperatorToken> = {}): OperatorToken {
  return { id: randomUUID(), hash: randomHex(32), role, label: `${role} token`, createdAt: NOW, revokedAt: null, ...overrides };
}

/** Follows `next` from the first page to the last; the pages' items. */
async function allPages<T>(list: (after: string | undefined) => Promise<{ items: readonly T[]; next: string | null }>): Promise<T[][]> {
  const pages: T[][] = [];
  let after: string | undefined;
  for (;;) {
    const page = await list(after);
    pages.push([...page.items]);
    if (page.next === null) return pages;
    after = page.next;
  }
}

/**
 * Checks the chain from the raw rows: seq 1..count without a gap, each prevHash the hash
 * before it (zeros first), each hash SHA-256(prevHash bytes || canonical JSON of the entry)
 * recomputed here. Returns the entries as the Store lists them, which must be the same.
 */
async function expectIntactChain(db: TestDatabase, count: number) {
  const rows = await db.sql('SELECT seq, at, actor, action, subject, details, prev_hash, hash FROM audit_entries ORDER BY seq');
  expect(rows.map((r) => Number(r.seq))).toStrictEqual(Array.from({ length: count }, (_, i) => i + 1));
  let prev = '0'.repeat(64);
  for (const r of rows) {
    expect(r.prev_hash).toBe(prev);
    const entry = { seq: Number(r.seq), at: Number(r.at), actor: r.actor, action: r.action, subject: r.subject, details: JSON.parse(r.details as string) as Json };
    const hash = createHash('sha256').update(Buffer.from(prev, 'hex')).update(canonicalJson(entry as Json)).digest('hex');
    expect(r.hash).toBe(hash);
    prev = hash;
  }
  const store = await db.open();
  const listed = (await store.audit.list({ limit: 1000 })).items;
  expect(listed.map((e) => e.hash)).toStrictEqual(rows.map((r) => r.hash));
  return listed;
}
