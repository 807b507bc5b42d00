#!/usr/bin/env node
import { runAgent } from './agent-program.js';
import { endQuietlyOnClosedPipe, processIo } from './io.js';

endQuietlyOnClosedPipe();
process.exitCode = await runAgent(process.argv.slice(2), processIo);
