import { expect } from 'vitest';
import { AttestorError } from '../../src/errors.js';

/** Awaits `p`, expects it to reject with an AttestorError of `code`, and returns that error. */
export async function rejection(p: Promise<unknown>, code: string): Promise<AttestorError> {
  const e = await p.then(
    () => expect.unreachable('no error raised'),
    (err: unknown) => err,
  );
  expect(e).toBeInstanceOf(AttestorError);
  expect((e as AttestorError).code).toBe(code);
  return e as AttestorError;
}
