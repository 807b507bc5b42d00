/**
 * A PostgreSQL server of one test: its own data dir (initdb) and port, started and stopped
 * with pg_ctl. PostgreSQL refuses to run as root, so the commands run as the `postgres` user
 * (runuser) when this process is root, on a temp dir that user owns.
 */
import { execFile } from 'node:child_process';
import { chownSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { freePort } from '../helpers/ports.js';

const execFileAsync = promisify(execFile);

export interface PrivatePostgres {
  /** postgres://postgres@127.0.0.1:<port>/postgres (trust auth). */
  readonly url: string;
  start(): Promise<void>;
  /** A fast shutdown: open sessions are ended, as when the server is restarted under them. */
  stop(): Promise<void>;
  /** Stops the server and removes its data dir. */
  destroy(): Promise<void>;
}

/** Runs a PostgreSQL program (initdb, pg_ctl) as the postgres user; its output when it fails. */
async function asPostgres(program: string, args: readonly string[]): Promise<void> {
  const [file, argv] = process.getuid?.() === 0 ? ['runuser', ['-u', 'postgres', '--', program, ...args]] : [program, [...args]];
  try {
    await execFileAsync(file, argv, { cwd: tmpdir() });
  } catch (e) {
    const { stdout = '', stderr = '' } = e as { stdout?: string; stderr?: string };
    throw new Error(`${program} ${args[0]} failed (initdb and pg_ctl must be on PATH, and a postgres user exist): ${`${stderr}${stdout}`.trim() || (e as Error).message}`);
  }
}

export async function startPrivatePostgres(): Promise<PrivatePostgres> {
  const port = await freePort();
  const dir = mkdtempSync(join(tmpdir(), 'attestor-private-pg-'));
  const data = join(dir, 'data');
  if (process.getuid?.() === 0) {
    const { stdout } = await execFileAsync('id', ['-u', 'postgres']);
    const { stdout: gid } = await execFileAsync('id', ['-g', 'postgres']);
    chownSync(dir, Number(stdout.trim()), Number(gid.trim()));
  }
  const pgCtl = (...args: string[]) => asPostgres('pg_ctl', [...args, '-D', data, '-w', '-t', '30']);
  const start = () =>
    pgCtl('start', '-l', join(dir, 'log'), '-o', `-p ${port} -k ${dir} -c listen_addresses=127.0.0.1 -c max_connections=50`);
  const stop = () => pgCtl('stop', '-m', 'fast');
  try {
    await asPostgres('initdb', ['-D', data, '-U', 'postgres', '-A', 'trust', '--no-sync']);
    await start();
  } catch (e) {
    rmSync(dir, { recursive: true, force: true });
    throw e;
  }
  return {
    url: `postgres://postgres@127.0.0.1:${port}/postgres`,
    start,
    stop,
    async destroy() {
      await stop().catch(() => undefined);
      rmSync(dir, { recursive: true, force: true });
    },
  };
}
