import { InvalidArgumentError, Option, type Command } from 'commander';
import type { BodyFormat } from '../../wire/codec.js';
import { caFingerprint, serverUrl } from '../server-options.js';
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

