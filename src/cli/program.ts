import { Command } from 'commander';
import { agentCommand } from './commands/agent.js';
import { auditCommand } from './commands/audit.js';
import { baselineCommand } from './commands/baseline.js';
import { eventlogCommand } from './commands/eventlog.js';
import { imaCommand } from './commands/ima.js';
import { keysCommand } from './commands/keys.js';
import { quoteCommand } from './commands/quote.js';
import { serveCommand } from './commands/serve.js';
import { tokenCommand } from './commands/token.js';
import type { CliIo } from './io.js';
import { runProgram } from './run.js';

function attestorProgram(io: CliIo): Command {
  const program = new Command('attestor').description('Attestor: TPM 2.0 attestation and identity issuance');
  program.addCommand(serveCommand(io));
  program.addCommand(tokenCommand(io));
  program.addCommand(quoteCommand(io));
  program.addCommand(eventlogCommand(io));
  program.addCommand(imaCommand(io));
  program.addCommand(baselineCommand(io));
  program.addCommand(agentCommand(io));
  program.addCommand(auditCommand(io));
  program.addCommand(keysCommand(io));
  return program;
}

/** Runs the attestor CLI and returns the exit status (see runProgram). */
export function runAttestor(argv: readonly string[], io: CliIo): Promise<number> {
  return runProgram(attestorProgram(io), argv, io);
}
