import { constants as fsConstants } from 'node:fs';
import { link, mkdir, open, stat, unlink } from 'node:fs/promises';
import { createPrivateKey, createPublicKey, generateKeyPairSync, randomBytes, sign, type KeyObject } from 'node:crypto';
import { basename, dirname, join, resolve } from 'node:path';
import type { Logger } from 'pino';
import { AttestorError } from '../errors.js';
import type { KeyManager, Signer } from './signer.js';

/**
 * Software keys for development (`file:DIR`): `<DIR>/<role>.pem`, an unencrypted PKCS#8 EC
 * P-256 private key, generated on first use with mode 0600 in a 0700 directory; a key
 * generated for rotation is `<DIR>/<role>.<random>.pem`. A key file
 * that group or others may read, or a key directory they may write, is refused: such a key
 * may already be someone else's. The manager says `software: true`; the caller warns.
 */

export interface FileKeyManagerOptions {
  readonly logger?: Pick<Logger, 'info' | 'warn'>;
}

export async function openFileKeyManager(dir: string, opts: FileKeyManagerOptions = {}): Promise<KeyManager> {
  await keyDirectory(dir);
  const signers = new Map<string, Promise<Signer>>();
  let closed = false;
  /** The Signer of the key file `name` in the directory, loaded once (`make` finds or creates the key). */
  const cached = (name: string, make: (path: string) => Promise<{ path: string; privateKey: KeyObject }>): Promise<Signer> => {
    if (closed) return Promise.reject(new AttestorError('ERR_KEYS', 'the key manager is closed'));
    let signer = signers.get(name);
    if (!signer) {
      signer = make(join(dir, name)).then(fileSigner);
      // A failure is not cached: the operator may fix the file and ask again.
      signer.catch(() => signers.delete(name));
      signers.set(name, signer);
    }
    return signer;
  };
  return {
    software: true,
    signer: (role) => cached(`${role}.pem`, (path) => loadOrGenerate(path, opts)),
    async generate(role) {
      // A fresh name per key: rotation never overwrites a key file.
      const name = `${role}.${randomBytes(8).toString('hex')}.pem`;
      const privateKey = await generate(join(dir, name));
      if (!privateKey) throw new AttestorError('ERR_KEYS', `${join(dir, name)} exists already`);
      opts.logger?.info({ key: `file:${join(dir, name)}` }, 'generated a software key');
      return cached(name, async (path) => ({ path, privateKey }));
    },
    signerAt(uri, role) {
      const path = uri.startsWith('file:') ? uri.slice('file:'.length) : undefined;
      // Only key files of this directory, by the names this manager gives them, of this role.
      if (path === undefined || dirname(resolve(path)) !== resolve(dir) || KEY_FILE.exec(basename(path))?.[1] !== role) {
        return Promise.reject(new AttestorError('ERR_KEYS', `${uri} is not a ${role} key file of ${dir}: wrong key directory?`));
      }
      return cached(basename(path), async (p) => {
        const privateKey = await load(p);
        if (!privateKey) throw new AttestorError('ERR_KEYS', `${p} is missing: wrong key directory?`);
        return { path: p, privateKey };
      });
    },
    async close() {
      closed = true;
    },
  };
}

/** `<role>.pem` (the first key of a role) or `<role>.<16 hex digits>.pem` (a rotated one). */
const KEY_FILE = /^(x509-ca|jwt|audit)(\.[0-9a-f]{16})?\.pem$/;

async function keyDirectory(dir: string): Promise<void> {
  try {
    await mkdir(dir, { recursive: true, mode: 0o700 });
  } catch (e) {
    throw new AttestorError('ERR_KEYS', `cannot create the key directory ${dir}: ${codeOf(e)}`);
  }
  const s = await stat(dir);
  if (!s.isDirectory()) throw new AttestorError('ERR_KEYS', `${dir} is not a directory`);
  if ((s.mode & 0o022) !== 0) {
    throw new AttestorError('ERR_KEYS', `the key directory ${dir} is writable by group or others (mode ${mode(s.mode)}): chmod 700 it`);
  }
}

function fileSigner({ path, privateKey }: { path: string; privateKey: KeyObject }): Signer {
  const publicKey = createPublicKey(privateKey);
  return {
    uri: `file:${path}`,
    publicKey,
    spki: publicKey.export({ type: 'spki', format: 'der' }),
    software: true,
    sign: async (data) => sign('sha256', data, { key: privateKey, dsaEncoding: 'ieee-p1363' }),
    // The key is in memory: nothing can take it away.
    check: async () => undefined,
  };
}

async function loadOrGenerate(path: string, opts: FileKeyManagerOptions): Promise<{ path: string; privateKey: KeyObject }> {
  const existing = await load(path);
  if (existing) return { path, privateKey: existing };
  const generated = await generate(path);
  if (generated) {
    opts.logger?.info({ key: `file:${path}` }, 'generated a software key');
    return { path, privateKey: generated };
  }
  // Another process created it between our look and our link: use theirs.
  const theirs = await load(path);
  if (!theirs) throw new AttestorError('ERR_KEYS', `${path} vanished while it was being created`);
  return { path, privateKey: theirs };
}

/** The key in `path`, undefined when there is no such file. */
async function load(path: string): Promise<KeyObject | undefined> {
  let file;
  try {
    // O_NOFOLLOW: a symbolic link planted in the key directory is not followed to someone else's file.
    file = await open(path, fsConstants.O_RDONLY | fsConstants.O_NOFOLLOW);
  } catch (e) {
    if (codeOf(e) === 'ENOENT') return undefined;
    throw new AttestorError('ERR_KEYS', `cannot open ${path}: ${codeOf(e) === 'ELOOP' ? 'it is a symbolic link' : codeOf(e)}`);
  }
  try {
    const s = await file.stat();
    if (!s.isFile()) throw new AttestorError('ERR_KEYS', `${path} is not a regular file`);
    if ((s.mode & 0o077) !== 0) {
      throw new AttestorError('ERR_KEYS', `${path} is accessible to group or others (mode ${mode(s.mode)}): chmod 600 it`);
    }
    let key: KeyObject;
    try {
      key = createPrivateKey({ key: await file.readFile(), format: 'pem' });
    } catch {
      // OpenSSL's message could quote the file; the key stays out of errors.
      throw new AttestorError('ERR_KEYS', `${path} is not a PEM private key`);
    }
    if (key.asymmetricKeyType !== 'ec' || key.asymmetricKeyDetails?.namedCurve !== 'prime256v1') {
      throw new AttestorError('ERR_KEYS', `${path} is not an EC P-256 key`);
    }
    return key;
  } finally {
    await file.close();
  }
}

/**
 * Writes a new key to a temporary file (0600, synced) and links it to `path`: link() fails
 * when `path` exists, so of processes starting at once exactly one key wins. Undefined when
 * another process's key won.
 */
async function generate(path: string): Promise<KeyObject | undefined> {
  const { privateKey } = generateKeyPairSync('ec', { namedCurve: 'P-256' });
  const temporary = `${path}.${randomBytes(8).toString('hex')}.tmp`;
  try {
    const file = await open(temporary, 'wx', 0o600);
    try {
      await file.writeFile(privateKey.export({ type: 'pkcs8', format: 'pem' }));
      await file.sync();
    } finally {
      await file.close();
    }
    try {
      await link(temporary, path);
    } catch (e) {
      if (codeOf(e) === 'EEXIST') return undefined;
      throw e;
    }
    // The new name is durable only once its directory is.
    const directory = await open(dirname(path), fsConstants.O_RDONLY);
    try {
      await directory.sync();
    } finally {
      await directory.close();
    }
    return privateKey;
  } catch (e) {
    throw new AttestorError('ERR_KEYS', `cannot write ${path}: ${codeOf(e)}`);
  } finally {
    await unlink(temporary).catch(() => undefined);
  }
}

function codeOf(e: unknown): string {
  return (e as NodeJS.ErrnoException).code ?? (e instanceof Error ? e.message : String(e));
}

function mode(m: number): string {
  return (m & 0o777).toString(8).padStart(4, '0');
}
