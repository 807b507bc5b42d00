import { Command, CommanderError } from 'commander';
import { isAttestorError } from '../errors.js';
import { describeError, UsageError, type CliIo } from './io.js';

/** Commands added with addCommand() inherit nothing: apply output and exit handling to all. */
function applyToAll(cmd: Command, io: CliIo): void {
  cmd.exitOverride().configureOutput({ writeOut: io.out, writeErr: io.err });
  for (const sub of cmd.commands) applyToAll(sub, io);
}

/**
 * Runs a command line program (attestor, attestor-agent) and returns the exit status: 0
 * success, 1 when the input was checked and refused or the operation failed (the error code
 * is printed), 2 when the command was called wrongly.
 */
export async function runProgram(program: Command, argv: readonly string[], io: CliIo): Promise<number> {
  applyToAll(program, io);
  try {
    await program.parseAsync(argv, { from: 'user' });
    return 0;
  } catch (e) {
    if (e instanceof CommanderError) {
      // help and version are "errors" only to commander
      return e.exitCode === 0 ? 0 : 2;
    }
    if (e instanceof UsageError) {
      io.err(`error: ${e.message}\n`);
      return 2;
    }
    if (isAttestorError(e)) {
      io.err(describeError(e));
      return 1;
    }
    throw e;
  }
}
