#!/usr/bin/env node
import { processIo } from './io.js';
import { runAttestor } from './program.js';

process.exitCode = await runAttestor(process.argv.slice(2), processIo);
