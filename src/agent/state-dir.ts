import { constants } from 'node:fs';
import { link, lstat, open, readFile, unlink } from 'node:fs/promises';
import { makeDirectories } from './make-directories.js';
import { dirname, join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { AttestorError } from '../errors.js';
import { syncDirectory, writeDurably } from './durable-file.js';
import type { NodeTss } from './tss.js';

/*
 * The agent's state directory, where the TPM keys the verifier enrolls are kept. An AK must
 * never change for its TPM, so the directory is private to the agent's user, keys are created
 * under an exclusive lock (two agents starting at once end up with one AK), written durably
 * (fsync of the files and the directory) and never replaced.
 */

/** A key as tpm2-tools keeps it (`tpm2_load -u NAME.pub -r NAME.priv`): marshalled TPM2B_PRIVATE and TPM2B_PUBLIC. */
export interface KeyBlobs {
  readonly private: Uint8Array;
  readonly public: Uint8Array;
}

/** The lock file, never removed: removing it would let a newcomer lock a new file while a waiter holds the old one. */
const LOCK_FILE = '.lock';
/** How often a waiter tries the lock again (flock without LOCK_NB would block the event loop). */
const LOCK_POLL_MS = 20;

export class StateDir {
  private constructor(
    readonly path: string,
    private readonly addon: NodeTss,
  ) {}

  /**
   * Opens the directory, creating it (0700) if missing. Refuses (ERR_TPM_STATE) a path that
   * is not a directory, and a directory the group or others may write: they could swap the
   * AK's blobs.
   * `addon` provides the file lock.
   */
  static async open(path: string, addon: NodeTss): Promise<StateDir> {
    let created: string | undefined;
    try {
      created = await makeDirectories(path, 0o700);
    } catch (e) {
      const code = (e as NodeJS.ErrnoException).code;
      throw dirError(path, code === 'EEXIST' ? 'is not a directory' : `cannot be created (${code ?? 'failed'})`, e);
    }
    // lstat: a symbolic link in the directory's place could point anywhere.
    const st = await lstat(path);
    if (!st.isDirectory()) throw dirError(path, 'is not a directory (a symbolic link is not accepted)');
    const uid = process.geteuid?.();
    if (uid !== undefined && st.uid !== uid) {
      throw dirError(path, `belongs to uid ${st.uid}, not to this agent's uid ${uid}: its owner could replace the agent's keys`);
    }
    if ((st.mode & 0o022) !== 0) {
      const mode = (st.mode & 0o777).toString(8).padStart(3, '0');
      throw dirError(path, `is writable by its group or others (mode ${mode}): they could replace the agent's keys; chmod go-w it`);
    }
    // A directory made now must survive a crash along with the keys about to be written in it.
    if (created !== undefined) await syncDirectory(dirname(created));
    return new StateDir(path, addon);
  }

  /** Runs `fn` holding the directory's exclusive lock (flock: across processes and within this one). */
  async withLock<T>(fn: () => Promise<T>): Promise<T> {
    const file = await open(join(this.path, LOCK_FILE), constants.O_RDWR | constants.O_CREAT, 0o600);
    try {
      while (!this.addon.lockFile(file.fd)) await sleep(LOCK_POLL_MS);
      return await fn();
    } finally {
      // Closing the descriptor releases the lock.
      await file.close();
    }
  }

  /**
   * The blobs of key `name`, or null when there is none (call it holding the lock). A private
   * blob without its public one is a creation a crash cut short (createKey links the public
   * blob last): no verifier can have enrolled a key whose public part was never written, so it
   * is removed and the key made again. A public blob without its private one cannot come from
   * createKey and is refused (ERR_TPM_STATE).
   */
  async readKey(name: string): Promise<KeyBlobs | null> {
    const [priv, pub] = await Promise.all([this.readIfExists(`${name}.priv`), this.readIfExists(`${name}.pub`)]);
    if (pub === null) {
      if (priv !== null) {
        await unlink(join(this.path, `${name}.priv`));
        await syncDirectory(this.path);
      }
      return null;
    }
    if (priv === null) throw this.keyError(name, `has ${name}.pub but not ${name}.priv`);
    return { private: priv, public: pub };
  }

  /**
   * Saves the blobs of a new key `name` (call it holding the lock). Each file is written under a
   * temporary name and fsynced, then linked into place, which fails rather than replace a file
   * that exists (ERR_TPM_STATE); then the directory is fsynced. The private blob goes first, so
   * a public blob is never seen without its private one.
   */
  async createKey(name: string, blobs: KeyBlobs): Promise<void> {
    for (const [file, bytes] of [
      [`${name}.priv`, blobs.private],
      [`${name}.pub`, blobs.public],
    ] as const) {
      try {
        await writeDurably(this.path, file, bytes, (temp) => link(temp, join(this.path, file)));
      } catch (e) {
        if ((e as NodeJS.ErrnoException).code !== 'EEXIST') throw e;
        throw this.keyError(name, `already has a ${file} that appeared while the key was created; it is kept, not replaced`, e);
      }
    }
  }

  /** ERR_TPM_STATE about key `name` in this directory. */
  keyError(name: string, problem: string, cause?: unknown): AttestorError {
    return new AttestorError('ERR_TPM_STATE', `TPM key "${name}" in ${this.path} ${problem}`, { cause });
  }

  private async readIfExists(file: string): Promise<Uint8Array | null> {
    try {
      return await readFile(join(this.path, file));
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code === 'ENOENT') return null;
      throw e;
    }
  }
}

function dirError(path: string, problem: string, cause?: unknown): AttestorError {
  return new AttestorError('ERR_TPM_STATE', `state directory ${path} ${problem}`, { cause });
}
