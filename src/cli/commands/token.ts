import { Command, Option } from 'commander';
import { createToken, tokenView } from '../../server/routes/operator.js';
import { UUID } from '../../wire/schemas.js';
import type { CliIo } from '../io.js';
import { checkedBy } from '../server-options.js';
import { withStore, withStoreOptions, type StoreFlags } from '../store-options.js';
import { formatTable } from '../table.js';

/*
 * `attestor token create | list | revoke`: operator tokens managed offline, against the data dir
 * or database (to replace a lost admin token, to cut off a leaked one, or before the verifier
 * runs; a running verifier reads the change at the token's next use). A token is printed once,
 * on the last line of `create`; only its hash is stored.
 */

export function tokenCommand(io: CliIo): Command {
  const token = new Command('token').description('operator tokens (offline, against the data dir or database)');
  withStoreOptions(
    token
      .command('create')
      .description('create an operator token (printed once, on the last line)')
      .addOption(new Option('--role <role>', 'admin, operator, auditor or relying-party').choices(['admin', 'operator', 'auditor', 'relying-party']).makeOptionMandatory())
      .option('--label <text>', 'what the token is for', ''),
  )
    .option('--json', 'print {"id", "role", "label", "token", "createdAt"}')
    .action(async (opts: StoreFlags & { role: 'admin' | 'operator' | 'auditor' | 'relying-party'; label: string }) => {
      const created = await withStore(opts, (store) => createToken(store, opts.role, opts.label, 'cli:token-create', Date.now()));
      if (opts.json) io.out(`${JSON.stringify(created)}\n`);
      else io.out(`token ${created.id} (role ${created.role}) created; it is shown once:\n${created.token}\n`);
    });
  withStoreOptions(token.command('list').description('list operator tokens: ids, roles, labels, never the tokens'))
    .option('--json', 'print {"items": [...]}')
    .action(async (opts: StoreFlags) => {
      const items = (await withStore(opts, (store) => store.tokens.list())).map(tokenView);
      if (opts.json) io.out(`${JSON.stringify({ items })}\n`);
      else io.out(formatTable(items.map((t) => [t.id, t.role, t.label, t.createdAt, t.revokedAt ?? '-']), ['ID', 'ROLE', 'LABEL', 'CREATED', 'REVOKED']));
    });
  withStoreOptions(token.command('revoke').description('revoke an operator token: refused from its next use').argument('<id>', 'the token id', checkedBy(UUID)))
    .option('--json', 'print the revoked token')
    .action(async (id: string, opts: StoreFlags) => {
      const revoked = tokenView(
        await withStore(opts, (store) => store.tokens.revoke(id, Date.now(), { actor: 'cli:token-revoke', action: 'token.revoke', subject: id, details: {} })),
      );
      if (opts.json) io.out(`${JSON.stringify(revoked)}\n`);
      else io.out(`token ${revoked.id} (role ${revoked.role}) revoked at ${revoked.revokedAt}\n`);
    });
  return token;
}
