import { readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { rootStoreFromPemTexts, type EkRootStore } from '../tpm/ek-roots.js';
import { UsageError } from './io.js';

/**
 * The EK root store shipped with Attestor: the vendor CA certificates in fixtures/ek-roots of
 * the package (src/cli and dist/cli are both two levels below the package root), wherever the
 * command is run from.
 */
export const DEFAULT_EK_ROOTS = fileURLToPath(new URL('../../fixtures/ek-roots/', import.meta.url));

/** Certificate files of a store directory; anything else there (NOTICE.md, keys) is not read. */
const CERTIFICATE_FILE = /\.(pem|crt)$/i;

/**
 * Reads a directory of PEM CA certificates (roots and intermediates mixed, as vendors publish
 * them) into an EK root store; entries are named by file name. A directory that cannot be read
 * is a usage error; a file that is not PEM certificates is ERR_EK_CERT_MALFORMED, a store
 * without a trust anchor ERR_EK_ROOTS_EMPTY.
 */
export function loadEkRootStore(dir: string = DEFAULT_EK_ROOTS, option = '--ek-roots'): EkRootStore {
  let names: string[];
  try {
    names = readdirSync(dir).filter((name) => CERTIFICATE_FILE.test(name)).sort();
  } catch (e) {
    throw new UsageError(`cannot read ${option} ${dir}: ${(e as NodeJS.ErrnoException).code ?? 'unreadable'}`);
  }
  return rootStoreFromPemTexts(names.map((name) => ({ name, pem: readFileSync(join(dir, name), 'utf8') })));
}
