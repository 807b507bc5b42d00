import { spawn } from 'node:child_process';
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { setTimeout as delay } from 'node:timers/promises';
import { Command, InvalidArgumentError, Option } from 'commander';
import { enrollAgent } from '../../agent/enroll.js';
import { verifierTrust } from '../../agent/pinned-ca.js';
import { runRenewalLoop } from '../../agent/renewal-loop.js';
import { readRunStatus, writeRunStatus } from '../../agent/run-status.js';
import { readAgentState, STATE_FILES, writeAgentState, type AgentState } from '../../agent/state-files.js';
import { TpmSession } from '../../agent/tpm-session.js';
import type { Attested } from '../../agent/attest.js';
import { createApiClient } from '../../client/api-client.js';
import { AttestorError, isAttestorError } from '../../errors.js';
import { UsageError, type CliIo } from '../io.js';
import { collectLabel } from '../labels.js';
import { addAgentOptions } from './agent-options.js';
import { addEvidenceOptions, attestWith, type EvidenceFlags } from './agent-attest.js';

/*
 * `attestor-agent run`: the agent as a service (packaging/attestor-agent.service). Attests at
 * start and renews by a fresh attestation at about half the credentials' lifetime; enrolls
 * first when the state directory holds no enrollment, and again when the verifier no longer
 * knows the host; backs off while the verifier or the TPM fails, saying why; after each
 * renewal runs --exec and signals --signal-pid / --pid-file, as step-ca's renewal daemon
 * does, so that a service reloads its certificate. SIGTERM or SIGINT stops it (exit 0) once an
 * attempt in flight has ended, or after STOP_GRACE_MS without it.
 */

interface RunFlags extends EvidenceFlags {
  label?: Record<string, string>;
  exec?: string;
  signalPid?: number;
  pidFile?: string;
  signal: NodeJS.Signals;
  minBackoff: number;
  maxBackoff: number;
}

/** How long --exec may take before it is killed. */
const EXEC_TIMEOUT_MS = 60_000;

/**
 * How long a stop waits for the attempt in flight (a verifier that accepts but does not answer
 * would hold it for the HTTP timeout, an --exec command for EXEC_TIMEOUT_MS). Abandoning it is
 * safe: every file is replaced whole, and the TPM resource manager flushes what the process
 * loaded when its connection closes.
 */
const STOP_GRACE_MS = 10_000;

export function agentRunCommand(io: CliIo): Command {
  const cmd = new Command('run').description('attest now and renew the credentials before they expire, until stopped (the agent as a service)');
  addEvidenceOptions(addAgentOptions(cmd, false))
    .option('--label <name=value>', 'a host label, when run enrolls the host; repeat for several', collectLabel)
    .option('--exec <command>', 'run this shell command after each renewal (e.g. reload the service that uses cert.pem)')
    .addOption(new Option('--signal-pid <pid>', 'send --signal to this process after each renewal').argParser(positiveInt).conflicts('pidFile'))
    .option('--pid-file <file>', 'send --signal to the process whose pid this file holds, after each renewal')
    .addOption(new Option('--signal <name>', 'the signal for --signal-pid / --pid-file').default('SIGHUP').argParser(signalName))
    .addOption(new Option('--min-backoff <seconds>', 'first wait after a failure').default(2).argParser(positiveInt))
    .addOption(new Option('--max-backoff <seconds>', 'longest wait after failures').default(300).argParser(positiveInt))
    .action(async (opts: RunFlags) => {
      if (opts.minBackoff > opts.maxBackoff) throw new UsageError('--min-backoff must not exceed --max-backoff');
      const attest = attestWith(opts);
      const stop = new AbortController();
      let grace: NodeJS.Timeout | undefined;
      const onSignal = (name: string) => {
        if (stop.signal.aborted) return;
        io.out(`${name}: stopping once the attempt in flight has ended\n`);
        stop.abort();
        grace = setTimeout(() => {
          io.err(`the attempt in flight did not end within ${STOP_GRACE_MS / 1000}s: stopping without it\n`);
          process.exit(0);
        }, STOP_GRACE_MS);
      };
      const handlers = { SIGTERM: () => onSignal('SIGTERM'), SIGINT: () => onSignal('SIGINT') };
      for (const [name, handler] of Object.entries(handlers)) process.on(name, handler);
      try {
        const enrolled = await enrollment(opts);
        let state = enrolled;
        io.out(`attestor-agent run: state ${opts.stateDir}, verifier ${opts.server ?? enrolled?.server ?? '(none)'}\n`);
        await runRenewalLoop(
          {
            enrollFirst: enrolled === null,
            initial: await readRunStatus(opts.stateDir),
            attest: async () => attest((state ??= await readAgentState(opts.stateDir))),
            enroll: async () => {
              state = await enrollAgain(opts, state);
            },
            afterRenewal: (attested) => afterRenewal(opts, attested, io),
            record: (status) => writeRunStatus(opts.stateDir, status),
            backoff: { minMs: opts.minBackoff * 1000, maxMs: opts.maxBackoff * 1000 },
            now: Date.now,
            random: Math.random,
            sleep: (ms, signal) => delay(ms, undefined, { signal }).catch(() => undefined),
            info: (line) => io.out(`${line}\n`),
            warn: (line) => io.err(`${line}\n`),
          },
          stop.signal,
        );
        io.out('stopped\n');
      } finally {
        clearTimeout(grace);
        for (const [name, handler] of Object.entries(handlers)) process.off(name, handler);
      }
    });
  return cmd;
}

/** The enrollment of the state directory; null when there is none yet (run enrolls). */
async function enrollment(opts: RunFlags): Promise<AgentState | null> {
  try {
    return await readAgentState(opts.stateDir);
  } catch (e) {
    // No enrollment, or one that cannot be read: enroll from scratch, given a verifier.
    if (isAttestorError(e) && (e.code === 'ERR_AGENT_NOT_ENROLLED' || e.code === 'ERR_AGENT_STATE')) {
      if (opts.server === undefined || opts.caFingerprint === undefined) {
        throw new UsageError(`${e.message}; or give --server and --ca-fingerprint (or ATTESTOR_SERVER, ATTESTOR_CA_FINGERPRINT) for run to enroll`);
      }
      return null;
    }
    throw e;
  }
}

/** Enrolls with the verifier of the flags, else of the last enrollment; keeps agent.json. */
async function enrollAgain(opts: RunFlags, previous: AgentState | null): Promise<AgentState> {
  const server = opts.server ?? previous?.server;
  const fingerprint = opts.caFingerprint ?? previous?.caFingerprint;
  if (server === undefined || fingerprint === undefined) throw new AttestorError('ERR_AGENT_STATE', 'no verifier to enroll with: give --server and --ca-fingerprint');
  const session = await TpmSession.open({ tcti: opts.tcti, stateDir: opts.stateDir });
  try {
    const client = createApiClient({ server, caPem: await verifierTrust(opts.stateDir, server, fingerprint), format: opts.format });
    try {
      const { agentId, spiffeId } = await enrollAgent({ client, session, labels: opts.label ?? {} });
      const state = { agentId, spiffeId, server, caFingerprint: fingerprint.toLowerCase().replace(/:/g, '') };
      await writeAgentState(opts.stateDir, state);
      return state;
    } finally {
      client.close();
    }
  } finally {
    await session.close();
  }
}

/** --exec, then the signal: each failure is reported by the loop, the next renewal tries again. */
async function afterRenewal(opts: RunFlags, attested: Attested, io: CliIo): Promise<void> {
  if (opts.exec !== undefined) await runHook(opts.exec, opts.stateDir, attested, io);
  const pid = opts.signalPid ?? (opts.pidFile !== undefined ? await pidFrom(opts.pidFile) : undefined);
  if (pid !== undefined) {
    process.kill(pid, opts.signal);
    io.out(`sent ${opts.signal} to process ${pid}\n`);
  }
}

function runHook(command: string, stateDir: string, attested: Attested, io: CliIo): Promise<void> {
  return new Promise((resolve, reject) => {
    const child = spawn('/bin/sh', ['-c', command], {
      cwd: stateDir,
      stdio: ['ignore', 'inherit', 'inherit'],
      timeout: EXEC_TIMEOUT_MS,
      env: {
        ...process.env,
        ATTESTOR_CERT: join(stateDir, STATE_FILES.certificate),
        ATTESTOR_BUNDLE: join(stateDir, STATE_FILES.bundle),
        ATTESTOR_SPIFFE_ID: attested.spiffeId,
        ATTESTOR_EXPIRES_AT: attested.expiresAt,
      },
    });
    child.on('error', reject);
    child.on('close', (code, signal) => {
      if (code === 0) {
        io.out('--exec command done\n');
        resolve();
      } else reject(new Error(`the --exec command ${signal ? `was killed (${signal})` : `exited ${code}`}`));
    });
  });
}

async function pidFrom(file: string): Promise<number> {
  const text = (await readFile(file, 'utf8')).trim();
  if (!/^[1-9][0-9]{0,9}$/.test(text)) throw new Error(`${file} does not hold a process id`);
  return Number(text);
}

function positiveInt(value: string): number {
  if (!/^[1-9][0-9]{0,8}$/.test(value)) throw new InvalidArgumentError('must be a positive whole number');
  return Number(value);
}

function signalName(value: string): NodeJS.Signals {
  const name = (value.startsWith('SIG') ? value : `SIG${value}`).toUpperCase();
  if (!/^SIG(HUP|USR1|USR2|TERM|INT|QUIT|WINCH|CONT)$/.test(name)) throw new InvalidArgumentError('one of HUP, USR1, USR2, TERM, INT, QUIT, WINCH, CONT');
  return name as NodeJS.Signals;
}
