import { createHash } from 'node:crypto';
import { canonicalJson } from './canonical-json.js';
import type { AuditEntry, AuditInput } from './store.js';

/** The previous hash of the first entry. */
export const GENESIS_HASH = '0'.repeat(64);

/** Where the chain ends: the seq and hash of its last entry (0 and GENESIS_HASH when empty). */
export interface ChainHead {
  readonly seq: number;
  readonly hash: string;
}

/**
 * SHA-256(prevHash bytes || canonical JSON of {seq, at, actor, action, subject, details}), as
 * lowercase hex. Editing, removing, inserting or reordering an entry changes every hash after it.
 */
export function auditEntryHash(prevHash: string, entry: Omit<AuditEntry, 'prevHash' | 'hash'>): string {
  const { seq, at, actor, action, subject, details } = entry;
  return createHash('sha256')
    // Through Buffer.from: a malformed stored hash (odd length) hashes as before and is found
    // by the chain's verification, where update(hex) would throw on every later write.
    .update(Buffer.from(prevHash, 'hex'))
    .update(canonicalJson({ seq, at, actor, action, subject, details }))
    .digest('hex');
}

/** The entry that follows `head`, recorded at `at`. */
export function nextAuditEntry(head: ChainHead, input: AuditInput, at: number): AuditEntry {
  const entry = { seq: head.seq + 1, at, actor: input.actor, action: input.action, subject: input.subject, details: input.details };
  return { ...entry, prevHash: head.hash, hash: auditEntryHash(head.hash, entry) };
}
