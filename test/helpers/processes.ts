/**
 * Test harness: the built bins (dist/cli/*.js, `npm run build`) run as a user runs them, as
 * child processes: `attestor serve` on a free port, waited for until it printed its URL and
 * root fingerprint; one-shot commands run to their end. A harness ends, at `killAll`, exactly
 * the processes it started that are still running.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { createHash, X509Certificate } from 'node:crypto';
import { existsSync } from 'node:fs';
import { request } from 'node:https';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { expect } from 'vitest';
import { createApiClient, type ApiClient } from '../../src/client/api-client.js';

const ROOT = fileURLToPath(new URL('../..', import.meta.url));
export const ATTESTOR_BIN = join(ROOT, 'dist', 'cli', 'attestor.js');

export interface Exit {
  readonly code: number | null;
  readonly signal: NodeJS.Signals | null;
  readonly out: string;
  readonly err: string;
}

export interface Started {
  readonly child: ChildProcess;
  out(): string;
  err(): string;
  readonly exited: Promise<Exit>;
  /** Resolves with the first match of `re` in stdout; rejects if the process exits first. */
  waitFor(re: RegExp): Promise<RegExpMatchArray>;
}

export interface Serving extends Started {
  readonly url: string;
  readonly fingerprint: string;
  /** SIGTERM, then the exit. */
  stop(): Promise<Exit>;
}

export const ADMIN_TOKEN = /^First admin token \(shown once, store it safely\): ([A-Za-z0-9_-]{43})$/m;

/** The environment of a child: this one's without any ATTESTOR_* (so only what a test sets counts), plus `extra`. */
export function childEnv(extra: Record<string, string> = {}): NodeJS.ProcessEnv {
  const env = Object.fromEntries(Object.entries(process.env).filter(([k]) => !k.startsWith('ATTESTOR_')));
  return { ...env, ...extra };
}

/** The token `attestor token create` printed on its last line. */
export function lastLine(text: string): string {
  const lines = text.trimEnd().split('\n');
  return lines[lines.length - 1]!;
}

export function createProcessHarness(bin = ATTESTOR_BIN) {
  if (!existsSync(bin)) throw new Error(`${bin} is missing: build first (npm run build)`);
  const children = new Set<ChildProcess>();

  function start(args: readonly string[], env: NodeJS.ProcessEnv = childEnv()): Started {
    const child = spawn(process.execPath, [bin, ...args], { env, stdio: ['ignore', 'pipe', 'pipe'] });
    children.add(child);
    let out = '';
    let err = '';
    const waiters: Array<() => void> = [];
    child.stdout!.on('data', (d: Buffer) => {
      out += d.toString();
      waiters.forEach((w) => w());
    });
    child.stderr!.on('data', (d: Buffer) => (err += d.toString()));
    const exited = new Promise<Exit>((resolve) => child.on('close', (code, signal) => resolve({ code, signal, out, err })));
    return {
      child,
      out: () => out,
      err: () => err,
      exited,
      waitFor: (re) =>
        new Promise((resolve, reject) => {
          const check = () => {
            const m = re.exec(out);
            if (m) resolve(m);
          };
          waiters.push(check);
          check();
          void exited.then((e) => reject(new Error(`exited (${e.code ?? e.signal}) before printing ${re}:\n${e.out}\n${e.err}`)));
        }),
    };
  }

  return {
    start,
    /** Runs the bin to its end. */
    run: (args: readonly string[], env?: NodeJS.ProcessEnv): Promise<Exit> => start(args, env).exited,
    /** `attestor serve` on a free port, once it printed its URL and fingerprint. */
    async serve(args: readonly string[], env?: NodeJS.ProcessEnv): Promise<Serving> {
      const s = start(['serve', '--listen', '127.0.0.1:0', '--log-level', 'warn', ...args], env);
      const [, url, fingerprint] = await s.waitFor(/^Attestor verifier listening on (https:\/\/\S+) \((?:sqlite|postgres)\)\n(?:Public URL: \S+\n)?Root CA fingerprint: ([0-9a-f]{64})\n/m);
      return {
        ...s,
        url: url!,
        fingerprint: fingerprint!,
        stop: () => {
          s.child.kill('SIGTERM');
          return s.exited;
        },
      };
    },
    /** A test that failed half-way may leave a process running: ends exactly those. */
    killAll(): void {
      for (const child of children) if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
    },
  };
}

/** The PEM at /v1/ca.pem, fetched before anything is trusted (the fingerprint check is what trusts it). */
export function caPemOf(url: string): Promise<string> {
  return new Promise((resolve, reject) => {
    const req = request(new URL('/v1/ca.pem', url), { rejectUnauthorized: false, agent: false }, (res) => {
      let body = '';
      res.on('data', (d: Buffer) => (body += d.toString()));
      res.on('end', () => (res.statusCode === 200 ? resolve(body) : reject(new Error(`HTTP ${res.statusCode}`))));
    });
    req.on('error', reject);
    req.end();
  });
}

const sha256Hex = (der: Uint8Array) => createHash('sha256').update(der).digest('hex');

/** Checks the served root is the one printed, and returns an API client pinned to it. */
export async function pinnedClient(s: Serving, token?: string): Promise<ApiClient> {
  const caPem = await caPemOf(s.url);
  expect(sha256Hex(new X509Certificate(caPem).raw)).toBe(s.fingerprint);
  return createApiClient({ server: s.url, caPem, ...(token ? { token } : {}) });
}
