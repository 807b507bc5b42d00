import { describe, expect, it } from 'vitest';
import { createBodyBudget } from '../src/server/body-budget.js';
import { codeOf } from './helpers/code-of.js';

describe('the body budget', () => {
  it("reserves per network and in all: ERR_BUSY past either, each release returns its bytes once", () => {
    const budget = createBodyBudget({ total: 100, perNetwork: 60 });
    const a1 = budget.reserve('a', 40);
    expect(codeOf(() => budget.reserve('a', 21))).toBe('ERR_BUSY');
    const a2 = budget.reserve('a', 20);
    const b1 = budget.reserve('b', 40);
    expect(budget.held).toBe(100);
    // b is within its share, the whole is not.
    expect(codeOf(() => budget.reserve('b', 1))).toBe('ERR_BUSY');
    a1();
    a1();
    expect(budget.held).toBe(60);
    budget.reserve('b', 20);
    expect(codeOf(() => budget.reserve('c', 21))).toBe('ERR_BUSY');
    a2();
    b1();
    expect(budget.held).toBe(20);
    // A refusal reserves nothing.
    expect(codeOf(() => budget.reserve('a', 61))).toBe('ERR_BUSY');
    expect(budget.held).toBe(20);
  });
});
