// The swtpm harness lives in src/dev (the demo uses it too).
export * from '../../src/dev/swtpm.js';
