import { AttestorError } from '../errors.js';
import type { PcrBankSelection, PcrValues } from '../tpm/pcr-selection.js';
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
 * atomic with quoting, so the TPM's pcrUpdateCounter (TPM2_PCR_Read, Part 3 §22.4; bumped
 * by extends) is read before the quote and again with the values after it: equal counters
 * mean no PCR changed in between, so the values are those the quote signed. Otherwise it
 * tries again, at most `maxAttempts` times, then fails with ERR_TPM_PCRS_UNSTABLE.
 * Extends of the PCRs a TPM lists in TPM_PT_PCR_NO_INCREMENT (PC Client: 16 and 23) leave the
 * counter as it is: a change to those while quoting goes unseen here, and the verifier then
 * refuses the quote (ERR_QUOTE_PCR_DIGEST_MISMATCH).
 */
export async function quoteWithPcrValues(
  session: TpmSession,
  selection: PcrSelectionSpec,
  nonce: Uint8Array,
  maxAttempts = QUOTE_ATTEMPTS,
): Promise<QuoteWithValues> {
  // An empty selection reads only the counter.
  let counter = (await session.tpm.pcrRead({})).updateCounter;
  for (let attempt = 1; attempt <= maxAttempts; attempt++) {
    const quote = await session.quote(selection, nonce);
    const after = await session.tpm.pcrRead(selection);
    if (after.updateCounter === counter) {
      const values = Object.fromEntries(Object.keys(selection).map((bank) => [bank, after.values[bank] ?? {}]));
      return { ...quote, values, attempts: attempt };
    }
    counter = after.updateCounter;
  }
  throw new AttestorError(
    'ERR_TPM_PCRS_UNSTABLE',
    `the PCRs changed while each of ${maxAttempts} quotes was taken; try again when the host is quieter`,
  );
}
