#!/usr/bin/env node
import { runAgent } from './agent-program.js';
import { processIo } from './io.js';

process.exitCode = await runAgent(process.argv.slice(2), processIo);
