import { ParseError } from '../errors.js';
import { hashByName, hashInfo, type HashInfo } from './constants.js';
import type { TpmReader } from './reader.js';

/** PCR values by bank name ("sha256") and index. */
export type PcrValues = { readonly [bank: string]: { readonly [index: number]: Uint8Array } };

/** One bank of a PCR selection, indexes ascending as the TPM hashes them. */
export interface PcrBankSelection {
  readonly hash: HashInfo;
  readonly pcrs: readonly number[];
}

/** PCRs a PC Client TPM implements (TPMS_PCR_SELECTION of PCR_SELECT_MIN = 3 bytes). */
export const PCR_COUNT = 24;

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
    banks.push({ hash, pcrs: readPcrBitmap(r, size) });
  }
  return banks;
}

/** The PCRs of a selection's `size`-byte bitmap read from `r`, without a view of it (quotes are read on the hot path). */
function readPcrBitmap(r: TpmReader, size: number): number[] {
  const pcrs: number[] = [];
  for (let byte = 0; byte < size; byte++) addSelected(pcrs, byte, r.u8('pcrSelections.pcrSelect'));
  return pcrs;
}

export function bitmapToPcrs(bitmap: Uint8Array): number[] {
  const pcrs: number[] = [];
  for (let byte = 0; byte < bitmap.length; byte++) addSelected(pcrs, byte, bitmap[byte]!);
  return pcrs;
}

/** The PCRs whose bits are set in the bitmap's byte number `byte`, lowest bit first (Part 2 §10.6.2). */
function addSelected(pcrs: number[], byte: number, bits: number): void {
  for (let bit = 0; bit < 8; bit++) if ((bits >> bit) & 1) pcrs.push(byte * 8 + bit);
}

/** "sha256:0,1,2+sha1:7" as tpm2-tools writes selections, for messages and CLI output. */
export function formatPcrSelection(banks: readonly PcrBankSelection[]): string {
  return banks.map((b) => `${b.hash.name}:${b.pcrs.join(',')}`).join('+');
}

/**
 * A PCR selection as tpm2-tools takes it (`tpm2_quote -l`, `tpm2_pcrread`): banks joined by
 * "+", each `bank:pcrs` where bank is a hash name ("sha256") or algorithm id ("0xb") and pcrs
 * is "all" or a comma list of indexes (decimal or 0x hex). Indexes come back ascending, without
 * repeats; a bank may appear once. Any other text is ERR_PCR_SELECTION_SPEC.
 */
export function parsePcrSelectionSpec(spec: string): PcrBankSelection[] {
  const banks: PcrBankSelection[] = [];
  for (const part of spec.split('+')) {
    const colon = part.indexOf(':');
    if (colon < 0) throw selectionError(spec, `"${part}" is not bank:pcrs`);
    const hash = selectionBank(spec, part.slice(0, colon));
    if (banks.some((b) => b.hash.alg === hash.alg)) throw selectionError(spec, `bank ${hash.name} appears twice`);
    const list = part.slice(colon + 1);
    const pcrs = list === 'all' ? Array.from({ length: PCR_COUNT }, (_, i) => i) : list.split(',').map((p) => selectionIndex(spec, p));
    banks.push({ hash, pcrs: [...new Set(pcrs)].sort((a, b) => a - b) });
  }
  return banks;
}

function selectionBank(spec: string, bank: string): HashInfo {
  try {
    return /^(0x[0-9a-f]+|[0-9]+)$/i.test(bank) ? hashInfo(Number(bank), 'bank') : hashByName(bank);
  } catch (e) {
    throw selectionError(spec, `"${bank}" is not a PCR bank this TPM code supports`, e);
  }
}

function selectionIndex(spec: string, text: string): number {
  const index = /^(0x[0-9a-f]+|[0-9]+)$/i.test(text) ? Number(text) : NaN;
  if (Number.isNaN(index) || index >= PCR_COUNT) throw selectionError(spec, `"${text}" is not a PCR index 0..${PCR_COUNT - 1}`);
  return index;
}

function selectionError(spec: string, problem: string, cause?: unknown): ParseError {
  return new ParseError('ERR_PCR_SELECTION_SPEC', `PCR selection "${spec}": ${problem}`, { cause });
}
