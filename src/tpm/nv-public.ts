import { hashInfo } from './constants.js';
import { TpmReader } from './reader.js';

/** TPMS_NV_PUBLIC (Part 2 §13.5): the public area of an NV index, as TPM2_NV_ReadPublic returns it. */
export interface NvPublic {
  readonly nvIndex: number;
  readonly nameAlg: number;
  /** TPMA_NV (Part 2 §13.4). */
  readonly attributes: number;
  readonly authPolicy: Uint8Array;
  readonly dataSize: number;
}

/** TPM2B_NV_PUBLIC (Part 2 §13.6): UINT16 size, then exactly one TPMS_NV_PUBLIC of that size. */
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
