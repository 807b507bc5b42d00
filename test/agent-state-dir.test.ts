/**
 * The agent's state directory (src/agent/state-dir.ts): private, locked across processes by
 * flock(2) through the addon, keys written durably and never replaced.
 */
import { spawn } from 'node:child_process';
import { chown, mkdir, mkdtemp, readdir, readFile, rm, stat, symlink, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { StateDir } from '../src/agent/state-dir.js';
import { loadNodeTss } from '../src/agent/tss.js';
import { rejection } from './helpers/rejection.js';

const ADDON = fileURLToPath(new URL('../native/build/Release/node_tss.node', import.meta.url));

let tmp: string;
let seq = 0;
beforeAll(async () => {
  tmp = await mkdtemp(join(tmpdir(), 'attestor-state-dir-'));
});
afterAll(async () => {
  if (tmp) await rm(tmp, { recursive: true, force: true });
});

const freshPath = () => join(tmp, `state-${seq++}`);
const open = (path = freshPath()) => StateDir.open(path, loadNodeTss());
const blobs = (fill: number) => ({ private: new Uint8Array(8).fill(fill), public: new Uint8Array(4).fill(fill) });

describe('StateDir', () => {
  it('creates a missing directory, with its parents, private to the agent', async () => {
    const path = join(freshPath(), 'agent');
    const dir = await open(path);
    expect(dir.path).toBe(path);
    expect((await stat(path)).mode & 0o777).toBe(0o700);
  });

  it('refuses a path that is a file, or below one (ERR_TPM_STATE)', async () => {
    const file = freshPath();
    await writeFile(file, 'not a directory');
    expect((await rejection(open(file), 'ERR_TPM_STATE')).message).toContain('is not a directory');
    expect((await rejection(open(join(file, 'below')), 'ERR_TPM_STATE')).message).toContain('cannot be created (ENOTDIR)');
  });

  it('saves a key durably as two private files, and never replaces one (ERR_TPM_STATE)', async () => {
    const dir = await open();
    expect(await dir.readKey('ak')).toBeNull();
    await dir.createKey('ak', blobs(1));
    expect(await dir.readKey('ak')).toEqual({ private: Buffer.from(blobs(1).private), public: Buffer.from(blobs(1).public) });
    for (const file of ['ak.priv', 'ak.pub']) expect((await stat(join(dir.path, file))).mode & 0o777).toBe(0o600);

    const e = await rejection(dir.createKey('ak', blobs(2)), 'ERR_TPM_STATE');
    expect(e.message).toContain('is kept, not replaced');
    expect([...(await readFile(join(dir.path, 'ak.priv')))]).toEqual([...blobs(1).private]);
    expect([...(await readFile(join(dir.path, 'ak.pub')))]).toEqual([...blobs(1).public]);
    // No temporary file is left behind, even by the refused attempt.
    expect((await readdir(dir.path)).sort()).toEqual(['ak.priv', 'ak.pub']);
  });

  it('treats a private blob without its public one as a creation cut short: removed, key made again', async () => {
    const dir = await open();
    await writeFile(join(dir.path, 'ak.priv'), blobs(3).private);
    expect(await dir.withLock(() => dir.readKey('ak'))).toBeNull();
    expect(await readdir(dir.path)).not.toContain('ak.priv');
    // The reverse cannot come from an interrupted creation: refused.
    await writeFile(join(dir.path, 'ak.pub'), blobs(3).public);
    expect((await rejection(dir.withLock(() => dir.readKey('ak')), 'ERR_TPM_STATE')).message).toContain('not ak.priv');
  });

  it('refuses a symbolic link in the directory\'s place, and a directory of another owner', async () => {
    const real = freshPath();
    await mkdir(real, { mode: 0o700 });
    const linked = freshPath();
    await symlink(real, linked);
    expect((await rejection(open(linked), 'ERR_TPM_STATE')).message).toContain('symbolic link');
    if (process.geteuid?.() === 0) {
      const foreign = freshPath();
      await mkdir(foreign, { mode: 0o700 });
      await chown(foreign, 12345, 12345);
      expect((await rejection(open(foreign), 'ERR_TPM_STATE')).message).toContain('uid 12345');
    }
  });

  it('two agents creating the same new directory at once both succeed', async () => {
    for (let i = 0; i < 20; i++) {
      const path = join(freshPath(), 'a', 'b');
      const [one, two] = await Promise.all([open(path), open(path)]);
      expect(one.path).toBe(two.path);
    }
  });

  it('runs one holder of the lock at a time within this process', async () => {
    const dir = await open();
    let inside = 0;
    let most = 0;
    const hold = () =>
      dir.withLock(async () => {
        most = Math.max(most, ++inside);
        await new Promise((r) => setTimeout(r, 30));
        inside--;
      });
    await Promise.all([hold(), hold(), hold()]);
    expect(most).toBe(1);
  });

  it('waits while another process holds the lock, and gets it when that process dies (no stale lock)', async () => {
    const dir = await open();
    // The other process takes the same flock the agent takes, then sleeps until killed.
    const script = `
      const { openSync } = require('node:fs');
      const { lockFile } = require(${JSON.stringify(ADDON)});
      const fd = openSync(${JSON.stringify(join(dir.path, '.lock'))}, 'a+');
      if (!lockFile(fd)) process.exit(3);
      console.log('locked');
      setInterval(() => {}, 1000);`;
    const other = spawn(process.execPath, ['-e', script], { stdio: ['ignore', 'pipe', 'inherit'] });
    try {
      await new Promise<void>((resolve, reject) => {
        other.stdout.on('data', (d: Buffer) => d.toString().includes('locked') && resolve());
        other.once('exit', (code) => reject(new Error(`the locking process exited ${code}`)));
      });
      let entered = false;
      const held = dir.withLock(async () => {
        entered = true;
      });
      await new Promise((r) => setTimeout(r, 200));
      expect(entered).toBe(false);
      other.kill('SIGKILL');
      await held;
      expect(entered).toBe(true);
    } finally {
      other.kill('SIGKILL');
    }
  });
});
