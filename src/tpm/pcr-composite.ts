import { VerificationError } from '../errors.js';
import type { PcrBankSelection, PcrValues } from './pcr-selection.js';

/**
 * Takes the values of `selection` from `supplied`, by bank and PCR (sparse arrays): nothing
 * outside it. Used by the verifier with the signed selection, and by the agent to check the
 * values it read are those quoted.
 */
export function selectedPcrValues(selection: readonly PcrBankSelection[], supplied: PcrValues): PcrValues {
  const values: Record<string, Uint8Array[]> = {};
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
    }
    values[bank.hash.name] = out;
  }
  return values;
}

/**
 * The selected values concatenated, banks in the selection's order and PCRs ascending, as
 * TPM2_Quote hashes them into pcrDigest (Part 3 §18.4). `values` is selectedPcrValues'.
 */
export function pcrCompositeBytes(selection: readonly PcrBankSelection[], values: PcrValues): Buffer {
  let total = 0;
  for (const bank of selection) total += bank.pcrs.length * bank.hash.size;
  const bytes = Buffer.allocUnsafe(total);
  let offset = 0;
  for (const bank of selection) {
    const out = values[bank.hash.name]!;
    for (const index of bank.pcrs) {
      bytes.set(out[index]!, offset);
      offset += bank.hash.size;
    }
  }
  return bytes;
}

/** Whether `composite` is pcrCompositeBytes(selection, values), compared in place. */
export function isPcrComposite(selection: readonly PcrBankSelection[], values: PcrValues, composite: Uint8Array): boolean {
  let offset = 0;
  for (const bank of selection) {
    const out = values[bank.hash.name]!;
    for (const index of bank.pcrs) {
      const value = out[index]!;
      if (offset + value.length > composite.length) return false;
      for (let i = 0; i < value.length; i++) if (value[i] !== composite[offset + i]) return false;
      offset += value.length;
    }
  }
  return offset === composite.length;
}
