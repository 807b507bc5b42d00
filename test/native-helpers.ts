/** Helpers shared by the tests of the node-tss addon and the agent's TPM session. */
import { expect } from 'vitest';
import { AttestorError } from '../src/errors.js';
import { tpm2, type Swtpm } from './helpers/swtpm.js';

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

/** The transient objects loaded in the TPM right now, as tpm2_getcap lists them (swtpm has no resource manager). */
export async function transientHandles(sw: Swtpm): Promise<string> {
  return (await tpm2(sw, ['tpm2_getcap', 'handles-transient'])).stdout.toString().trim();
}
