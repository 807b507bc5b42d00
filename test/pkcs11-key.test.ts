import { createHash, generateKeyPairSync, randomBytes, verify } from 'node:crypto';
import { existsSync } from 'node:fs';
import pkcs11js from 'pkcs11js';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  findKey,
  findOrGenerateKey,
  generateKey,
  lookupKey,
  makeKeyReport,
  readKeyAttributes,
  signDigest,
  type Pkcs11Key,
} from '../src/agent/pkcs11-key.js';
import { ecP256KeyPairTemplates } from '../src/pkcs11/ec-key.js';
import { Pkcs11Session, type Template } from '../src/pkcs11/module.js';
import { CKK_EC, HSM_KEY_FLAGS, keyEvidenceDigest, type HsmKeyReport } from '../src/appraisal/hsm-key-report.js';
import { verifyHsmKey } from '../src/appraisal/verify-hsm-key.js';
import { startSoftHsm, type SoftHsm } from './helpers/softhsm.js';

let hsm: SoftHsm;
let session: Pkcs11Session;
let agentKey: Pkcs11Key;

beforeAll(async () => {
  hsm = await startSoftHsm();
  session = await Pkcs11Session.open({ modulePath: hsm.modulePath, tokenLabel: hsm.tokenLabel, pin: hsm.userPin });
  agentKey = await generateKey(session, 'agent-identity');
});
afterAll(async () => {
  await session?.close();
  await hsm?.stop();
});

const P256_PARAMS = Buffer.from('06082a8648ce3d030107', 'hex');

/**
 * verifyHsmKey as the verifier runs it once the agent's quote verified with qualifying data
 * keyEvidenceDigest(nonce, report) (the quote itself: test/agent-hsm-key-binding.test.ts).
 */
const verifyQuoted = (report: HsmKeyReport, nonce: Uint8Array) =>
  verifyHsmKey(report, { nonce, quotedQualifyingData: keyEvidenceDigest(nonce, report) });
const P384_PARAMS = Buffer.from('06052b81040022', 'hex');

function override(template: Template, values: Overrides): Template {
  return template.map((a) => (a.type in values ? { type: a.type, value: values[a.type] } : a));
}

/** A key pair generated on the token from the agent's templates with some attributes changed. */
type Overrides = Record<number, boolean | Buffer>;

async function generateWith(label: string, priv: Overrides, pub: Overrides = {}) {
  const t = ecP256KeyPairTemplates(label, randomBytes(16));
  return session.run('C_GenerateKeyPair', (p11, s) =>
    p11.C_GenerateKeyPairAsync(
      s,
      { mechanism: pkcs11js.CKM_EC_KEY_PAIR_GEN },
      override(t.publicKey, pub),
      override(t.privateKey, priv),
    ),
  );
}

/**
 * A P-256 key made in software and imported into the token (C_CreateObject) with the agent's
 * templates: sensitive and non-extractable from now on, but not generated there. `ecPoint`
 * gives the public object's CKA_EC_POINT from the uncompressed point.
 */
async function importKey(
  label: string,
  ecPoint: (point: Buffer) => Buffer = (point) => Buffer.concat([Buffer.from([0x04, 0x41]), point]),
) {
  const { privateKey, publicKey } = generateKeyPairSync('ec', { namedCurve: 'P-256' });
  const jwk = privateKey.export({ format: 'jwk' });
  const point = Buffer.concat([Buffer.from([4]), Buffer.from(jwk.x!, 'base64url'), Buffer.from(jwk.y!, 'base64url')]);
  const t = ecP256KeyPairTemplates(label, randomBytes(16));
  await session.run('C_CreateObject', (p11, s) => {
    p11.C_CreateObject(s, [
      ...t.privateKey,
      { type: pkcs11js.CKA_EC_PARAMS, value: P256_PARAMS },
      { type: pkcs11js.CKA_VALUE, value: Buffer.from(jwk.d!, 'base64url') },
    ]);
    p11.C_CreateObject(s, [...t.publicKey, { type: pkcs11js.CKA_EC_POINT, value: ecPoint(point) }]);
  });
  return publicKey;
}

describe('the agent key in a PKCS#11 token', () => {
  it('is generated non-extractable on the token', async () => {
    const attributes = await readKeyAttributes(session, agentKey);
    expect(attributes.keyType).toBe(CKK_EC);
    // token, private, sensitive, extractable, neverExtractable, alwaysSensitive, local:
    expect(HSM_KEY_FLAGS.map((f) => attributes[f])).toEqual([true, true, true, false, true, true, true]);
    const value = session.attributes(agentKey.privateKey, [pkcs11js.CKA_VALUE]);
    await expect(value).rejects.toMatchObject({ code: 'ERR_PKCS11', ckr: 'CKR_ATTRIBUTE_SENSITIVE' });
  });

  it('exposes the public key as SPKI (CKA_EC_POINT unwrapped)', async () => {
    expect(agentKey.publicKey.asymmetricKeyDetails).toEqual({ namedCurve: 'prime256v1' });
    expect(Buffer.from(agentKey.spki).equals(agentKey.publicKey.export({ type: 'spki', format: 'der' }))).toBe(true);
    const [ecPoint] = await session.attributes(agentKey.publicKeyObject, [pkcs11js.CKA_EC_POINT]);
    // The SPKI's BIT STRING ends with the same 65-byte point the token wraps in an OCTET STRING.
    expect(Buffer.from(agentKey.spki).subarray(-65).equals(ecPoint!.subarray(2))).toBe(true);
  });

  it('signs a SHA-256 digest as r||s that node:crypto verifies', async () => {
    const message = Buffer.from('challenge');
    const sig = await signDigest(session, agentKey, createHash('sha256').update(message).digest());
    expect(sig.length).toBe(64);
    expect(verify('sha256', message, { key: agentKey.publicKey, dsaEncoding: 'ieee-p1363' }, sig)).toBe(true);
    expect(verify('sha256', Buffer.from('other'), { key: agentKey.publicKey, dsaEncoding: 'ieee-p1363' }, sig)).toBe(false);
  });

  it('refuses to sign anything but a SHA-256 digest (ERR_INPUT)', async () => {
    await expect(signDigest(session, agentKey, new Uint8Array(20))).rejects.toMatchObject({ code: 'ERR_INPUT' });
  });

  it('is found by label as the same key, twice, and findOrGenerateKey does not make another', async () => {
    const a = await findKey(session, 'agent-identity');
    const b = await findKey(session, 'agent-identity');
    const c = await findOrGenerateKey(session, 'agent-identity');
    for (const k of [a, b, c]) {
      expect(Buffer.from(k.id).equals(agentKey.id)).toBe(true);
      expect(k.privateKey.equals(agentKey.privateKey)).toBe(true);
      expect(Buffer.from(k.spki).equals(agentKey.spki)).toBe(true);
    }
  });

  it('findOrGenerateKey called concurrently generates one key, which every caller gets', async () => {
    const keys = await Promise.all([1, 2, 3].map(() => findOrGenerateKey(session, 'raced')));
    for (const k of keys) expect(Buffer.from(k.spki).equals(keys[0]!.spki)).toBe(true);
    // One private key with that label on the token (two would make the label ambiguous).
    const found = await session.find([
      { type: pkcs11js.CKA_CLASS, value: pkcs11js.CKO_PRIVATE_KEY },
      { type: pkcs11js.CKA_LABEL, value: 'raced' },
    ]);
    expect(found).toHaveLength(1);
  });

  it('findOrGenerateKey generates a missing key once, then finds it', async () => {
    expect(await lookupKey(session, 'fresh')).toBeUndefined();
    const made = await findOrGenerateKey(session, 'fresh');
    const again = await findOrGenerateKey(session, 'fresh');
    expect(Buffer.from(again.spki).equals(made.spki)).toBe(true);
    expect(Buffer.from(made.spki).equals(agentKey.spki)).toBe(false);
  });

  it('gives ERR_PKCS11_KEY_NOT_FOUND for an unknown label and for a key without its public object', async () => {
    await expect(findKey(session, 'no-such-key')).rejects.toMatchObject({ code: 'ERR_PKCS11_KEY_NOT_FOUND' });
    const pair = await generateWith('orphan', {});
    await session.run('C_DestroyObject', (p11, s) => p11.C_DestroyObject(s, pair.publicKey));
    await expect(findKey(session, 'orphan')).rejects.toMatchObject({ code: 'ERR_PKCS11_KEY_NOT_FOUND' });
  });

  it('gives ERR_PKCS11_AMBIGUOUS when two private keys share the label', async () => {
    await generateWith('twin', {});
    await generateWith('twin', {});
    await expect(findKey(session, 'twin')).rejects.toMatchObject({ code: 'ERR_PKCS11_AMBIGUOUS' });
  });

  it('refuses keys that are not EC P-256 with ERR_KEY_UNSUPPORTED', async () => {
    await generateWith('p384', {}, { [pkcs11js.CKA_EC_PARAMS]: P384_PARAMS });
    await expect(findKey(session, 'p384')).rejects.toMatchObject({ code: 'ERR_KEY_UNSUPPORTED' });
    await session.run('C_GenerateKeyPair', (p11, s) =>
      p11.C_GenerateKeyPairAsync(
        s,
        { mechanism: pkcs11js.CKM_RSA_PKCS_KEY_PAIR_GEN },
        [
          { type: pkcs11js.CKA_TOKEN, value: true },
          { type: pkcs11js.CKA_MODULUS_BITS, value: 1024 },
          { type: pkcs11js.CKA_PUBLIC_EXPONENT, value: Buffer.from([1, 0, 1]) },
        ],
        [
          { type: pkcs11js.CKA_TOKEN, value: true },
          { type: pkcs11js.CKA_LABEL, value: 'rsa' },
        ],
      ),
    );
    await expect(findKey(session, 'rsa')).rejects.toMatchObject({ code: 'ERR_KEY_UNSUPPORTED' });
  });

  it('reads a bare (unwrapped) CKA_EC_POINT too', async () => {
    const publicKey = await importKey('bare-point', (point) => point);
    const key = await findKey(session, 'bare-point');
    expect(key.publicKey.equals(publicKey)).toBe(true);
  });

  it.each([
    ['compressed', (p: Buffer) => Buffer.concat([Buffer.from([0x04, 0x21, 0x02]), p.subarray(1, 33)])],
    [
      'off the curve',
      (p: Buffer) => Buffer.concat([Buffer.from([0x04, 0x41]), p.subarray(0, 64), Buffer.from([p[64]! ^ 1])]),
    ],
  ])('refuses a %s CKA_EC_POINT with ERR_KEY_UNSUPPORTED', async (label, ecPoint) => {
    await importKey(label, ecPoint);
    await expect(findKey(session, label)).rejects.toMatchObject({ code: 'ERR_KEY_UNSUPPORTED' });
  });
});

describe('HSM key reports from SoftHSM', () => {
  it('verify with verifyHsmKey and the same nonce', async () => {
    const nonce = randomBytes(32);
    const report = await makeKeyReport(session, agentKey, nonce);
    const { publicKey, reported } = verifyQuoted(report, nonce);
    expect(publicKey.equals(agentKey.publicKey)).toBe(true);
    expect(reported.token).toEqual({
      manufacturer: session.token.manufacturer,
      model: session.token.model,
      serial: session.token.serial,
      label: hsm.tokenLabel,
    });
    expect(reported.attributes.extractable).toBe(false);
  });

  it('are made concurrently on one session and each verifies', async () => {
    const nonces = [1, 2, 3, 4, 5].map(() => randomBytes(16));
    const reports = await Promise.all(nonces.map((n) => makeKeyReport(session, agentKey, n)));
    reports.forEach((r, i) => expect(() => verifyQuoted(r, nonces[i]!)).not.toThrow());
  });

  it('refuse another nonce and a flipped signature bit with ERR_SIGNATURE_INVALID', async () => {
    const nonce = randomBytes(32);
    const report = await makeKeyReport(session, agentKey, nonce);
    const other = Buffer.from(nonce);
    other[0]! ^= 1;
    expect(() => verifyQuoted(report, other)).toThrow(expect.objectContaining({ code: 'ERR_SIGNATURE_INVALID' }));
    for (const bit of [0, 255, 511]) {
      const signature = Buffer.from(report.signature);
      signature[bit >> 3]! ^= 1 << (bit & 7);
      expect(() => verifyQuoted({ ...report, signature }, nonce)).toThrow(
        expect.objectContaining({ code: 'ERR_SIGNATURE_INVALID' }),
      );
    }
  });

  it('refuse an extractable key, naming the attributes', async () => {
    await generateWith('exportable', { [pkcs11js.CKA_EXTRACTABLE]: true, [pkcs11js.CKA_SENSITIVE]: false });
    const key = await findKey(session, 'exportable');
    // It really is exportable: the token hands out the private value.
    const [value] = await session.attributes(key.privateKey, [pkcs11js.CKA_VALUE]);
    expect(value!.length).toBe(32);
    const nonce = randomBytes(32);
    const report = await makeKeyReport(session, key, nonce);
    expect(() => verifyQuoted(report, nonce)).toThrow(
      expect.objectContaining({
        code: 'ERR_HSM_KEY_ATTRIBUTES',
        violated: ['sensitive', 'extractable', 'neverExtractable', 'alwaysSensitive'],
      }),
    );
  });

  it('refuse a key imported into the token (not local, once extractable)', async () => {
    await importKey('imported');
    const key = await findKey(session, 'imported');
    const nonce = randomBytes(32);
    const report = await makeKeyReport(session, key, nonce);
    expect(report.attributes).toMatchObject({ sensitive: true, extractable: false, local: false });
    expect(() => verifyQuoted(report, nonce)).toThrow(
      expect.objectContaining({
        code: 'ERR_HSM_KEY_ATTRIBUTES',
        violated: ['neverExtractable', 'alwaysSensitive', 'local'],
      }),
    );
  });

  it('the key persists: after closing and reopening the token it is found and verifies', async () => {
    await session.close();
    session = await Pkcs11Session.open({ modulePath: hsm.modulePath, tokenLabel: hsm.tokenLabel, pin: hsm.userPin });
    const key = await findKey(session, 'agent-identity');
    expect(Buffer.from(key.spki).equals(agentKey.spki)).toBe(true);
    const nonce = randomBytes(32);
    const { publicKey } = verifyQuoted(await makeKeyReport(session, key, nonce), nonce);
    expect(publicKey.equals(agentKey.publicKey)).toBe(true);
  });
});

describe('startSoftHsm', () => {
  it('stop() removes its dir and restores SOFTHSM2_CONF', async () => {
    const other = await startSoftHsm({ tokenLabel: 'other' });
    expect(process.env.SOFTHSM2_CONF).toBe(other.conf);
    expect(other.env.SOFTHSM2_CONF).toBe(other.conf);
    expect(existsSync(other.conf)).toBe(true);
    await other.stop();
    await other.stop();
    expect(existsSync(other.dir)).toBe(false);
    expect(process.env.SOFTHSM2_CONF).toBe(hsm.conf);
  });
});
