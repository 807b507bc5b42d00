import { createPublicKey, verify, type KeyObject } from 'node:crypto';
import { auditEntryHash, GENESIS_HASH, type ChainHead } from '../store/audit-chain.js';
import type { AuditCheckpoint, AuditEntry } from '../store/store.js';
import { checkpointBytes } from './checkpoint.js';

/*
 * Verification of the audit chain: pure, no I/O. It is fed the entries in seq order, one at a
 * time (a chain can be longer than memory: src/audit/verify-stored-chain.ts reads it in
 * pages), with the head the chain's lock row records, the signed checkpoints and the public
 * audit keys (every state: old keys verify what they signed). It answers ok, or the FIRST
 * problem, with its seq and one of these kinds. `prev` is the last entry accepted (seq 0 and
 * 64 zeros before the first), `r` the entry read after it, `t` the one read after `r`:
 *
 * - `deleted` (seq: the first missing seq): r.seq > prev.seq + 1, a gap in the seqs.
 * - `inserted` (seq: r.seq): r.seq is past the recorded head; or r fails (below) and the
 *   chain goes around it: t.prevHash is prev's hash. Seq r.seq - 1: r fails (or is past the
 *   head without linking to prev), but its stored hash is right for its content at seq
 *   r.seq - 1: an entry was put before it and it and the entries after it were renumbered.
 * - `reordered` (seq: r.seq): seqs read out of order; or r fails and its hash is right for
 *   its content at seq r.seq + 1 (two neighbours swapped); or r fails and none of the other
 *   rules explains it: its hash fits neither its seq nor the entry before it, as when it was
 *   moved here from a seq further away.
 * - `edited` (seq: r.seq): r's hash does not match its content but r links to prev (a column
 *   changed in place, the hash column included), or r's hash is right with prev's hash in
 *   place of its prev_hash (prev_hash changed). Seq prev.seq: r is consistent in itself but
 *   does not link to prev, and t does not link to prev either: prev was edited and its hash
 *   recomputed (r still links to its old hash).
 * - `truncated` (seq: the first missing seq): the chain ends before the recorded head, or a
 *   checkpoint or witness names a seq past the last entry.
 * - `rewritten` (seq: the checkpoint's, witness's or head's seq): every entry up to that seq
 *   is consistent and linked, but the hash there is not the one the checkpoint signed (the
 *   witness or the head recorded): the chain up to it was rebuilt with recomputed hashes.
 *   Which entry was changed first cannot be known: only that it is at or before that seq.
 *   Likewise an `edited` seq is where the chain stops being the one written: the first
 *   changed entry is at or before it when several were re-hashed together.
 * - A hash or prev_hash that is not 64 lowercase hex digits is `edited` at its entry; an entry
 *   past the recorded head is `inserted` even when seqs are missing before it.
 * - `bad-checkpoint` (seq: the checkpoint's): its kid is no audit key, or its signature over
 *   src/audit/checkpoint.ts's bytes does not verify. Checked when the walk reaches its seq.
 *
 * A failing r is one whose hash is not SHA-256(its prev_hash || its content) or whose
 * prev_hash is not prev's hash; it is classified once t is read (or the end is reached), by
 * the rules in the order above. Each rule names the right seq and kind for a single edit,
 * deletion, insertion or swap of rows (test/audit-verify-chain.test.ts checks it as a
 * property); several tampers together are named by the first one found, perhaps as another
 * kind. Without a key, whoever can write the database can rebuild the whole chain after the
 * last checkpoint, and the recorded head with it: no rule can see that (docs/security.md).
 */

export type ChainProblemKind = 'edited' | 'deleted' | 'inserted' | 'reordered' | 'truncated' | 'rewritten' | 'bad-checkpoint';

export interface ChainProblem {
  readonly kind: ChainProblemKind;
  readonly seq: number;
  /** What was found, e.g. `entry edited (its hash does not match its content)`. */
  readonly detail: string;
  /** `audit chain broken at seq 42: <detail>`. */
  readonly message: string;
}

/** An audit public key, by the kid the keys table records. */
export interface AuditPublicKey {
  readonly kid: string;
  /** DER SubjectPublicKeyInfo (ECDSA P-256). */
  readonly spki: Uint8Array;
}

/** The last checkpoint the chain was checked against. */
export interface CoveringCheckpoint {
  readonly seq: number;
  readonly at: number;
  readonly kid: string;
}

export type ChainVerdict =
  | {
      readonly ok: true;
      readonly entries: number;
      readonly head: ChainHead;
      /** Checkpoints whose signature and hash were verified. */
      readonly checkpoints: number;
      readonly lastCheckpoint: CoveringCheckpoint | null;
      /** Entries after the last checkpoint: only the head row vouches for them. */
      readonly uncheckpointed: number;
    }
  | {
      readonly ok: false;
      /** Entries accepted before the problem. */
      readonly entries: number;
      readonly checkpoints: number;
      readonly lastCheckpoint: CoveringCheckpoint | null;
      readonly problem: ChainProblem;
    };

export interface ChainVerifierInput {
  /** The head the chain's lock row records (seq 0 and 64 zeros while empty). */
  readonly head: ChainHead;
  /** Where to start: after this entry, taken as good (a checkpoint's); default the start of the chain. */
  readonly from?: ChainHead;
  /** Every checkpoint (any order); read before the head, so none names a seq past it. */
  readonly checkpoints: readonly AuditCheckpoint[];
  readonly keys: readonly AuditPublicKey[];
  /**
   * Heads recorded outside the database (the checkpointer's log lines, an auditor's notes):
   * the entry at each seq must have that hash (`rewritten` otherwise; `truncated` past the end).
   */
  readonly witnesses?: readonly ChainHead[];
}

export interface ChainVerifier {
  /**
   * The next entry in seq order. False once a problem is found: feed no more. Feed every
   * entry up to the head, then the first entry past it, if any.
   */
  add(entry: AuditEntry): boolean;
  end(): ChainVerdict;
}

export function createChainVerifier(input: ChainVerifierInput): ChainVerifier {
  const { head } = input;
  let prev: ChainHead = input.from ?? { seq: 0, hash: GENESIS_HASH };
  const checkpoints = input.checkpoints.filter((c) => c.seq > prev.seq).sort((a, b) => a.seq - b.seq);
  const witnesses = new Map((input.witnesses ?? []).map((w) => [w.seq, w.hash]));
  const signed = signatureCheck(input.keys);
  let entries = 0;
  let nextCheckpoint = 0;
  let lastCheckpoint: CoveringCheckpoint | null = null;
  let pending: AuditEntry | undefined;
  let problem: ChainProblem | undefined;

  const fail = (kind: ChainProblemKind, seq: number, detail: string): false => {
    problem = { kind, seq, detail, message: `audit chain broken at seq ${seq}: ${detail}` };
    return false;
  };

  /** The checkpoints (and witnesses) up to `entry`'s seq, now that it is accepted. */
  const checkCheckpoints = (entry: ChainHead): boolean => {
    const witnessed = witnesses.get(entry.seq);
    if (witnessed !== undefined && witnessed !== entry.hash) {
      return fail('rewritten', entry.seq, `entries rewritten (the chain up to seq ${entry.seq} does not hash to what the witness recorded, ${witnessed})`);
    }
    for (; nextCheckpoint < checkpoints.length && checkpoints[nextCheckpoint]!.seq <= entry.seq; nextCheckpoint++) {
      const c = checkpoints[nextCheckpoint]!;
      const bad = signed(c);
      if (bad) return fail('bad-checkpoint', c.seq, bad);
      // A seq below the first (0 or less) is never walked past: it names no entry.
      if (c.seq !== entry.seq) return fail('bad-checkpoint', c.seq, 'checkpoint names no entry');
      if (c.hash !== entry.hash) {
        return fail('rewritten', c.seq, `entries rewritten (the chain up to seq ${c.seq} does not hash to what the checkpoint of ${new Date(c.at).toISOString()} signed)`);
      }
      lastCheckpoint = { seq: c.seq, at: c.at, kid: c.kid };
    }
    return true;
  };

  const renumbered = (r: AuditEntry): false =>
    fail('inserted', r.seq - 1, `entry inserted (the entries after it were renumbered: seq ${r.seq} hashes as seq ${r.seq - 1})`);

  /** The problem of the failing entry `r`, knowing the entry after it (`t`), if any. */
  const classify = (r: AuditEntry, t: AuditEntry | undefined): false => {
    const skipped = t !== undefined && t.prevHash === prev.hash;
    if (hashAt(r, r.prevHash, r.seq) === r.hash) {
      if (skipped) return fail('inserted', r.seq, 'entry inserted (the next entry links to the one before it)');
      if (prev.seq === 0) return fail('edited', r.seq, 'entry edited (its prev_hash is not the start of the chain)');
      return fail('edited', prev.seq, `entry edited and its hash recomputed (entry ${r.seq} links to another hash)`);
    }
    if (hashAt(r, r.prevHash, r.seq + 1) === r.hash) return fail('reordered', r.seq, `entry moved (its hash is that of seq ${r.seq + 1}: swapped with the entry there)`);
    if (skipped) return fail('inserted', r.seq, 'entry inserted (the next entry links to the one before it)');
    if (r.prevHash === prev.hash) return fail('edited', r.seq, 'entry edited (its hash does not match its content)');
    if (hashAt(r, prev.hash, r.seq) === r.hash) return fail('edited', r.seq, 'entry edited (its prev_hash was changed)');
    if (r.seq > 1 && hashAt(r, r.prevHash, r.seq - 1) === r.hash) return renumbered(r);
    return fail('reordered', r.seq, 'entry moved here from another seq (its hash fits neither its seq nor the entry before it)');
  };

  const verdict = (): ChainVerdict => {
    const checked = nextCheckpoint;
    if (problem) return { ok: false, entries, checkpoints: checked, lastCheckpoint, problem };
    return { ok: true, entries, head: { seq: prev.seq, hash: prev.hash }, checkpoints: checked, lastCheckpoint, uncheckpointed: prev.seq - (lastCheckpoint?.seq ?? 0) };
  };

  return {
    add(r) {
      if (problem) return false;
      if (pending) return classify(pending, r);
      if (r.seq <= prev.seq) return fail('reordered', r.seq, `entry out of order (seq ${r.seq} read after seq ${prev.seq})`);
      // Another spelling of a hash (upper case, trailing bytes) is an edit of this entry, not a broken link before it.
      if (!HASH.test(r.hash) || !HASH.test(r.prevHash)) return fail('edited', r.seq, 'entry edited (its hash or prev_hash is not 64 lowercase hex digits)');
      // Past the recorded head, a gap is no deletion: rows were put where the chain never reached.
      if (prev.seq >= head.seq && r.seq > prev.seq + 1) return fail('inserted', r.seq, `entry inserted past the head the chain's lock records (seq ${head.seq})`);
      if (r.seq > prev.seq + 1) {
        return fail('deleted', prev.seq + 1, r.seq === prev.seq + 2 ? 'entry deleted (its seq is missing)' : `entries deleted (seq ${prev.seq + 1} to ${r.seq - 1} are missing)`);
      }
      if (r.seq > head.seq) {
        if (r.prevHash !== prev.hash && hashAt(r, r.prevHash, r.seq - 1) === r.hash) return renumbered(r);
        return fail('inserted', r.seq, `entry inserted past the head the chain's lock records (seq ${head.seq})`);
      }
      if (r.prevHash !== prev.hash || hashAt(r, r.prevHash, r.seq) !== r.hash) {
        pending = r;
        return true;
      }
      prev = { seq: r.seq, hash: r.hash };
      entries++;
      return checkCheckpoints(prev);
    },
    end() {
      if (problem) return verdict();
      if (pending) classify(pending, undefined);
      else if (prev.seq < head.seq) {
        fail('truncated', prev.seq + 1, `entries deleted from the end (the chain's lock records seq ${head.seq} as the head; the chain ends at seq ${prev.seq})`);
      } else if (prev.hash !== head.hash) {
        fail('rewritten', head.seq, `entries rewritten (the chain up to seq ${head.seq} does not hash to the head the chain's lock records)`);
      } else if ([...witnesses.keys()].some((seq) => seq > prev.seq)) {
        const seq = Math.min(...[...witnesses.keys()].filter((w) => w > prev.seq));
        fail('truncated', prev.seq + 1, `entries deleted from the end (a witness records seq ${seq}; the chain ends at seq ${prev.seq})`);
      } else if (nextCheckpoint < checkpoints.length) {
        const c = checkpoints[nextCheckpoint]!;
        const bad = signed(c);
        if (bad) fail('bad-checkpoint', c.seq, bad);
        else fail('truncated', prev.seq + 1, `entries deleted from the end (a checkpoint names seq ${c.seq}; the chain ends at seq ${prev.seq})`);
      }
      return verdict();
    },
  };
}

/** The verdict over a whole chain held in memory (tests, small chains). */
export function verifyAuditChain(input: ChainVerifierInput & { readonly entries: Iterable<AuditEntry> }): ChainVerdict {
  const verifier = createChainVerifier(input);
  for (const entry of input.entries) if (!verifier.add(entry)) break;
  return verifier.end();
}

const HASH = /^[0-9a-f]{64}$/;

function hashAt(entry: AuditEntry, prevHash: string, seq: number): string {
  return auditEntryHash(prevHash, { ...entry, seq });
}

/** What is wrong with a checkpoint's signature, or undefined when it verifies. */
function signatureCheck(keys: readonly AuditPublicKey[]): (c: AuditCheckpoint) => string | undefined {
  const byKid = new Map<string, KeyObject | null>();
  for (const k of keys) {
    let key: KeyObject | null;
    try {
      key = createPublicKey({ key: Buffer.from(k.spki), format: 'der', type: 'spki' });
    } catch {
      // A key the table holds but that does not parse verifies nothing.
      key = null;
    }
    byKid.set(k.kid, key);
  }
  return (c) => {
    if (!byKid.has(c.kid)) return `checkpoint signed by an unknown audit key (kid ${c.kid})`;
    const key = byKid.get(c.kid);
    let valid = false;
    try {
      valid = key !== null && key !== undefined && verify('sha256', checkpointBytes(c), { key, dsaEncoding: 'ieee-p1363' }, c.signature);
    } catch {
      valid = false;
    }
    return valid ? undefined : `checkpoint signature does not verify (kid ${c.kid})`;
  };
}
