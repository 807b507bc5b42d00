import { createECDH, createHash, generateKeyPairSync, sign, webcrypto, type KeyObject } from 'node:crypto';
import '../src/reflect-metadata.js';
import * as x509 from '@peculiar/x509';
import { describe, expect, it } from 'vitest';
import { imaKeyId, parseImaSignature, verifyImaSignature } from '../src/eventlog/ima/digsig.js';
import { isSupportedEcKey, verifyEcdsaDigest } from '../src/eventlog/ima/ecdsa-digest.js';
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
});

describe('IMA key id', () => {
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

  it.each(['sha1', 'sha224', 'sha256', 'sha384', 'sha512'])('RSA PKCS#1 v1.5 with %s', (algo) => {
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
