import type { AuditCheckpoint, Store } from '../store/store.js';
import { createChainVerifier, type ChainVerdict, type ChainVerifier } from './verify-chain.js';

/*
 * The shell around verify-chain.ts: reads a store's chain and verifies it, for the
 * GET /v1/audit/verify route and `attestor audit verify --data-dir/--database`. The order of
 * the reads makes a chain that grows meanwhile (a running verifier) read as intact:
 * checkpoints first (each names a seq the head had reached), then the recorded head, then the
 * entries up to it, page by page, and last the first entry past the head as of that moment,
 * read with the head in one statement: a row there was written around the chain's lock.
 */

/** Entries read per query: memory stays bounded however long the chain. */
const PAGE = 1000;

export interface StoredChainVerification {
  readonly verdict: ChainVerdict;
  /** Checkpoints stored (verdict.checkpoints counts those verified before any problem). */
  readonly checkpointsStored: number;
}

export async function verifyStoredChain(store: Store): Promise<StoredChainVerification> {
  const checkpoints: AuditCheckpoint[] = [];
  for (let after: string | null = '0'; after !== null; ) {
    const page = await store.audit.checkpoints({ limit: PAGE, after });
    checkpoints.push(...page.items);
    after = page.next;
  }
  // Every audit key ever recorded: an old one still verifies what it signed.
  const keys = (await store.keys.list('audit')).map((k) => ({ kid: k.kid, spki: k.publicKeySpki }));
  const head = await store.audit.recordedHead();
  const verifier = createChainVerifier({ head, checkpoints, keys });
  if (await feedEntries(store, verifier, 0, head.seq)) {
    const past = await store.audit.pastHead();
    if (past) verifier.add(past);
  }
  return { verdict: verifier.end(), checkpointsStored: checkpoints.length };
}

/** Feeds `verifier` the entries with `after` < seq <= `upTo`, page by page, until it wants no more; whether it still does. */
export async function feedEntries(store: Store, verifier: ChainVerifier, after: number, upTo: number): Promise<boolean> {
  for (let from = after; from < upTo; ) {
    const page = await store.audit.range(from, upTo, PAGE);
    for (const entry of page) if (!verifier.add(entry)) return false;
    if (page.length < PAGE) break;
    from = page[page.length - 1]!.seq;
  }
  return true;
}
