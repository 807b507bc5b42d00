import { Command, Option } from 'commander';
import { KeyList, type KeyBody } from '../../wire/schemas.js';
import type { CliIo } from '../io.js';
import { addServerOptions, withServer, type ServerFlags } from '../server-options.js';
import { formatTable } from '../table.js';

/*
 * `attestor keys list | rotate`: the verifier's issuing keys (GET /v1/keys) and their
 * rotation (POST /v1/keys/rotate), online with the operator token. A table, or with --json the
 * server's {items} as it answered.
 */

function keysTable(items: readonly KeyBody[]): string {
  return formatTable(
    items.map((k) => [k.role, k.state, k.kid, k.createdAt, k.activatedAt ?? '-', k.notAfter ?? '-', k.fingerprint ?? '-', k.uri]),
    ['ROLE', 'STATE', 'KID', 'CREATED', 'ACTIVATED', 'NOT AFTER', 'FINGERPRINT', 'URI'],
  );
}

/** What a rotation did, in one line: the role's active and prepared keys after it. */
function rotationText(role: string, items: readonly KeyBody[]): string {
  const active = items.find((k) => k.state === 'active');
  const prepared = items.find((k) => k.state === 'prepared');
  const line = prepared
    ? `${role}: key ${prepared.kid} is prepared (published, not yet signing); ${active?.kid ?? '-'} stays active until the activation delay has passed`
    : `${role}: key ${active?.kid ?? '-'} is active`;
  return `${line}\n${keysTable(items)}`;
}

export function keysCommand(io: CliIo): Command {
  const keys = new Command('keys').description('the issuing keys on the verifier: list, rotate (needs ATTESTOR_TOKEN)');

  keys.addCommand(
    addServerOptions(new Command('list').description('list the issuing keys: role, state (prepared, active, old), times, where they live'))
      .option('--json', 'print {"items": [...]} as the server answered')
      .action(async (opts: ServerFlags & { json?: boolean }) => {
        const list = await withServer(opts, (client) => client.call('GET', '/v1/keys', KeyList));
        io.out(opts.json ? `${JSON.stringify(list)}\n` : keysTable(list.items));
      }),
  );

  keys.addCommand(
    addServerOptions(
      new Command('rotate').description(
        'prepare a new key (published before it signs), and activate it once it has been published for the activation delay; run again to activate',
      ),
    )
      .addOption(new Option('--key <role>', 'the key to rotate').choices(['x509-ca', 'jwt', 'audit']).default('x509-ca'))
      .option('--now', 'prepare and activate at once (emergency: relying parties with a cached bundle refuse the new key until they refetch)')
      .option('--json', 'print the role\'s keys after it, {"items": [...]}')
      .action(async (opts: ServerFlags & { key: 'x509-ca' | 'jwt' | 'audit'; now?: boolean; json?: boolean }) => {
        const after = await withServer(opts, (client) => client.call('POST', '/v1/keys/rotate', KeyList, { key: opts.key, ...(opts.now ? { now: true } : {}) }));
        io.out(opts.json ? `${JSON.stringify(after)}\n` : rotationText(opts.key, after.items));
      }),
  );

  return keys;
}
