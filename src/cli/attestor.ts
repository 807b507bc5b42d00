#!/usr/bin/env node
import { endQuietlyOnClosedPipe, processIo } from './io.js';
import { runAttestor } from './program.js';

endQuietlyOnClosedPipe();
process.exitCode = await runAttestor(process.argv.slice(2), processIo);
