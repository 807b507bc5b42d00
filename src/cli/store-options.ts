import type { Command } from 'commander';
import { loadConfig } from '../config/config.js';
import { openStore } from '../store/open.js';
import type { Store } from '../store/store.js';

/*
 * What the commands that work offline share: the verifier's data dir or database (flags, or
 * ATTESTOR_DATA_DIR / ATTESTOR_DATABASE), opened as the verifier opens it.
 */

export interface StoreFlags {
  dataDir?: string;
  database?: string;
  json?: boolean;
}

export function withStoreOptions(cmd: Command): Command {
  return cmd
    .option('--data-dir <dir>', 'the verifier data dir (or ATTESTOR_DATA_DIR)')
    .option('--database <url>', 'the verifier database, when PostgreSQL (or ATTESTOR_DATABASE)');
}

/**
 * Runs `use` on the store the flags (or the environment) name, closed afterwards. A PostgreSQL
 * database needs no data dir.
 */
export async function withStore<T>(opts: StoreFlags, use: (store: Store) => Promise<T>): Promise<T> {
  const database = opts.database ?? process.env.ATTESTOR_DATABASE;
  const store =
    database !== undefined && database !== ''
      ? await openStore({ database })
      : await openStore({ dataDir: loadConfig({ env: process.env, flags: { dataDir: opts.dataDir } }).dataDir });
  try {
    return await use(store);
  } finally {
    await store.close();
  }
}
