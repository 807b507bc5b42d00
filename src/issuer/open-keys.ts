import { fileURLToPath } from 'node:url';
import { AttestorError } from '../errors.js';
import { parsePkcs11Uri } from '../pkcs11/uri.js';
import { openFileKeyManager } from './file-keys.js';
import { openPkcs11KeyManager, type Pkcs11KeyManagerOptions } from './pkcs11-keys.js';
import type { KeyManager } from './signer.js';

/**
 * The key manager a keys URI names (step-ca's convention): `pkcs11:token=...?module-path=...`
 * (RFC 7512, see src/pkcs11/uri.ts) or `file:DIR` / `file:///DIR` for software keys
 * (development only: the manager says `software: true` and the caller warns). Anything
 * else is ERR_KEYS_URI.
 */
export type KeyManagerOptions = Pkcs11KeyManagerOptions;

export async function openKeyManager(uri: string, opts: KeyManagerOptions = {}): Promise<KeyManager> {
  if (uri.startsWith('pkcs11:')) return openPkcs11KeyManager(parsePkcs11Uri(uri, 'keys URI'), opts);
  if (uri.startsWith('file:')) return openFileKeyManager(fileDirectory(uri), opts.logger ? { logger: opts.logger } : {});
  // Only the scheme is quoted: a mistyped pkcs11 URI may carry a pin-value.
  const scheme = /^[A-Za-z][A-Za-z0-9+.-]{0,31}(?=:)/.exec(uri)?.[0];
  throw new AttestorError('ERR_KEYS_URI', `keys URI ${scheme ? `scheme "${scheme}:"` : 'without a scheme'} is neither pkcs11: nor file:`);
}

function fileDirectory(uri: string): string {
  let dir: string;
  try {
    dir = uri.startsWith('file://') ? fileURLToPath(uri) : uri.slice('file:'.length);
  } catch (e) {
    throw new AttestorError('ERR_KEYS_URI', `keys URI ${JSON.stringify(uri)}: ${(e as Error).message}`);
  }
  if (dir === '') throw new AttestorError('ERR_KEYS_URI', 'keys URI file: names no directory');
  return dir;
}
