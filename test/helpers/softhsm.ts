// The SoftHSM harness lives in src/dev (the demo uses it too).
export * from '../../src/dev/softhsm.js';
