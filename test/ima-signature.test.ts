import { createECDH, createHash, createPublicKey, ECDH, generateKeyPairSync, sign, webcrypto, type KeyObject } from 'node:crypto';
import '../src/reflect-metadata.js';
import * as x509 from '@peculiar/x509';
import * as nist from '@noble/curves/nist.js';
import { describe, expect, it, vi } from 'vitest';
import { imaKeyId, parseImaSignature, verifyImaSignature } from '../src/eventlog/ima/digsig.js';
import { ECDSA_CACHE_SIZE, isSupportedEcKey, verifyEcdsaDigest } from '../src/eventlog/ima/ecdsa-digest.js';
import { imaSignatureHeader } from './helpers/ima.js';
import { codeOf } from './helpers/code-of.js';

const digestOf = (algo: string, data: Buffer) => createHash(algo).update(data).digest();
const rsa = generateKeyPairSync('rsa', { modulusLength: 2048 });
const otherRsa = generateKeyPairSync('rsa', { modulusLength: 2048 });
const p256 = generateKeyPairSync('ec', { namedCurve: 'P-256' });
const p384 = generateKeyPairSync('ec', { namedCurve: 'P-384' });
const otherP256 = generateKeyPairSync('ec', { namedCurve: 'P-256' });

/** An IMA v2 signature of `data` hashed with `algo`, as evmctl would write it. */
function imaSign(privateKey: KeyObject, publicKey: KeyObject, algo: string, data: Buffer) {
  return parseImaSignature(imaSignatureHeader(algo, imaKeyId(publicKey), sign(algo, data, privateKey)));
}

describe('IMA signature_v2_hdr', () => {
  it('parses type, version, hash algorithm, key id and signature', () => {
    const raw = imaSignatureHeader('sha256', '0a0b0c0d', Buffer.from('abcd', 'hex'));
    expect(raw.subarray(0, 9).toString('hex')).toBe('0302040a0b0c0d0002');
    const sig = parseImaSignature(raw);
    expect(sig.hashAlgo.name).toBe('sha256');
    expect(sig.keyId).toBe('0a0b0c0d');
    expect(Buffer.from(sig.signature).toString('hex')).toBe('abcd');
  });

  const code = (bytes: Buffer) => codeOf(() => parseImaSignature(bytes));
  const good = imaSignatureHeader('sha256', '0a0b0c0d', Buffer.from('abcd', 'hex'));

  it.each([
    ['a header cut short', () => good.subarray(0, 6), 'ERR_IMA_SIGNATURE_MALFORMED'],
    ['a signature shorter than sig_size', () => good.subarray(0, good.length - 1), 'ERR_IMA_SIGNATURE_MALFORMED'],
    ['bytes after the signature', () => Buffer.concat([good, Buffer.from([0])]), 'ERR_IMA_SIGNATURE_MALFORMED'],
    ['a verity (0x06) signature', () => Buffer.concat([Buffer.from([0x06]), good.subarray(1)]), 'ERR_IMA_SIGNATURE_UNSUPPORTED'],
    ['a v3 signature', () => Buffer.concat([Buffer.from([0x03, 0x03]), good.subarray(2)]), 'ERR_IMA_SIGNATURE_UNSUPPORTED'],
    ['an unknown hash_algo', () => Buffer.concat([good.subarray(0, 2), Buffer.from([99]), good.subarray(3)]), 'ERR_IMA_SIGNATURE_UNSUPPORTED'],
  ])('refuses %s', (_what, bytes, expected) => {
    expect(code(bytes())).toBe(expected);
  });

  // enum hash_algo: md4 0, md5 1, sha1 2, rmd160 3, sha224 7, rmd128 8, rmd256 9, rmd320 10, tgr128..192 14..16.
  it.each([0, 1, 2, 3, 7, 8, 9, 10, 14, 15, 16])('refuses a signature over a weak hash (hash_algo %i): ERR_IMA_SIGNATURE_WEAK_HASH', (algo) => {
    expect(code(Buffer.concat([good.subarray(0, 2), Buffer.from([algo]), good.subarray(3)]))).toBe('ERR_IMA_SIGNATURE_WEAK_HASH');
  });

  it.each([4, 5, 6, 20, 21, 22])('takes a signature over sha256 or stronger (hash_algo %i)', (algo) => {
    expect(parseImaSignature(Buffer.concat([good.subarray(0, 2), Buffer.from([algo]), good.subarray(3)])).hashAlgo.id).toBe(algo);
  });
});

describe('IMA key id', () => {
  it('is the SHA-1 of the subjectPublicKey bits as encoded, as evmctl computes it: a compressed EC point too', () => {
    const x = p256.publicKey.export({ format: 'jwk' });
    const uncompressed = Buffer.concat([Buffer.from([4]), Buffer.from(x.x!, 'base64url'), Buffer.from(x.y!, 'base64url')]);
    const compressed = ECDH.convertKey(uncompressed, 'prime256v1', undefined, undefined, 'compressed') as Buffer;
    const der = p256.publicKey.export({ type: 'spki', format: 'der' });
    const algorithm = der.subarray(2, 4 + der[3]!);
    const bits = Buffer.concat([Buffer.from([0x03, compressed.length + 1, 0]), compressed]);
    const spki = Buffer.concat([Buffer.from([0x30, algorithm.length + bits.length]), algorithm, bits]);
    const key = createPublicKey({ key: spki, format: 'der', type: 'spki' });
    expect(imaKeyId(key)).toBe(createHash('sha1').update(compressed).digest('hex').slice(-8));
    expect(imaKeyId(p256.publicKey)).toBe(createHash('sha1').update(uncompressed).digest('hex').slice(-8));
  });

  it('is the last 4 bytes of the RFC 5280 method-1 subject key identifier', async () => {
    for (const key of [rsa.publicKey, p256.publicKey, p384.publicKey]) {
      const alg = key.asymmetricKeyType === 'rsa' ? { name: 'RSASSA-PKCS1-v1_5', hash: 'SHA-256' } : { name: 'ECDSA', namedCurve: key.asymmetricKeyDetails?.namedCurve === 'prime256v1' ? 'P-256' : 'P-384' };
      const cryptoKey = await webcrypto.subtle.importKey('spki', key.export({ type: 'spki', format: 'der' }), alg, true, ['verify']);
      const skid = await x509.SubjectKeyIdentifierExtension.create(cryptoKey);
      expect(imaKeyId(key)).toBe(skid.keyId.slice(-8));
    }
  });
});

describe('IMA signature verification over the file digest', () => {
  const file = Buffer.from('#!/bin/sh\necho measured\n');

  it('RSA with a modulus that is not a whole number of bytes (2052 bits): the signature has ceil(bits / 8) bytes', () => {
    const odd = generateKeyPairSync('rsa', { modulusLength: 2052 });
    const sig = imaSign(odd.privateKey, odd.publicKey, 'sha256', file);
    expect(sig.signature.length).toBe(257);
    expect(verifyImaSignature(sig, digestOf('sha256', file), odd.publicKey)).toBe(true);
  });

  it('a digest that is not of the algorithm the signature names fails, ECDSA included (it would sign any bit string)', () => {
    const data = Buffer.from('file');
    const sig = imaSign(p384.privateKey, p384.publicKey, 'sha384', data);
    expect(verifyImaSignature(sig, digestOf('sha384', data), p384.publicKey)).toBe(true);
    const relabelled = parseImaSignature(imaSignatureHeader('sha256', sig.keyId, sig.signature));
    expect(verifyEcdsaDigest(p384.publicKey, digestOf('sha384', data), sig.signature)).toBe(true);
    expect(verifyImaSignature(relabelled, digestOf('sha384', data), p384.publicKey)).toBe(false);
    const rsaSig = imaSign(rsa.privateKey, rsa.publicKey, 'sha256', data);
    expect(verifyImaSignature(rsaSig, digestOf('sha256', data).subarray(0, 31), rsa.publicKey)).toBe(false);
  });

  it.each(['sha256', 'sha384', 'sha512'])('RSA PKCS#1 v1.5 with %s', (algo) => {
    const sig = imaSign(rsa.privateKey, rsa.publicKey, algo, file);
    expect(verifyImaSignature(sig, digestOf(algo, file), rsa.publicKey)).toBe(true);
    expect(verifyImaSignature(sig, digestOf(algo, Buffer.from('other')), rsa.publicKey)).toBe(false);
    expect(verifyImaSignature(sig, digestOf(algo, file), otherRsa.publicKey)).toBe(false);
  });

  it('RSA: a signature of the wrong length, garbage, or an algorithm without DigestInfo fails', () => {
    const sig = imaSign(rsa.privateKey, rsa.publicKey, 'sha256', file);
    const digest = digestOf('sha256', file);
    expect(verifyImaSignature({ ...sig, signature: sig.signature.subarray(1) }, digest, rsa.publicKey)).toBe(false);
    expect(verifyImaSignature({ ...sig, signature: Buffer.alloc(256, 0x42) }, digest, rsa.publicKey)).toBe(false);
    const sm3 = parseImaSignature(imaSignatureHeader('sm3', sig.keyId, sig.signature));
    expect(verifyImaSignature(sm3, digest, rsa.publicKey)).toBe(false);
  });

  it.each([
    ['P-256', 'sha256', p256],
    ['P-256', 'sha512', p256],
    ['P-384', 'sha384', p384],
    ['P-384', 'sha256', p384],
  ] as const)('ECDSA %s with %s, over many files', (_curve, algo, pair) => {
    for (let i = 0; i < 24; i++) {
      const data = Buffer.from(`file ${i}`);
      const sig = imaSign(pair.privateKey, pair.publicKey, algo, data);
      expect(verifyImaSignature(sig, digestOf(algo, data), pair.publicKey)).toBe(true);
      expect(verifyImaSignature(sig, digestOf(algo, Buffer.from(`file ${i + 1}`)), pair.publicKey)).toBe(false);
    }
    const sig = imaSign(pair.privateKey, pair.publicKey, algo, file);
    expect(verifyImaSignature(sig, digestOf(algo, file), otherP256.publicKey)).toBe(false);
  });

  it('ECDSA: malformed DER, out-of-range r or s, and non-EC-curve keys fail', () => {
    const digest = digestOf('sha256', file);
    const der = sign('sha256', file, p256.privateKey);
    expect(verifyEcdsaDigest(p256.publicKey, digest, der)).toBe(true);
    expect(verifyEcdsaDigest(p256.publicKey, digest, der.subarray(0, der.length - 1))).toBe(false);
    expect(verifyEcdsaDigest(p256.publicKey, digest, Buffer.concat([der, Buffer.from([0])]))).toBe(false);
    expect(verifyEcdsaDigest(p256.publicKey, digest, Buffer.from('3006020100020101', 'hex'))).toBe(false);
    expect(verifyEcdsaDigest(p256.publicKey, digest, Buffer.from('3006020101020180', 'hex'))).toBe(false);
    expect(verifyEcdsaDigest(p256.publicKey, digest, Buffer.from('3106020101020101', 'hex'))).toBe(false);
    expect(verifyEcdsaDigest(p256.publicKey, digest, Buffer.from('30830000060201010201', 'hex'))).toBe(false);
    expect(verifyEcdsaDigest(p256.publicKey, digest, Buffer.from('3081060201010201', 'hex'))).toBe(false);
    const n = P256_N;
    expect(verifyEcdsaDigest(p256.publicKey, digest, derSig(n, 1n))).toBe(false);
    const secp256k1 = generateKeyPairSync('ec', { namedCurve: 'secp256k1' });
    expect(isSupportedEcKey(secp256k1.publicKey)).toBe(false);
    expect(isSupportedEcKey(p384.publicKey)).toBe(true);
    expect(verifyEcdsaDigest(secp256k1.publicKey, digest, sign('sha256', file, secp256k1.privateKey))).toBe(false);
  });

  // Signatures built with the private key so that u1 = 0 or u2 = ±1: corner cases of the
  // verification equation that a digest verifier must still get right.
  it('ECDSA: the edge cases u1 = 0, u2 = 1 and u2 = n - 1 verify, and only for the right digest', () => {
    const n = P256_N;
    const d = BigInt(`0x${Buffer.from(p256.privateKey.export({ format: 'jwk' }).d as string, 'base64url').toString('hex')}`);
    const t = 0x1234567890abcdefn;
    const zero = Buffer.alloc(32);

    // u1 = 0: the digest is 0; R = k*G, s = k^-1 (0 + r d).
    const k = 0xfeedfacecafebeefn;
    const r0 = baseX(k) % n;
    expect(verifyEcdsaDigest(p256.publicKey, zero, derSig(r0, mod(inverse(k, n) * r0 * d, n)))).toBe(true);

    // u2 = 1 (s = r): R = t*G + Q = (t + d)*G, digest e = t*r.
    const r1 = baseX(mod(t + d, n)) % n;
    const e1 = toDigest(mod(t * r1, n));
    expect(verifyEcdsaDigest(p256.publicKey, e1, derSig(r1, r1))).toBe(true);
    expect(verifyEcdsaDigest(p256.publicKey, toDigest(mod(t * r1 + 1n, n)), derSig(r1, r1))).toBe(false);

    // u2 = n - 1 (s = -r): R = t*G - Q = (t - d)*G, digest e = -t*r.
    const r2 = baseX(mod(t - d, n)) % n;
    const e2 = toDigest(mod(-t * r2, n));
    expect(verifyEcdsaDigest(p256.publicKey, e2, derSig(r2, n - r2))).toBe(true);
    expect(verifyEcdsaDigest(p256.publicKey, toDigest(mod(-t * r2 + 1n, n)), derSig(r2, n - r2))).toBe(false);
  });
});

const P256_N = 0xffffffff00000000ffffffffffffffffbce6faada7179e84f3b9cac2fc632551n;

function mod(a: bigint, m: bigint): bigint {
  return ((a % m) + m) % m;
}

function inverse(a: bigint, m: bigint): bigint {
  // Fermat: m is prime.
  let result = 1n;
  let base = mod(a, m);
  for (let e = m - 2n; e > 0n; e >>= 1n) {
    if (e & 1n) result = (result * base) % m;
    base = (base * base) % m;
  }
  return result;
}

function baseX(k: bigint): bigint {
  const ecdh = createECDH('prime256v1');
  ecdh.setPrivateKey(Buffer.from(k.toString(16).padStart(64, '0'), 'hex'));
  return BigInt(`0x${ecdh.getPublicKey().subarray(1, 33).toString('hex')}`);
}

function toDigest(e: bigint): Buffer {
  return Buffer.from(e.toString(16).padStart(64, '0'), 'hex');
}

function derInteger(v: bigint): Buffer {
  let hex = v.toString(16);
  if (hex.length % 2) hex = `0${hex}`;
  let bytes = Buffer.from(hex, 'hex');
  if ((bytes[0] as number) & 0x80) bytes = Buffer.concat([Buffer.from([0]), bytes]);
  return Buffer.concat([Buffer.from([0x02, bytes.length]), bytes]);
}

function derSig(r: bigint, s: bigint): Buffer {
  const body = Buffer.concat([derInteger(r), derInteger(s)]);
  return Buffer.concat([Buffer.from([0x30, body.length]), body]);
}

describe('ECDSA results are kept, within a bound (verifying a digest with @noble/curves takes milliseconds)', () => {
  const question = (i: number) => digestOf('sha256', Buffer.from(`cache test ${i}`));

  it('the same key, digest and signature are verified once, valid or not; any other question is its own', () => {
    const verify = vi.spyOn(nist.p256, 'verify');
    try {
      const data = Buffer.from('a file verified on every appraisal');
      const der = sign('sha256', data, p256.privateKey);
      const digest = digestOf('sha256', data);
      expect([verifyEcdsaDigest(p256.publicKey, digest, der), verifyEcdsaDigest(p256.publicKey, digest, der)]).toEqual([true, true]);
      expect(verify).toHaveBeenCalledTimes(1);
      const other = digestOf('sha256', Buffer.from('another file'));
      expect([verifyEcdsaDigest(p256.publicKey, other, der), verifyEcdsaDigest(p256.publicKey, other, der)]).toEqual([false, false]);
      expect(verify).toHaveBeenCalledTimes(2);
      expect(verifyEcdsaDigest(otherP256.publicKey, digest, der)).toBe(false);
      expect(verifyEcdsaDigest(p256.publicKey, digest, Buffer.concat([der, Buffer.from([0])]))).toBe(false);
      expect(verify).toHaveBeenCalledTimes(4);
    } finally {
      verify.mockRestore();
    }
  });

  it(`keeps at most ${ECDSA_CACHE_SIZE} results, the least recently used going first`, () => {
    const verify = vi.spyOn(nist.p256, 'verify').mockReturnValue(true);
    const der = sign('sha256', Buffer.from('x'), p256.privateKey);
    const ask = (i: number) => verifyEcdsaDigest(p256.publicKey, question(i), der);
    try {
      for (let i = 0; i < ECDSA_CACHE_SIZE; i++) ask(i);
      expect(verify).toHaveBeenCalledTimes(ECDSA_CACHE_SIZE);
      ask(0); // used again: now the most recent
      ask(ECDSA_CACHE_SIZE); // one more: question 1, the least recently used, goes
      expect(verify).toHaveBeenCalledTimes(ECDSA_CACHE_SIZE + 1);
      ask(0);
      ask(2);
      expect(verify).toHaveBeenCalledTimes(ECDSA_CACHE_SIZE + 1);
      ask(1);
      expect(verify).toHaveBeenCalledTimes(ECDSA_CACHE_SIZE + 2);
    } finally {
      verify.mockRestore();
    }
  });
});
