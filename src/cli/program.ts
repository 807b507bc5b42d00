import { Command } from 'commander';
import { eventlogCommand } from './commands/eventlog.js';
import { imaCommand } from './commands/ima.js';
import { quoteCommand } from './commands/quote.js';
import type { CliIo } from './io.js';
import { runProgram } from './run.js';

function attestorProgram(io: CliIo): Command {
  const program = new Command('attestor').description('Attestor: TPM 2.0 attestation and identity issuance');
  program.addCommand(quoteCommand(io));
  program.addCommand(eventlogCommand(io));
  program.addCommand(imaCommand(io));
  return program;
}

/** Runs the attestor CLI and returns the exit status (see runProgram). */
export function runAttestor(argv: readonly string[], io: CliIo): Promise<number> {
  return runProgram(attestorProgram(io), argv, io);
}
