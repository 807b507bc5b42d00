/**
 * Development harness (tests and the demo): one real swtpm (TPM 2.0 emulator) per test file, provisioned like a real TPM
 * with EK certificates signed by a local CA, all state in its own temp dir so test files can
 * run in parallel and nothing in /var/lib or /etc is used. The certificates are at their TCG
 * indexes (EK_CERT_NV of src/tpm/constants.ts): swtpm_setup writes rsa2048 (L-1) and eccP384
 * (H-3), this harness eccP256 (L-2; swtpm_setup 0.7.1 only makes a P-384 EK).
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { rmSync } from 'node:fs';
import { mkdtemp, mkdir, open, readFile, rm, writeFile } from 'node:fs/promises';
import { connect } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseTpm2bPublic } from '../tpm/public.js';
import { curveInfo, EK_CERT_NV } from '../tpm/constants.js';
import { leftPad } from '../tpm/public-key.js';
import { hex } from '../bytes.js';
import { freePorts } from './free-ports.js';

/** Persistent EK handles swtpm_setup creates (its P-384 EK is template H-3: userWithAuth, empty auth). */
export const PERSISTENT_EK = {
  rsa2048: 0x81010001,
  eccP384: 0x81010016,
} as const;

export interface Swtpm {
  /** Process id of swtpm (tests stop and continue it to play a TPM that hangs). */
  readonly pid: number;
  /** TPM command port (TCP, 127.0.0.1). */
  readonly port: number;
  /** swtpm control channel port (TCP, 127.0.0.1): always port + 1, where the swtpm TCTI looks for it. */
  readonly ctrlPort: number;
  /** TCTI string as tpm2-tools and tpm2-tss take it: `swtpm:host=127.0.0.1,port=N`. */
  readonly tcti: string;
  /** Temp dir of this instance (TPM state, CA, scratch files); removed by stop(). */
  readonly dir: string;
  /** The local CA certificate that issued the EK certificates (PEM). */
  readonly caCertPem: string;
  readonly caCertPath: string;
  /** The self-signed root above caCertPem (PEM), for chain tests. */
  readonly rootCaCertPem: string;
  readonly rootCaCertPath: string;
  /** process.env plus TPM2TOOLS_TCTI pointing at this instance. */
  readonly env: NodeJS.ProcessEnv;
  /** Kills swtpm at once (SIGKILL), as a crash would: its state stays in the temp dir. */
  kill(): Promise<void>;
  /** Starts swtpm again (killing it first if it runs) on the same ports with the same state: a TPM reset. */
  restart(): Promise<void>;
  /** Kills swtpm and removes the temp dir; safe to call more than once. */
  stop(): Promise<void>;
}

export interface StartOptions {
  /** PCR banks to activate, as swtpm_setup takes them. Default 'sha1,sha256'. */
  pcrBanks?: string;
}

export interface RunOptions {
  /** Working directory; tpm2() defaults to the instance's dir. */
  cwd?: string;
  /** Bytes written to the command's stdin. */
  input?: Uint8Array;
  env?: NodeJS.ProcessEnv;
}

export interface RunResult {
  stdout: Buffer;
  stderr: string;
}

/** Runs a tpm2-tools command (`args[0]` is the tool) against `sw`; rejects with its stderr on failure. */
export function tpm2(sw: Swtpm, args: string[], opts: RunOptions = {}): Promise<RunResult> {
  return runCommand(args, { cwd: sw.dir, ...opts, env: opts.env ?? sw.env });
}

/** Running instances, killed synchronously if the process exits without stop(). */
const live = new Map<ChildProcess, string>();
let exitHookInstalled = false;

function installExitHook(): void {
  if (exitHookInstalled) return;
  exitHookInstalled = true;
  process.on('exit', () => {
    for (const [child, dir] of live) {
      child.kill('SIGKILL');
      rmSync(dir, { recursive: true, force: true });
    }
  });
}

export async function startSwtpm(opts: StartOptions = {}): Promise<Swtpm> {
  const dir = await mkdtemp(join(tmpdir(), 'attestor-swtpm-'));
  let instance: Swtpm | undefined;
  try {
    const paths = await writeConfigs(dir);
    await manufacture(dir, paths.setupConf, opts.pcrBanks ?? 'sha1,sha256');
    instance = await launch(dir, paths);
    await provisionEccP256EkCert(instance, paths);
    for (const index of [EK_CERT_NV.rsa2048, EK_CERT_NV.eccP256]) {
      await tpm2(instance, ['tpm2_nvreadpublic', hexHandle(index)]);
    }
    return instance;
  } catch (e) {
    if (instance) await instance.stop();
    else await rm(dir, { recursive: true, force: true });
    throw e;
  }
}

interface ConfigPaths {
  setupConf: string;
  localcaConf: string;
  localcaOptions: string;
  caCertPath: string;
  rootCaCertPath: string;
}

/** swtpm_setup.conf and swtpm-localca.{conf,options} pointing only inside `dir`. */
async function writeConfigs(dir: string): Promise<ConfigPaths> {
  const caDir = join(dir, 'ca');
  await mkdir(caDir);
  await mkdir(join(dir, 'state'));
  const p: ConfigPaths = {
    setupConf: join(dir, 'swtpm_setup.conf'),
    localcaConf: join(dir, 'swtpm-localca.conf'),
    localcaOptions: join(dir, 'swtpm-localca.options'),
    caCertPath: join(caDir, 'issuercert.pem'),
    rootCaCertPath: join(caDir, 'swtpm-localca-rootca-cert.pem'),
  };
  await writeFile(
    p.setupConf,
    `create_certs_tool = swtpm_localca\ncreate_certs_tool_config = ${p.localcaConf}\n` +
      `create_certs_tool_options = ${p.localcaOptions}\n`,
  );
  await writeFile(
    p.localcaConf,
    `statedir = ${caDir}\nsigningkey = ${join(caDir, 'signkey.pem')}\n` +
      `issuercert = ${p.caCertPath}\ncertserial = ${join(caDir, 'certserial')}\n`,
  );
  await writeFile(p.localcaOptions, '--platform-manufacturer Attestor\n--platform-version 2.1\n--platform-model swtpm\n');
  return p;
}

/** Creates the TPM state with RSA and ECC EKs and their certificates (platform certificate if supported). */
async function manufacture(dir: string, setupConf: string, pcrBanks: string): Promise<void> {
  const base = ['swtpm_setup', '--tpm2', '--tpmstate', join(dir, 'state'), '--create-ek-cert', '--pcr-banks', pcrBanks];
  const tail = ['--config', setupConf, '--overwrite'];
  // swtpm_setup puts its scratch certificates under TMPDIR: keep them in our dir too.
  const env = { ...process.env, TMPDIR: dir };
  try {
    await runCommand([...base, '--create-platform-cert', ...tail], { cwd: dir, env });
  } catch {
    await runCommand([...base, ...tail], { cwd: dir, env });
  }
}

/** A running swtpm process and its exit. */
interface Running {
  readonly child: ChildProcess;
  readonly exited: Promise<void>;
}

/** swtpm on `port` and `port + 1` serving the TPM state in `dir`/state, once its port accepts connections. */
async function spawnSwtpm(dir: string, port: number, ctrlPort: number, logPath: string): Promise<Running> {
  const log = await open(logPath, 'a');
  const child = spawn(
    'swtpm',
    [
      'socket',
      '--tpm2',
      '--tpmstate',
      `dir=${join(dir, 'state')}`,
      '--server',
      `type=tcp,port=${port},bindaddr=127.0.0.1`,
      '--ctrl',
      `type=tcp,port=${ctrlPort},bindaddr=127.0.0.1`,
      '--flags',
      'not-need-init,startup-clear',
    ],
    { stdio: ['ignore', log.fd, log.fd] },
  );
  await log.close();
  installExitHook();
  live.set(child, dir);
  const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
  child.once('exit', () => live.delete(child));
  child.unref();
  try {
    await waitForPort(port, exited);
  } catch (e) {
    child.kill('SIGKILL');
    await exited;
    throw new Error(`swtpm did not start: ${(e as Error).message}\n${await readFile(logPath, 'utf8')}`);
  }
  return { child, exited };
}

/** Starts `swtpm socket` on two free ports, retrying if another process took a port meanwhile. */
async function launch(dir: string, paths: ConfigPaths): Promise<Swtpm> {
  let lastError: unknown;
  for (let attempt = 0; attempt < 3; attempt++) {
    const [port, ctrlPort] = await freePortPair();
    const logPath = join(dir, `swtpm-${attempt}.log`);
    let running: Running;
    try {
      running = await spawnSwtpm(dir, port, ctrlPort, logPath);
    } catch (e) {
      lastError = e;
      continue;
    }
    const tcti = `swtpm:host=127.0.0.1,port=${port}`;
    let stopped: Promise<void> | undefined;
    const kill = async () => {
      if (!live.has(running.child)) return;
      running.child.kill('SIGKILL');
      await running.exited;
    };
    return {
      get pid() {
        return running.child.pid!;
      },
      port,
      ctrlPort,
      tcti,
      dir,
      caCertPath: paths.caCertPath,
      caCertPem: await readFile(paths.caCertPath, 'utf8'),
      rootCaCertPath: paths.rootCaCertPath,
      rootCaCertPem: await readFile(paths.rootCaCertPath, 'utf8'),
      env: { ...process.env, TPM2TOOLS_TCTI: tcti },
      kill,
      async restart() {
        await kill();
        running = await spawnSwtpm(dir, port, ctrlPort, logPath);
      },
      stop() {
        stopped ??= (async () => {
          if (live.has(running.child)) {
            const timer = setTimeout(() => running.child.kill('SIGKILL'), 3000);
            running.child.kill('SIGTERM');
            await running.exited;
            clearTimeout(timer);
          }
          await rm(dir, { recursive: true, force: true });
        })();
        return stopped;
      },
    };
  }
  throw lastError;
}

/**
 * swtpm_setup 0.7.1 makes an RSA 2048 and an ECC P-384 EK; the P-256 EK (the default ECC
 * template of tpm2_createek) gets its certificate here, from the same local CA, written to
 * its TCG index with the attributes swtpm_setup uses for the others.
 */
async function provisionEccP256EkCert(sw: Swtpm, paths: ConfigPaths): Promise<void> {
  const work = join(sw.dir, 'provision');
  await mkdir(work);
  await tpm2(sw, ['tpm2_createek', '-G', 'ecc', '-c', 'ek.ctx', '-u', 'ek.pub'], { cwd: work });
  await tpm2(sw, ['tpm2_flushcontext', '-t']);
  const ek = parseTpm2bPublic(await readFile(join(work, 'ek.pub')));
  if (ek.type !== 'ecc') throw new Error('tpm2_createek -G ecc did not make an ECC key');
  const { size } = curveInfo(ek.curve);
  const coord = (b: Uint8Array) => hex(leftPad(b, size));
  await runCommand(
    [
      'swtpm_localca',
      '--type',
      'ek',
      '--ek',
      `x=${coord(ek.x)},y=${coord(ek.y)},id=secp256r1`,
      '--dir',
      work,
      '--tpm2',
      // The TPM identity swtpm reports (TPM_PT_MANUFACTURER etc.), as swtpm_setup passes it.
      '--tpm-spec-family',
      '2.0',
      '--tpm-spec-level',
      '0',
      '--tpm-spec-revision',
      '164',
      '--tpm-manufacturer',
      'id:00001014',
      '--tpm-model',
      'swtpm',
      '--tpm-version',
      'id:20191023',
      '--configfile',
      paths.localcaConf,
      '--optsfile',
      paths.localcaOptions,
    ],
    { cwd: work },
  );
  const certPath = join(work, 'ek.cert');
  const cert = await readFile(certPath);
  const index = hexHandle(EK_CERT_NV.eccP256);
  await tpm2(sw, [
    'tpm2_nvdefine',
    index,
    '-C',
    'p',
    '-s',
    String(cert.length),
    '-a',
    'ppwrite|writedefine|ppread|ownerread|authread|no_da|platformcreate',
  ]);
  await tpm2(sw, ['tpm2_nvwrite', index, '-C', 'p', '-i', certPath]);
  await rm(work, { recursive: true, force: true });
}

/** The transient objects loaded in the TPM right now, as tpm2_getcap lists them (swtpm has no resource manager). */
export async function transientHandles(sw: Swtpm): Promise<string> {
  return (await tpm2(sw, ['tpm2_getcap', 'handles-transient'])).stdout.toString().trim();
}

/** A handle as tpm2-tools takes it: 0x01c00002. */
export function hexHandle(h: number): string {
  return `0x${h.toString(16).padStart(8, '0')}`;
}

/**
 * A free TCP port P on 127.0.0.1 with P+1 free too: the swtpm TCTI of tpm2-tss always finds
 * the control channel at the command port + 1.
 */
export async function freePortPair(): Promise<[number, number]> {
  const [port, ctrlPort] = await freePorts(2);
  return [port!, ctrlPort!];
}

/** Resolves once `port` accepts a connection; rejects if the process exits or 10 s pass. */
async function waitForPort(port: number, exited: Promise<void>): Promise<void> {
  let gone = false;
  void exited.then(() => (gone = true));
  const deadline = Date.now() + 10_000;
  for (;;) {
    if (gone) throw new Error('swtpm exited');
    if (Date.now() > deadline) throw new Error(`port ${port} not accepting after 10 s`);
    const ok = await new Promise<boolean>((resolve) => {
      const sock = connect(port, '127.0.0.1');
      sock.once('connect', () => {
        sock.destroy();
        resolve(true);
      });
      sock.once('error', () => resolve(false));
    });
    if (ok) return;
    await new Promise((r) => setTimeout(r, 50));
  }
}

/** Spawns `args[0]` with the rest as arguments; resolves with its output, rejects with stderr on failure. */
export function runCommand(args: string[], opts: RunOptions): Promise<RunResult> {
  const [cmd, ...rest] = args;
  if (!cmd) return Promise.reject(new Error('run: no command'));
  return new Promise((resolve, reject) => {
    const child = spawn(cmd, rest, { cwd: opts.cwd, env: opts.env ?? process.env, stdio: ['pipe', 'pipe', 'pipe'] });
    const out: Buffer[] = [];
    const err: Buffer[] = [];
    child.stdout.on('data', (d: Buffer) => out.push(d));
    child.stderr.on('data', (d: Buffer) => err.push(d));
    child.once('error', reject);
    child.once('close', (code, signal) => {
      const stderr = Buffer.concat(err).toString('utf8');
      if (code === 0) resolve({ stdout: Buffer.concat(out), stderr });
      else reject(new Error(`${args.join(' ')} failed (${signal ?? `exit ${code}`}): ${stderr.trim()}`));
    });
    child.stdin.end(opts.input ? Buffer.from(opts.input) : undefined);
  });
}
