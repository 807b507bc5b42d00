import { open } from 'node:fs/promises';
import { AttestorError } from '../errors.js';

/*
 * The host's measurement logs, sent with the quote so the verifier can replay them to the
 * quoted PCRs: the UEFI event log and the IMA measurement list, as securityfs exposes them.
 */

export const DEFAULT_EVENT_LOG = '/sys/kernel/security/tpm0/binary_bios_measurements';
export const DEFAULT_IMA_LOG = '/sys/kernel/security/ima/binary_runtime_measurements';

/** The largest logs the verifier takes (eventLog and imaLog of the AttestationRequest schema). */
export const EVENT_LOG_MAX = 1024 * 1024;
export const IMA_LOG_MAX = 8 * 1024 * 1024;

const READ_CHUNK = 64 * 1024;

/** Where a log is read from. */
export interface LogSource {
  readonly path: string;
  /**
   * A default location: a host without the file (no TPM event log, IMA off) simply sends no
   * log. A path the user named must be there.
   */
  readonly ifPresent: boolean;
}

/** Which logs to send: undefined = none (`--no-event-log`). */
export interface LogSources {
  readonly eventLog?: LogSource;
  readonly imaLog?: LogSource;
}

/**
 * The log at `source`, or undefined when it is an absent default. Read in full, up to `max`
 * bytes (securityfs files report size 0, so the size is known only by reading them); a longer
 * log, an unreadable one, or a named file that is missing is ERR_INPUT.
 */
export async function readLog(source: LogSource | undefined, what: string, max: number): Promise<Uint8Array | undefined> {
  if (source === undefined) return undefined;
  try {
    return await readBounded(source.path, what, max);
  } catch (e) {
    if (e instanceof AttestorError) throw e;
    const code = (e as NodeJS.ErrnoException).code;
    if (code === 'ENOENT' && source.ifPresent) return undefined;
    const hint = code === 'EACCES' ? ' (the securityfs logs are readable by root only; or leave the log out)' : '';
    throw new AttestorError('ERR_INPUT', `cannot read the ${what} ${source.path}: ${code ?? 'unreadable'}${hint}`, { cause: e });
  }
}

async function readBounded(path: string, what: string, max: number): Promise<Uint8Array> {
  const file = await open(path, 'r');
  try {
    const chunks: Buffer[] = [];
    let size = 0;
    for (;;) {
      // One byte more than allowed tells a log of exactly `max` bytes from a longer one.
      const chunk = Buffer.alloc(Math.min(READ_CHUNK, max + 1 - size));
      const { bytesRead } = await file.read(chunk, 0, chunk.length, null);
      if (bytesRead === 0) return Buffer.concat(chunks, size);
      chunks.push(chunk.subarray(0, bytesRead));
      size += bytesRead;
      if (size > max) throw new AttestorError('ERR_INPUT', `the ${what} ${path} is larger than the ${max} bytes the verifier accepts`);
    }
  } finally {
    await file.close();
  }
}
