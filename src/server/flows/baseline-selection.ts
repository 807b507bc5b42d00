import { labelsSelect, parseBaselineDocument, selectorMatches, storedSelectorOf, type BaselineDocument } from '../../baseline/document.js';
import { AttestorError, ParseError } from '../../errors.js';
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
export type BaselineSelector = ((labels: { readonly [key: string]: string }) => BaselinesFor) & {
  /** The baselines in force whose stored documents no longer validate, and why. */
  readonly unusable: ReadonlyArray<{ readonly id: string; readonly version: number; readonly problem: string }>;
};

/**
 * The baselines in force now, as a selector by labels: read without knowing the agent, so a
 * caller can read both at once. Of several enforced baselines whose selectors match, the most
 * specific (most selector labels) wins, then the most recently enforced: a fleet-wide default
 * and a narrower one for some hosts can coexist. Documents are immutable once stored, so each
 * is read and validated once per verifier process; each call reads only which baselines are in
 * force (a status changes on any replica).
 */
export function createBaselineSelection(store: Store) {
  const stored = new Map<string, Promise<Stored>>();
  const storedOf = (id: string): Promise<Stored> => {
    let entry = stored.get(id);
    if (!entry) {
      entry = store.baselines.get(id).then((b) => {
        if (!b) throw new AttestorError('ERR_BASELINE_NOT_FOUND', `baseline ${id} is gone`);
        try {
          return { document: parseBaselineDocument(b.document) };
        } catch (e) {
          if (!(e instanceof ParseError)) throw e;
          return { unusable: e.message, selector: storedSelectorOf(b.document) };
        }
      });
      // Not kept when reading it failed: the next call reads it again.
      entry.catch(() => stored.delete(id));
      stored.set(id, entry);
    }
    return entry;
  };
  return async (): Promise<BaselineSelector> => {
    const inForce = await Promise.all((await store.baselines.inForce()).map(async (b) => ({ id: b.id, version: b.version, status: b.status, stored: await storedOf(b.id) })));
    const unusable = inForce.flatMap((b) => ('unusable' in b.stored ? [{ id: b.id, version: b.version, problem: b.stored.unusable }] : []));
    return Object.assign((labels: { readonly [key: string]: string }): BaselinesFor => {
      const applying = (status: Baseline['status']) => inForce.filter((b) => b.status === status && applies(b.stored, labels));
      // inForce lists the newest first, and sort is stable: ties keep that order.
      const enforced = applying('enforced').sort((a, b) => specificity(b.stored) - specificity(a.stored))[0];
      if (enforced && 'unusable' in enforced.stored) {
        throw new AttestorError(
          'ERR_BASELINE_UNUSABLE',
          `the enforced baseline ${enforced.id} (version ${enforced.version}) that applies to this agent no longer validates: ` +
            `${enforced.stored.unusable}; retire it, or enforce a corrected one`,
        );
      }
      const usable = (b: (typeof inForce)[number]) => ('document' in b.stored ? [{ id: b.id, version: b.version, document: b.stored.document }] : []);
      return { enforced: enforced && usable(enforced)[0], staged: applying('staged').flatMap(usable) };
    }, { unusable });
  };
}

/**
 * A stored document as this verifier reads it: validated, or refused by rules tightened since
 * it was stored. An unusable one still selects the agents its selector names (every agent when
 * that cannot be read, ahead of any other): those fail closed, the rest of the fleet goes on.
 */
type Stored = { readonly document: BaselineDocument } | { readonly unusable: string; readonly selector: { readonly [name: string]: string } | null };

function applies(stored: Stored, labels: { readonly [key: string]: string }): boolean {
  if ('document' in stored) return selectorMatches(stored.document, labels);
  return stored.selector === null || labelsSelect(stored.selector, labels);
}

function specificity(stored: Stored): number {
  if ('document' in stored) return Object.keys(stored.document.selector?.labels ?? {}).length;
  return stored.selector === null ? Infinity : Object.keys(stored.selector).length;
}
