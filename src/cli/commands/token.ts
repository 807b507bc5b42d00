import { Command, Option } from 'commander';
import { loadConfig } from '../../config/config.js';
import { createToken } from '../../server/routes/operator.js';
import { openStore } from '../../store/open.js';
import type { CliIo } from '../io.js';

/**
 * `attestor token create`: an operator token made offline, against the data dir or database
 * (for the first admin on a verifier whose first token was lost, or for automation before
 * the verifier runs). The token is printed once, on the last line; only its hash is stored.
 */
export function tokenCommand(io: CliIo): Command {
  const token = new Command('token').description('operator tokens');
  token
    .command('create')
    .description('create an operator token (printed once, on the last line)')
    .addOption(new Option('--role <role>', 'admin, operator, auditor or relying-party').choices(['admin', 'operator', 'auditor', 'relying-party']).makeOptionMandatory())
    .option('--label <text>', 'what the token is for', '')
    .option('--data-dir <dir>', 'the verifier data dir (or ATTESTOR_DATA_DIR)')
    .option('--database <url>', 'the verifier database, when PostgreSQL (or ATTESTOR_DATABASE)')
    .option('--json', 'print {"id", "role", "label", "token", "createdAt"}')
    .action(async (opts: { role: 'admin' | 'operator' | 'auditor' | 'relying-party'; label: string; dataDir?: string; database?: string; json?: boolean }) => {
      const config = loadConfig({ env: process.env, flags: { dataDir: opts.dataDir, database: opts.database } });
      const store = await openStore({ dataDir: config.dataDir, ...(config.database ? { database: config.database } : {}) });
      try {
        const created = await createToken(store, opts.role, opts.label, 'cli:token-create', Date.now());
        if (opts.json) io.out(`${JSON.stringify(created)}\n`);
        else io.out(`token ${created.id} (role ${created.role}) created; it is shown once:\n${created.token}\n`);
      } finally {
        await store.close();
      }
    });
  return token;
}
