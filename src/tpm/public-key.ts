import { createPublicKey, type KeyObject } from 'node:crypto';
import { ParseError } from '../errors.js';
import { curveInfo } from './constants.js';
import type { TpmPublic } from './public.js';

// Keyed by the parsed object: a verifier holds one parsed AK per agent, so repeated
// verifications skip the JWK import.
const cache = new WeakMap<TpmPublic, KeyObject>();

/** The node:crypto public key of an RSA or ECC TPMT_PUBLIC, validated (ECC point on curve). */
export function publicKeyOf(pub: TpmPublic): KeyObject {
  let key = cache.get(pub);
  if (!key) {
    key = importKey(pub);
    cache.set(pub, key);
  }
  return key;
}

function importKey(pub: TpmPublic): KeyObject {
  try {
    if (pub.type === 'rsa') {
      if (pub.modulus.length === 0) throw new Error('empty modulus');
      return createPublicKey({
        format: 'jwk',
        key: { kty: 'RSA', n: b64u(pub.modulus), e: b64u(exponentBytes(pub.exponent)) },
      });
    }
    const { nodeName, size } = curveInfo(pub.curve);
    return createPublicKey({
      format: 'jwk',
      key: { kty: 'EC', crv: nodeName, x: b64u(leftPad(pub.x, size)), y: b64u(leftPad(pub.y, size)) },
    });
  } catch (e) {
    if (e instanceof ParseError) throw e;
    throw new ParseError('ERR_TPM_BAD_VALUE', `TPMT_PUBLIC: not a usable ${pub.type.toUpperCase()} public key`, { cause: e });
  }
}

/** Big-endian, minimal length (the TPM's exponent is a UINT32 in network order). */
function exponentBytes(e: number): Uint8Array {
  const out = [];
  for (let v = e; v > 0; v = Math.floor(v / 256)) out.unshift(v & 0xff);
  return Uint8Array.from(out);
}

export function leftPad(b: Uint8Array, size: number): Uint8Array {
  if (b.length >= size) return b;
  const out = new Uint8Array(size);
  out.set(b, size - b.length);
  return out;
}

function b64u(b: Uint8Array): string {
  return Buffer.from(b.buffer, b.byteOffset, b.byteLength).toString('base64url');
}
