import { ParseError } from '../errors.js';
import { hashInfo, type HashInfo } from './constants.js';
import type { TpmReader } from './reader.js';

/** PCR values by bank name ("sha256") and index. */
export type PcrValues = { readonly [bank: string]: { readonly [index: number]: Uint8Array } };

/** One bank of a PCR selection, indexes ascending as the TPM hashes them. */
export interface PcrBankSelection {
  readonly hash: HashInfo;
  readonly pcrs: readonly number[];
}

/** The largest sizeofSelect we accept: 32 PCRs. TPMs implement 24 (PCR_SELECT_MIN = 3). */
const PCR_SELECT_MAX = 4;
/** HASH_COUNT on any real TPM is a handful; 16 bounds the loop without excluding any. */
const MAX_BANKS = 16;

/**
 * TPML_PCR_SELECTION (Part 2 §10.9.7) of TPMS_PCR_SELECTION (§10.6.2): per bank a bitmap
 * where PCR n is bit (n % 8) of byte (n / 8). A bank may appear once: the values of a quote
 * are mapped to (bank, index) by this signed order, so it must be unambiguous.
 */
export function readPcrSelection(r: TpmReader): PcrBankSelection[] {
  const count = r.u32('pcrSelect.count');
  if (count > MAX_BANKS) {
    throw new ParseError('ERR_TPM_BAD_VALUE', `${r.what}: PCR selection lists ${count} banks, at most ${MAX_BANKS}`);
  }
  const banks: PcrBankSelection[] = [];
  for (let i = 0; i < count; i++) {
    const hash = hashInfo(r.u16('pcrSelections.hash'), 'pcrSelections.hash');
    const size = r.u8('pcrSelections.sizeofSelect');
    if (size > PCR_SELECT_MAX) {
      throw new ParseError('ERR_TPM_BAD_VALUE', `${r.what}: sizeofSelect ${size} exceeds ${PCR_SELECT_MAX}`);
    }
    for (const seen of banks) {
      if (seen.hash.alg === hash.alg) throw new ParseError('ERR_TPM_BAD_VALUE', `${r.what}: bank ${hash.name} is selected twice`);
    }
    banks.push({ hash, pcrs: bitmapToPcrs(r.bytesOf(size, 'pcrSelections.pcrSelect')) });
  }
  return banks;
}

export function bitmapToPcrs(bitmap: Uint8Array): number[] {
  const pcrs: number[] = [];
  for (let byte = 0; byte < bitmap.length; byte++) {
    for (let bit = 0; bit < 8; bit++) {
      if ((bitmap[byte]! >> bit) & 1) pcrs.push(byte * 8 + bit);
    }
  }
  return pcrs;
}

/** "sha256:0,1,2+sha1:7" as tpm2-tools writes selections, for messages and CLI output. */
export function formatPcrSelection(banks: readonly PcrBankSelection[]): string {
  return banks.map((b) => `${b.hash.name}:${b.pcrs.join(',')}`).join('+');
}
