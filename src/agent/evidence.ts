import { quoteQualifyingData, type BoundKey } from '../appraisal/key-binding.js';
import { hashByName } from '../tpm/constants.js';
import type { PcrBankSelection } from '../tpm/pcr-selection.js';
import type { AttestationRequestInput, ChallengeResponse } from '../wire/schemas.js';
import type { AgentKey } from './agent-key.js';
import { EVENT_LOG_MAX, IMA_LOG_MAX, readLog, type LogSources } from './measurement-logs.js';
import { makeKeyReport } from './pkcs11-key.js';
import { quoteWithPcrValues, requirePcrs } from './quote-with-values.js';
import type { PcrSelectionSpec } from './tpm-marshal.js';
import type { TpmSession } from './tpm-session.js';

/*
 * DESIGN flow 3 from the agent's side: the answer to one challenge. The key to be certified is
 * proven first (TPM2_Certify by the AK over the bare nonce, or the PKCS#11 key report signed
 * over it), then the quote commits to that proof: its qualifying data is
 * quoteQualifyingData(nonce, key), so the attested host vouches for exactly this key.
 */

/** An AttestationRequest as the agent builds it. */

export interface EvidenceOptions {
  readonly session: TpmSession;
  readonly key: AgentKey;
  readonly challenge: ChallengeResponse;
  /** Logs to send; default none. */
  readonly logs?: LogSources;
  /** The JWT-SVID audience wanted; none: no JWT. */
  readonly audience?: string;
}

/** The AttestationRequest answering `challenge`. */
export async function buildAttestationRequest(opts: EvidenceOptions): Promise<AttestationRequestInput> {
  const { session, challenge } = opts;
  const { nonce } = challenge;
  const banks = selectionOf(challenge.pcrSelection);
  // A PCR the TPM lacks would be left out of the quote without a word: refuse it here.
  await requirePcrs(session.tpm, banks);

  const { evidence, bound } = await keyEvidence(session, opts.key, nonce);
  const spec: PcrSelectionSpec = Object.fromEntries(banks.map((b) => [b.hash.name, b.pcrs]));
  const quote = await quoteWithPcrValues(session, spec, quoteQualifyingData(nonce, bound));

  // Read after the quote: the IMA list then holds every measurement the quoted PCR 10 covers
  // (entries appended since are extra trailing entries, which the verifier accepts).
  const logs = opts.logs ?? {};
  const eventLog = await readLog(logs.eventLog, 'UEFI event log', EVENT_LOG_MAX);
  const imaLog = await readLog(logs.imaLog, 'IMA measurement list', IMA_LOG_MAX);

  return {
    nonce,
    quote: quote.attest,
    signature: quote.signature,
    pcrs: pcrValuesForWire(quote.values),
    ...(eventLog ? { eventLog } : {}),
    ...(imaLog ? { imaLog } : {}),
    key: evidence,
    ...(opts.audience !== undefined ? { audience: opts.audience } : {}),
  };
}

/** The proof for the key and what the quote binds of it. */
async function keyEvidence(
  session: TpmSession,
  key: AgentKey,
  nonce: Uint8Array,
): Promise<{ evidence: AttestationRequestInput['key']; bound: BoundKey }> {
  if (key.kind === 'pkcs11') {
    const report = await makeKeyReport(key.session, key.key, nonce);
    return { evidence: { kind: 'pkcs11', report }, bound: { kind: 'pkcs11', evidence: report } };
  }
  const identity = await session.identityKey();
  const certify = await session.certifyIdentityKey(nonce);
  return {
    evidence: { kind: 'tpm', public: identity.public, certifyInfo: certify.attest, signature: certify.signature },
    bound: { kind: 'tpm', public: identity.public },
  };
}

/** The challenge's selection as banks to quote (banks with no PCRs left out), in its order. */
function selectionOf(selection: ChallengeResponse['pcrSelection']): PcrBankSelection[] {
  return Object.entries(selection)
    .filter((entry): entry is [string, number[]] => entry[1] !== undefined && entry[1].length > 0)
    .map(([bank, pcrs]) => ({ hash: hashByName(bank), pcrs: [...new Set(pcrs)].sort((a, b) => a - b) }));
}

/** PcrValues keyed by bank and decimal index, as PCR_VALUES carries them. */
function pcrValuesForWire(values: { readonly [bank: string]: { readonly [index: number]: Uint8Array } }): AttestationRequestInput['pcrs'] {
  return Object.fromEntries(Object.entries(values).map(([bank, byIndex]) => [bank, { ...byIndex }]));
}
