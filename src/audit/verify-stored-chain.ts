import { createPublicKey } from 'node:crypto';
import { kidOf } from '../issuer/jwks.js';
import type { ChainHead } from '../store/audit-chain.js';
import type { AuditCheckpoint, Store } from '../store/store.js';
import { createChainVerifier, type AuditPublicKey, type ChainVerdict, type ChainVerifier } from './verify-chain.js';

/*
 * The shell around verify-chain.ts: reads a store's chain and verifies it, for the
 * GET /v1/audit/verify route and `attestor audit verify --data-dir/--database`. The order of
 * the reads makes a chain that grows meanwhile (a running verifier) read as intact:
 * checkpoints first (each names a seq the head had reached), then the recorded head, then the
 * entries up to it, page by page, and last the first entry past the head as of that moment,
 * read with the head in one statement: a row there was written around the chain's lock.
 */

/** Checkpoints read per query: memory stays bounded however many there are. */
const PAGE = 1000;

/**
 * Entries read per query: memory stays bounded however long the chain, and a running verifier
 * (GET /v1/audit/verify) hashes one page between two turns of its event loop, about 0.55 ms
 * (a page of 1,000 held it 12-15 ms). The audit checkpointer, which runs beside attestations,
 * asks for smaller pages.
 */
const ENTRY_PAGE = 100;

export interface StoredChainVerification {
  readonly verdict: ChainVerdict;
  /** Checkpoints stored (verdict.checkpoints counts those verified before any problem). */
  readonly checkpointsStored: number;
}

export interface StoredChainOptions {
  /** Only checkpoints by these audit keys count (kids, each checked to be its key's thumbprint); default every audit key of the table. */
  readonly auditKeys?: readonly string[];
  /** Heads recorded outside the database, which the chain must still have. */
  readonly witnesses?: readonly ChainHead[];
}

export async function verifyStoredChain(store: Store, options: StoredChainOptions = {}): Promise<StoredChainVerification> {
  const checkpoints: AuditCheckpoint[] = [];
  for (let after: string | null = '0'; after !== null; ) {
    const page = await store.audit.checkpoints({ limit: PAGE, after });
    checkpoints.push(...page.items);
    after = page.next;
  }
  // Every audit key ever recorded: an old one still verifies what it signed. Pinned kids keep
  // only rows whose key is the one the kid names: a row rewritten in the table matches none.
  const recorded = (await store.keys.list('audit')).map((k) => ({ kid: k.kid, spki: k.publicKeySpki }));
  const keys = options.auditKeys ? await pinned(recorded, options.auditKeys) : recorded;
  const head = await store.audit.recordedHead();
  const verifier = createChainVerifier({ head, checkpoints, keys, ...(options.witnesses && { witnesses: options.witnesses }) });
  if (await feedEntries(store, verifier, 0, head.seq)) {
    const past = await store.audit.pastHead();
    if (past) verifier.add(past);
  }
  return { verdict: verifier.end(), checkpointsStored: checkpoints.length };
}

async function pinned(keys: readonly AuditPublicKey[], kids: readonly string[]): Promise<AuditPublicKey[]> {
  const kept: AuditPublicKey[] = [];
  for (const k of keys) {
    if (!kids.includes(k.kid)) continue;
    try {
      if ((await kidOf(createPublicKey({ key: Buffer.from(k.spki), format: 'der', type: 'spki' }))) === k.kid) kept.push(k);
    } catch {
      // A key that does not parse is no pinned key.
    }
  }
  return kept;
}

/**
 * Feeds `verifier` the entries with `after` < seq <= `upTo`, `pageSize` at a time, until it
 * wants no more; whether it still does.
 */
export async function feedEntries(store: Store, verifier: ChainVerifier, after: number, upTo: number, pageSize = ENTRY_PAGE): Promise<boolean> {
  for (let from = after; from < upTo; ) {
    const page = await store.audit.range(from, upTo, pageSize);
    for (const entry of page) if (!verifier.add(entry)) return false;
    if (page.length < pageSize) break;
    from = page[page.length - 1]!.seq;
  }
  return true;
}
