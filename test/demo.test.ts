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
  expect(r.stdout).toMatch(/JWT verified: alg ES256, .*cnf x5t#S256 = SHA-256 of the client certificate, introspection: active/);
  expect(r.stdout).toMatch(/PCR_VALUE_NOT_ALLOWED sha256:15/);
  expect(r.stdout).toMatch(/\ndemo complete: .*\n$/);
  // The relying parties, called by OpenSSL with the TPM key, then the SoftHSM key: accepted,
  // accepted across a JWT key rotation, refused right after the quarantine, accepted with fresh
  // credentials, refused after the change.
  expect(calls(r.stdout)).toEqual([
    'mTLS service, TPM key: 200',
    'JWT service, TPM key: 200',
    'JWT service, TPM key, the new JWT: 200',
    'JWT service, TPM key, the JWT from before the rotation: 200',
    'mTLS service, TPM key: 403 certificate',
    'JWT service, TPM key: 401 the JWT is not active (introspection)',
    'mTLS service, SoftHSM key: 200',
    'mTLS service, SoftHSM key: 403 certificate',
    'JWT service, SoftHSM key: 401 the JWT is not active (introspection)',
  ]);
  expect(r.stdout).toMatch(/is on the CA's CRL: revoked at/);
  // After the rotation the new JWT names another key; the JWT from before, the key it had.
  const [before, afterRotation, beforeAgain] = [...r.stdout.matchAll(/JWT verified: alg ES256, kid (\S+)/g)].map((m) => m[1]);
  expect(afterRotation).not.toBe(before);
  expect(beforeAgain).toBe(before);
  // Refused on the first calls after the quarantine (the order above), with no wait for a CRL
  // refresh; the time shown counts OpenSSL with the TPM provider, so it is printed, not bounded.
  expect(r.stdout).toMatch(/both refused \d+ ms after the quarantine/);
  // Tokens are shown abbreviated only.
  const token = /First admin token[^:]*: (\S+)/.exec(r.stdout)?.[1] ?? '';
  expect(token.endsWith('...')).toBe(true);
  const shownTokens = [...r.stdout.matchAll(/"token":"([^"]*)"|ATTESTOR_INTROSPECTION_TOKEN=(\S+)/g)].map((m) => m[1] ?? m[2]);
  expect(shownTokens).toHaveLength(2);
  for (const t of shownTokens) expect(t).toMatch(/^\S{6}\.\.\.$/);
});

/** Each relying-party call of the demo: which, and its status with the first words of the answer when refused. */
function calls(stdout: string): string[] {
  return [...stdout.matchAll(/^\(([^)]*)\)\n\$ .*\n +HTTP\/1\.1 (\d{3}) \w+\n +(.*)/gm)].map(([, what, status, answer]) =>
    status === '200' ? `${what}: 200` : `${what}: ${status} ${/^(certificate|the JWT is not active \(introspection\))/.exec(answer!)?.[1]}`,
  );
}

it('npm run demo -- evidence verifies every bundle and says so', () => {
  const r = spawnSync(process.execPath, ['scripts/demo.mjs', 'evidence'], { encoding: 'utf8' });
  expect(r.status, r.stdout + r.stderr).toBe(0);
  expect(r.stdout).toMatch(/\nall checks passed\n$/);
  expect(r.stdout).not.toMatch(/^FAIL/m);
});
