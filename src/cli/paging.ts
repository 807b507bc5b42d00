import { InvalidArgumentError, type Command } from 'commander';
import type { z } from 'zod';
import type { ApiClient } from '../client/api-client.js';
import { AttestorError } from '../errors.js';
import { pageOf } from '../wire/schemas.js';
import type { CliIo } from './io.js';
import { printable } from './table.js';

/*
 * The list commands (`baseline list`, `agent list`) over the paged list routes: one page by
 * default, `--after CURSOR` for the next one (the `next` a page gave), `--all` to follow
 * `next` to the end.
 */

export interface ListFlags {
  limit?: number;
  after?: string;
  all?: boolean;
  json?: boolean;
}

export interface Page<T> {
  readonly items: T[];
  /** The cursor of the next page; null on the last one. */
  readonly next: string | null;
}

function positiveInteger(value: string): number {
  if (!/^[1-9][0-9]{0,5}$/.test(value)) throw new InvalidArgumentError('must be a positive integer');
  return Number(value);
}

export function addListOptions(cmd: Command): Command {
  return cmd
    .option('--limit <n>', 'items per page (the server sets the default and the maximum)', positiveInteger)
    .option('--after <cursor>', 'start after this cursor: the "next" of the previous page')
    .option('--all', 'follow the pages to the end and print every item')
    .option('--json', 'print one JSON object {"items": [...], "next": cursor or null}');
}

/**
 * GET `path` with the query `filters` and the paging flags; with --all, the following pages
 * too (then `next` is null). A server that hands out a cursor twice is refused rather than
 * followed forever.
 */
export async function fetchList<S extends z.ZodType>(
  client: ApiClient,
  path: string,
  item: S,
  filters: Readonly<Record<string, string | undefined>>,
  flags: ListFlags,
): Promise<Page<z.output<S>>> {
  const schema = pageOf(item);
  const items: z.output<S>[] = [];
  const seen = new Set<string>();
  let after = flags.after;
  for (;;) {
    const query = new URLSearchParams();
    for (const [name, value] of Object.entries({ ...filters, limit: flags.limit?.toString(), after })) {
      if (value !== undefined) query.set(name, value);
    }
    const page = await client.call('GET', query.size > 0 ? `${path}?${query}` : path, schema);
    items.push(...page.items);
    if (!flags.all || page.next === null) return { items, next: page.next };
    if (seen.has(page.next)) throw new AttestorError('ERR_SERVER_RESPONSE', `GET ${path}: the server returned the cursor of a page already read`);
    seen.add(page.next);
    after = page.next;
  }
}

/** The page as JSON, or as the table `format` makes of its items; a further page is pointed to on stderr. */
export function printPage<T>(io: CliIo, page: Page<T>, flags: ListFlags, format: (items: readonly T[]) => string): void {
  if (flags.json) {
    io.out(`${JSON.stringify(page)}\n`);
    return;
  }
  io.out(format(page.items));
  if (page.next !== null) io.err(`more: --after ${printable(page.next)} for the next page, or --all\n`);
}
