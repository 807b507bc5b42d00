import { hash } from 'node:crypto';
import { equalBytes } from '../bytes.js';
import { AttestorError } from '../errors.js';
import { parseAttest } from '../tpm/attest.js';
import { pcrCompositeBytes, selectedPcrValues } from '../tpm/pcr-composite.js';
import type { PcrBankSelection, PcrValues } from '../tpm/pcr-selection.js';
import { parseSignature } from '../tpm/signature.js';
import type { PcrSelectionSpec } from './tpm-marshal.js';
import type { TpmSession } from './tpm-session.js';
import type { Attestation, Tpm } from './tss.js';

/*
 * A quote together with the PCR values it signed: what a verifier needs to check it
 * (tpm2_checkquote, `attestor quote verify`), taken so that the two cannot disagree.
 */

/**
 * Quote attempts before giving up on PCRs that keep changing (a busy IMA extends PCR 10 all
 * the time): bounded so the agent cannot spin.
 */
const QUOTE_ATTEMPTS = 5;

export interface QuoteWithValues extends Attestation {
  /** The PCR values the quote signed, banks in the order of its selection. */
  readonly values: PcrValues;
  /** Quotes taken: more than one when the PCRs changed meanwhile. */
  readonly attempts: number;
}

/**
 * Refuses (ERR_TPM_CAPABILITY), before quoting, PCRs the TPM does not have: TPM2_Quote would
 * leave them out of the quote without a word.
 */
export async function requirePcrs(tpm: Tpm, wanted: readonly PcrBankSelection[]): Promise<void> {
  const banks = await tpm.getPcrBanks();
  for (const { hash, pcrs } of wanted) {
    const bank = banks.find((b) => b.hash.alg === hash.alg);
    if (!bank) {
      const has = banks.map((b) => b.hash.name).join(', ') || 'none';
      throw new AttestorError('ERR_TPM_CAPABILITY', `the TPM has no ${hash.name} PCR bank allocated (it has: ${has})`);
    }
    const missing = pcrs.filter((p) => !bank.pcrs.includes(p));
    if (missing.length > 0) throw new AttestorError('ERR_TPM_CAPABILITY', `the TPM's ${hash.name} bank has no PCR ${missing.join(', ')}`);
  }
}

/**
 * TPM2_Quote by the session's AK and the values of the PCRs it covers. Reading PCRs is not
 * atomic with quoting, so the values read after the quote are checked against the quote's
 * own pcrDigest, the way a verifier will check them; when a PCR changed in between, the quote
 * is taken again, at most `maxAttempts` times, then ERR_TPM_PCRS_UNSTABLE. (The TPM's
 * pcrUpdateCounter cannot tell: extends of PCRs such as 16 and 23 do not bump it.)
 */
export async function quoteWithPcrValues(
  session: TpmSession,
  selection: PcrSelectionSpec,
  nonce: Uint8Array,
  maxAttempts = QUOTE_ATTEMPTS,
): Promise<QuoteWithValues> {
  for (let attempt = 1; attempt <= maxAttempts; attempt++) {
    const quote = await session.quote(selection, nonce);
    const { values } = await session.tpm.pcrRead(selection);
    const signed = quotedValues(quote, values);
    if (signed) return { ...quote, values: signed, attempts: attempt };
  }
  throw new AttestorError(
    'ERR_TPM_PCRS_UNSTABLE',
    `the PCRs changed while each of ${maxAttempts} quotes was taken; try again when the host is quieter`,
  );
}

/** The values of the quote's signed selection when they hash to its pcrDigest, else undefined. */
function quotedValues(quote: Attestation, read: PcrValues): PcrValues | undefined {
  const { attested } = parseAttest(quote.attest);
  if (attested.type !== 'quote') throw new AttestorError('ERR_TSS_COMMAND', 'TPM2_Quote returned no quote');
  const values = selectedPcrValues(attested.pcrSelect, read);
  const { hash: hashAlg } = parseSignature(quote.signature);
  const composite = pcrCompositeBytes(attested.pcrSelect, values);
  return equalBytes(hash(hashAlg.name, composite, 'buffer'), attested.pcrDigest) ? values : undefined;
}
