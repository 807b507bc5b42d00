import { constants, createDecipheriv, createECDH, createHmac, generateKeyPairSync, privateDecrypt, type KeyObject } from 'node:crypto';
import { readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import fc from 'fast-check';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { AttestorError } from '../src/errors.js';
import { TPM_ALG, TPM_ECC, TPMA_OBJECT, curveInfo, hashInfo } from '../src/tpm/constants.js';
import { encodeCredentialFile, parseCredentialFile } from '../src/tpm/credential-file.js';
import { kdfa, kdfe } from '../src/tpm/kdf.js';
import { makeCredential, type MadeCredential } from '../src/tpm/make-credential.js';
import { objectName } from '../src/tpm/name.js';
import { parseTpm2bPublic, parseTpmtPublic, type EccPublic, type RsaPublic, type TpmPublic } from '../src/tpm/public.js';
import { TpmReader } from '../src/tpm/reader.js';
import { PERSISTENT_EK, hexHandle, startSwtpm, tpm2, type Swtpm } from './helpers/swtpm.js';
import { vector } from './vectors.js';
import { hex as toHex } from '../src/bytes.js';

const hex = (s: string) => Buffer.from(s, 'hex');
const EMPTY = new Uint8Array(0);
const EK_ATTRIBUTES =
  TPMA_OBJECT.fixedTPM | TPMA_OBJECT.fixedParent | TPMA_OBJECT.sensitiveDataOrigin | TPMA_OBJECT.adminWithPolicy |
  TPMA_OBJECT.restricted | TPMA_OBJECT.decrypt;
const AES128_CFB = { algorithm: TPM_ALG.AES, keyBits: 128, mode: TPM_ALG.CFB };

/** A sha-`alg` Name with the given digest bytes. */
function nameOf(alg: number, digest: Uint8Array): Uint8Array {
  return Buffer.concat([Buffer.of(alg >> 8, alg & 0xff), digest]);
}

function sizes(c: MadeCredential) {
  return { credentialBlob: c.credentialBlob.length, encryptedSecret: c.encryptedSecret.length };
}

/** The blob's size, and the secret's: for an ECC EK, the lengths of the point's x and y. */
function layout(ek: TpmPublic, c: MadeCredential) {
  if (ek.type !== 'ecc') return { credentialBlob: c.credentialBlob.length, encryptedSecret: c.encryptedSecret.length };
  const outer = new TpmReader(c.encryptedSecret, 'TPM2B_ENCRYPTED_SECRET');
  const point = new TpmReader(outer.tpm2b('secret'), 'TPMS_ECC_POINT');
  outer.end();
  const coordinates = [point.tpm2b('x').length, point.tpm2b('y').length];
  point.end();
  return { credentialBlob: c.credentialBlob.length, point: coordinates };
}

function expectInputError(f: () => unknown): void {
  try {
    f();
  } catch (e) {
    expect(e).toBeInstanceOf(AttestorError);
    expect((e as AttestorError).code).toBe('ERR_MAKECREDENTIAL_INPUT');
    return;
  }
  expect.unreachable('no error raised');
}

// ---------------------------------------------------------------------------------------------
// The TPM's side of TPM2_ActivateCredential (Part 1 §24) in software, as the oracle of the pure
// tests: recover the seed with the EK private key, check the outer HMAC, decrypt the identity.

function recoverRsaSeed(ek: RsaPublic, privateKey: KeyObject, encryptedSecret: Uint8Array): Uint8Array {
  const r = new TpmReader(encryptedSecret, 'TPM2B_ENCRYPTED_SECRET');
  const payload = r.tpm2b('secret');
  r.end();
  const oaepHash = hashInfo(ek.nameAlg).name;
  return privateDecrypt(
    { key: privateKey, padding: constants.RSA_PKCS1_OAEP_PADDING, oaepHash, oaepLabel: Buffer.from('IDENTITY\0') },
    payload,
  );
}

function recoverEccSeed(ek: EccPublic, ecdhCurve: string, privateScalar: Uint8Array, encryptedSecret: Uint8Array): Uint8Array {
  const outer = new TpmReader(encryptedSecret, 'TPM2B_ENCRYPTED_SECRET');
  const point = new TpmReader(outer.tpm2b('secret'), 'TPMS_ECC_POINT');
  outer.end();
  const x = point.tpm2b('x');
  const y = point.tpm2b('y');
  point.end();
  const ecdh = createECDH(ecdhCurve);
  ecdh.setPrivateKey(privateScalar);
  const z = ecdh.computeSecret(Buffer.concat([Buffer.of(4), x, y]));
  return kdfe(ek.nameAlg, z, 'IDENTITY', x, ek.x, hashInfo(ek.nameAlg).size * 8);
}

function openCredential(ek: TpmPublic, seed: Uint8Array, name: Uint8Array, credentialBlob: Uint8Array): Buffer {
  const h = hashInfo(ek.nameAlg);
  const outer = new TpmReader(credentialBlob, 'TPM2B_ID_OBJECT');
  const idObject = new TpmReader(outer.tpm2b('credential'), 'TPMS_ID_OBJECT');
  outer.end();
  const integrityHmac = idObject.tpm2b('integrityHMAC');
  const encIdentity = idObject.bytesOf(idObject.remaining, 'encIdentity');
  const hmacKey = kdfa(ek.nameAlg, seed, 'INTEGRITY', EMPTY, EMPTY, h.size * 8);
  if (!createHmac(h.name, hmacKey).update(encIdentity).update(name).digest().equals(integrityHmac)) {
    throw new Error('integrity check failed');
  }
  const bits = ek.symmetric!.keyBits;
  const symKey = kdfa(ek.nameAlg, seed, 'STORAGE', name, EMPTY, bits);
  const d = createDecipheriv(`aes-${bits}-cfb`, symKey, Buffer.alloc(16));
  const plain = new TpmReader(Buffer.concat([d.update(encIdentity), d.final()]), 'TPM2B_DIGEST');
  const secret = plain.tpm2b('credential');
  plain.end();
  return Buffer.from(secret);
}

interface SoftwareEk {
  readonly ek: TpmPublic;
  /** The seed the TPM would recover from this encryptedSecret. */
  seedOf(encryptedSecret: Uint8Array): Uint8Array;
}

function softwareRsaEk(): SoftwareEk {
  const { publicKey, privateKey } = generateKeyPairSync('rsa', { modulusLength: 2048 });
  const n = Buffer.from(publicKey.export({ format: 'jwk' }).n!, 'base64url');
  const ek: RsaPublic = {
    type: 'rsa', nameAlg: TPM_ALG.SHA256, objectAttributes: EK_ATTRIBUTES, authPolicy: EMPTY, symmetric: AES128_CFB,
    scheme: null, keyBits: 2048, exponent: 65537, modulus: n, bytes: EMPTY,
  };
  return { ek, seedOf: (es) => recoverRsaSeed(ek, privateKey, es) };
}

function softwareEccEk(): SoftwareEk {
  const ecdh = createECDH('prime256v1');
  const pub = ecdh.generateKeys();
  const ek: EccPublic = {
    type: 'ecc', nameAlg: TPM_ALG.SHA256, objectAttributes: EK_ATTRIBUTES, authPolicy: EMPTY, symmetric: AES128_CFB,
    scheme: null, curve: TPM_ECC.NIST_P256, kdf: null, x: pub.subarray(1, 33), y: pub.subarray(33), bytes: EMPTY,
  };
  const scalar = ecdh.getPrivateKey();
  return { ek, seedOf: (es) => recoverEccSeed(ek, 'prime256v1', scalar, es) };
}

// github.com/chrisfenner/tpm-test-vectors, vectors/ecc_labeled_encaps.json, entry
// "12_P256_SHA256_256_restricted" (validated there with TPM2_ActivateCredential): a P-256 EK
// (TPMT_PUBLIC, nameAlg SHA-256, AES-256-CFB), the ephemeral private scalar, the seed it yields
// and the TPMS_ECC_POINT the TPM receives.
const ECC_VECTOR = {
  publicArea:
    '0023000b0003046000000006010000430010000300100020fe4cf1f3e8f583c19e1af6190a7c20751658914a93cd77efb871cb15573775' +
    '60002007b6b7c55bea1d17b1a9d96f367cf315b2942d517fd8642e9d9157036831c4d5',
  ephemeralPrivate: '9efafbaf83563f8ac5a27815eae1017ca78c92f9cde976b1a2e0ad95b8a19bc1',
  seed: '2a03ff2b874e44d36a567e67a0bf08227b9e65a0e9ca5215d4a9e573c23159a1',
  ciphertext:
    '002017ca41bd94c7f12436cf135ff1852408ef6a1ee1989e4e6250ef73c348dd6fa90020346f6016d6f6a2ef8e07df6d7b53b362005f' +
    'c21cda1e1ab25e61f38a87e017b8',
};

const keylime = (f: string) => vector(`quote-bundles/keylime-tpm2-tools/${f}`);

describe('makeCredential (pure)', () => {
  it('derives the seed and ephemeral point of a published ECDH known-answer vector', () => {
    const ek = parseTpmtPublic(hex(ECC_VECTOR.publicArea));
    const name = nameOf(TPM_ALG.SHA256, Buffer.alloc(32, 0x5a));
    const secret = Buffer.from('known answer');
    const cred = makeCredential(ek, name, secret, () => hex(ECC_VECTOR.ephemeralPrivate));
    expect(toHex(cred.encryptedSecret)).toBe(`0044${ECC_VECTOR.ciphertext}`);
    // The blob opens with the vector's seed: the seed we derived is that one.
    expect(openCredential(ek, hex(ECC_VECTOR.seed), name, cred.credentialBlob)).toEqual(secret);
  });

  it('has the layout of the tpm2-tools credential in the keylime vector', () => {
    const ek = parseTpm2bPublic(keylime('ek.pub'));
    const fromTools = keylime('mkcred.out');
    const ours = encodeCredentialFile(makeCredential(ek, keylime('ak.name'), keylime('secret.data')));
    expect(ours.length).toBe(fromTools.length);
    expect(sizes(parseCredentialFile(ours))).toEqual(sizes(parseCredentialFile(fromTools)));
    // Header, TPM2B_ID_OBJECT size, integrity HMAC size (all before the random parts) are identical.
    expect(toHex(ours.subarray(0, 12))).toBe(toHex(fromTools.subarray(0, 12)));
  });

  const softwareEks = { rsa: softwareRsaEk(), ecc: softwareEccEk() };
  const names = fc
    .constantFrom(hashInfo(TPM_ALG.SHA1), hashInfo(TPM_ALG.SHA256), hashInfo(TPM_ALG.SHA384))
    .chain((h) => fc.uint8Array({ minLength: h.size, maxLength: h.size }).map((d) => nameOf(h.alg, d)));

  it('for any secret and Name: expected sizes, and only that Name opens it', () => {
    fc.assert(
      fc.property(
        fc.constantFrom('rsa' as const, 'ecc' as const),
        fc.uint8Array({ minLength: 1, maxLength: 32 }),
        names,
        names,
        (kind, secret, name, otherName) => {
          const { ek, seedOf } = softwareEks[kind];
          const cred = makeCredential(ek, name, secret);
          expect(cred.credentialBlob.length).toBe(2 + 2 + 32 + 2 + secret.length);
          expect(cred.encryptedSecret.length).toBe(kind === 'rsa' ? 2 + 256 : 2 + 2 + 32 + 2 + 32);
          const seed = seedOf(cred.encryptedSecret);
          expect(openCredential(ek, seed, name, cred.credentialBlob)).toEqual(Buffer.from(secret));
          fc.pre(toHex(otherName) !== toHex(name));
          expect(() => openCredential(ek, seed, otherName, cred.credentialBlob)).toThrow('integrity');
        },
      ),
      { numRuns: 150 },
    );
  });

  it('uses a fresh seed for every call', () => {
    const { ek } = softwareEks.ecc;
    const name = nameOf(TPM_ALG.SHA256, Buffer.alloc(32, 1));
    const a = makeCredential(ek, name, Buffer.from('s'));
    const b = makeCredential(ek, name, Buffer.from('s'));
    expect(toHex(a.encryptedSecret)).not.toBe(toHex(b.encryptedSecret));
    expect(toHex(a.credentialBlob)).not.toBe(toHex(b.credentialBlob));
  });

  describe('refuses bad input with ERR_MAKECREDENTIAL_INPUT', () => {
    const rsa = parseTpm2bPublic(keylime('ek.pub')) as RsaPublic;
    const ecc = parseTpmtPublic(hex(ECC_VECTOR.publicArea)) as EccPublic;
    const name = keylime('ak.name');
    const secret = Buffer.from('secret');
    const ak = parseTpm2bPublic(keylime('ak.pub'));

    it.each<[string, TpmPublic]>([
      ['an EK that is not restricted', { ...rsa, objectAttributes: rsa.objectAttributes & ~TPMA_OBJECT.restricted }],
      ['an EK that does not decrypt', { ...rsa, objectAttributes: rsa.objectAttributes & ~TPMA_OBJECT.decrypt }],
      ['a signing key (an AK) as EK', ak],
      ['an EK without symmetric algorithm', { ...ecc, symmetric: null }],
      ['an EK whose symmetric mode is not CFB', { ...rsa, symmetric: { algorithm: TPM_ALG.AES, keyBits: 128, mode: 0x0044 } }],
      ['an EK whose AES key size is not 128/192/256', { ...rsa, symmetric: { algorithm: TPM_ALG.AES, keyBits: 64, mode: TPM_ALG.CFB } }],
      ['an RSA EK without modulus', { ...rsa, modulus: EMPTY }],
      ['an ECC EK without point', { ...ecc, x: EMPTY, y: EMPTY }],
      ['an ECC EK whose point is not on the curve', { ...ecc, y: Buffer.from(ecc.x) }],
    ])('%s', (_label, ek) => {
      expectInputError(() => makeCredential(ek, name, secret));
    });

    it.each([
      ['an empty secret', 0],
      ['a secret longer than the nameAlg digest', 33],
    ])('%s', (_label, size) => {
      expectInputError(() => makeCredential(rsa, name, Buffer.alloc(size, 7)));
    });

    it.each([
      ['a Name shorter than its nameAlg', hex('00')],
      ['a Name with an unsupported nameAlg', nameOf(TPM_ALG.SM3_256, Buffer.alloc(32))],
      ['a Name whose digest does not fit its nameAlg', nameOf(TPM_ALG.SHA256, Buffer.alloc(20))],
      ['a Name that is a handle (no digest)', nameOf(TPM_ALG.SHA256, EMPTY)],
    ])('%s', (_label, badName) => {
      expectInputError(() => makeCredential(rsa, badName, secret));
    });

    it('an RSA EK too small for an OAEP-wrapped seed of its nameAlg (RSA-1024, SHA-512)', () => {
      const small = generateKeyPairSync('rsa', { modulusLength: 1024 }).publicKey;
      const modulus = Buffer.from(small.export({ format: 'jwk' }).n!, 'base64url');
      const ek: TpmPublic = { ...rsa, nameAlg: TPM_ALG.SHA512, keyBits: 1024, modulus };
      expectInputError(() => makeCredential(ek, nameOf(TPM_ALG.SHA512, Buffer.alloc(64)), secret));
    });

    it('a random source that never gives a valid ECC scalar', () => {
      expectInputError(() => makeCredential(ecc, name, secret, (n) => new Uint8Array(n)));
    });
  });
});

describe('credential file (tpm2-tools format)', () => {
  const file = keylime('mkcred.out');

  it('round-trips the keylime tpm2_makecredential output byte for byte', () => {
    const cred = parseCredentialFile(file);
    expect(sizes(cred)).toEqual({ credentialBlob: 2 + 45, encryptedSecret: 2 + 256 });
    expect(toHex(encodeCredentialFile(cred))).toBe(toHex(file));
  });

  it.each<[string, Uint8Array, string]>([
    ['a wrong magic', Buffer.concat([hex('badcc0df'), file.subarray(4)]), 'ERR_TPM_BAD_VALUE'],
    ['a wrong version', Buffer.concat([file.subarray(0, 4), hex('00000002'), file.subarray(8)]), 'ERR_TPM_BAD_VALUE'],
    ['a truncated file', file.subarray(0, file.length - 1), 'ERR_TPM_TRUNCATED'],
    ['trailing bytes', Buffer.concat([file, hex('00')]), 'ERR_TPM_TRAILING_BYTES'],
  ])('refuses %s', (_label, bytes, code) => {
    expect(() => parseCredentialFile(bytes)).toThrow(expect.objectContaining({ code }));
  });
});

// ---------------------------------------------------------------------------------------------
// Against a real TPM (swtpm) and tpm2-tools.

interface EkUnderTest {
  /** TPM2B_PUBLIC file of the EK, as tpm2_makecredential takes it. */
  readonly pubPath: string;
  readonly ek: TpmPublic;
  /** tpm2-tools object reference (context file or persistent handle). */
  readonly ref: string;
  /** TCG L templates: PolicySecret(endorsement) in a SHA-256 session; H-3: userWithAuth, empty password. */
  readonly auth: 'policy-secret' | 'password';
  readonly akCtx: string;
  readonly akName: Uint8Array;
}

let sw: Swtpm;
const eks = new Map<string, EkUnderTest>();
let sequence = 0;

async function createEkAndAk(kind: 'rsa' | 'ecc'): Promise<EkUnderTest> {
  const [ekCtx, pubPath, akCtx] = [`ek-${kind}.ctx`, `ek-${kind}.pub`, `ak-${kind}.ctx`];
  await tpm2(sw, ['tpm2_createek', '-G', kind, '-c', ekCtx, '-u', pubPath]);
  await tpm2(sw, ['tpm2_createak', '-C', ekCtx, '-G', kind, '-c', akCtx, '-u', `ak-${kind}.pub`, '-n', `ak-${kind}.name`]);
  await tpm2(sw, ['tpm2_flushcontext', '-t']);
  const ek = parseTpm2bPublic(await readFile(join(sw.dir, pubPath)));
  const akName = objectName(parseTpm2bPublic(await readFile(join(sw.dir, `ak-${kind}.pub`))));
  return { pubPath, ek, ref: ekCtx, auth: 'policy-secret', akCtx, akName };
}

/** tpm2_activatecredential of a credential file; always flushes what tpm2-tools leaves loaded. */
async function activate(t: EkUnderTest, credFile: Uint8Array): Promise<Buffer> {
  const id = sequence++;
  const [credPath, outPath, session] = [`cred-${id}.out`, `secret-${id}.out`, `session-${id}.ctx`];
  await writeFile(join(sw.dir, credPath), credFile);
  const activateArgs = ['tpm2_activatecredential', '-c', t.akCtx, '-C', t.ref, '-i', credPath, '-o', outPath];
  try {
    if (t.auth === 'policy-secret') {
      await tpm2(sw, ['tpm2_startauthsession', '--policy-session', '-S', session]);
      await tpm2(sw, ['tpm2_policysecret', '-S', session, '-c', 'e']);
      await tpm2(sw, [...activateArgs, `-Psession:${session}`]);
    } else {
      await tpm2(sw, activateArgs);
    }
    return await readFile(join(sw.dir, outPath));
  } finally {
    await tpm2(sw, ['tpm2_flushcontext', '-s']);
    await tpm2(sw, ['tpm2_flushcontext', '-t']);
  }
}

/** The TPM itself refused the activation (not a tool or file error before reaching it)... */
const TPM_REFUSED = /Esys_ActivateCredential\(0x[0-9A-F]+\)/;
/** ...because the outer HMAC over the identity and the Name did not match (TPM_RC_INTEGRITY). */
const TPM_INTEGRITY = /Esys_ActivateCredential\(0x[0-9A-F]+\) - tpm:parameter\(1\):integrity check failed/;

beforeAll(async () => {
  sw = await startSwtpm();
  const rsa = await createEkAndAk('rsa');
  eks.set('RSA 2048', rsa);
  eks.set('ECC P-256', await createEkAndAk('ecc'));
  const p384Handle = hexHandle(PERSISTENT_EK.eccP384);
  await tpm2(sw, ['tpm2_readpublic', '-c', p384Handle, '-o', 'ek-p384.pub']);
  const p384 = parseTpm2bPublic(await readFile(join(sw.dir, 'ek-p384.pub')));
  // Any loaded object can be the credential's target; the RSA EK's AK serves the P-384 EK.
  eks.set('ECC P-384', { ...rsa, pubPath: 'ek-p384.pub', ek: p384, ref: p384Handle, auth: 'password' });
});

afterAll(async () => {
  await sw?.stop();
});

describe.each(['RSA 2048', 'ECC P-256', 'ECC P-384'])('makeCredential against swtpm, %s EK', (label) => {
  const t = () => eks.get(label)!;

  it('is for the EK type under test', () => {
    const ek = t().ek;
    expect(label.startsWith(ek.type.toUpperCase())).toBe(true);
    if (ek.type === 'ecc') expect(ek.curve).toBe(label.endsWith('384') ? TPM_ECC.NIST_P384 : TPM_ECC.NIST_P256);
  });

  it('computes the AK Name tpm2-tools reports', async () => {
    const kind = label.startsWith('RSA') ? 'rsa' : 'ecc';
    const toolsName = await readFile(join(sw.dir, `ak-${label === 'ECC P-384' ? 'rsa' : kind}.name`));
    expect(toHex(t().akName)).toBe(toHex(toolsName));
  });

  it.each([1, 16, 32])('activates a %i-byte secret', async (size) => {
    const secret = Buffer.from(Array.from({ length: size }, (_, i) => (i * 37 + size) & 0xff));
    const file = encodeCredentialFile(makeCredential(t().ek, t().akName, secret));
    expect(await activate(t(), file)).toEqual(secret);
  });

  it('does not activate a credential made for another Name', async () => {
    const other = Buffer.from(t().akName);
    other[other.length - 1]! ^= 1;
    const file = encodeCredentialFile(makeCredential(t().ek, other, Buffer.from('secret')));
    await expect(activate(t(), file)).rejects.toThrow(TPM_INTEGRITY);
  });

  // A changed seed fails RSA-OAEP decoding or the ECC point check before any HMAC is computed.
  it.each([
    ['the integrity HMAC', 'credentialBlob', 6, TPM_INTEGRITY],
    ['the encrypted identity', 'credentialBlob', -1, TPM_INTEGRITY],
    ['the encrypted seed', 'encryptedSecret', 20, TPM_REFUSED],
  ] as const)('does not activate with one bit flipped in %s', async (_what, field, at, refusal) => {
    const cred = makeCredential(t().ek, t().akName, Buffer.from('secret'));
    const tampered = { ...cred, [field]: Buffer.from(cred[field]) };
    const bytes = tampered[field];
    bytes[at < 0 ? bytes.length + at : at]! ^= 0x10;
    await expect(activate(t(), encodeCredentialFile(tampered))).rejects.toThrow(refusal);
  });

  it('matches tpm2_makecredential: same layout and sizes, both activate', async () => {
    const secret = Buffer.from('same secret for both tools');
    await writeFile(join(sw.dir, 'tools-secret.bin'), secret);
    const toolsPath = `tools-cred-${sequence++}.out`;
    await tpm2(sw, [
      'tpm2_makecredential', '-T', 'none', '-u', t().pubPath, '-s', 'tools-secret.bin', '-n', toHex(t().akName), '-o', toolsPath,
    ]);
    const toolsFile = await readFile(join(sw.dir, toolsPath));
    const ours = encodeCredentialFile(makeCredential(t().ek, t().akName, secret));
    const ek = t().ek;
    const [oursLayout, toolsLayout] = [ours, toolsFile].map((f) => layout(ek, parseCredentialFile(f)));
    if (ek.type === 'ecc') {
      // tpm2-tools writes each ephemeral coordinate without its leading zero bytes (1 time in
      // 256 per coordinate); we write the curve's full size. The TPM reads either as the number.
      const { size } = curveInfo(ek.curve);
      expect(oursLayout!.point).toEqual([size, size]);
      for (const c of toolsLayout!.point!) expect(c > size - 3 && c <= size, `coordinate of ${c} bytes`).toBe(true);
      expect(toolsLayout!.credentialBlob).toBe(oursLayout!.credentialBlob);
    } else {
      expect(ours.length).toBe(toolsFile.length);
      expect(toolsLayout).toEqual(oursLayout);
    }
    expect(await activate(t(), toolsFile)).toEqual(secret);
    expect(await activate(t(), ours)).toEqual(secret);
  });
});
