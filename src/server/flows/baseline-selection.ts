import { parseBaselineDocument, selectorMatches, type BaselineDocument } from '../../baseline/document.js';
import { AttestorError } from '../../errors.js';
import type { Baseline, Store } from '../../store/store.js';

/** A baseline with its document validated. */
export interface SelectedBaseline {
  readonly id: string;
  readonly version: number;
  readonly document: BaselineDocument;
}

export interface BaselinesFor {
  /** The enforced baseline that applies, if any. */
  readonly enforced: SelectedBaseline | undefined;
  /** Staged baselines that would apply: evaluated and reported, not enforced. */
  readonly staged: readonly SelectedBaseline[];
}

/** Which of the baselines in force apply to an agent with these labels. */
export type BaselineSelector = (labels: { readonly [key: string]: string }) => BaselinesFor;

/**
 * The baselines in force now, as a selector by labels: read without knowing the agent, so a
 * caller can read both at once. Of several enforced baselines whose selectors match, the most
 * specific (most selector labels) wins, then the most recently enforced: a fleet-wide default
 * and a narrower one for some hosts can coexist. Documents are immutable once stored, so each
 * is read and validated once per verifier process; each call reads only which baselines are in
 * force (a status changes on any replica).
 */
export function createBaselineSelection(store: Store) {
  const parsed = new Map<string, Promise<BaselineDocument>>();
  const documentOf = (id: string): Promise<BaselineDocument> => {
    let document = parsed.get(id);
    if (!document) {
      document = store.baselines.get(id).then((b) => {
        if (!b) throw new AttestorError('ERR_BASELINE_NOT_FOUND', `baseline ${id} is gone`);
        return parseBaselineDocument(b.document);
      });
      // Not kept when it failed: the next call reads it again.
      document.catch(() => parsed.delete(id));
      parsed.set(id, document);
    }
    return document;
  };
  return async (): Promise<BaselineSelector> => {
    const inForce = await Promise.all(
      (await store.baselines.inForce()).map(async (b) => ({ id: b.id, version: b.version, status: b.status, document: await documentOf(b.id) })),
    );
    return (labels) => {
      const matching = (status: Baseline['status']) =>
        inForce.filter((b) => b.status === status && selectorMatches(b.document, labels)).map(({ id, version, document }) => ({ id, version, document }));
      // inForce lists the newest first, and sort is stable: ties keep that order.
      const enforced = matching('enforced').sort((a, b) => specificity(b.document) - specificity(a.document));
      return { enforced: enforced[0], staged: matching('staged') };
    };
  };
}

function specificity(doc: BaselineDocument): number {
  return Object.keys(doc.selector?.labels ?? {}).length;
}
