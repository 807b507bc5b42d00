import type { webcrypto } from 'node:crypto';
import { Crypto } from '@peculiar/webcrypto';
import { AttestorError } from '../errors.js';
import type { Signer } from './signer.js';

/**
 * A WebCrypto provider for @peculiar/x509 whose `subtle.sign` signs with a Signer: with
 * `signingKey`, ECDSA P-256 SHA-256 goes to the Signer (whose raw r||s is what WebCrypto
 * returns); every other call and key goes to @peculiar/webcrypto. The private key never has
 * to be a WebCrypto key, so a PKCS#11 key serves as well as a file key.
 */
export interface SignerCrypto {
  readonly crypto: webcrypto.Crypto;
  /** Stands for the Signer's private key; pass it as @peculiar/x509's signingKey. */
  readonly signingKey: webcrypto.CryptoKey;
  /** The algorithm to pass as @peculiar/x509's signingAlgorithm. */
  readonly signingAlgorithm: webcrypto.EcdsaParams;
}

export function signerCrypto(signer: Signer): SignerCrypto {
  const provider = new Crypto();
  const base = provider.subtle;
  const signingKey: webcrypto.CryptoKey = {
    algorithm: { name: 'ECDSA', namedCurve: 'P-256' } as webcrypto.EcKeyAlgorithm,
    type: 'private',
    extractable: false,
    usages: ['sign'],
  };
  const sign = async (
    algorithm: webcrypto.AlgorithmIdentifier | webcrypto.EcdsaParams,
    key: webcrypto.CryptoKey,
    data: webcrypto.BufferSource,
  ): Promise<ArrayBuffer> => {
    if (key !== signingKey) return base.sign(algorithm, key, data);
    const name = typeof algorithm === 'string' ? algorithm : algorithm.name;
    const hash = typeof algorithm === 'string' || !('hash' in algorithm) ? undefined : algorithm.hash;
    const hashName = typeof hash === 'string' ? hash : hash?.name;
    if (name.toUpperCase() !== 'ECDSA' || hashName?.toUpperCase() !== 'SHA-256') {
      throw new AttestorError('ERR_ISSUANCE', `the issuing key signs ECDSA with SHA-256, not ${name} with ${hashName ?? 'no hash'}`);
    }
    const bytes = ArrayBuffer.isView(data) ? new Uint8Array(data.buffer, data.byteOffset, data.byteLength) : new Uint8Array(data);
    const signature = await signer.sign(bytes);
    return signature.slice().buffer as ArrayBuffer;
  };
  // The provider's own methods find their state through `this`, which the prototype chain keeps.
  const subtle = Object.create(base, { sign: { value: sign } }) as webcrypto.SubtleCrypto;
  const crypto = {
    subtle,
    getRandomValues: provider.getRandomValues.bind(provider),
    randomUUID: provider.randomUUID.bind(provider),
  } as webcrypto.Crypto;
  return { crypto, signingKey, signingAlgorithm: { name: 'ECDSA', hash: 'SHA-256' } };
}
