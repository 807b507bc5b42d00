import { VerificationError } from '../errors.js';
import type { PcrBankSelection, PcrValues } from './pcr-selection.js';

export interface PcrComposite {
  /** The values of the selection, by bank and PCR (sparse arrays): nothing outside it. */
  readonly values: PcrValues;
  /** The values concatenated in the TPM's order: what a quote's pcrDigest is the hash of. */
  readonly bytes: Buffer;
}

/**
 * Takes the values of `selection` from `supplied`, banks in the selection's order and PCRs
 * ascending, as TPM2_Quote hashes them into pcrDigest (Part 3 §18.4). Used by the verifier
 * with the signed selection, and by the agent to check the values it read are those quoted.
 */
export function pcrComposite(selection: readonly PcrBankSelection[], supplied: PcrValues): PcrComposite {
  const values: Record<string, Uint8Array[]> = {};
  let total = 0;
  for (const bank of selection) {
    const given = supplied[bank.hash.name];
    // A sparse array indexed by PCR number: cheaper to build than an object with numeric keys.
    const out: Uint8Array[] = [];
    for (const index of bank.pcrs) {
      const value = given?.[index];
      if (!value || value.length !== bank.hash.size) {
        throw new VerificationError(
          'ERR_QUOTE_PCR_MISSING',
          `${bank.hash.name} PCR ${index} is signed but ${value ? 'has the wrong length' : 'no value was supplied'}`,
        );
      }
      out[index] = value;
      total += value.length;
    }
    values[bank.hash.name] = out;
  }
  const bytes = Buffer.allocUnsafe(total);
  let offset = 0;
  for (const bank of selection) {
    const out = values[bank.hash.name]!;
    for (const index of bank.pcrs) {
      bytes.set(out[index]!, offset);
      offset += bank.hash.size;
    }
  }
  return { values, bytes };
}
