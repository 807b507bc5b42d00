import { defineConfig } from 'vitest/config';

export default defineConfig({
  test: {
    include: ['test/**/*.test.ts'],
    testTimeout: 60_000,
    hookTimeout: 120_000,
    // swtpm and SoftHSM instances are per file; two workers match the CI machine's cores.
    pool: 'forks',
    maxWorkers: 2,
  },
});
