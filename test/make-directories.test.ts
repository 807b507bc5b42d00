import { mkdtempSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, expect, it } from 'vitest';
import { makeDirectories } from '../src/agent/make-directories.js';

const base = mkdtempSync(join(tmpdir(), 'attestor-mkdir-'));
afterAll(() => rmSync(base, { recursive: true, force: true }));

it('creates the missing components with the mode and returns the first one it made', async () => {
  const first = await makeDirectories(join(base, 'a/b/c'), 0o700);
  expect(first).toBe(join(base, 'a'));
  expect(statSync(join(base, 'a/b/c')).mode & 0o777).toBe(0o700);
  expect(await makeDirectories(join(base, 'a/b/c'))).toBeUndefined();
});

it('fails where a parent refuses the child instead of retrying forever (node mkdir -p loops under /proc)', async () => {
  await expect(makeDirectories('/proc/attestor-does-not-exist/state')).rejects.toMatchObject({ code: 'ENOENT' });
});

it('fails where the directory or one of its parents is a file', async () => {
  writeFileSync(join(base, 'file'), 'x');
  await expect(makeDirectories(join(base, 'file/sub'))).rejects.toMatchObject({ code: 'ENOTDIR' });
  await expect(makeDirectories(join(base, 'file'))).rejects.toMatchObject({ code: 'EEXIST' });
});
