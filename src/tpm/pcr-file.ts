import { ParseError } from '../errors.js';
import { hashByName, hashInfo } from './constants.js';
import { bitmapToPcrs, type PcrValues } from './pcr-selection.js';
import { TpmReader } from './reader.js';

/*
 * tpm2-tools' PCR output file (`tpm2_quote -o`, `tpm2_pcrread -o`, "serialized" format):
 * raw C structures in host byte order (little-endian on every platform tpm2-tools ships for):
 *   TPML_PCR_SELECTION  UINT32 count; TPMS_PCR_SELECTION[16] of {UINT16 hash; UINT8 size;
 *                       BYTE select[4]} padded to 8 bytes each             -> 132 bytes
 *   UINT32              number of TPML_DIGEST that follow
 *   TPML_DIGEST[n]      UINT32 count; TPM2B_DIGEST[8] of {UINT16 size; BYTE buffer[64]} -> 532 bytes each
 * Digests fill the TPML_DIGESTs in selection order (bank by bank, index ascending), up to
 * eight per TPML_DIGEST (one per TPM2_PCR_Read). This file is unsigned: its selection only
 * says how to read its values.
 */
const SELECTION_SLOTS = 16;
const SELECTION_SLOT_SIZE = 8;
const SELECT_BYTES = 4;
const DIGESTS_PER_LIST = 8;
const DIGEST_SLOT = 64;
/** tpm2-tools writes the selection as the TPM returns it: 3 bytes, PCRs 0..23. */
const SELECT_BYTES_WRITTEN = 3;
const DIGEST_LIST_SIZE = 4 + DIGESTS_PER_LIST * (2 + DIGEST_SLOT);

export function parsePcrFile(bytes: Uint8Array): PcrValues {
  try {
    return readPcrFile(new TpmReader(bytes, 'PCR file'));
  } catch (e) {
    if (e instanceof ParseError) throw new ParseError('ERR_PCR_FILE_MALFORMED', e.message, { cause: e });
    throw e;
  }
}

function readPcrFile(r: TpmReader): PcrValues {
  const count = r.u32le('selection.count');
  if (count > SELECTION_SLOTS) throw new ParseError('ERR_PCR_FILE_MALFORMED', `PCR file: ${count} banks selected, at most ${SELECTION_SLOTS}`);
  const wanted: Array<{ bank: ReturnType<typeof hashInfo>; pcrs: number[] }> = [];
  for (let i = 0; i < SELECTION_SLOTS; i++) {
    const hash = r.u16le('selection.hash');
    const size = r.u8('selection.sizeofSelect');
    const select = r.bytesOf(SELECT_BYTES, 'selection.pcrSelect');
    r.u8('selection.padding');
    if (i >= count) continue;
    if (size > SELECT_BYTES) throw new ParseError('ERR_PCR_FILE_MALFORMED', `PCR file: sizeofSelect ${size} exceeds ${SELECT_BYTES}`);
    wanted.push({ bank: hashInfo(hash, 'PCR file bank'), pcrs: bitmapToPcrs(select.subarray(0, size)) });
  }
  const lists = r.u32le('digests.count');
  const total = wanted.reduce((n, w) => n + w.pcrs.length, 0);
  // TPM2_PCR_Read returns at most eight digests a call, sometimes fewer, so lists may be short.
  if (lists < Math.ceil(total / DIGESTS_PER_LIST) || lists > total) {
    throw new ParseError('ERR_PCR_FILE_MALFORMED', `PCR file: ${lists} digest lists for ${total} selected PCRs`);
  }
  const digests: Uint8Array[] = [];
  for (let l = 0; l < lists; l++) {
    const n = r.u32le('digests.list.count');
    if (n > DIGESTS_PER_LIST) throw new ParseError('ERR_PCR_FILE_MALFORMED', `PCR file: digest list of ${n} entries`);
    for (let d = 0; d < DIGESTS_PER_LIST; d++) {
      const size = r.u16le('digest.size');
      const buffer = r.bytesOf(DIGEST_SLOT, 'digest.buffer');
      if (d >= n) continue;
      if (size > DIGEST_SLOT) throw new ParseError('ERR_PCR_FILE_MALFORMED', `PCR file: digest size ${size}`);
      digests.push(buffer.subarray(0, size));
    }
  }
  r.end();
  if (digests.length !== total) {
    throw new ParseError('ERR_PCR_FILE_MALFORMED', `PCR file: ${digests.length} digests for ${total} selected PCRs`);
  }
  const out: Record<string, Record<number, Uint8Array>> = {};
  let next = 0;
  for (const { bank, pcrs } of wanted) {
    if (out[bank.name]) throw new ParseError('ERR_PCR_FILE_MALFORMED', `PCR file: bank ${bank.name} selected twice`);
    const values: Record<number, Uint8Array> = {};
    for (const index of pcrs) {
      const digest = digests[next++]!;
      if (digest.length !== bank.size) {
        throw new ParseError('ERR_PCR_FILE_MALFORMED', `PCR file: ${bank.name} PCR ${index} is ${digest.length} bytes`);
      }
      values[index] = digest;
    }
    out[bank.name] = values;
  }
  return out;
}

/**
 * Writes `values` in the same format, as `tpm2_quote -o` does: banks in the order given (for
 * a quote, the order of its signed selection, since tpm2_checkquote hashes the file's values in
 * file order), indexes ascending, eight digests per TPML_DIGEST.
 */
export function encodePcrFile(values: PcrValues): Uint8Array {
  const banks = Object.entries(values);
  if (banks.length > SELECTION_SLOTS) throw new ParseError('ERR_TPM_BAD_VALUE', `PCR file: ${banks.length} banks, at most ${SELECTION_SLOTS}`);
  const selection = Buffer.alloc(4 + SELECTION_SLOTS * SELECTION_SLOT_SIZE);
  selection.writeUInt32LE(banks.length, 0);
  const digests: Uint8Array[] = [];
  banks.forEach(([name, byIndex], slot) => {
    const hash = hashByName(name);
    const at = 4 + slot * SELECTION_SLOT_SIZE;
    selection.writeUInt16LE(hash.alg, at);
    selection.writeUInt8(SELECT_BYTES_WRITTEN, at + 2);
    for (const index of Object.keys(byIndex).map(Number).sort((a, b) => a - b)) {
      if (!Number.isInteger(index) || index < 0 || index >= SELECT_BYTES_WRITTEN * 8) {
        throw new ParseError('ERR_TPM_BAD_VALUE', `PCR file: ${name} PCR ${index} is not in 0..${SELECT_BYTES_WRITTEN * 8 - 1}`);
      }
      const digest = byIndex[index]!;
      if (digest.length !== hash.size) {
        throw new ParseError('ERR_TPM_SIZE_MISMATCH', `PCR file: ${name} PCR ${index} is ${digest.length} bytes, not ${hash.size}`);
      }
      selection[at + 3 + (index >> 3)]! |= 1 << (index & 7);
      digests.push(digest);
    }
  });
  const listCount = Math.ceil(digests.length / DIGESTS_PER_LIST);
  const lists = Buffer.alloc(4 + listCount * DIGEST_LIST_SIZE);
  lists.writeUInt32LE(listCount, 0);
  for (let l = 0; l < listCount; l++) {
    const chunk = digests.slice(l * DIGESTS_PER_LIST, (l + 1) * DIGESTS_PER_LIST);
    const at = 4 + l * DIGEST_LIST_SIZE;
    lists.writeUInt32LE(chunk.length, at);
    chunk.forEach((digest, d) => {
      const slot = at + 4 + d * (2 + DIGEST_SLOT);
      lists.writeUInt16LE(digest.length, slot);
      lists.set(digest, slot + 2);
    });
  }
  return new Uint8Array(Buffer.concat([selection, lists]));
}
