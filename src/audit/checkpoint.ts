import { canonicalJson } from '../store/canonical-json.js';

/** What a checkpoint states: the chain's entry `seq` has `hash`, as seen at `at` (ms). */
export interface CheckpointStatement {
  readonly seq: number;
  readonly hash: string;
  readonly at: number;
}

/** Names what the bytes are, so a signature by the audit key over them means nothing else. */
const CHECKPOINT_TYPE = 'attestor-audit-checkpoint-v1';

/** The bytes the audit key signs: canonical JSON of {at, hash, seq, type}. */
export function checkpointBytes(statement: CheckpointStatement): Uint8Array {
  const { seq, hash, at } = statement;
  return new TextEncoder().encode(canonicalJson({ type: CHECKPOINT_TYPE, seq, hash, at }));
}
