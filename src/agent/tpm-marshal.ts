import { AttestorError, ParseError } from '../errors.js';
import { hashByName, hashInfo, TPM_ALG } from '../tpm/constants.js';
import { readPcrSelection, type PcrBankSelection, type PcrValues } from '../tpm/pcr-selection.js';
import { TpmReader } from '../tpm/reader.js';
import { TpmWriter } from '../tpm/writer.js';

/*
 * The TPM structures the agent sends to its TPM (through native/) and the few replies only the
 * agent reads (capabilities, NV public areas, PCR digests). Pure: bytes in, bytes out.
 */

/** PCRs to read or quote, by bank name as tpm2-tools spells it: { sha256: [0, 1, 7] }. */
export type PcrSelectionSpec = { readonly [bank: string]: readonly number[] };

/** A signing scheme for TPM2_Quote/Certify/Sign; omitted = the key's own scheme (TPM_ALG_NULL). */
export interface SigScheme {
  readonly scheme: 'rsassa' | 'rsapss' | 'ecdsa';
  readonly hash: 'sha1' | 'sha256' | 'sha384' | 'sha512';
}

/** TPM_CAP (Part 2 §6.12), the capabilities the agent asks for. */
export const TPM_CAP = {
  HANDLES: 0x00000001,
  PCRS: 0x00000005,
  TPM_PROPERTIES: 0x00000006,
} as const;

/** TPM_PT (Part 2 §6.13), fixed properties the agent reports or needs. */
export const TPM_PT = {
  FAMILY_INDICATOR: 0x100,
  REVISION: 0x102,
  MANUFACTURER: 0x105,
  VENDOR_STRING_1: 0x106,
  VENDOR_STRING_2: 0x107,
  VENDOR_STRING_3: 0x108,
  VENDOR_STRING_4: 0x109,
  FIRMWARE_VERSION_1: 0x10b,
  FIRMWARE_VERSION_2: 0x10c,
  NV_BUFFER_MAX: 0x12c,
} as const;

/** The number of PCRs a TPMS_PCR_SELECTION bitmap covers (PC Client TPMs implement 24). */
const PCR_COUNT = 24;
/** TPML_DIGEST holds at most 8 digests (Part 2 §10.9.2); TPM2_PCR_Read returns at most that. */
export const DIGESTS_MAX = 8;
/** Handles or properties in one capability answer: bounded far above what any TPM returns. */
const LIST_MAX = 1024;

const SIG_ALG = { rsassa: TPM_ALG.RSASSA, rsapss: TPM_ALG.RSAPSS, ecdsa: TPM_ALG.ECDSA } as const;


/**
 * `spec` with tpm2-tools' bank names (the ones results are keyed by: "SHA256" becomes
 * "sha256") and each PCR once. A bank named twice ({ sha256: [0], SHA256: [1] }) is refused
 * with ERR_TSS_INPUT rather than guessed at; an unknown bank is ERR_TPM_UNSUPPORTED_ALG.
 */
export function canonicalPcrSelection(spec: PcrSelectionSpec): PcrSelectionSpec {
  const out: Record<string, number[]> = {};
  for (const [bank, pcrs] of Object.entries(spec)) {
    const { name } = hashByName(bank);
    if (out[name]) throw new AttestorError('ERR_TSS_INPUT', `PCR selection: the ${name} bank is named twice`);
    out[name] = [...new Set(pcrs)];
  }
  return out;
}

/** TPML_PCR_SELECTION (Part 2 §10.9.7): one TPMS_PCR_SELECTION per bank, 3-byte bitmaps. */
export function marshalPcrSelection(spec: PcrSelectionSpec): Uint8Array {
  const banks = Object.entries(canonicalPcrSelection(spec));
  const w = new TpmWriter().u32(banks.length);
  for (const [bank, pcrs] of banks) {
    const bitmap = new Uint8Array(PCR_COUNT / 8);
    for (const pcr of pcrs) {
      if (!Number.isInteger(pcr) || pcr < 0 || pcr >= PCR_COUNT) {
        throw new ParseError('ERR_TPM_BAD_VALUE', `PCR selection: ${bank} PCR ${pcr} is not in 0..${PCR_COUNT - 1}`);
      }
      bitmap[pcr >> 3]! |= 1 << (pcr & 7);
    }
    w.u16(hashByName(bank).alg).u8(bitmap.length).bytes(bitmap);
  }
  return w.finish();
}

/** TPML_DIGEST_VALUES (Part 2 §10.9.6) for TPM2_PCR_Extend: one TPMT_HA per bank. */
export function marshalDigestValues(digests: { readonly [bank: string]: Uint8Array }): Uint8Array {
  const entries = Object.entries(digests);
  const w = new TpmWriter().u32(entries.length);
  for (const [bank, digest] of entries) {
    const hash = hashByName(bank);
    if (digest.length !== hash.size) {
      throw new ParseError('ERR_TPM_SIZE_MISMATCH', `PCR extend: a ${bank} digest is ${hash.size} bytes, got ${digest.length}`);
    }
    w.u16(hash.alg).bytes(digest);
  }
  return w.finish();
}

/** TPMT_SIG_SCHEME (Part 2 §11.2.1.5); undefined = TPM_ALG_NULL, i.e. the key's scheme. */
export function marshalSigScheme(scheme?: SigScheme): Uint8Array {
  if (!scheme) return new TpmWriter().u16(TPM_ALG.NULL).finish();
  return new TpmWriter().u16(SIG_ALG[scheme.scheme]).u16(hashByName(scheme.hash).alg).finish();
}

/** TPML_DIGEST (Part 2 §10.9.2) as TPM2_PCR_Read returns it. */
export function parseDigestList(bytes: Uint8Array): Uint8Array[] {
  const r = new TpmReader(bytes, 'TPML_DIGEST');
  const count = r.u32('count');
  if (count > DIGESTS_MAX) throw new ParseError('ERR_TPM_BAD_VALUE', `TPML_DIGEST: ${count} digests, at most ${DIGESTS_MAX}`);
  const digests = Array.from({ length: count }, () => r.tpm2b('digest', 64));
  r.end();
  return digests;
}

/** Assigns the digests of one TPM2_PCR_Read to the (bank, index) pairs of the selection it reports. */
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

/** The selection still to read after `read`: TPM2_PCR_Read answers a prefix of what was asked. */
export function remainingSelection(asked: PcrSelectionSpec, read: PcrValues): PcrSelectionSpec {
  const rest: Record<string, number[]> = {};
  for (const [bank, pcrs] of Object.entries(asked)) {
    const left = pcrs.filter((p) => read[bank]?.[p] === undefined);
    if (left.length > 0) rest[bank] = left;
  }
  return rest;
}

/** TPMS_NV_PUBLIC (Part 2 §13.5) inside TPM2B_NV_PUBLIC. */
export interface NvPublic {
  readonly nvIndex: number;
  readonly nameAlg: number;
  readonly attributes: number;
  readonly authPolicy: Uint8Array;
  readonly dataSize: number;
}

export function parseNvPublic(bytes: Uint8Array): NvPublic {
  const outer = new TpmReader(bytes, 'TPM2B_NV_PUBLIC');
  const r = new TpmReader(outer.tpm2b('nvPublic'), 'TPMS_NV_PUBLIC');
  outer.end();
  const nvIndex = r.u32('nvIndex');
  const nameAlg = r.u16('nameAlg');
  hashInfo(nameAlg, 'nameAlg');
  const nv = { nvIndex, nameAlg, attributes: r.u32('attributes'), authPolicy: r.tpm2b('authPolicy', 64), dataSize: r.u16('dataSize') };
  r.end();
  return nv;
}

/** TPMS_CAPABILITY_DATA (Part 2 §10.10.2) for the capabilities in TPM_CAP. */
export type CapabilityData =
  | { readonly capability: typeof TPM_CAP.HANDLES; readonly handles: number[] }
  | { readonly capability: typeof TPM_CAP.PCRS; readonly banks: PcrBankSelection[] }
  | { readonly capability: typeof TPM_CAP.TPM_PROPERTIES; readonly properties: Map<number, number> };

export function parseCapabilityData(bytes: Uint8Array): CapabilityData {
  const r = new TpmReader(bytes, 'TPMS_CAPABILITY_DATA');
  const capability = r.u32('capability');
  let out: CapabilityData;
  if (capability === TPM_CAP.PCRS) {
    out = { capability, banks: readPcrSelection(r) };
  } else if (capability === TPM_CAP.HANDLES || capability === TPM_CAP.TPM_PROPERTIES) {
    const count = r.u32('count');
    if (count > LIST_MAX) throw new ParseError('ERR_TPM_BAD_VALUE', `TPMS_CAPABILITY_DATA: ${count} entries, at most ${LIST_MAX}`);
    if (capability === TPM_CAP.HANDLES) {
      out = { capability, handles: Array.from({ length: count }, () => r.u32('handle')) };
    } else {
      const properties = new Map<number, number>();
      for (let i = 0; i < count; i++) properties.set(r.u32('property'), r.u32('value'));
      out = { capability, properties };
    }
  } else {
    throw new ParseError('ERR_TPM_BAD_VALUE', `TPMS_CAPABILITY_DATA: capability 0x${capability.toString(16)} is not parsed here`);
  }
  r.end();
  return out;
}
