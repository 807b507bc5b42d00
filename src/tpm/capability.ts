import { ParseError } from '../errors.js';
import { readPcrSelection, type PcrBankSelection } from './pcr-selection.js';
import { TpmReader } from './reader.js';

/** TPM_CAP (Part 2 §6.12): the capabilities Attestor asks a TPM for. */
export const TPM_CAP = {
  HANDLES: 0x00000001,
  PCRS: 0x00000005,
  TPM_PROPERTIES: 0x00000006,
} as const;

/** TPM_PT (Part 2 §6.13): the fixed properties Attestor reports or needs. */
export const TPM_PT = {
  FAMILY_INDICATOR: 0x100,
  LEVEL: 0x101,
  REVISION: 0x102,
  DAY_OF_YEAR: 0x103,
  YEAR: 0x104,
  MANUFACTURER: 0x105,
  VENDOR_STRING_1: 0x106,
  VENDOR_STRING_2: 0x107,
  VENDOR_STRING_3: 0x108,
  VENDOR_STRING_4: 0x109,
  FIRMWARE_VERSION_1: 0x10b,
  FIRMWARE_VERSION_2: 0x10c,
  NV_BUFFER_MAX: 0x12c,
} as const;

/** Handles or properties in one capability answer: bounded far above what any TPM returns. */
const LIST_MAX = 1024;

/** TPMS_CAPABILITY_DATA (Part 2 §10.10.2) for the capabilities in TPM_CAP. */
export type CapabilityData =
  | { readonly capability: typeof TPM_CAP.HANDLES; readonly handles: number[] }
  | { readonly capability: typeof TPM_CAP.PCRS; readonly banks: PcrBankSelection[] }
  | { readonly capability: typeof TPM_CAP.TPM_PROPERTIES; readonly properties: Map<number, number> };

/**
 * What TPM2_GetCapability (Part 3 §30.2) returns: behind the capability selector, a list
 * (Part 2 §10.9) of handles, PCR selections or tagged properties.
 */
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
