import { Command } from 'commander';
import { verifyStoredChain } from '../../audit/verify-stored-chain.js';
import { AttestorError } from '../../errors.js';
import { auditEntryView, auditVerificationView } from '../../server/routes/audit.js';
import { AuditEntryBody, AuditVerificationBody } from '../../wire/schemas.js';
import { UsageError, type CliIo } from '../io.js';
import { addListOptions, fetchList, printPage, type ListFlags, type Page } from '../paging.js';
import { addServerOptions, withServer, type ServerFlags } from '../server-options.js';
import { withStore, withStoreOptions, type StoreFlags } from '../store-options.js';
import { formatTable } from '../table.js';

/*
 * `attestor audit list | verify`: the audit chain, from the running verifier (GET /v1/audit,
 * /v1/audit/verify, with ATTESTOR_TOKEN and the root CA pinned) or, given --data-dir or
 * --database, from its database directly: `verify` then recomputes every hash and checks every
 * checkpoint signature here, with the audit public keys of the keys table. `verify` exits 0
 * when the chain is intact and 1 naming the first problem:
 * `error: ERR_AUDIT_CHAIN: audit chain broken at seq 42: entry edited (...)`.
 */

type Flags = ServerFlags & StoreFlags;

const WHERE_HELP = `
Where the chain is read:
  --data-dir DIR or --database URL   the verifier's database, directly (offline)
  otherwise                          the verifier at --server, with ATTESTOR_TOKEN
`;

/** Offline when the database is named by a flag; both ways at once is a mistake. */
function offline(opts: Flags): boolean {
  const local = opts.dataDir !== undefined || opts.database !== undefined;
  if (local && (opts.server !== undefined || opts.caFingerprint !== undefined)) {
    throw new UsageError('give either --server (the running verifier) or --data-dir/--database (its database), not both');
  }
  return local;
}

function listTable(items: readonly AuditEntryBody[]): string {
  return formatTable(
    items.map((e) => [String(e.seq), e.at, e.actor, e.action, e.subject, JSON.stringify(e.details)]),
    ['SEQ', 'AT', 'ACTOR', 'ACTION', 'SUBJECT', 'DETAILS'],
  );
}

function verificationText(v: AuditVerificationBody): string {
  const last = v.checkpoints.last;
  const covered = last
    ? `last checkpoint at seq ${last.seq}, signed ${last.at} by audit key ${last.kid}; ${v.uncheckpointed ?? 0} entries after it`
    : 'no checkpoint yet';
  return `audit chain intact: ${v.entries} entries, head seq ${v.head?.seq ?? 0} (${v.head?.hash ?? ''}); ${v.checkpoints.verified} checkpoints verified, ${covered}\n`;
}

const collect = (value: string, all: string[]) => [...all, value];

/** `--expect 42:<64 hex>`. */
function witness(value: string): { seq: number; hash: string } {
  const m = /^([1-9][0-9]{0,14}):([0-9a-f]{64})$/.exec(value);
  if (!m) throw new UsageError(`--expect ${value}: give seq:hash, a seq and 64 lowercase hex digits`);
  return { seq: Number(m[1]), hash: m[2]! };
}

export function auditCommand(io: CliIo): Command {
  const audit = new Command('audit').description('the audit chain: list it, verify it (online with ATTESTOR_TOKEN, or offline against the database)');

  audit.addCommand(
    addListOptions(withStoreOptions(addServerOptions(new Command('list').description('list the audit chain, oldest first'))))
      .addHelpText('after', WHERE_HELP)
      .action(async (opts: Flags & ListFlags) => {
        const page = offline(opts)
          ? await withStore(opts, async (store) => {
              const items: AuditEntryBody[] = [];
              let after = opts.after;
              for (;;) {
                const p = await store.audit.list({ limit: opts.limit ?? 100, ...(after === undefined ? {} : { after }) });
                items.push(...p.items.map(auditEntryView));
                if (!opts.all || p.next === null) return { items, next: p.next } satisfies Page<AuditEntryBody>;
                after = p.next;
              }
            })
          : await withServer(opts, (client) => fetchList(client, '/v1/audit', AuditEntryBody, {}, opts));
        printPage(io, page, opts, listTable);
      }),
  );

  audit.addCommand(
    withStoreOptions(addServerOptions(new Command('verify').description('verify the hash chain and the signed checkpoints; exit 1 naming the first problem')))
      .option('--json', 'print the verification as one JSON object (also when the chain is broken)')
      .option('--audit-key <kid>', 'offline: only checkpoints by this audit key count (repeat for several; kids as verify and `attestor keys list` print them)', collect, [])
      .option('--expect <seq:hash>', 'offline: the chain must still have this head, recorded outside the database (a checkpoint log line); repeatable', collect, [])
      .addHelpText('after', WHERE_HELP)
      .action(async (opts: Flags & { auditKey: string[]; expect: string[] }) => {
        const witnesses = opts.expect.map(witness);
        if (!offline(opts) && (opts.auditKey.length > 0 || witnesses.length > 0)) {
          throw new UsageError('--audit-key and --expect check the database itself: give --data-dir or --database');
        }
        const verification = offline(opts)
          ? await withStore(opts, async (store) =>
              auditVerificationView(await verifyStoredChain(store, { ...(opts.auditKey.length > 0 && { auditKeys: opts.auditKey }), witnesses })),
            )
          : await withServer(opts, (client) => client.call('GET', '/v1/audit/verify', AuditVerificationBody));
        if (opts.json) io.out(`${JSON.stringify(verification)}\n`);
        if (verification.problem) throw new AttestorError('ERR_AUDIT_CHAIN', verification.problem.message);
        if (!opts.json) io.out(verificationText(verification));
      }),
  );

  return audit;
}
