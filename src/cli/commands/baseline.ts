import { readFileSync } from 'node:fs';
import { Command } from 'commander';
import { AttestorError } from '../../errors.js';
import { AGENT_ID, AUDIENCE, BASELINE_STATUS, BaselineBody, BaselineCreateRequest, UUID } from '../../wire/schemas.js';
import { readInput, UsageError, type CliIo } from '../io.js';
import { addListOptions, fetchList, printPage, type ListFlags } from '../paging.js';
import { addServerOptions, checkedBy, withServer, type ServerFlags } from '../server-options.js';
import { formatTable, printable } from '../table.js';
import { collectLabel } from '../labels.js';

/*
 * `attestor baseline add | list | show | enforce | retire | capture`: golden baselines on the
 * verifier (POST/GET /v1/baselines...). A baseline is staged when added or captured, enforced
 * by `enforce`, and retired by `retire`. Each prints a table, or with --json one JSON object:
 * the baseline as the server returned it (so `.id` is its id), or {items, next} for `list`.
 */

interface OutputFlags extends ServerFlags {
  json?: boolean;
}

const NAME = BaselineCreateRequest.shape.name;

function summary(b: BaselineBody): [string, string][] {
  return [
    ['id', b.id],
    ['name', b.name],
    ['version', String(b.version)],
    ['status', b.status],
    ['created', `${b.createdAt} by ${b.createdBy}`],
    ['enforced', b.enforcedAt ?? '-'],
    ['retired', b.retiredAt ?? '-'],
  ];
}

/** The baseline as JSON, or as its fields (and with `withDocument`, the document, indented). */
function printBaseline(io: CliIo, b: BaselineBody, flags: OutputFlags, withDocument = false): void {
  if (flags.json) {
    io.out(`${JSON.stringify(b)}\n`);
    return;
  }
  io.out(formatTable(summary(b)));
  if (withDocument) io.out(`document:\n${JSON.stringify(b.document, null, 2).split('\n').map((line) => `  ${printable(line)}\n`).join('')}`);
}

function listTable(items: readonly BaselineBody[]): string {
  return formatTable(
    items.map((b) => [b.id, b.name, String(b.version), b.status, b.createdAt, b.enforcedAt ?? '-']),
    ['ID', 'NAME', 'VERSION', 'STATUS', 'CREATED', 'ENFORCED'],
  );
}

/** The baseline document in FILE (`-`: standard input): a JSON object; the server validates the rest. */
function readDocument(file: string): Record<string, unknown> {
  let bytes: Uint8Array;
  if (file === '-') {
    try {
      bytes = readFileSync(0);
    } catch (e) {
      throw new UsageError(`cannot read the standard input: ${(e as NodeJS.ErrnoException).code ?? 'unreadable'}`);
    }
  } else {
    bytes = readInput(file, 'FILE');
  }
  let document: unknown;
  try {
    document = JSON.parse(new TextDecoder('utf-8', { fatal: true }).decode(bytes));
  } catch (e) {
    throw new AttestorError('ERR_BASELINE_INVALID', `${file === '-' ? 'standard input' : file}: not a JSON document (${(e as Error).message})`);
  }
  if (typeof document !== 'object' || document === null || Array.isArray(document)) {
    throw new AttestorError('ERR_BASELINE_INVALID', `${file === '-' ? 'standard input' : file}: a baseline document is a JSON object`);
  }
  return document as Record<string, unknown>;
}

function collect(parse: (value: string) => string) {
  return (value: string, previous: string[] = []): string[] => [...previous, parse(value)];
}

/** --selector k=v, repeated: the labels a captured baseline applies to. */
interface ListOptions extends OutputFlags, ListFlags {
  status?: string;
}

interface CaptureOptions extends OutputFlags {
  agent: string;
  name?: string;
  audience?: string[];
  selector?: Record<string, string>;
}

function leaf(name: string, description: string): Command {
  return addServerOptions(new Command(name).description(description));
}

const JSON_BASELINE = 'print the baseline as one JSON object';

export function baselineCommand(io: CliIo): Command {
  const baseline = new Command('baseline').description('golden baselines on the verifier: add, capture, enforce, retire (needs ATTESTOR_TOKEN)');

  baseline.addCommand(
    leaf('add', 'add a baseline document; it is staged: evaluated and reported, not enforced')
      .argument('<file>', 'the baseline document, JSON; - for standard input')
      .requiredOption('--name <name>', 'the baseline name ([A-Za-z0-9._-]); adding under an existing name makes its next version', checkedBy(NAME))
      .option('--json', JSON_BASELINE)
      .action(async (file: string, opts: OutputFlags & { name: string }) => {
        const document = readDocument(file);
        const created = await withServer(opts, (client) => client.call('POST', '/v1/baselines', BaselineBody, { name: opts.name, document }));
        printBaseline(io, created, opts);
      }),
  );

  baseline.addCommand(
    addListOptions(leaf('list', 'list baselines'))
      .option('--status <status>', `only baselines in this state (${BASELINE_STATUS.options.join(', ')})`, checkedBy(BASELINE_STATUS))
      .action(async (opts: ListOptions) => {
        const page = await withServer(opts, (client) => fetchList(client, '/v1/baselines', BaselineBody, { status: opts.status }, opts));
        printPage(io, page, opts, listTable);
      }),
  );

  baseline.addCommand(
    leaf('show', 'show a baseline and its document')
      .argument('<id>', 'the baseline id', checkedBy(UUID))
      .option('--json', JSON_BASELINE)
      .action(async (id: string, opts: OutputFlags) => {
        const found = await withServer(opts, (client) => client.call('GET', `/v1/baselines/${id}`, BaselineBody));
        printBaseline(io, found, opts, true);
      }),
  );

  for (const [action, description] of [
    ['enforce', 'enforce a staged baseline (an enforced one of the same name is retired): agents it applies to must match it to get credentials'],
    ['retire', 'retire a baseline: it no longer applies to any agent'],
  ] as const) {
    baseline.addCommand(
      leaf(action, description)
        .argument('<id>', 'the baseline id', checkedBy(UUID))
        .option('--json', JSON_BASELINE)
        .action(async (id: string, opts: OutputFlags) => {
          const changed = await withServer(opts, (client) => client.call('POST', `/v1/baselines/${id}/${action}`, BaselineBody, {}));
          printBaseline(io, changed, opts);
        }),
    );
  }

  baseline.addCommand(
    leaf('capture', "stage a baseline made from an agent's last authentic evidence")
      .requiredOption('--agent <id>', 'the agent id (64 hex digits)', checkedBy(AGENT_ID))
      .option('--name <name>', 'the baseline name (default: captured-<first 12 digits of the agent id>)', checkedBy(NAME))
      .option('--audience <aud>', 'a JWT audience the baseline allows (repeatable)', collect(checkedBy(AUDIENCE)))
      .option('--selector <name=value>', 'a host label the baseline applies to (repeatable; default: every agent)', collectLabel)
      .option('--json', JSON_BASELINE)
      .action(async (opts: CaptureOptions) => {
        const request = {
          agentId: opts.agent,
          ...(opts.name === undefined ? {} : { name: opts.name }),
          ...(opts.audience === undefined ? {} : { audiences: opts.audience }),
          ...(opts.selector === undefined ? {} : { selector: opts.selector }),
        };
        const captured = await withServer(opts, (client) => client.call('POST', '/v1/baselines/capture', BaselineBody, request));
        printBaseline(io, captured, opts);
      }),
  );

  return baseline;
}
