import { spawnSync } from 'node:child_process';
import { expect, it } from 'vitest';

// The README's first command, as a new user runs it (after the bootstrap that `npm test` ran).
it('npm run demo verifies every bundle and says so', () => {
  const r = spawnSync(process.execPath, ['scripts/demo.mjs'], { encoding: 'utf8' });
  expect(r.status, r.stdout + r.stderr).toBe(0);
  expect(r.stdout).toMatch(/\nall checks passed\n$/);
  expect(r.stdout).not.toMatch(/^FAIL/m);
});
