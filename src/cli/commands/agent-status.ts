import { X509Certificate } from 'node:crypto';
import { Command } from 'commander';
import { decodeJwt, decodeProtectedHeader } from 'jose';
import { describeReason } from '../../agent/attest.js';
import { describeWait } from '../../agent/renewal-loop.js';
import { readRunStatus } from '../../agent/run-status.js';
import { readAgentState, readStateFile, STATE_FILES } from '../../agent/state-files.js';
import type { CliIo } from '../io.js';
import { formatTable } from '../table.js';
import { defaultStateDir } from './tpm.js';

/*
 * `attestor-agent status`: what this host holds, read from its state directory alone (no TPM,
 * no network, so it answers while the verifier is down): its identity, its credentials and when
 * they expire, and what `run` recorded of the last attempt and verdict.
 */

interface StatusFlags {
  stateDir: string;
  json?: boolean;
}

interface CredentialView {
  readonly kind: 'x509-svid' | 'jwt-svid';
  /** Certificate serial (hex) or JWT id. */
  readonly id: string;
  readonly notBefore: string;
  readonly notAfter: string;
  readonly expired: boolean;
  readonly detail: string;
}

export function agentStatusCommand(io: CliIo): Command {
  return new Command('status')
    .description("this host's identity, credentials and their expiry, and the last verdict (from the state directory, offline)")
    .option('--state-dir <dir>', "the agent's state directory", defaultStateDir())
    .option('--json', 'print one JSON object')
    .action(async (opts: StatusFlags) => {
      const state = await readAgentState(opts.stateDir);
      const now = Date.now();
      const credentials = [...(await certificateView(opts.stateDir, now)), ...(await tokenView(opts.stateDir, now))];
      const run = await readRunStatus(opts.stateDir);
      if (opts.json) {
        io.out(`${JSON.stringify({ ...state, credentials, run })}\n`);
        return;
      }
      let text = formatTable([
        ['agent id', state.agentId],
        ['spiffe id', state.spiffeId],
        ['verifier', state.server],
        ['ca fingerprint', state.caFingerprint],
      ]);
      text += 'credentials:\n';
      text +=
        credentials.length === 0
          ? '  none\n'
          : formatTable(credentials.map((c) => ['', c.kind, c.id, c.notBefore, c.notAfter, c.expired ? 'EXPIRED' : `${describeWait(Date.parse(c.notAfter) - now)} left`, c.detail]));
      if (run === null) text += 'run: no record (attestor-agent run has not run here)\n';
      else {
        const v = run.lastVerdict;
        text += formatTable([
          ['last renewal', run.lastSuccess ? `${run.lastSuccess.at}` : '-'],
          ['last failure', run.lastFailure ? `${run.lastFailure.at}: ${run.lastFailure.reason}` : '-'],
          ['last verdict', v ? `${v.status} at ${v.at}${v.baseline ? `, baseline ${v.baseline.id} v${v.baseline.version}` : ''}` : '-'],
          ['next attempt', run.nextAttemptAt ?? '-'],
        ]);
        if (v && v.reasons.length > 0) text += `reasons:\n${v.reasons.map((r) => `  ${describeReason(r)}\n`).join('')}`;
      }
      io.out(text);
    });
}

async function certificateView(dir: string, now: number): Promise<CredentialView[]> {
  const pem = await readStateFile(dir, STATE_FILES.certificate);
  if (pem === null) return [];
  const cert = new X509Certificate(pem);
  const notAfter = new Date(cert.validTo).toISOString();
  return [
    {
      kind: 'x509-svid',
      id: cert.serialNumber.toLowerCase(),
      notBefore: new Date(cert.validFrom).toISOString(),
      notAfter,
      expired: Date.parse(notAfter) <= now,
      detail: cert.subjectAltName ?? '',
    },
  ];
}

async function tokenView(dir: string, now: number): Promise<CredentialView[]> {
  const token = await readStateFile(dir, STATE_FILES.token);
  if (token === null) return [];
  const jwt = token.toString('utf8').trim();
  const claims = decodeJwt(jwt);
  const { kid } = decodeProtectedHeader(jwt);
  const notAfter = new Date((claims.exp ?? 0) * 1000).toISOString();
  return [
    {
      kind: 'jwt-svid',
      id: claims.jti ?? '-',
      notBefore: new Date((claims.iat ?? 0) * 1000).toISOString(),
      notAfter,
      expired: Date.parse(notAfter) <= now,
      detail: `aud ${[claims.aud ?? []].flat().join(',')}, kid ${kid ?? '-'}`,
    },
  ];
}
