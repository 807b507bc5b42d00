import { Command } from 'commander';
import { agentAttestCommand } from './commands/agent-attest.js';
import { agentEnrollCommand } from './commands/agent-enroll.js';
import { agentRunCommand } from './commands/agent-run.js';
import { agentStatusCommand } from './commands/agent-status.js';
import { tpmCommand } from './commands/tpm.js';
import type { CliIo } from './io.js';
import { runProgram } from './run.js';

function agentProgram(io: CliIo): Command {
  const program = new Command('attestor-agent').description("Attestor's agent on an attested host: its TPM, keys and evidence");
  program.addCommand(agentEnrollCommand(io));
  program.addCommand(agentAttestCommand(io));
  program.addCommand(agentRunCommand(io));
  program.addCommand(agentStatusCommand(io));
  program.addCommand(tpmCommand(io));
  return program;
}

/** Runs the attestor-agent CLI and returns the exit status (see runProgram). */
export function runAgent(argv: readonly string[], io: CliIo): Promise<number> {
  return runProgram(agentProgram(io), argv, io);
}
