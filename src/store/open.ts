import { join } from 'node:path';
import { AttestorError } from '../errors.js';
import { openPostgresStore } from './postgres.js';
import { openSqliteStore } from './sqlite.js';
import { openStoreThread } from './store-thread.js';
import type { Store } from './store.js';

/**
 * SQLite in a data directory (`<dataDir>/attestor.db`), or a database: a postgres:// or
 * postgresql:// URL, whose `schema` query parameter, if any, names the schema of the tables
 * (and is not passed on). `thread`: the store runs on a worker thread of its own (the server's
 * choice: see store-thread.ts).
 */
export type OpenStoreOptions = ({ readonly dataDir: string; readonly database?: undefined } | { readonly dataDir?: string; readonly database: string }) & { readonly thread?: boolean };

/** The store the configuration names. */
export async function openStore(options: OpenStoreOptions): Promise<Store> {
  const { database } = options;
  if (database === undefined) {
    const path = join(options.dataDir, 'attestor.db');
    return options.thread === true ? openStoreThread({ sqlite: { path } }) : openSqliteStore({ path });
  }
  if (!/^postgres(ql)?:\/\//i.test(database)) {
    throw new AttestorError('ERR_CONFIG', `database "${withoutCredentials(database)}" is neither absent (SQLite in the data directory) nor a postgres:// or postgresql:// URL`);
  }
  let url: URL;
  try {
    url = new URL(database);
  } catch {
    throw new AttestorError('ERR_CONFIG', `database "${withoutCredentials(database)}" is not a well-formed URL`);
  }
  const schema = url.searchParams.get('schema');
  url.searchParams.delete('schema');
  const postgres = schema === null ? { url: database } : { url: url.toString(), schema };
  return options.thread === true ? openStoreThread({ postgres }) : openPostgresStore(postgres);
}

/** The value for a message: the user and password of a URL left out. */
function withoutCredentials(value: string): string {
  const at = value.lastIndexOf('@');
  if (at < 0) return value;
  const scheme = /^[a-z][a-z0-9+.-]*:\/\//i.exec(value)?.[0] ?? '';
  return `${scheme}${value.slice(at + 1)}`;
}
