import { InvalidArgumentError, Option, type Command } from 'commander';
import type { BodyFormat } from '../../wire/codec.js';
import { defaultStateDir } from './tpm.js';

/*
 * Options `attestor-agent enroll` and `attest` share: the verifier and its pinned root CA, the
 * TPM, the state directory, the body format. Values are checked when parsed, so a mistake
 * exits 2 before the TPM or the network is touched.
 */

export interface AgentConnectionFlags {
  server?: string;
  caFingerprint?: string;
  tcti: string;
  stateDir: string;
  format: BodyFormat;
}

/**
 * Adds the shared options. `serverRequired`: --server and --ca-fingerprint must be given (or set
 * in the environment); otherwise they default to the enrollment's, kept in agent.json.
 */
export function addAgentOptions(cmd: Command, serverRequired: boolean): Command {
  const enrolled = serverRequired ? '' : " (default: the enrollment's)";
  const server = new Option('--server <url>', `the verifier, https://host[:port]${enrolled}`).env('ATTESTOR_SERVER').argParser(serverUrl);
  const fingerprint = new Option('--ca-fingerprint <hex>', `SHA-256 of the verifier's root CA certificate (DER), as \`attestor serve\` printed it${enrolled}`)
    .env('ATTESTOR_CA_FINGERPRINT')
    .argParser(caFingerprint);
  if (serverRequired) {
    server.makeOptionMandatory();
    fingerprint.makeOptionMandatory();
  }
  return cmd
    .addOption(server)
    .addOption(fingerprint)
    .addOption(
      new Option('--tcti <tcti>', 'TPM to use: device:/dev/tpmrm0, swtpm:host=127.0.0.1,port=2321, ...').default(
        process.env.TPM2TOOLS_TCTI || 'device:/dev/tpmrm0',
      ),
    )
    .option('--state-dir <dir>', "the agent's state directory: its TPM keys, enrollment and credentials", defaultStateDir())
    .addOption(new Option('--format <format>', 'body format of the requests').choices(['json', 'cbor']).default('json'));
}

/** https://host[:port] alone: requests resolve /v1/... against it, so a path or query would be dropped silently. */
export function serverUrl(value: string): string {
  let url: URL;
  try {
    url = new URL(value);
  } catch {
    throw new InvalidArgumentError('not a URL');
  }
  if (url.protocol !== 'https:') throw new InvalidArgumentError(`must be an https:// URL (got ${url.protocol})`);
  if (url.pathname !== '/' || url.search !== '' || url.hash !== '' || url.username !== '' || url.password !== '') {
    throw new InvalidArgumentError('must be https://host[:port] alone (no path, query or credentials)');
  }
  return url.origin;
}

/** 64 hex digits, colons allowed; lowercase without colons, as agent.json keeps it. */
export function caFingerprint(value: string): string {
  const fingerprint = value.toLowerCase().replace(/:/g, '');
  if (!/^[0-9a-f]{64}$/.test(fingerprint)) {
    throw new InvalidArgumentError('must be 64 hex digits (SHA-256 of the root CA certificate DER; colons allowed)');
  }
  return fingerprint;
}
