import { Command } from 'commander';
import { AGENT_ID, AgentBody, AgentDetailBody, type ReasonBody } from '../../wire/schemas.js';
import type { CliIo } from '../io.js';
import { addListOptions, fetchList, printPage, type ListFlags } from '../paging.js';
import { addServerOptions, checkedBy, withServer, type ServerFlags } from '../server-options.js';
import { formatTable } from '../table.js';

/*
 * `attestor agent list | show`: the enrolled agents as the verifier sees them (GET
 * /v1/agents...): status, labels, the last verdict with its reasons, the credentials issued.
 * A table, or with --json one JSON object: the agent as the server returned it, or {items,
 * next} for `list`.
 */

function labelText(labels: Readonly<Record<string, string>>): string {
  const pairs = Object.entries(labels).map(([name, value]) => `${name}=${value}`);
  return pairs.length > 0 ? pairs.join(',') : '-';
}

/** An active agent the watchdog holds stale shows as `active (stale)`. */
function statusText(a: AgentBody): string {
  return a.staleSince === null ? a.status : `${a.status} (stale)`;
}

function listTable(items: readonly AgentBody[]): string {
  return formatTable(
    items.map((a) => [a.id, statusText(a), a.lastVerdict?.status ?? '-', a.lastAttestedAt ?? '-', labelText(a.labels)]),
    ['ID', 'STATUS', 'VERDICT', 'LAST ATTESTED', 'LABELS'],
  );
}

/** What a reason points at, besides its code and message: "(sha256 PCR 7, event 12)". */
function reasonWhere(r: ReasonBody): string {
  const where = [
    r.pcr === undefined ? undefined : `${r.bank ?? ''} PCR ${r.pcr}`.trim(),
    r.pcr === undefined && r.bank !== undefined ? `bank ${r.bank}` : undefined,
    r.event === undefined ? undefined : `event ${r.event}`,
    r.path === undefined ? undefined : `path ${r.path}`,
    r.component === undefined ? undefined : `component ${r.component}`,
  ].filter((w) => w !== undefined);
  return where.length > 0 ? ` (${where.join(', ')})` : '';
}

function detailText(a: AgentDetailBody): string {
  const v = a.lastVerdict;
  const verdict = v === null ? 'none' : `${v.status} at ${v.at}${v.baseline === null ? ', no baseline' : `, baseline ${v.baseline.id} v${v.baseline.version}`}`;
  let text = formatTable([
    ['id', a.id],
    ['spiffe id', a.spiffeId],
    ['status', statusText(a)],
    ['stale since', a.staleSince ?? '-'],
    ['labels', labelText(a.labels)],
    ['created', a.createdAt],
    ['last attested', a.lastAttestedAt ?? '-'],
    ['last affirmed', a.lastAffirmedAt ?? '-'],
    ['verdict', verdict],
  ]);
  // One reason a line, indented under the verdict; the leading empty column is the indent.
  if (v !== null && v.reasons.length > 0) {
    text += `reasons:\n${formatTable(v.reasons.map((r) => ['', r.code, `${r.message ?? ''}${reasonWhere(r)}`]))}`;
  }
  text += 'credentials:\n';
  text +=
    a.credentials.length === 0
      ? '  none\n'
      : formatTable(
          a.credentials.map((c) => ['', c.id, c.kind, c.issuedAt, c.expiresAt, c.revoked ? 'revoked' : '-']),
          ['', 'ID', 'KIND', 'ISSUED', 'EXPIRES', 'REVOKED'],
        );
  return text;
}

export function agentCommand(io: CliIo): Command {
  const agent = new Command('agent').description('enrolled agents on the verifier: status, last verdict, credentials (needs ATTESTOR_TOKEN)');

  agent.addCommand(
    addListOptions(addServerOptions(new Command('list').description('list the enrolled agents'))).action(async (opts: ServerFlags & ListFlags) => {
      const page = await withServer(opts, (client) => fetchList(client, '/v1/agents', AgentBody, {}, opts));
      printPage(io, page, opts, listTable);
    }),
  );

  agent.addCommand(
    addServerOptions(new Command('show').description("show an agent: its last verdict's reasons, one a line, and its credentials"))
      .argument('<id>', 'the agent id (64 hex digits)', checkedBy(AGENT_ID))
      .option('--json', 'print the agent as one JSON object')
      .action(async (id: string, opts: ServerFlags & { json?: boolean }) => {
        const found = await withServer(opts, (client) => client.call('GET', `/v1/agents/${id}`, AgentDetailBody));
        io.out(opts.json ? `${JSON.stringify(found)}\n` : detailText(found));
      }),
  );

  const actions = {
    quarantine: 'quarantine an agent: no new credentials, its unexpired ones revoked (CRL), until released',
    release: 'release a quarantined agent: it may attest again',
    revoke: 'revoke an agent for good: no new credentials, its unexpired ones revoked (CRL)',
  } as const;
  for (const [action, description] of Object.entries(actions)) {
    agent.addCommand(
      addServerOptions(new Command(action).description(description))
        .argument('<id>', 'the agent id (64 hex digits)', checkedBy(AGENT_ID))
        .option('--json', 'print the agent as one JSON object')
        .action(async (id: string, opts: ServerFlags & { json?: boolean }) => {
          const changed = await withServer(opts, (client) => client.call('POST', `/v1/agents/${id}/${action}`, AgentBody, {}));
          io.out(opts.json ? `${JSON.stringify(changed)}\n` : `agent ${changed.id} is ${changed.status}\n`);
        }),
    );
  }

  return agent;
}
