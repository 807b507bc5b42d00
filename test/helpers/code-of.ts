import { AttestorError, ParseError } from '../../src/errors.js';

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

/** Parsing must end in a value or a typed error: never another exception, never a hang. */
export function parsesOrTypedError(parse: (b: Uint8Array) => unknown, bytes: Uint8Array): void {
  try {
    parse(bytes);
  } catch (e) {
    if (!(e instanceof ParseError)) throw e;
  }
}
