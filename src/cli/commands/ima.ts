import { Command } from 'commander';
import { detectImaFormat, parseImaLog } from '../../eventlog/ima/parse.js';
import { IMA_BANKS, replayIma } from '../../eventlog/ima/replay.js';
import { ParseError } from '../../errors.js';
import { readInput, type CliIo } from '../io.js';

/*
 * `attestor ima replay FILE [--json] [--padded-sha1]` for a Linux IMA runtime measurement
 * list (/sys/kernel/security/ima/ascii_runtime_measurements or binary_runtime_measurements,
 * the form is detected). Every template hash is checked, then the list is replayed from reset.
 * A malformed list or a wrong template hash throws a typed error, which the program prints as
 * `error: <CODE>: <message>` with exit status 1; an unreadable FILE is a usage error (status 2).
 */

interface ReplayOptions {
  json?: boolean;
  paddedSha1?: boolean;
}

export function imaCommand(io: CliIo): Command {
  const ima = new Command('ima').description('Linux IMA runtime measurement lists (ima, ima-ng, ima-sig, ima-buf templates)');
  ima
    .command('replay')
    .description('check every template hash and replay the list: the PCR values it produces, per bank')
    .argument('<file>', 'ascii_runtime_measurements or binary_runtime_measurements')
    .option('--json', 'print {"pcrs": {"<bank>": {"<index>": "<hex>"}}, "entries": N, ...}')
    .option('--padded-sha1', 'the list comes from a kernel before 5.11, which extends SHA-1 template hashes, zero-padded, into every bank')
    .action((file: string, opts: ReplayOptions) => {
      const bytes = readInput(file, 'FILE');
      const format = detectImaFormat(bytes);
      const entries = parseImaLog(bytes, format);
      // The kernel's list always starts with boot_aggregate: an empty file is not a list.
      if (entries.length === 0) throw new ParseError('ERR_IMA_MALFORMED', `${file}: no measurement entries`);
      const pcrs = replayIma(entries, { paddedSha1Banks: opts.paddedSha1 === true });
      const violations = entries.filter((e) => e.violation).length;
      if (opts.json) {
        io.out(`${JSON.stringify({ format, entries: entries.length, violations, pcrs })}\n`);
        return;
      }
      const lines = [`${format} IMA list: ${entries.length} entries, ${violations} violations, every template hash verified`];
      for (const bank of IMA_BANKS) {
        for (const [index, value] of Object.entries(pcrs[bank])) lines.push(`  PCR ${index.padStart(2)} ${bank.padEnd(6)} ${value}`);
      }
      io.out(`${lines.join('\n')}\n`);
    });
  return ima;
}
