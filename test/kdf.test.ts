import { createHash, createHmac } from 'node:crypto';
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { AttestorError } from '../src/errors.js';
import { TPM_ALG } from '../src/tpm/constants.js';
import { kdfa, kdfe } from '../src/tpm/kdf.js';
import { hex as toHex } from '../src/bytes.js';

const hex = (s: string) => Buffer.from(s, 'hex');
const HASHES = [
  { alg: TPM_ALG.SHA1, name: 'sha1' },
  { alg: TPM_ALG.SHA256, name: 'sha256' },
  { alg: TPM_ALG.SHA384, name: 'sha384' },
  { alg: TPM_ALG.SHA512, name: 'sha512' },
] as const;

/**
 * A second, deliberately different formulation: build every block input in one buffer,
 * concatenate enough blocks, read the stream as one big integer and keep its low `bits`
 * bits of the first ceil(bits/8) octets (the masking of Part 1 §11.4.10.1 expressed arithmetically).
 */
function reference(blockOf: (counter: Buffer) => Buffer, bits: number): string {
  const bytes = Math.ceil(bits / 8);
  let stream = Buffer.alloc(0);
  for (let i = 1; stream.length < bytes; i++) {
    const counter = Buffer.alloc(4);
    counter.writeUInt32BE(i);
    stream = Buffer.concat([stream, blockOf(counter)]);
  }
  const value = BigInt(`0x${stream.subarray(0, bytes).toString('hex')}`) & ((1n << BigInt(bits)) - 1n);
  return value.toString(16).padStart(bytes * 2, '0');
}

function referenceKdfa(h: string, key: Buffer, label: string, u: Buffer, v: Buffer, bits: number): string {
  const size = Buffer.alloc(4);
  size.writeUInt32BE(bits);
  return reference(
    (c) => createHmac(h, key).update(Buffer.concat([c, Buffer.from(label), Buffer.of(0), u, v, size])).digest(),
    bits,
  );
}

function referenceKdfe(h: string, z: Buffer, label: string, u: Buffer, v: Buffer, bits: number): string {
  return reference((c) => createHash(h).update(Buffer.concat([c, z, Buffer.from(label), Buffer.of(0), u, v])).digest(), bits);
}

const label = fc.stringMatching(/^[A-Z]{1,12}$/);
const bytes = fc.uint8Array({ maxLength: 70 }).map((b) => Buffer.from(b));
const bits = fc.integer({ min: 1, max: 1100 });
const hash = fc.constantFrom(...HASHES);

describe('KDFa', () => {
  // The KDFa self-test vector of the TCG reference implementation (libtpms KdfTestData.h):
  // key, label "KDFSELFTESTLABEL", contexts and the 160-bit output for each hash.
  const key = hex('271fa08bbdc5060ec3dfa928ff9b73123a12da0c');
  const u = hex('ce244f395dca7391');
  const v = hex('da504031ddf12e83');
  it.each([
    [TPM_ALG.SHA1, '55b5a7184aa07423c47dae766c26a2377d7cf851'],
    [TPM_ALG.SHA256, 'bb0259e1c8ba607e6a2cd704b69a902e9ade84c4'],
    [TPM_ALG.SHA384, '1dce70c9113eb2dba47bd9cfc72bf46f45b09312'],
    [TPM_ALG.SHA512, '8be2c1b85b78569b9fa759f5857c56d684810fd3'],
  ])('matches the reference implementation self-test vector (TPM_ALG %i)', (alg, expected) => {
    expect(toHex(kdfa(alg, key, 'KDFSELFTESTLABEL', u, v, 160))).toBe(expected);
  });

  it('binds the output length into every block', () => {
    // Unlike KDFe, [bits] is hashed: 256 bits is not the first half of 512 bits.
    const a = kdfa(TPM_ALG.SHA256, key, 'STORAGE', u, v, 256);
    const b = kdfa(TPM_ALG.SHA256, key, 'STORAGE', u, v, 512);
    expect(toHex(b.subarray(0, 32))).not.toBe(toHex(a));
  });
});

describe('KDFe', () => {
  // Published vectors (github.com/chrisfenner/tpm-test-vectors, vectors/kdfe.json, generated
  // with go-tpm and validated against a TPM simulator): empty Z/partyU/partyV, odd bit counts.
  it.each([
    ['00_SHA1_111', TPM_ALG.SHA1, 'beefefba63c91e8eb318785c374600', 'ATH', 'ff8318b65e46b3', '32aa861b336c991a52b15c0c72889895e8cad4ff', 111, '123decb8050fca8d6585f61946e2'],
    ['04_SHA1_253', TPM_ALG.SHA1, '', 'STORAGE', '', 'c0227aff', 253, '0f10d821af67e1ec776b390f3b4572bb433efd2b94fa7842d879d24d825ed2f9'],
    ['31_SHA256_13', TPM_ALG.SHA256, '739245447ead0deea5f834f06e043159c6ff', 'IDENTITY', 'ad503e36c2314ec9afa2f4047bf19ce7fbc6fe2def32c58459c0fc828c00', 'ba6dd80b788034161743c95e8ef7a9486fbd69d3ff', 13, '0956'],
    ['37_SHA256_431', TPM_ALG.SHA256, 'e89fc5304cf46c1cf7d1f5de5d3d1ec7eddc80b0386700', 'SECRET', 'e602bc959fd97af0405649e0c80e02e9dd64e9d79e698292b043c79dfa9f9261', '', 431, '3a8e893b8b76cdddbf87845b2567fa7152577829f6a55b73cb82d4a1f0342a051d6e50e20ec2f96bc4de38d7d0d79a9caf99e1d574b9'],
    ['60_SHA384_277', TPM_ALG.SHA384, 'ff579d6435f18a86383d9cb1dd06ca2ff965573938d14c', 'STORAGE', '9379d63712039945f4d468f909ef', '690bf9eac27256312e21e27d26f9df46', 277, '18ced4710410a646d3e577ba4353078ba0bbfa8ef2c3df28faa70abc135378de904023'],
    ['73_SHA384_90', TPM_ALG.SHA384, '00b6b88b4b8a198920e5dba65f080bce6e4498c61afe52b8b4701d', 'SECRET', 'ffd3d1f7c9bf3a886e0c97cb2f7781', '18a672937491cad05fb293ea2532a31813130c300ea1561979f921ad094821a636b037bbae677a5560c6d683aa00', 90, '0170661d4d1afa37f4dff3ce'],
    ['79_SHA512_255', TPM_ALG.SHA512, '002024653ef084', 'ATH', '25e4ff', 'ff1c8addecb73b1fce8b03e6ffb0b149455a', 255, '408051eb79531af1d85d5bc85953cf05a6b5e9a695afdca513c4275fb8e4b35f'],
    ['89_SHA512_590', TPM_ALG.SHA512, 'e1d2e700', 'SECRET', '', 'fffcf34e848b9cfe54a0be31766d7044b467cab4829e49bcfe38', 590, '2c0d227eb22e8b002dbe8f27a8eea0d71bde6c87d6749ec0441324b3a0eb11aba611d6b4e8e0ea569512031df5d806be60f77295d13790c6fa647477be047d72cc84e697c29b5f235251'],
  ] as const)('matches published vector %s', (_name, alg, z, use, pu, pv, n, expected) => {
    expect(toHex(kdfe(alg, hex(z), use, hex(pu), hex(pv), n))).toBe(expected);
  });

  it('gives a prefix of the longer output for a shorter whole-octet length', () => {
    const z = hex('00112233');
    const long = kdfe(TPM_ALG.SHA256, z, 'IDENTITY', hex('aa'), hex('bb'), 800);
    const short = kdfe(TPM_ALG.SHA256, z, 'IDENTITY', hex('aa'), hex('bb'), 264);
    expect(toHex(long.subarray(0, 33))).toBe(toHex(short));
  });
});

describe.each([
  ['KDFa', kdfa, referenceKdfa],
  ['KDFe', kdfe, referenceKdfe],
])('%s', (_name, kdf, referenceKdf) => {
  it('equals a straightforward second formulation for any input', () => {
    fc.assert(
      fc.property(hash, bytes, label, bytes, bytes, bits, (h, secret, l, u, v, n) => {
        expect(toHex(kdf(h.alg, secret, l, u, v, n))).toBe(referenceKdf(h.name, secret, l, u, v, n));
      }),
      { numRuns: 300 },
    );
  });
});

describe('KDF inputs', () => {
  const k = hex('01');
  it.each([0, -8, 1.5, 0x10000 * 8])('refuses an output length of %s bits', (n) => {
    expect(() => kdfa(TPM_ALG.SHA256, k, 'STORAGE', k, k, n)).toThrow(RangeError);
    expect(() => kdfe(TPM_ALG.SHA256, k, 'STORAGE', k, k, n)).toThrow(RangeError);
  });

  it.each(['', 'A\0B', 'CAFÉ'])('refuses the label %j', (l) => {
    expect(() => kdfa(TPM_ALG.SHA256, k, l, k, k, 8)).toThrow(RangeError);
    expect(() => kdfe(TPM_ALG.SHA256, k, l, k, k, 8)).toThrow(RangeError);
  });

  it('refuses a hash it does not implement with a typed error', () => {
    for (const f of [kdfa, kdfe]) {
      try {
        f(TPM_ALG.SM3_256, k, 'STORAGE', k, k, 8);
        expect.unreachable();
      } catch (e) {
        expect(e).toBeInstanceOf(AttestorError);
        expect((e as AttestorError).code).toBe('ERR_TPM_UNSUPPORTED_ALG');
      }
    }
  });
});
