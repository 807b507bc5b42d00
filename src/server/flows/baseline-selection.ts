import { parseBaselineDocument, selectorMatches, type BaselineDocument } from '../../baseline/document.js';
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

/**
 * Which baselines apply to an agent with these labels. Of several enforced baselines whose
 * selectors match, the most specific (most selector labels) wins, then the most recently
 * enforced: a fleet-wide default and a narrower one for some hosts can coexist.
 * Documents are immutable once stored, so each is validated once per verifier process.
 */
export function createBaselineSelection(store: Store) {
  const parsed = new Map<string, BaselineDocument>();
  const documentOf = (b: Baseline): SelectedBaseline => {
    let document = parsed.get(b.id);
    if (!document) {
      document = parseBaselineDocument(b.document);
      parsed.set(b.id, document);
    }
    return { id: b.id, version: b.version, document };
  };
  return async (labels: { readonly [key: string]: string }): Promise<BaselinesFor> => {
    const [enforced, staged] = await Promise.all([store.baselines.withStatus('enforced'), store.baselines.withStatus('staged')]);
    const matching = enforced.map(documentOf).filter((b) => selectorMatches(b.document, labels));
    // withStatus lists the newest first, and sort is stable: ties keep that order.
    matching.sort((a, b) => specificity(b.document) - specificity(a.document));
    return { enforced: matching[0], staged: staged.map(documentOf).filter((b) => selectorMatches(b.document, labels)) };
  };
}

function specificity(doc: BaselineDocument): number {
  return Object.keys(doc.selector?.labels ?? {}).length;
}
