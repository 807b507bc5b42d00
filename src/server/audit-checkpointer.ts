import type { Logger } from 'pino';
import { checkpointBytes } from '../audit/checkpoint.js';
import { createChainVerifier, type AuditPublicKey } from '../audit/verify-chain.js';
import { feedEntries } from '../audit/verify-stored-chain.js';
import { equalBytes } from '../bytes.js';
import { AttestorError } from '../errors.js';
import type { KeyManager, Signer } from '../issuer/signer.js';
import { GENESIS_HASH, type ChainHead } from '../store/audit-chain.js';
import type { AuditCheckpoint, Store } from '../store/store.js';
import { runEvery } from './periodic.js';

/*
 * Signed checkpoints of the audit chain (SERVICE.md "Audit chain"): the active audit key signs
 * {seq, hash, at} of the chain's head once `every` entries were appended since the last
 * checkpoint, or `intervalMs` after it if the chain moved, and at a clean shutdown. Before it
 * signs, it verifies the chain since the last checkpoint it signed or checked (the whole chain
 * and every checkpoint, the first time): a key signs only a chain it has checked, so an edit
 * is refused (logged), not sealed. Signing
 * happens outside any transaction; the store keeps one checkpoint per seq, so replicas that
 * checkpoint the same head store it once.
 */

export interface AuditCheckpointerDeps {
  readonly store: Store;
  readonly keys: KeyManager;
  readonly every: number;
  readonly intervalMs: number;
  readonly now: () => number;
  readonly logger: Logger;
}

export interface AuditCheckpointer {
  /** Looks every second whether a checkpoint is due, until stop(). */
  start(): void;
  /** Stops looking, awaits a checkpoint under way, then (if started) checkpoints the head once more. */
  stop(): Promise<void>;
}

/** How often the head is looked at: two one-row reads. */
const POLL_MS = 1000;

/**
 * Entries verified between two turns of the event loop while attestations are served: 0.14 ms
 * of it (0.55 ms for the 100 that a whole-chain verification reads at once); at 300
 * attestations/s, 36 reads a second of the store's thread.
 */
const CHECKPOINT_PAGE = 25;

export function createAuditCheckpointer(deps: AuditCheckpointerDeps): AuditCheckpointer {
  const { store } = deps;
  const signers = new Map<string, Promise<Signer>>();
  let sinceMs = deps.now();
  // After a failure the poll waits an interval before it tries again, so a broken chain is logged, not flooded.
  let failedAt = Number.NEGATIVE_INFINITY;

  /** The active audit key, asked for at each checkpoint: it may have been rotated meanwhile. */
  const auditKey = async (): Promise<{ kid: string; signer: Signer }> => {
    const active = (await store.keys.list('audit')).find((k) => k.state === 'active');
    if (!active) throw new AttestorError('ERR_KEYS', 'no active audit key is recorded: checkpoints cannot be signed');
    let signer = signers.get(active.kid);
    if (!signer) {
      // Only the key the table records: a row pointing at another key of the manager signs nothing.
      signer = deps.keys.signerAt(active.uri, 'audit').then((s) => {
        if (!equalBytes(s.spki, active.publicKeySpki)) throw new AttestorError('ERR_KEYS', `the audit key at ${active.uri} is not the one the keys table records`);
        return s;
      });
      signers.set(active.kid, signer);
      signer.catch(() => signers.delete(active.kid));
    }
    return { kid: active.kid, signer: await signer };
  };

  /**
   * The audit keys the key manager holds as the table records them: a key row written into the
   * database by someone without the HSM vouches for no checkpoint here.
   */
  const heldKeys = async (): Promise<AuditPublicKey[]> => {
    const held: AuditPublicKey[] = [];
    for (const k of await store.keys.list('audit')) {
      const signer = await deps.keys.signerAt(k.uri, 'audit').catch(() => undefined);
      if (signer && equalBytes(signer.spki, k.publicKeySpki)) held.push({ kid: k.kid, spki: k.publicKeySpki });
    }
    return held;
  };

  /** The checkpoints after `seq`, in order. */
  const checkpointsAfter = async (seq: number): Promise<AuditCheckpoint[]> => {
    const found: AuditCheckpoint[] = [];
    for (let after: string | null = String(seq); after !== null; ) {
      const page = await store.audit.checkpoints({ limit: 1000, after });
      found.push(...page.items);
      after = page.next;
    }
    return found;
  };

  /**
   * The last checkpoint this process signed or checked. A key signs only a chain it has
   * checked from there (from the start of the chain, with every checkpoint's signature, the
   * first time), so an entry a checkpoint covers cannot be rewritten and sealed again by
   * deleting that checkpoint: its disappearance is refused.
   */
  let trusted: ChainHead | undefined;

  /** A checkpoint of the head now (when `due`), unless the last one covers it (null); ERR_AUDIT_CHAIN when the chain does not verify. */
  const checkpoint = async (due?: (since: number, lastAt: number) => boolean): Promise<AuditCheckpoint | null> => {
    if (trusted) {
      const [still] = await checkpointsAfter(trusted.seq - 1);
      if (still?.seq !== trusted.seq || still.hash !== trusted.hash) {
        throw new AttestorError('ERR_AUDIT_CHAIN', `no checkpoint signed: the checkpoint of seq ${trusted.seq} this verifier signed or checked is gone or changed`);
      }
    }
    const last = await store.audit.lastCheckpoint();
    const head = await store.audit.recordedHead();
    if (head.seq <= (last?.seq ?? 0) || (due && !due(head.seq - (last?.seq ?? 0), last?.at ?? sinceMs))) return null;
    const from = trusted ?? { seq: 0, hash: GENESIS_HASH };
    const verifier = createChainVerifier({ from, head, checkpoints: await checkpointsAfter(from.seq), keys: await heldKeys() });
    await feedEntries(store, verifier, from.seq, head.seq, CHECKPOINT_PAGE);
    const verdict = verifier.end();
    if (!verdict.ok) throw new AttestorError('ERR_AUDIT_CHAIN', `no checkpoint signed: ${verdict.problem.message}`);
    const { kid, signer } = await auditKey();
    const statement = { seq: head.seq, hash: head.hash, at: deps.now() };
    const signature = await signer.sign(checkpointBytes(statement));
    const stored = await store.audit.checkpoint({ ...statement, kid, signature });
    trusted = { seq: stored.seq, hash: stored.hash };
    return stored;
  };

  const due = (since: number, lastAt: number) =>
    deps.now() - failedAt >= deps.intervalMs && (since >= deps.every || deps.now() - lastAt >= deps.intervalMs);

  const signed = (made: AuditCheckpoint | null) => {
    // Logs kept off the database's host witness the checkpoints: one deleted from the table is still here.
    if (made) deps.logger.info({ seq: made.seq, hash: made.hash, kid: made.kid }, 'audit checkpoint signed');
  };
  const failed = (e: unknown) => {
    failedAt = deps.now();
    deps.logger.error({ err: e }, 'audit checkpoint failed');
  };

  let stopPolling: (() => Promise<void>) | undefined;
  return {
    start() {
      sinceMs = deps.now();
      stopPolling = runEvery(POLL_MS, () => checkpoint(due).then(signed), failed);
    },
    async stop() {
      if (!stopPolling) return;
      await stopPolling();
      stopPolling = undefined;
      await checkpoint().then(signed, failed);
    },
  };
}
