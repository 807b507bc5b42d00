import { readFileSync } from 'node:fs';
import { ApiError } from '../client/api-client.js';
import { AttestorError } from '../errors.js';

/** Where a command writes; tests pass collectors, the bin passes the process streams. */
export interface CliIo {
  out(text: string): void;
  err(text: string): void;
}

export const processIo: CliIo = {
  out: (text) => process.stdout.write(text),
  err: (text) => process.stderr.write(text),
};

/**
 * A reader that stops early (`attestor ... | head`) closes the pipe: the rest of the output
 * has nowhere to go, which is no failure of the command, so end quietly instead of throwing.
 */
export function endQuietlyOnClosedPipe(): void {
  for (const stream of [process.stdout, process.stderr]) {
    stream.on('error', (e: NodeJS.ErrnoException) => {
      if (e.code !== 'EPIPE') throw e;
      process.exit(process.exitCode ?? 0);
    });
  }
}

/** A mistake in how the command was called: exit status 2, like commander's own errors. */
export class UsageError extends Error {}

export function readInput(path: string, option: string): Uint8Array {
  try {
    return new Uint8Array(readFileSync(path));
  } catch (e) {
    throw new UsageError(`cannot read ${option} ${path}: ${(e as NodeJS.ErrnoException).code ?? 'unreadable'}`);
  }
}

export function parseHex(value: string, option: string): Uint8Array {
  const hex = value.startsWith('0x') ? value.slice(2) : value;
  if (!/^[0-9a-fA-F]*$/.test(hex)) throw new UsageError(`${option} must be hexadecimal`);
  if (hex.length % 2 !== 0) throw new UsageError(`${option} must have an even number of hex digits (whole bytes)`);
  return new Uint8Array(Buffer.from(hex, 'hex'));
}


/**
 * The one line a failed check prints: the stable code first, so scripts can match it. A
 * refusal by the verifier shows the server's code (its message is "<code>: <detail>").
 */
export function describeError(e: AttestorError): string {
  return e instanceof ApiError ? `error: ${e.message}\n` : `error: ${e.code}: ${e.message}\n`;
}
