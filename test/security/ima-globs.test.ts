/**
 * Operator globs (IMA rules' exclude and signatures.requiredFor) whose combined cost per
 * measured entry would be unbounded: every entry's path, up to PATH_MAX long and chosen by the
 * host, is matched against every pattern. Tested at the lowest public functions (the rules
 * parser and the matcher), since the cost is the parser's bound; the HTTP refusal of such a
 * baseline is the same parser's ERR_BASELINE_INVALID.
 */
import { describe, expect, it } from 'vitest';
import { parseBaselineDocument } from '../../src/baseline/document.js';
import { isExcluded, parseImaRules } from '../../src/baseline/ima-rules.js';
import { AttestorError } from '../../src/errors.js';

/** A pattern the matcher follows in every state at once on a path of 'a's: 254 wildcard steps per character. */
const WORST = `/${'*a'.repeat(127)}`;
const LONGEST_PATH = `/${'a'.repeat(4094)}`;

const codeOf = (work: () => unknown): string | undefined => {
  try {
    work();
    return undefined;
  } catch (e) {
    return e instanceof AttestorError ? e.code : 'untyped';
  }
};

describe('IMA glob cost (parseImaRules, parseBaselineDocument)', () => {
  it('a thousand worst-case patterns (seconds per entry before the bound): ERR_IMA_RULES_INVALID, and ERR_BASELINE_INVALID in a baseline', () => {
    const exclude = Array.from({ length: 1000 }, (_, i) => `${WORST}${String.fromCharCode(98 + (i % 20))}`);
    expect(codeOf(() => parseImaRules({ exclude }))).toBe('ERR_IMA_RULES_INVALID');
    expect(codeOf(() => parseImaRules({ exclude: exclude.slice(0, 10), signatures: { requiredFor: exclude.slice(10, 20) } }))).toBe('ERR_IMA_RULES_INVALID');
    expect(codeOf(() => parseBaselineDocument({ version: 1, ima: { exclude } }))).toBe('ERR_BASELINE_INVALID');
  });

  it('the costliest rules accepted sit at the bound (one wildcard step more is refused) and match the longest path correctly', () => {
    // 8 x 255 steps and 8 more: the 2,048 per path character the parser allows; the time this takes per entry is a figure of `npm run bench`.
    const costliest = Array.from({ length: 8 }, (_, i) => `${WORST}${String.fromCharCode(98 + i)}`);
    const rules = parseImaRules({ exclude: [...costliest, '/x/*a*a*a*a'] });
    expect(isExcluded(rules, LONGEST_PATH)).toBe(false);
    expect(isExcluded(rules, `/${'a'.repeat(4093)}b`)).toBe(true);
    expect(codeOf(() => parseImaRules({ exclude: [...costliest, '/x/*a*a*a*a*'] }))).toBe('ERR_IMA_RULES_INVALID');
  });

  it('real rule sets (long literal prefixes) stay far inside the bound', () => {
    const patterns = Array.from({ length: 300 }, (_, i) => `/usr/lib/modules/${i}/**/*.ko`);
    expect(codeOf(() => parseImaRules({ exclude: patterns }))).toBeUndefined();
  });
});
