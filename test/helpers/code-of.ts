import { AttestorError } from '../../src/errors.js';

/** Runs `fn` and returns the code of the AttestorError it throws (fails if it does not). */
export function codeOf(fn: () => unknown): string {
  try {
    fn();
  } catch (e) {
    if (e instanceof AttestorError) return e.code;
    throw e;
  }
  throw new Error('expected an AttestorError, nothing was thrown');
}
