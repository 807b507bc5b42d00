/**
 * Development harness (tests and the demo): a SoftHSM v2 token store in its own temp dir per test file, with one
 * initialised token. pkcs11js loads libsofthsm2 into the test process and SoftHSM reads
 * SOFTHSM2_CONF at C_Initialize, so startSoftHsm() points process.env.SOFTHSM2_CONF at this
 * instance's config (vitest runs each file in its own process, pool 'forks') and stop() puts
 * the previous value back.
 */
import { execFile } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { existsSync, rmSync } from 'node:fs';
import { mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';

const execFileAsync = promisify(execFile);

/** Where Debian's softhsm2 package puts the module; ATTESTOR_SOFTHSM_MODULE overrides. */
const MODULE_CANDIDATES = [
  '/usr/lib/softhsm/libsofthsm2.so',
  `/usr/lib/${process.arch === 'arm64' ? 'aarch64' : 'x86_64'}-linux-gnu/softhsm/libsofthsm2.so`,
  '/usr/local/lib/softhsm/libsofthsm2.so',
];

export interface SoftHsm {
  /** Temp dir holding the config and the token store; removed by stop(). */
  readonly dir: string;
  /** Path of this instance's softhsm2.conf. */
  readonly conf: string;
  /** process.env plus SOFTHSM2_CONF, for softhsm2-util and other child processes. */
  readonly env: NodeJS.ProcessEnv;
  /** Path of libsofthsm2.so, as the agent's PKCS#11 key source takes it. */
  readonly modulePath: string;
  readonly tokenLabel: string;
  readonly soPin: string;
  readonly userPin: string;
  /** The slot SoftHSM reassigned the token to. */
  readonly slot: number;
  /** Initialises another token in a free slot (same PINs); resolves with its slot. */
  initToken(label: string): Promise<number>;
  /** Removes the temp dir and restores SOFTHSM2_CONF; safe to call more than once. */
  stop(): Promise<void>;
}

export function softHsmModulePath(): string {
  const override = process.env.ATTESTOR_SOFTHSM_MODULE;
  const found = override ? [override] : MODULE_CANDIDATES.filter((p) => existsSync(p));
  if (!found[0]) throw new Error(`libsofthsm2.so not found in ${MODULE_CANDIDATES.join(', ')} (install softhsm2)`);
  return found[0];
}

const liveDirs = new Set<string>();
let exitHookInstalled = false;

export async function startSoftHsm(opts: { tokenLabel?: string } = {}): Promise<SoftHsm> {
  const modulePath = softHsmModulePath();
  const dir = await mkdtemp(join(tmpdir(), 'attestor-softhsm-'));
  liveDirs.add(dir);
  if (!exitHookInstalled) {
    exitHookInstalled = true;
    process.on('exit', () => liveDirs.forEach((d) => rmSync(d, { recursive: true, force: true })));
  }
  const previousConf = process.env.SOFTHSM2_CONF;
  let stopped: Promise<void> | undefined;
  const stop = (): Promise<void> => {
    stopped ??= (async () => {
      if (previousConf === undefined) delete process.env.SOFTHSM2_CONF;
      else process.env.SOFTHSM2_CONF = previousConf;
      await rm(dir, { recursive: true, force: true });
      liveDirs.delete(dir);
    })();
    return stopped;
  };
  try {
    const tokens = join(dir, 'tokens');
    await mkdir(tokens);
    const conf = join(dir, 'softhsm2.conf');
    await writeFile(
      conf,
      `directories.tokendir = ${tokens}\nobjectstore.backend = file\nlog.level = ERROR\nslots.removable = false\n`,
    );
    const env = { ...process.env, SOFTHSM2_CONF: conf };
    process.env.SOFTHSM2_CONF = conf;
    // Random PINs, so tests asserting "the PIN is not in the message" cannot pass by luck.
    const soPin = randomBytes(8).toString('hex');
    const userPin = randomBytes(8).toString('hex');
    const initToken = (label: string) => initialiseToken(env, label, soPin, userPin);
    const tokenLabel = opts.tokenLabel ?? 'attestor-test';
    const slot = await initToken(tokenLabel);
    return { dir, conf, env, modulePath, tokenLabel, soPin, userPin, slot, initToken, stop };
  } catch (e) {
    await stop();
    throw e;
  }
}

async function initialiseToken(env: NodeJS.ProcessEnv, label: string, soPin: string, pin: string): Promise<number> {
  const args = ['--init-token', '--free', '--label', label, '--so-pin', soPin, '--pin', pin];
  let out: string;
  try {
    ({ stdout: out } = await execFileAsync('softhsm2-util', args, { env }));
  } catch (e) {
    // The error's own message repeats the command line, PINs included: keep only the output.
    const { stdout = '', stderr = '' } = e as { stdout?: string; stderr?: string };
    throw new Error(`softhsm2-util --init-token failed: ${`${stderr}${stdout}`.trim()}`);
  }
  const m = /reassigned to slot (\d+)/.exec(out);
  if (!m?.[1]) throw new Error(`softhsm2-util did not report the token's slot: ${out}`);
  return Number(m[1]);
}
