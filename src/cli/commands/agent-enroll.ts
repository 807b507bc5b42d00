import { join } from 'node:path';
import { Command } from 'commander';
import { createApiClient } from '../../client/api-client.js';
import { enrollAgent } from '../../agent/enroll.js';
import { pinnedCa } from '../../agent/pinned-ca.js';
import { STATE_FILES, writeAgentState } from '../../agent/state-files.js';
import { TpmSession } from '../../agent/tpm-session.js';
import type { CliIo } from '../io.js';
import { addAgentOptions, type AgentConnectionFlags } from './agent-options.js';
import { collectLabel } from '../labels.js';

/*
 * `attestor-agent enroll`: makes this host's TPM known to the verifier (DESIGN flow 1), once.
 * Keeps agent.json (agent id, SPIFFE ID, server, CA fingerprint) and ca.pem (the pinned root)
 * in the state directory beside the AK, for `attest` to use.
 */

interface EnrollFlags extends AgentConnectionFlags {
  server: string;
  caFingerprint: string;
  label?: Record<string, string>;
}

export function agentEnrollCommand(io: CliIo): Command {
  const cmd = new Command('enroll').description("enroll this host's TPM with the verifier (EK, EK certificate, AK); once per TPM");
  addAgentOptions(cmd, true)
    .option('--label <name=value>', 'a host label baselines select on; repeat for several', collectLabel)
    .action(async (opts: EnrollFlags) => {
      const session = await TpmSession.open({ tcti: opts.tcti, stateDir: opts.stateDir });
      try {
        const caPem = await pinnedCa(opts.stateDir, opts.server, opts.caFingerprint);
        const client = createApiClient({ server: opts.server, caPem, format: opts.format });
        try {
          const { agentId, spiffeId } = await enrollAgent({ client, session, labels: opts.label ?? {} });
          const written = await writeAgentState(opts.stateDir, { agentId, spiffeId, server: opts.server, caFingerprint: opts.caFingerprint });
          io.out(
            `enrolled this host's TPM with ${opts.server}\n` +
              `agent id   ${agentId}\n` +
              `SPIFFE ID  ${spiffeId}\n` +
              `wrote      ${written}, ${join(opts.stateDir, STATE_FILES.ca)}\n` +
              `next       attestor-agent attest --state-dir ${opts.stateDir}\n`,
          );
        } finally {
          client.close();
        }
      } finally {
        await session.close();
      }
    });
  return cmd;
}

/** --label name=value, checked as the wire schema checks labels; a name given twice is refused. */
