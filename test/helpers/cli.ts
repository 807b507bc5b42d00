import type { CliIo } from '../../src/cli/io.js';

/** What a command line run printed and the exit status it returned. */
export interface CliRun {
  readonly code: number;
  readonly out: string;
  readonly err: string;
}

/**
 * Runs a program's entry point (runAttestor, runAgent) in-process, as its bin does, with its
 * output collected: the exit status is the one the bin would exit with.
 */
export async function runCli(run: (argv: readonly string[], io: CliIo) => Promise<number>, args: readonly string[]): Promise<CliRun> {
  let out = '';
  let err = '';
  const code = await run(args, { out: (t) => void (out += t), err: (t) => void (err += t) });
  return { code, out, err };
}
