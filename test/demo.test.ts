import { spawnSync } from 'node:child_process';
import { expect, it } from 'vitest';

// The README's first command, as a new user runs it (after the bootstrap that `npm test` ran).
it('npm run demo tells the service story and ends well', () => {
  const r = spawnSync(process.execPath, ['scripts/demo.mjs'], { encoding: 'utf8', timeout: 120_000 });
  expect(r.status, r.stdout + r.stderr).toBe(0);
  expect(r.stdout).toMatch(/First admin token/);
  expect(r.stdout).toMatch(/ERR_NO_BASELINE/);
  expect(r.stdout).toMatch(/verdict +affirming/);
  expect(r.stdout).toMatch(/cert\.pem: OK/);
  expect(r.stdout).toMatch(/JWT verified: alg ES256/);
  expect(r.stdout).toMatch(/PCR_VALUE_NOT_ALLOWED sha256:15/);
  expect(r.stdout).toMatch(/\ndemo complete: .*\n$/);
  // The admin token is shown abbreviated only.
  const token = /First admin token[^:]*: (\S+)/.exec(r.stdout)?.[1] ?? '';
  expect(token.endsWith('...')).toBe(true);
});

it('npm run demo -- evidence verifies every bundle and says so', () => {
  const r = spawnSync(process.execPath, ['scripts/demo.mjs', 'evidence'], { encoding: 'utf8' });
  expect(r.status, r.stdout + r.stderr).toBe(0);
  expect(r.stdout).toMatch(/\nall checks passed\n$/);
  expect(r.stdout).not.toMatch(/^FAIL/m);
});
