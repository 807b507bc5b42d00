/**
 * A full disk under the SQLite database (the data dir on a 2 MiB tmpfs, filled by the test):
 * writes are refused with 503 ERR_STORE_UNAVAILABLE and change nothing, reads go on, the
 * database stays intact (PRAGMA integrity_check), and once space is freed writes succeed
 * again without a restart. Mounting needs root: without it the test fails and says so.
 */
import { execFile } from 'node:child_process';
import { closeSync, mkdirSync, mkdtempSync, openSync, rmSync, writeSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import BetterSqlite3 from 'better-sqlite3';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { z } from 'zod';
import { AgentDetailBody, ChallengeResponse, TokenBody, TokenCreateResponse } from '../../src/wire/schemas.js';
import { refused } from '../helpers/api.js';
import { childEnv, createProcessHarness } from '../helpers/processes.js';
import { startSwtpm, type Swtpm } from '../helpers/swtpm.js';
import { attestOnce, createVerifierProcess, enrollAndEnforce, fleetArgs, type LoadHost } from './load.js';

const execFileAsync = promisify(execFile);
const TokenList = z.strictObject({ items: z.array(TokenBody) });

/** Writes zeros to `path` until the file system has no space left. */
function fill(path: string): void {
  const fd = openSync(path, 'w');
  const chunk = Buffer.alloc(16 * 1024);
  try {
    for (;;) writeSync(fd, chunk);
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code !== 'ENOSPC') throw e;
  } finally {
    closeSync(fd);
  }
}

describe('a full disk under SQLite', { timeout: 90_000 }, () => {
  const processes = createProcessHarness();
  let tmp: string;
  let mounted = false;
  let host: Swtpm;
  let v: ReturnType<typeof createVerifierProcess>;
  let attesting: LoadHost;
  let agentId: string;

  const dataDir = () => join(tmp, 'data');
  const filler = () => join(dataDir(), 'filler');

  const attest = () => attestOnce(v.anon, attesting, agentId);


  /** The integrity check's answer and the audit chain's head, read beside the verifier. */
  const inspect = () => {
    const db = new BetterSqlite3(join(dataDir(), 'attestor.db'), { readonly: true, fileMustExist: true });
    try {
      return { integrity: db.pragma('integrity_check', { simple: true }), auditHead: db.prepare('SELECT seq, hash FROM audit_head').get() };
    } finally {
      db.close();
    }
  };

  beforeAll(async () => {
    tmp = mkdtempSync(join(tmpdir(), 'attestor-fault-disk-'));
    mkdirSync(dataDir());
    try {
      await execFileAsync('mount', ['-t', 'tmpfs', '-o', 'size=2m,mode=0700', 'tmpfs', dataDir()]);
    } catch (e) {
      throw new Error(`this test mounts a 2 MiB tmpfs as the data dir, which needs root (mount -t tmpfs): ${(e as { stderr?: string }).stderr ?? (e as Error).message}`);
    }
    mounted = true;
    host = await startSwtpm();
    attesting = { tcti: host.tcti, stateDir: join(tmp, 'attesting') };
    v = createVerifierProcess(processes, ['--data-dir', dataDir(), ...fleetArgs(tmp, [host])]);
    await v.start();
    agentId = await enrollAndEnforce(v.serving, v.admin, attesting);
  }, 90_000);

  afterAll(async () => {
    await v?.stop();
    processes.killAll();
    await host?.stop();
    if (mounted) await execFileAsync('umount', [dataDir()]);
    if (tmp) rmSync(tmp, { recursive: true, force: true });
  });

  it('refuses writes with 503 ERR_STORE_UNAVAILABLE, goes on reading, stays intact, and writes again once space is freed', async () => {
    expect((await attest()).verdict.status).toBe('affirming');
    const tokensBefore = (await v.admin.call('GET', '/v1/tokens', TokenList)).items.length;
    // Made and stored at its first request: with the disk full it is served as stored.
    const crl = (await v.anon.get('/v1/crl')).body;
    const before = inspect();
    expect(before.integrity).toBe('ok');
    fill(filler());

    // Writes: each refused, with the store's code, and nothing of them stored.
    await refused(v.admin.call('POST', '/v1/tokens', TokenCreateResponse, { role: 'auditor', label: 'disk full' }), 'ERR_STORE_UNAVAILABLE');
    await refused(v.anon.call('POST', `/v1/agents/${agentId}/challenges`, ChallengeResponse, {}), 'ERR_STORE_UNAVAILABLE');
    for (let i = 0; i < 5; i++) {
      const e = await refused(v.admin.call('POST', '/v1/tokens', TokenCreateResponse, { role: 'auditor', label: `disk full ${i}` }), 'ERR_STORE_UNAVAILABLE');
      expect(e.status).toBe(503);
    }
    expect(v.serving.err()).toContain('the disk of the SQLite database is full (SQLITE_FULL)');

    // Reads go on.
    expect((await v.admin.call('GET', `/v1/agents/${agentId}`, AgentDetailBody)).status).toBe('active');
    expect((await v.admin.call('GET', '/v1/tokens', TokenList)).items.length).toBe(tokensBefore);
    expect((await v.anon.get('/v1/crl')).body.equals(crl)).toBe(true);
    expect(inspect()).toStrictEqual(before);

    // Space freed: writes succeed again, without a restart.
    rmSync(filler());
    expect((await v.admin.call('POST', '/v1/tokens', TokenCreateResponse, { role: 'auditor', label: 'space again' })).role).toBe('auditor');
    expect((await attest()).verdict.status).toBe('affirming');
    expect(v.serving.child.exitCode).toBeNull();
    expect(inspect().integrity).toBe('ok');

    const exit = (await v.stop())!;
    expect(exit.code, exit.err).toBe(0);
    const verify = await processes.run(['audit', 'verify', '--data-dir', dataDir()], childEnv());
    expect(verify.code, verify.err).toBe(0);
    expect(verify.out).toMatch(/^audit chain intact: \d+ entries/);
  });
});
