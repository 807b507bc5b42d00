#!/usr/bin/env node
import { runAgent } from './agent-program.js';
import { processIo } from './io.js';

// tpm2-tss writes its own log of a failure to stderr; the typed error line already says it.
// TSS2_LOG=all+debug (or any level) brings that log back for debugging.
process.env.TSS2_LOG ??= 'all+none';
process.exitCode = await runAgent(process.argv.slice(2), processIo);
