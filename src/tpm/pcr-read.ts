import { ParseError } from '../errors.js';
import { readPcrSelection, type PcrValues } from './pcr-selection.js';
import { TpmReader } from './reader.js';

/** TPML_DIGEST holds at most 8 digests (Part 2 §10.9.2): TPM2_PCR_Read returns at most that many PCRs a call. */
export const DIGESTS_MAX = 8;

/** TPML_DIGEST (Part 2 §10.9.2) as TPM2_PCR_Read returns it. */
export function parseDigestList(bytes: Uint8Array): Uint8Array[] {
  const r = new TpmReader(bytes, 'TPML_DIGEST');
  const count = r.u32('count');
  if (count > DIGESTS_MAX) throw new ParseError('ERR_TPM_BAD_VALUE', `TPML_DIGEST: ${count} digests, at most ${DIGESTS_MAX}`);
  const digests = Array.from({ length: count }, () => r.tpm2b('digest', 64));
  r.end();
  return digests;
}

/**
 * The reply of TPM2_PCR_Read (Part 3 §22.4): the digests (TPML_DIGEST) assigned to the
 * (bank, index) pairs of the selection it reports (TPML_PCR_SELECTION), in that order. The
 * reported selection may be a prefix of the one asked for.
 */
export function pcrValuesOf(selection: Uint8Array, digests: Uint8Array): PcrValues {
  const r = new TpmReader(selection, 'TPML_PCR_SELECTION');
  const banks = readPcrSelection(r);
  r.end();
  const list = parseDigestList(digests);
  const values: Record<string, Record<number, Uint8Array>> = {};
  let next = 0;
  for (const { hash, pcrs } of banks) {
    const bank = (values[hash.name] ??= {});
    for (const pcr of pcrs) {
      const digest = list[next++];
      if (!digest || digest.length !== hash.size) {
        throw new ParseError('ERR_TPM_SIZE_MISMATCH', `TPM2_PCR_Read: no ${hash.name} digest for PCR ${pcr}`);
      }
      bank[pcr] = digest;
    }
  }
  if (next !== list.length) throw new ParseError('ERR_TPM_TRAILING_BYTES', 'TPM2_PCR_Read: more digests than selected PCRs');
  return values;
}
