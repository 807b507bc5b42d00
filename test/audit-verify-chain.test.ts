/**
 * The pure audit chain verifier (src/audit/verify-chain.ts): any single edit, deletion,
 * insertion or swap of the rows of a valid chain is named with the right kind and seq; the
 * checkpoints' signatures and hashes are checked against the audit keys.
 */
import { generateKeyPairSync, sign, type KeyObject } from 'node:crypto';
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { checkpointBytes } from '../src/audit/checkpoint.js';
import { createChainVerifier, verifyAuditChain, type AuditPublicKey, type ChainProblemKind } from '../src/audit/verify-chain.js';
import { auditEntryHash, GENESIS_HASH, nextAuditEntry, type ChainHead } from '../src/store/audit-chain.js';
import type { AuditCheckpoint, AuditEntry, AuditInput } from '../src/store/store.js';

const T0 = 1_750_000_000_000;

function chainOf(inputs: readonly AuditInput[]): AuditEntry[] {
  const entries: AuditEntry[] = [];
  let head: ChainHead = { seq: 0, hash: GENESIS_HASH };
  inputs.forEach((input, i) => {
    const entry = nextAuditEntry(head, input, T0 + i);
    entries.push(entry);
    head = entry;
  });
  return entries;
}

function headOf(entries: readonly AuditEntry[]): ChainHead {
  const last = entries[entries.length - 1];
  return last ? { seq: last.seq, hash: last.hash } : { seq: 0, hash: GENESIS_HASH };
}

const auditInput: fc.Arbitrary<AuditInput> = fc.record({
  actor: fc.constantFrom('system', 'token:1', 'agent:ab'),
  action: fc.constantFrom('token.create', 'agent.activate', 'attestation.verdict'),
  subject: fc.string({ maxLength: 8 }),
  details: fc.dictionary(fc.string({ maxLength: 4 }), fc.oneof(fc.integer(), fc.string({ maxLength: 6 }), fc.boolean())),
});
const chain = fc.array(auditInput, { minLength: 2, maxLength: 24 }).map(chainOf);

const hex64 = fc.uint8Array({ minLength: 32, maxLength: 32 }).map((b) => Buffer.from(b).toString('hex'));

/** The columns of a row but its seq. */
function contentOf(e: AuditEntry): Omit<AuditEntry, 'seq'> {
  const { seq: _seq, ...content } = e;
  return content;
}

type Tamper = (entries: readonly AuditEntry[]) => { rows: AuditEntry[]; kind: ChainProblemKind; seq: number };

/** One column of one row changed in place. */
const edit = (k: number, column: 'at' | 'actor' | 'action' | 'subject' | 'details' | 'prevHash' | 'hash', rehash: boolean): Tamper => (entries) => {
  const rows = [...entries];
  const e = rows[k - 1]!;
  const changed: AuditEntry = {
    ...e,
    ...(column === 'at' ? { at: e.at + 1 } : {}),
    ...(column === 'actor' ? { actor: `${e.actor}x` } : {}),
    ...(column === 'action' ? { action: `${e.action}x` } : {}),
    ...(column === 'subject' ? { subject: `${e.subject}x` } : {}),
    ...(column === 'details' ? { details: { ...e.details, tampered: true } } : {}),
    ...(column === 'prevHash' ? { prevHash: e.prevHash.replace(/^./, (c) => (c === '0' ? '1' : '0')) } : {}),
    ...(column === 'hash' ? { hash: e.hash.replace(/^./, (c) => (c === '0' ? '1' : '0')) } : {}),
  };
  rows[k - 1] = rehash ? { ...changed, hash: auditEntryHash(changed.prevHash, changed) } : changed;
  // A rebuilt last entry leaves every link intact: only the recorded head tells.
  return { rows, kind: rehash && k === rows.length ? 'rewritten' : 'edited', seq: k };
};

const remove = (k: number): Tamper => (entries) => ({
  rows: entries.filter((e) => e.seq !== k),
  kind: k === entries.length ? 'truncated' : 'deleted',
  seq: k,
});

/** A forged row at seq k; the rows from k on move one seq up, as an UPDATE seq = seq + 1 would. */
const insert = (k: number, forged: 'linked' | 'unlinked' | 'garbage-linked' | 'garbage', junk: string): Tamper => (entries) => {
  const before = entries[k - 2];
  const prevHash = forged === 'linked' || forged === 'garbage-linked' ? (before?.hash ?? GENESIS_HASH) : junk;
  const content = { seq: k, at: T0 + 99, actor: 'token:evil', action: 'token.create', subject: 'backdoor', details: {} };
  const hash = forged === 'linked' || forged === 'unlinked' ? auditEntryHash(prevHash, content) : junk;
  const rows = [...entries.slice(0, k - 1), { ...content, prevHash, hash }, ...entries.slice(k - 1).map((e) => ({ ...e, seq: e.seq + 1 }))];
  return { rows, kind: 'inserted', seq: k };
};

/** Rows j and k exchange every column but their seq, as exchanging their seqs would. */
const swap = (j: number, k: number): Tamper => (entries) => {
  const rows = [...entries];
  rows[j - 1] = { seq: j, ...contentOf(entries[k - 1]!) };
  rows[k - 1] = { seq: k, ...contentOf(entries[j - 1]!) };
  return { rows, kind: 'reordered', seq: j };
};

/** A row number of a chain of `n` rows, from a fraction. */
const at = (n: number, f: number) => 1 + Math.floor(f * n);
const fraction = fc.double({ min: 0, max: 1, maxExcluded: true, noNaN: true });

describe('audit chain verification', () => {
  it('chains on from a malformed stored head (odd-length hex) rather than failing every write, and the verifier names it', () => {
    const head = { seq: 1, hash: 'a'.repeat(63) };
    const next = nextAuditEntry(head, { actor: 'system', action: 'test', subject: 's', details: {} }, 0);
    expect(next.prevHash).toBe(head.hash);
    const verdict = createChainVerifier({ from: head, head: { seq: 2, hash: next.hash }, checkpoints: [], keys: [] });
    verdict.add(next);
    expect(verdict.end()).toMatchObject({ ok: false, problem: { kind: 'edited', seq: 2 } });
  });

  it('an untouched chain is intact', () => {
    fc.assert(
      fc.property(chain, (entries) => {
        const verdict = verifyAuditChain({ entries, head: headOf(entries), checkpoints: [], keys: [] });
        expect(verdict).toStrictEqual({ ok: true, entries: entries.length, head: headOf(entries), checkpoints: 0, lastCheckpoint: null, uncheckpointed: entries.length });
      }),
    );
    expect(verifyAuditChain({ entries: [], head: { seq: 0, hash: GENESIS_HASH }, checkpoints: [], keys: [] }).ok).toBe(true);
  });

  type Column = Parameters<typeof edit>[1];
  type Forged = Parameters<typeof insert>[1];
  /** A tamper for a chain of n rows, named for the report of a failing run. */
  const tamper = (name: string, make: (n: number) => Tamper) => ({ name, make });
  const tampers = fc.oneof(
    fc
      .tuple(fraction, fc.constantFrom<Column>('at', 'actor', 'action', 'subject', 'details', 'prevHash', 'hash'))
      .map(([f, column]) => tamper(`edit ${column}`, (n) => edit(at(n, f), column, false))),
    fc.tuple(fraction, fc.constantFrom<Column>('at', 'actor', 'details')).map(([f, column]) => tamper(`edit ${column}, rehash`, (n) => edit(at(n, f), column, true))),
    fraction.map((f) => tamper('delete', (n) => remove(at(n, f)))),
    fc
      .tuple(fraction, fc.constantFrom<Forged>('linked', 'unlinked', 'garbage-linked', 'garbage'), hex64)
      // Seq 1 to n + 1: before any row, or appended after the last.
      .map(([f, forged, junk]) => tamper(`insert ${forged}`, (n) => insert(at(n + 1, f), forged, junk))),
    fc.tuple(fraction, fraction).map(([a, b]) =>
      tamper('swap', (n) => {
        const j = at(n - 1, a);
        return swap(j, j + at(n - j, b));
      }),
    ),
  );

  it('property: any single edit, deletion, insertion or swap is named, with its seq', () => {
    fc.assert(
      fc.property(chain, tampers, (entries, { make }) => {
        const { rows, kind, seq } = make(entries.length)(entries);
        const verdict = verifyAuditChain({ entries: rows, head: headOf(entries), checkpoints: [], keys: [] });
        expect(verdict.ok).toBe(false);
        if (verdict.ok) return;
        expect({ kind: verdict.problem.kind, seq: verdict.problem.seq }).toStrictEqual({ kind, seq });
        expect(verdict.problem.message).toBe(`audit chain broken at seq ${seq}: ${verdict.problem.detail}`);
      }),
      { numRuns: 1000 },
    );
  });

  it('names an edit as the store tests see it', () => {
    const entries = chainOf(Array.from({ length: 5 }, (_, i) => ({ actor: 'system', action: 'token.create', subject: `t${i}`, details: { i } })));
    const { rows } = edit(3, 'details', false)(entries);
    const verdict = verifyAuditChain({ entries: rows, head: headOf(entries), checkpoints: [], keys: [] });
    expect(verdict).toMatchObject({ ok: false, entries: 2, problem: { kind: 'edited', seq: 3, message: 'audit chain broken at seq 3: entry edited (its hash does not match its content)' } });
  });

  it('reads no further than it must: add says stop at the first problem', () => {
    const entries = chainOf(Array.from({ length: 6 }, (_, i) => ({ actor: 'system', action: 'a', subject: 's', details: { i } })));
    const verifier = createChainVerifier({ head: headOf(entries), checkpoints: [], keys: [] });
    const rows = remove(2)(entries).rows;
    expect(verifier.add(rows[0]!)).toBe(true);
    expect(verifier.add(rows[1]!)).toBe(false);
    expect(verifier.end()).toMatchObject({ ok: false, problem: { kind: 'deleted', seq: 2 } });
  });
});

describe('audit checkpoints', () => {
  const pair = () => {
    const { privateKey, publicKey } = generateKeyPairSync('ec', { namedCurve: 'P-256' });
    return { privateKey, key: { kid: `kid-${Math.random()}`, spki: new Uint8Array(publicKey.export({ type: 'spki', format: 'der' })) } };
  };
  const audit = pair();
  const old = pair();
  const keys: AuditPublicKey[] = [audit.key, old.key];
  const entries = chainOf(Array.from({ length: 10 }, (_, i) => ({ actor: 'system', action: 'token.create', subject: `t${i}`, details: { i } })));
  const head = headOf(entries);
  const checkpoint = (seq: number, by: { privateKey: KeyObject; key: AuditPublicKey }, hash = entries[seq - 1]?.hash ?? 'ab'.repeat(32)): AuditCheckpoint => {
    const statement = { seq, hash, at: T0 + 1000 + seq };
    return { ...statement, kid: by.key.kid, signature: new Uint8Array(sign('sha256', checkpointBytes(statement), { key: by.privateKey, dsaEncoding: 'ieee-p1363' })) };
  };

  it('checkpoints signed by any audit key, old ones too, cover the chain up to the last', () => {
    const verdict = verifyAuditChain({ entries, head, keys, checkpoints: [checkpoint(8, audit), checkpoint(4, old)] });
    expect(verdict).toStrictEqual({ ok: true, entries: 10, head, checkpoints: 2, lastCheckpoint: { seq: 8, at: T0 + 1008, kid: audit.key.kid }, uncheckpointed: 2 });
  });

  it('a forged signature, a statement changed after signing and an unknown kid are bad-checkpoint', () => {
    const good = checkpoint(4, audit);
    const forged = { ...checkpoint(6, audit), signature: new Uint8Array(64) };
    const moved = { ...checkpoint(5, audit), seq: 6, hash: entries[5]!.hash };
    const stranger = pair();
    const unknown = checkpoint(6, stranger);
    for (const [bad, detail] of [
      [forged, 'signature does not verify'],
      [moved, 'signature does not verify'],
      [unknown, 'unknown audit key'],
      [{ ...checkpoint(6, audit), signature: new Uint8Array(3) }, 'signature does not verify'],
    ] as const) {
      const verdict = verifyAuditChain({ entries, head, keys, checkpoints: [good, bad] });
      expect(verdict).toMatchObject({ ok: false, entries: 6, checkpoints: 1, lastCheckpoint: { seq: 4 }, problem: { kind: 'bad-checkpoint', seq: 6 } });
      expect(verdict.ok ? '' : verdict.problem.detail).toContain(detail);
    }
  });

  it('a chain rebuilt with recomputed hashes is rewritten at the first checkpoint it passes; past the last one, nothing tells', () => {
    const rebuilt = chainOf(entries.map((e, i) => (i === 2 ? { ...e, subject: 'forged' } : e)));
    const verdict = verifyAuditChain({ entries: rebuilt, head: headOf(rebuilt), keys, checkpoints: [checkpoint(4, audit), checkpoint(8, audit)] });
    expect(verdict).toMatchObject({ ok: false, entries: 4, problem: { kind: 'rewritten', seq: 4 } });
    // The same rebuild after seq 8, the head row moved with it: the limit docs/security.md states.
    const tail = chainOf(entries.map((e, i) => (i === 9 ? { ...e, subject: 'forged' } : e)));
    expect(verifyAuditChain({ entries: tail, head: headOf(tail), keys, checkpoints: [checkpoint(8, audit)] }).ok).toBe(true);
  });

  it('a checkpoint past the end of the chain is truncated; a forged one there bad-checkpoint', () => {
    const cut = entries.slice(0, 7);
    const verdict = verifyAuditChain({ entries: cut, head: headOf(cut), keys, checkpoints: [checkpoint(4, audit), checkpoint(9, audit)] });
    expect(verdict).toMatchObject({ ok: false, entries: 7, problem: { kind: 'truncated', seq: 8 } });
    const forged = { ...checkpoint(9, audit), kid: old.key.kid };
    expect(verifyAuditChain({ entries: cut, head: headOf(cut), keys, checkpoints: [forged] })).toMatchObject({ ok: false, problem: { kind: 'bad-checkpoint', seq: 9 } });
  });

  it('witnesses kept outside the database: a rebuilt chain is rewritten at the witnessed seq; one past the end is truncated', () => {
    const rebuilt = chainOf(entries.map((e, i) => (i === 9 ? { ...e, subject: 'forged' } : e)));
    const witness = { seq: 10, hash: entries[9]!.hash };
    expect(verifyAuditChain({ entries: entries, head: headOf(entries), keys, checkpoints: [], witnesses: [witness] }).ok).toBe(true);
    expect(verifyAuditChain({ entries: rebuilt, head: headOf(rebuilt), keys, checkpoints: [], witnesses: [witness] })).toMatchObject({ ok: false, problem: { kind: 'rewritten', seq: 10 } });
    const cut = entries.slice(0, 7);
    expect(verifyAuditChain({ entries: cut, head: headOf(cut), keys, checkpoints: [], witnesses: [witness] })).toMatchObject({ ok: false, problem: { kind: 'truncated', seq: 8 } });
  });

  it('another spelling of a hash is an edit of its own entry; a row past the head after a gap is inserted, not a deletion', () => {
    const upper = entries.map((e, i) => (i === 4 ? { ...e, prevHash: e.prevHash.toUpperCase() } : e));
    expect(verifyAuditChain({ entries: upper, head: headOf(entries), keys, checkpoints: [] })).toMatchObject({ ok: false, problem: { kind: 'edited', seq: 5 } });
    const last = entries[entries.length - 1]!;
    const beyond = [...entries, { ...last, seq: last.seq + 3 }];
    expect(verifyAuditChain({ entries: beyond, head: headOf(entries), keys, checkpoints: [] })).toMatchObject({ ok: false, problem: { kind: 'inserted', seq: last.seq + 3 } });
  });
});
