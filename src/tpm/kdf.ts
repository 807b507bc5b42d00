import { createHash, createHmac } from 'node:crypto';
import { hashInfo } from './constants.js';
import { TpmWriter } from './writer.js';

/**
 * KDFa (TPM 2.0 Part 1 §11.4.10.2): SP800-108 KDF in counter mode with HMAC_hashAlg.
 * Block i = HMAC(key, [i]32 || label || 0x00 || contextU || contextV || [bits]32), i = 1, 2, ...
 * The TPM derives the credential's AES key ("STORAGE") and HMAC key ("INTEGRITY") this way.
 */
export function kdfa(
  hashAlg: number,
  key: Uint8Array,
  label: string,
  contextU: Uint8Array,
  contextV: Uint8Array,
  bits: number,
): Uint8Array {
  const { name } = hashInfo(hashAlg);
  const fixed = Buffer.concat([labelBytes(label), contextU, contextV, new TpmWriter().u32(bits).finish()]);
  return counterMode(bits, (i) => createHmac(name, key).update(new TpmWriter().u32(i).finish()).update(fixed).digest());
}

/**
 * KDFe (TPM 2.0 Part 1 §11.4.10.3): SP800-56A concatenation KDF with hashAlg.
 * Block i = H([i]32 || Z || label || 0x00 || partyUInfo || partyVInfo), i = 1, 2, ...
 * Z is the x-coordinate of the ECDH shared point; for credentials partyUInfo is the ephemeral
 * key's x and partyVInfo the EK's x.
 */
export function kdfe(
  hashAlg: number,
  z: Uint8Array,
  label: string,
  partyUInfo: Uint8Array,
  partyVInfo: Uint8Array,
  bits: number,
): Uint8Array {
  const { name } = hashInfo(hashAlg);
  const other = Buffer.concat([labelBytes(label), partyUInfo, partyVInfo]);
  return counterMode(bits, (i) => createHash(name).update(new TpmWriter().u32(i).finish()).update(z).update(other).digest());
}

/**
 * Concatenates blocks 1, 2, ... until `bits` are produced; when bits is not a multiple of 8 the
 * excess high-order bits of the first octet are cleared (Part 1 §11.4.10.1).
 */
function counterMode(bits: number, block: (i: number) => Uint8Array): Uint8Array {
  if (!Number.isInteger(bits) || bits <= 0 || bits > 0xffff * 8) {
    throw new RangeError(`KDF output length ${bits} bits is out of range`);
  }
  const bytes = Math.ceil(bits / 8);
  const out = new Uint8Array(bytes);
  for (let i = 1, filled = 0; filled < bytes; i++) {
    const b = block(i);
    out.set(b.subarray(0, bytes - filled), filled);
    filled += b.length;
  }
  if (bits % 8 !== 0) out[0]! &= (1 << (bits % 8)) - 1;
  return out;
}

/** The label as the TPM uses it: the ASCII string with its terminating zero octet. */
function labelBytes(label: string): Uint8Array {
  if (label.length === 0 || !/^[\x01-\x7f]+$/.test(label)) {
    throw new RangeError('KDF label must be a non-empty ASCII string without NUL');
  }
  return Buffer.from(`${label}\0`, 'ascii');
}
