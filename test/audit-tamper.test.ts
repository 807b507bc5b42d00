/**
 * The audit chain of a running verifier, tampered with in its database: rows edited, deleted,
 * inserted and reordered, the chain rebuilt with recomputed hashes, checkpoints forged, by
 * SQL on the SQLite file and on the PostgreSQL schema, as someone with database access and no
 * audit key could. `attestor audit verify --data-dir/--database` and GET /v1/audit/verify
 * name the kind and the seq of each; the untouched chain, signed checkpoints included, is intact.
 */
import BetterSqlite3 from 'better-sqlite3';
import { createHash } from 'node:crypto';
import { join } from 'node:path';
import type pg from 'pg';
import { afterAll, afterEach, beforeAll, describe, expect, it, vi } from 'vitest';
import { z } from 'zod';
import { bootstrapCa, createApiClient, type ApiClient } from '../src/client/api-client.js';
import { runAttestor } from '../src/cli/program.js';
import { canonicalJson } from '../src/store/canonical-json.js';
import type { Json } from '../src/store/store.js';
import { AuditCheckpointBody, AuditEntryBody, AuditVerificationBody, pageOf, TokenCreateResponse } from '../src/wire/schemas.js';
import { refused } from './helpers/api.js';
import { runCli } from './helpers/cli.js';
import { startTestVerifier, type TestVerifier } from './helpers/verifier.js';
import { schemaClient } from './store-pg.js';

type Row = Record<string, unknown>;

/** Raw SQL on the verifier's own database ($1, $2 ... in both dialects). */
interface RawSql {
  run(text: string, params?: readonly unknown[]): Promise<Row[]>;
  close(): Promise<void>;
}

async function rawSql(v: TestVerifier): Promise<RawSql> {
  if (v.database) {
    const client: pg.Client = await schemaClient(new URL(v.database).searchParams.get('schema')!);
    return { run: async (text, params = []) => (await client.query(text, [...params])).rows as Row[], close: () => client.end() };
  }
  const db = new BetterSqlite3(join(v.dataDir, 'attestor.db'));
  db.pragma('busy_timeout = 5000');
  return {
    async run(text, params = []) {
      const statement = db.prepare(text);
      const bound = Object.fromEntries(params.map((p, i) => [i + 1, p]));
      return statement.reader ? (statement.all(bound) as Row[]) : (statement.run(bound), []);
    },
    close: async () => void db.close(),
  };
}

const ENTRY_COLUMNS = 'seq, at, actor, action, subject, details, prev_hash, hash';

function entryHash(prevHash: string, r: Row): string {
  const entry = { seq: Number(r.seq), at: Number(r.at), actor: r.actor, action: r.action, subject: r.subject, details: JSON.parse(r.details as string) as Json };
  return createHash('sha256').update(Buffer.from(prevHash, 'hex')).update(canonicalJson(entry as Json)).digest('hex');
}

describe.each([
  ['sqlite', 'file'],
  ['postgres', 'softhsm'],
] as const)('audit chain tampered in the database (%s, %s keys)', (store, keys) => {
  let v: TestVerifier;
  let sql: RawSql;
  let caPem: string;
  const clients: ApiClient[] = [];
  let auditor: ApiClient;
  let auditorToken: string;
  let saved: { entries: Row[]; checkpoints: Row[]; head: Row[] };

  const client = (token: string) => {
    const c = createApiClient({ server: v.url, caPem, token });
    clients.push(c);
    return c;
  };
  const offline = () => ['--data-dir', v.dataDir, ...(v.database ? ['--database', v.database] : [])];
  const entries = () => sql.run(`SELECT ${ENTRY_COLUMNS} FROM audit_entries ORDER BY seq`);

  /** Moves rows `from`.. up by one seq, in two steps: a row never takes a seq still held. */
  const renumberFrom = async (from: number) => {
    await sql.run('UPDATE audit_entries SET seq = seq + 1000000 WHERE seq >= $1', [from]);
    await sql.run('UPDATE audit_entries SET seq = seq - 999999 WHERE seq >= 1000000');
  };

  /** The CLI against the running verifier, as the auditor. */
  const online = (args: string[]) => {
    vi.stubEnv('ATTESTOR_SERVER', v.url);
    vi.stubEnv('ATTESTOR_CA_FINGERPRINT', v.caFingerprint);
    vi.stubEnv('ATTESTOR_TOKEN', auditorToken);
    return runCli(runAttestor, args).finally(() => vi.unstubAllEnvs());
  };

  /** A seq from `from` on, before the head, that no checkpoint names (a checkpoint there would tell first). */
  const uncheckpointed = (from: number) => {
    const named = new Set(saved.checkpoints.map((c) => Number(c.seq)));
    const seq = saved.entries.map((r) => Number(r.seq)).find((s) => s >= from && s < saved.entries.length && !named.has(s));
    expect(seq).toBeDefined();
    return seq!;
  };

  /** Entry 2's subject changed and every hash after it recomputed, the head row with them: a consistent chain. */
  async function rebuildWithSubjectOf2(subject: string) {
    let prevHash = '0'.repeat(64);
    for (const r of saved.entries) {
      const row = Number(r.seq) === 2 ? { ...r, subject } : r;
      const hash = entryHash(prevHash, row);
      await sql.run('UPDATE audit_entries SET subject = $1, prev_hash = $2, hash = $3 WHERE seq = $4', [row.subject, prevHash, hash, r.seq]);
      prevHash = hash;
    }
    await sql.run('UPDATE audit_head SET hash = $1', [prevHash]);
  }

  /** Every way of verifying, offline and online, must name the same first problem. */
  async function expectBroken(kind: string, seq: number) {
    const cli = await runCli(runAttestor, ['audit', 'verify', '--json', ...offline()]);
    expect(cli.code, cli.err).toBe(1);
    expect(cli.err).toMatch(new RegExp(`^error: ERR_AUDIT_CHAIN: audit chain broken at seq ${seq}: `));
    const printed = AuditVerificationBody.parse(JSON.parse(cli.out));
    expect(printed.problem).toMatchObject({ kind, seq });
    expect(await auditor.call('GET', '/v1/audit/verify', AuditVerificationBody)).toStrictEqual(printed);
    const remote = await online(['audit', 'verify', '--json']);
    expect({ code: remote.code, err: remote.err, out: JSON.parse(remote.out) as unknown }).toStrictEqual({ code: 1, err: cli.err, out: printed });
    return printed;
  }

  beforeAll(async () => {
    v = await startTestVerifier({ store, keys, config: { audit: { checkpointEvery: 5, checkpointSeconds: 3600 } } });
    caPem = await bootstrapCa(v.url, v.caFingerprint);
    sql = await rawSql(v);
    const admin = client(v.adminToken);
    for (let i = 0; i < 12; i++) await admin.call('POST', '/v1/tokens', TokenCreateResponse, { role: 'relying-party', label: `rp-${i}` });
    const made = await admin.call('POST', '/v1/tokens', TokenCreateResponse, { role: 'auditor', label: 'audit' });
    auditor = client(made.token);
    auditorToken = made.token;
    // The checkpointer looks every second: wait for the one of the last 5 entries.
    await vi.waitFor(async () => expect((await v.verifier.store.audit.lastCheckpoint())?.seq).toBe((await v.verifier.store.audit.recordedHead()).seq), { timeout: 10_000, interval: 200 });
    saved = { entries: await entries(), checkpoints: await sql.run('SELECT seq, hash, at, kid, signature FROM audit_checkpoints ORDER BY seq'), head: await sql.run('SELECT seq, hash FROM audit_head') };
  }, 120_000);

  afterEach(async () => {
    await sql.run('DELETE FROM audit_entries');
    for (const r of saved.entries) await sql.run(`INSERT INTO audit_entries (${ENTRY_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)`, [r.seq, r.at, r.actor, r.action, r.subject, r.details, r.prev_hash, r.hash]);
    await sql.run('DELETE FROM audit_checkpoints');
    for (const c of saved.checkpoints) await sql.run('INSERT INTO audit_checkpoints (seq, hash, at, kid, signature) VALUES ($1, $2, $3, $4, $5)', [c.seq, c.hash, c.at, c.kid, c.signature]);
    await sql.run('UPDATE audit_head SET seq = $1, hash = $2', [saved.head[0]!.seq, saved.head[0]!.hash]);
  });

  afterAll(async () => {
    for (const c of clients) c.close();
    await sql?.close();
    await v?.stop();
  });

  it('the untouched chain is intact, offline and online; its checkpoints are signed by the audit key', async () => {
    const n = saved.entries.length;
    const cli = await runCli(runAttestor, ['audit', 'verify', ...offline()]);
    expect(cli.code, cli.err).toBe(0);
    expect(cli.out).toMatch(new RegExp(`^audit chain intact: ${n} entries, head seq ${n} \\([0-9a-f]{64}\\); ${saved.checkpoints.length} checkpoints verified, last checkpoint at seq ${n}, signed `));
    const served = await auditor.call('GET', '/v1/audit/verify', AuditVerificationBody);
    expect(served).toMatchObject({ ok: true, entries: n, head: { seq: n }, uncheckpointed: 0, checkpoints: { stored: saved.checkpoints.length, verified: saved.checkpoints.length, last: { seq: n } } });
    const auditKey = (await v.verifier.store.keys.list('audit')).find((k) => k.state === 'active')!;
    expect(served.checkpoints.last?.kid).toBe(auditKey.kid);
    const remote = await online(['audit', 'verify']);
    expect(remote).toStrictEqual({ code: 0, out: cli.out, err: '' });
  });

  it('reading: an auditor lists the chain and its checkpoints; an operator reads it but may not verify it', async () => {
    const page = await auditor.call('GET', '/v1/audit?limit=3', pageOf(AuditEntryBody));
    expect(page.items.map((e) => e.seq)).toStrictEqual([1, 2, 3]);
    expect(page.next).toBe('3');
    expect(page.items[0]).toMatchObject({ prevHash: '0'.repeat(64), hash: saved.entries[0]!.hash });
    const checkpoints = await auditor.call('GET', '/v1/audit/checkpoints', pageOf(AuditCheckpointBody));
    expect(checkpoints.items.map((c) => c.seq)).toStrictEqual(saved.checkpoints.map((c) => Number(c.seq)));
    const admin = client(v.adminToken);
    const operator = client((await admin.call('POST', '/v1/tokens', TokenCreateResponse, { role: 'operator' })).token);
    // That token was audited: the chain grew, so take the rows as they are now for the restore.
    saved.entries = await entries();
    saved.head = await sql.run('SELECT seq, hash FROM audit_head');
    expect((await operator.call('GET', '/v1/audit', pageOf(AuditEntryBody))).items.length).toBeGreaterThan(3);
    await refused(operator.call('GET', '/v1/audit/verify', z.unknown()), 'ERR_FORBIDDEN');
    const rp = client((await admin.call('POST', '/v1/tokens', TokenCreateResponse, { role: 'relying-party' })).token);
    saved.entries = await entries();
    saved.head = await sql.run('SELECT seq, hash FROM audit_head');
    await refused(rp.call('GET', '/v1/audit', z.unknown()), 'ERR_FORBIDDEN');

    const listed = await runCli(runAttestor, ['audit', 'list', '--limit', '2', '--json', ...offline()]);
    expect(listed.code, listed.err).toBe(0);
    expect(JSON.parse(listed.out)).toStrictEqual({ items: page.items.slice(0, 2), next: '2' });
    expect(await online(['audit', 'list', '--limit', '2', '--json'])).toStrictEqual(listed);
    const both = await runCli(runAttestor, ['audit', 'verify', '--server', v.url, ...offline()]);
    expect(both.code).toBe(2);
    expect(both.err).toMatch(/^error: give either --server/);
    const all = await runCli(runAttestor, ['audit', 'list', '--limit', '4', '--all', ...offline()]);
    expect(all.out.trimEnd().split('\n')).toHaveLength(saved.entries.length + 1);
    expect(all.out).toMatch(/^SEQ +AT +ACTOR +ACTION +SUBJECT +DETAILS\n1 +/);
  });

  it('an edited entry: a column changed in place', async () => {
    await sql.run('UPDATE audit_entries SET details = $1 WHERE seq = 4', ['{"role":"admin","by":"nobody"}']);
    const found = await expectBroken('edited', 4);
    expect(found.problem?.message).toBe('audit chain broken at seq 4: entry edited (its hash does not match its content)');
    expect(found.entries).toBe(3);
  });

  it('details that are no longer JSON: named, and still listed', async () => {
    await sql.run('UPDATE audit_entries SET details = $1 WHERE seq = 5', ['{"role": adm']);
    await expectBroken('edited', 5);
    const page = await auditor.call('GET', '/v1/audit?after=4&limit=1', pageOf(AuditEntryBody));
    expect(page.items[0]?.details).toStrictEqual({ '(not JSON)': '{"role": adm' });
  });

  it('an edited entry whose hash was recomputed: the next entry still links to the old hash', async () => {
    const seq = uncheckpointed(3);
    const r: Row = { ...saved.entries[seq - 1]!, actor: 'token:someone-else' };
    await sql.run('UPDATE audit_entries SET actor = $1, hash = $2 WHERE seq = $3', [r.actor, entryHash(r.prev_hash as string, r), seq]);
    await expectBroken('edited', seq);
  });

  it('a deleted entry', async () => {
    await sql.run('DELETE FROM audit_entries WHERE seq = 7');
    await expectBroken('deleted', 7);
  });

  it('the last entries deleted: the head recorded with the chain says where it ended', async () => {
    await sql.run('DELETE FROM audit_entries WHERE seq >= $1', [saved.entries.length - 1]);
    await expectBroken('truncated', saved.entries.length - 1);
  });

  it('an inserted entry, the ones after it renumbered', async () => {
    const seq = uncheckpointed(3);
    await renumberFrom(seq);
    const prev = saved.entries[seq - 2]!;
    const forged = { seq, at: Number(prev.at) + 1, actor: 'system', action: 'token.create', subject: 'backdoor', details: '{"role":"admin"}', prev_hash: prev.hash };
    await sql.run(`INSERT INTO audit_entries (${ENTRY_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)`, [...Object.values(forged), entryHash(prev.hash as string, forged)]);
    await expectBroken('inserted', seq);
  });

  it('an entry appended around the chain lock', async () => {
    const last = saved.entries[saved.entries.length - 1]!;
    const forged = { seq: Number(last.seq) + 1, at: Number(last.at) + 1, actor: 'system', action: 'token.create', subject: 'backdoor', details: '{}', prev_hash: last.hash };
    await sql.run(`INSERT INTO audit_entries (${ENTRY_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)`, [...Object.values(forged), entryHash(last.hash as string, forged)]);
    await expectBroken('inserted', forged.seq);
  });

  it('two entries swapped, near or far', async () => {
    const swap = async (a: number, b: number) => {
      await sql.run('UPDATE audit_entries SET seq = 1000000 WHERE seq = $1', [a]);
      await sql.run('UPDATE audit_entries SET seq = $1 WHERE seq = $2', [a, b]);
      await sql.run('UPDATE audit_entries SET seq = $1 WHERE seq = 1000000', [b]);
    };
    await swap(3, 4);
    await expectBroken('reordered', 3);
    await swap(3, 4);
    await swap(2, 9);
    await expectBroken('reordered', 2);
  });

  it('the chain rebuilt with recomputed hashes and head: the first checkpoint it passes tells', async () => {
    await rebuildWithSubjectOf2('rewritten');
    await expectBroken('rewritten', Number(saved.checkpoints[0]!.seq));
  });

  it('a forged checkpoint signature, and a checkpoint of a key that is not an audit key', async () => {
    const c = saved.checkpoints[saved.checkpoints.length - 1]!;
    const signature = Buffer.from(c.signature as Uint8Array);
    signature[10] = signature[10]! ^ 1;
    await sql.run('UPDATE audit_checkpoints SET signature = $1 WHERE seq = $2', [signature, c.seq]);
    const forged = await expectBroken('bad-checkpoint', Number(c.seq));
    expect(forged.problem?.detail).toContain('signature does not verify');
    await sql.run('UPDATE audit_checkpoints SET signature = $1, kid = $2 WHERE seq = $3', [c.signature, 'not-a-key', c.seq]);
    expect((await expectBroken('bad-checkpoint', Number(c.seq))).problem?.detail).toBe('checkpoint signed by an unknown audit key (kid not-a-key)');
  });

  it('the chain rebuilt and the checkpoints covering the edit deleted: the checkpointer signs nothing, and a witness kept elsewhere names it', async () => {
    const before = await v.verifier.store.audit.lastCheckpoint();
    const first = saved.checkpoints[0]!;
    await rebuildWithSubjectOf2('rewritten');
    await sql.run('DELETE FROM audit_checkpoints');
    // What the database alone shows is now a consistent chain without checkpoints.
    const offlineOnly = await runCli(runAttestor, ['audit', 'verify', ...offline()]);
    expect(offlineOnly.code, offlineOnly.err).toBe(0);
    // More entries make a checkpoint due: the running checkpointer misses the one it signed, and signs nothing.
    const admin = client(v.adminToken);
    for (let i = 0; i < 6; i++) await admin.call('POST', '/v1/tokens', TokenCreateResponse, { role: 'relying-party' });
    await new Promise((resolve) => setTimeout(resolve, 2500));
    expect(await v.verifier.store.audit.lastCheckpoint()).toBeNull();
    expect(before).not.toBeNull();
    // The checkpoint's log line, kept off the database's host, is a witness the rewrite cannot meet.
    const witnessed = await runCli(runAttestor, ['audit', 'verify', ...offline(), '--expect', `${first.seq}:${first.hash}`]);
    expect(witnessed.code).toBe(1);
    expect(witnessed.err).toMatch(new RegExp(`^error: ERR_AUDIT_CHAIN: audit chain broken at seq ${first.seq}: entries rewritten \\(the chain up to seq ${first.seq} does not hash to what the witness recorded`));
    // afterEach restores the chain; the checkpointer trusts the last checkpoint it signed again.
  });

  it('checkpoints count only by the pinned audit key: a key row added to the table vouches for nothing', async () => {
    const auditKey = (await v.verifier.store.keys.list('audit')).find((k) => k.state === 'active')!;
    const pinned = await runCli(runAttestor, ['audit', 'verify', ...offline(), '--audit-key', auditKey.kid]);
    expect(pinned.code, pinned.err).toBe(0);
    const other = await runCli(runAttestor, ['audit', 'verify', ...offline(), '--audit-key', 'AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA']);
    expect(other.code).toBe(1);
    expect(other.err).toMatch(/checkpoint signed by an unknown audit key/);
    const online = await runCli(runAttestor, ['audit', 'verify', '--audit-key', auditKey.kid, '--server', v.url, '--ca-fingerprint', v.caFingerprint]);
    expect(online.code).toBe(2);
  });

  it('the checkpointer signs nothing over a chain tampered with since its last checkpoint', async () => {
    const before = await v.verifier.store.audit.lastCheckpoint();
    const admin = client(v.adminToken);
    const create = () => admin.call('POST', '/v1/tokens', TokenCreateResponse, { role: 'relying-party' });
    // Fewer than checkpointEvery, then the edit, then enough to make a checkpoint due.
    for (let i = 0; i < 3; i++) await create();
    const edited = saved.entries.length + 2;
    await sql.run("UPDATE audit_entries SET details = '{}' WHERE seq = $1", [edited]);
    for (let i = 0; i < 3; i++) await create();
    // Two polls of the checkpointer at least.
    await new Promise((resolve) => setTimeout(resolve, 2500));
    expect(await v.verifier.store.audit.lastCheckpoint()).toStrictEqual(before);
    await expectBroken('edited', edited);
  });
});
