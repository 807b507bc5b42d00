import { createECDH, createPublicKey, generateKeyPairSync, sign, verify, type KeyObject } from 'node:crypto';
import '../src/reflect-metadata.js';
import { ECDSASigValue } from '@peculiar/asn1-ecc';
import { AsnConvert } from '@peculiar/asn1-schema';
import * as x509 from '@peculiar/x509';
import * as asn1js from 'asn1js';
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { AttestorError } from '../src/errors.js';
import { TAG, der, derTime, derUnsignedInteger, readChildren, readDerTime, readTlv } from '../src/issuer/der.js';
import { ecdsaSignatureDer } from '../src/issuer/ecdsa-signature.js';
import { createSerialNumbers } from '../src/issuer/serial-number.js';
import { keyIdentifier, readSubjectKey } from '../src/issuer/subject-key.js';
import { codeOf } from './helpers/code-of.js';

const spkiOf = (key: KeyObject) => key.export({ type: 'spki', format: 'der' });
const p256 = () => generateKeyPairSync('ec', { namedCurve: 'P-256' });
const keys = [p256(), p256(), p256()];

/** Runs `f`; anything it throws must be an ERR_ISSUANCE AttestorError. */
function issuanceErrorOnly(f: () => unknown): void {
  try {
    f();
  } catch (e) {
    if (!(e instanceof AttestorError) || e.code !== 'ERR_ISSUANCE') throw e;
  }
}

describe('DER writer and reader', () => {
  it('encodes lengths as asn1js does (X.690 §8.1.3), at every boundary', () => {
    const lengths = fc.oneof(fc.integer({ min: 0, max: 300 }), fc.constantFrom(127, 128, 255, 256, 65535, 65536, 70000));
    fc.assert(
      fc.property(lengths, fc.integer({ min: 0, max: 255 }), (n, fill) => {
        const content = Buffer.alloc(n, fill);
        const reference = Buffer.from(new asn1js.OctetString({ valueHex: content }).toBER());
        const ours = der(TAG.OCTET_STRING, content);
        expect(ours.equals(reference)).toBe(true);
        const tlv = readTlv(ours, 0, ours.length, 'test');
        expect([tlv.tag, tlv.end - tlv.valueStart, tlv.end]).toEqual([TAG.OCTET_STRING, n, ours.length]);
      }),
    );
  });

  it('writes non-negative INTEGERs minimal, with a leading 0 when the top bit is set', () => {
    fc.assert(
      fc.property(fc.uint8Array({ minLength: 0, maxLength: 40 }), (magnitude) => {
        const encoded = derUnsignedInteger(magnitude);
        const value = BigInt(`0x${Buffer.from(magnitude).toString('hex') || '0'}`);
        const parsed = asn1js.fromBER(encoded);
        expect(parsed.offset).toBe(encoded.length);
        const integer = parsed.result as asn1js.Integer;
        expect(integer.toBigInt()).toBe(value);
        // Minimal: no leading 00 unless the next byte's top bit needs it; never a leading FF.
        const body = encoded.subarray(2);
        if (body.length > 1) expect(body[0] === 0 ? body[1]! >= 0x80 : body[0]! < 0x80).toBe(true);
      }),
    );
  });

  it('reads back the times it writes, UTCTime to 2049 and GeneralizedTime from 2050 (RFC 5280 §4.1.2.5)', () => {
    const range = { min: new Date('1950-01-01T00:00:00Z'), max: new Date('9999-12-31T23:59:59Z'), noInvalidDate: true };
    fc.assert(
      fc.property(fc.date(range), (date) => {
        const encoded = derTime(date);
        const tlv = readTlv(encoded, 0, encoded.length, 'time');
        expect(tlv.tag).toBe(date.getUTCFullYear() < 2050 ? TAG.UTC_TIME : TAG.GENERALIZED_TIME);
        expect(readDerTime(encoded, tlv, 'time').getTime()).toBe(Math.floor(date.getTime() / 1000) * 1000);
      }),
    );
    expect(derTime(new Date('2049-12-31T23:59:59.999Z')).toString('latin1', 2)).toBe('491231235959Z');
    expect(derTime(new Date('2050-01-01T00:00:00Z')).toString('latin1', 2)).toBe('20500101000000Z');
    expect(codeOf(() => derTime(new Date('1949-12-31T23:59:59Z')))).toBe('ERR_ISSUANCE');
    expect(codeOf(() => derTime(new Date(Number.NaN)))).toBe('ERR_ISSUANCE');
  });

  it('refuses lengths that are not minimal, indefinite, or past their container', () => {
    const cases = {
      'long form for a short length': '04810100',
      'leading zero length byte': '0482000100',
      indefinite: '0480',
      'runs past the end': '040501',
      'multi-byte tag': '1f0100',
      truncated: '04',
    };
    for (const [what, bytes] of Object.entries(cases)) {
      const b = Buffer.from(bytes, 'hex');
      expect(codeOf(() => readTlv(b, 0, b.length, what)), what).toBe('ERR_ISSUANCE');
    }
  });

  it('never throws anything but ERR_ISSUANCE on arbitrary bytes', () => {
    fc.assert(
      fc.property(fc.uint8Array({ maxLength: 64 }), (bytes) => {
        issuanceErrorOnly(() => {
          const tlv = readTlv(bytes, 0, bytes.length, 'fuzz');
          if (tlv.tag & 0x20) readChildren(bytes, tlv, 'fuzz');
          if (tlv.tag === TAG.UTC_TIME || tlv.tag === TAG.GENERALIZED_TIME) readDerTime(bytes, tlv, 'fuzz');
        });
        issuanceErrorOnly(() => readSubjectKey(bytes));
      }),
      { numRuns: 2000 },
    );
  });
});

describe('ECDSA r||s to DER', () => {
  it('equals node:crypto own DER signature for the same (r, s)', () => {
    fc.assert(
      fc.property(fc.constantFrom(...keys), fc.uint8Array({ maxLength: 64 }), ({ privateKey }, message) => {
        const nodeDer = sign('sha256', message, { key: privateKey, dsaEncoding: 'der' });
        // An independent reading of node's DER (asn1-schema) gives r and s; ours must re-encode them byte for byte.
        const { r, s } = AsnConvert.parse(nodeDer, ECDSASigValue);
        const fixed = (v: ArrayBuffer) => Buffer.concat([Buffer.alloc(32), Buffer.from(v)]).subarray(-32);
        expect(ecdsaSignatureDer(Buffer.concat([fixed(r), fixed(s)])).equals(nodeDer)).toBe(true);
      }),
      { numRuns: 500 },
    );
  });

  it('turns node:crypto P1363 signatures into DER that OpenSSL accepts (it re-encodes and compares, so only canonical DER verifies)', () => {
    fc.assert(
      fc.property(fc.constantFrom(...keys), fc.uint8Array({ maxLength: 64 }), ({ privateKey, publicKey }, message) => {
        const p1363 = sign('sha256', message, { key: privateKey, dsaEncoding: 'ieee-p1363' });
        expect(verify('sha256', message, { key: publicKey, dsaEncoding: 'der' }, ecdsaSignatureDer(p1363))).toBe(true);
      }),
      { numRuns: 500 },
    );
  });

  it('encodes any r and s, leading zeros and top bits included, as the minimal INTEGERs of their values', () => {
    const half = fc.oneof(
      fc.uint8Array({ minLength: 32, maxLength: 32 }),
      fc.tuple(fc.integer({ min: 1, max: 32 }), fc.uint8Array({ minLength: 32, maxLength: 32 })).map(([zeros, b]) => b.fill(0, 0, zeros)),
      fc.uint8Array({ minLength: 32, maxLength: 32 }).map((b) => ((b[0] = b[0]! | 0x80), b)),
    );
    fc.assert(
      fc.property(half, half, (r, s) => {
        const encoded = ecdsaSignatureDer(Buffer.concat([r, s]));
        const parsed = asn1js.fromBER(encoded);
        expect(parsed.offset).toBe(encoded.length);
        const [ri, si] = (parsed.result as asn1js.Sequence).valueBlock.value as asn1js.Integer[];
        expect(ri!.toBigInt()).toBe(BigInt(`0x${Buffer.from(r).toString('hex')}`));
        expect(si!.toBigInt()).toBe(BigInt(`0x${Buffer.from(s).toString('hex')}`));
        // asn1-schema re-serialises minimal INTEGERs: equal bytes mean ours are minimal too.
        expect(Buffer.from(AsnConvert.serialize(AsnConvert.parse(encoded, ECDSASigValue))).equals(encoded)).toBe(true);
      }),
    );
    expect(codeOf(() => ecdsaSignatureDer(new Uint8Array(63)))).toBe('ERR_ISSUANCE');
  });
});

describe('subject keys', () => {
  it('takes a P-256 key as it is, with the RFC 5280 method-1 key identifier @peculiar/x509 computes', async () => {
    const spki = spkiOf(keys[0]!.publicKey);
    const key = readSubjectKey(spki);
    expect(key.kind).toBe('ec');
    expect(Buffer.from(key.spki).equals(spki)).toBe(true);
    const reference = await x509.SubjectKeyIdentifierExtension.create(spki);
    expect(Buffer.from(key.keyId).toString('hex')).toBe(reference.keyId);
    expect(Buffer.from(keyIdentifier(spki)).equals(key.keyId)).toBe(true);
  });

  it('takes RSA 2048 and 3072 keys, re-encoded in canonical DER, with their key identifier', async () => {
    for (const modulusLength of [2048, 3072]) {
      const { publicKey } = generateKeyPairSync('rsa', { modulusLength });
      const spki = spkiOf(publicKey);
      const key = readSubjectKey(spki);
      expect(key.kind).toBe('rsa');
      expect(Buffer.from(key.spki).equals(spki)).toBe(true);
      expect(Buffer.from(key.keyId).toString('hex')).toBe((await x509.SubjectKeyIdentifierExtension.create(spki)).keyId);
    }
  });

  it('refuses other keys and malformed encodings with ERR_ISSUANCE', () => {
    const good = spkiOf(keys[0]!.publicKey);
    const offCurve = Buffer.from(good);
    offCurve[offCurve.length - 1]! ^= 1;
    const ecdh = createECDH('prime256v1');
    ecdh.generateKeys();
    const compressedPoint = ecdh.getPublicKey(undefined, 'compressed');
    const compressed = Buffer.concat([Buffer.from('3039301306072a8648ce3d020106082a8648ce3d030107032200', 'hex'), compressedPoint]);
    expect(createPublicKey({ key: compressed, format: 'der', type: 'spki' }).asymmetricKeyType).toBe('ec');
    const rsa1024 = spkiOf(generateKeyPairSync('rsa', { modulusLength: 1024 }).publicKey);
    const { n } = generateKeyPairSync('rsa', { modulusLength: 2048 }).publicKey.export({ format: 'jwk' });
    const rsaEven = spkiOf(createPublicKey({ key: { kty: 'RSA', n: n!, e: 'AQAC' }, format: 'jwk' }));
    const cases: Record<string, Uint8Array> = {
      'P-384': spkiOf(generateKeyPairSync('ec', { namedCurve: 'P-384' }).publicKey),
      Ed25519: spkiOf(generateKeyPairSync('ed25519').publicKey),
      'P-256 point off the curve': offCurve,
      'P-256 compressed point': compressed,
      'RSA 1024': rsa1024,
      'RSA even exponent': rsaEven,
      'trailing byte': Buffer.concat([good, Buffer.of(0)]),
      truncated: good.subarray(0, 60),
      empty: new Uint8Array(0),
    };
    for (const [what, spki] of Object.entries(cases)) expect(codeOf(() => readSubjectKey(spki)), what).toBe('ERR_ISSUANCE');
  });
});

describe('serial numbers', () => {
  it('are 16 bytes, positive and minimal as DER INTEGERs, and do not repeat', () => {
    const next = createSerialNumbers();
    const seen = new Set<string>();
    for (let i = 0; i < 5000; i++) {
      const serial = next();
      expect(serial.length).toBe(16);
      expect(serial[0]! > 0 && serial[0]! < 0x80).toBe(true);
      seen.add(serial.toString('hex'));
    }
    expect(seen.size).toBe(5000);
  });
});
