import { createHash } from 'node:crypto';
import { hashInfo } from './constants.js';
import type { TpmPublic } from './public.js';

/**
 * The Name of an object (Part 1 §16): nameAlg (UINT16) || H_nameAlg(marshalled TPMT_PUBLIC).
 * It binds a handle to the exact public area, so MakeCredential and Certify use it.
 */
export function objectName(pub: TpmPublic): Uint8Array {
  const h = hashInfo(pub.nameAlg, 'nameAlg');
  const out = new Uint8Array(2 + h.size);
  out[0] = pub.nameAlg >> 8;
  out[1] = pub.nameAlg & 0xff;
  out.set(createHash(h.name).update(pub.bytes).digest(), 2);
  return out;
}
