import { accessSync, constants } from 'node:fs';
import { Command, InvalidArgumentError, Option } from 'commander';
import { closeAgentKey, DEFAULT_PKCS11_KEY_LABEL, openAgentKey, parseAgentKeySpec, PKCS11_PIN_ENV, type AgentKeySpec } from '../../agent/agent-key.js';
import { AttestationRefusedError, attestOnce, type Attested } from '../../agent/attest.js';
import { DEFAULT_EVENT_LOG, DEFAULT_IMA_LOG, type LogSource, type LogSources } from '../../agent/measurement-logs.js';
import { verifierTrust } from '../../agent/pinned-ca.js';
import { readAgentState, type AgentState } from '../../agent/state-files.js';
import { TpmSession } from '../../agent/tpm-session.js';
import { createApiClient } from '../../client/api-client.js';
import { isAttestorError } from '../../errors.js';
import { AUDIENCE } from '../../wire/schemas.js';
import { UsageError, type CliIo } from '../io.js';
import { addAgentOptions, type AgentConnectionFlags } from './agent-options.js';

/*
 * `attestor-agent attest`: one attestation (DESIGN flow 3) and the credentials it brings, kept
 * in the state directory. The server and CA fingerprint default to those enroll kept.
 */

/** What to attest with, shared by `attest` and `run`. */
export interface EvidenceFlags extends AgentConnectionFlags {
  key: string;
  audience?: string;
  /** A path, or false for --no-event-log; undefined: the securityfs default when present. */
  eventLog?: string | false;
  imaLog?: string | false;
}

interface AttestFlags extends EvidenceFlags {
  json?: boolean;
}

const FILES_HELP = `
Written to the state directory (mode 0600), each file replaced atomically:
  cert.pem    the X.509 SVID of the key
  bundle.pem  the CA certificates to verify it with
  key.pem     the TPM identity key as a TSS2 PRIVATE KEY (openssl ... -provider tpm2 -provider default -key key.pem)
  key.uri     instead, with a PKCS#11 --key: the key's URI (no PIN)
  token.jwt   the JWT-SVID, when --audience asked for one

Environment:
  ${PKCS11_PIN_ENV}  the token's user PIN when the --key URI has no pin-source
`;

/** The options of the key and the evidence an attestation sends (`attest`, `run`). */
export function addEvidenceOptions(cmd: Command): Command {
  return cmd
    .addOption(
      new Option('--key <key>', `the key credentials are issued to: tpm (the TPM identity key) or a PKCS#11 URI, pkcs11:token=T;object=LABEL?module-path=M&pin-source=F (object default: ${DEFAULT_PKCS11_KEY_LABEL})`)
        .default('tpm'),
    )
    .addOption(new Option('--audience <aud>', 'ask for a JWT-SVID for this audience').argParser(audience))
    .option('--event-log <file>', `the UEFI event log to send (default: ${DEFAULT_EVENT_LOG} when present)`)
    .option('--no-event-log', 'send no UEFI event log')
    .option('--ima-log <file>', `the IMA measurement list to send (default: ${DEFAULT_IMA_LOG} when present)`)
    .option('--no-ima-log', 'send no IMA measurement list')
    .addHelpText('after', FILES_HELP);
}

export function agentAttestCommand(io: CliIo): Command {
  const cmd = new Command('attest').description('attest this host to the verifier and keep the credentials it issues in the state directory');
  addEvidenceOptions(addAgentOptions(cmd, false))
    .option('--json', 'print the result as one JSON object')
    .action(async (opts: AttestFlags) => {
      const attest = attestWith(opts);
      const state = await readAgentState(opts.stateDir);
      try {
        const result = await attest(state);
        io.out(opts.json ? `${JSON.stringify({ agentId: state.agentId, ...result })}\n` : describeResult(state.agentId, result));
      } catch (e) {
        // --json: the refusal is an object on stdout as well, for scripts; the error line still says it on stderr.
        if (opts.json && e instanceof AttestationRefusedError) {
          io.out(`${JSON.stringify({ agentId: state.agentId, refused: e.remoteCode, verdict: e.verdict })}\n`);
        }
        throw e;
      }
    });
  return cmd;
}

/**
 * One attestation as the flags say, for the enrolled `state`: the options are checked now (a
 * usage error before anything is touched); each call opens the TPM, the key and a connection
 * to the verifier (trusting its pinned root and the bundle it sent), and closes them after.
 */
export function attestWith(opts: EvidenceFlags): (state: AgentState) => Promise<Attested> {
  const keySpec = agentKeySpec(opts.key);
  const logs = logSources(opts);
  return async (state) => {
    const server = opts.server ?? state.server;
    const caPem = await verifierTrust(opts.stateDir, server, opts.caFingerprint ?? state.caFingerprint);
    const client = createApiClient({ server, caPem, format: opts.format });
    try {
      const session = await TpmSession.open({ tcti: opts.tcti, stateDir: opts.stateDir });
      try {
        const key = await openAgentKey(keySpec);
        try {
          return await attestOnce({ client, session, agentId: state.agentId, key, stateDir: opts.stateDir, logs, audience: opts.audience });
        } finally {
          await closeAgentKey(key);
        }
      } finally {
        await session.close();
      }
    } finally {
      client.close();
    }
  };
}

function describeResult(agentId: string, r: Attested): string {
  const baseline = r.verdict.baseline ? ` (baseline ${r.verdict.baseline.id} version ${r.verdict.baseline.version})` : '';
  const [first, ...rest] = r.files;
  return (
    `agent id   ${agentId}\n` +
    `SPIFFE ID  ${r.spiffeId}\n` +
    `verdict    ${r.verdict.status}${baseline}\n` +
    `wrote      ${first}\n` +
    rest.map((f) => `           ${f}\n`).join('') +
    `expires    ${r.expiresAt}\n`
  );
}

/**
 * The logs to send: a named file must be readable now (a usage error otherwise, before the TPM
 * is touched); the defaults are read when present.
 */
function logSources(opts: AttestFlags): LogSources {
  const source = (given: string | false | undefined, fallback: string, option: string): LogSource | undefined => {
    if (given === false) return undefined;
    if (given === undefined) return { path: fallback, ifPresent: true };
    try {
      accessSync(given, constants.R_OK);
    } catch (e) {
      throw new UsageError(`cannot read ${option} ${given}: ${(e as NodeJS.ErrnoException).code ?? 'unreadable'}`);
    }
    return { path: given, ifPresent: false };
  };
  const eventLog = source(opts.eventLog, DEFAULT_EVENT_LOG, '--event-log');
  const imaLog = source(opts.imaLog, DEFAULT_IMA_LOG, '--ima-log');
  return { ...(eventLog ? { eventLog } : {}), ...(imaLog ? { imaLog } : {}) };
}

/** Parsed in the action, not by commander, whose message would repeat the value: a pin-value in it. */
function agentKeySpec(value: string): AgentKeySpec {
  try {
    return parseAgentKeySpec(value);
  } catch (e) {
    if (isAttestorError(e)) throw new UsageError(e.message);
    throw e;
  }
}

function audience(value: string): string {
  const parsed = AUDIENCE.safeParse(value);
  if (!parsed.success) throw new InvalidArgumentError(parsed.error.issues[0]?.message ?? 'invalid audience');
  return parsed.data;
}
