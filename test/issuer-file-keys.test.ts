import { createHash, generateKeyPairSync, verify } from 'node:crypto';
import { chmodSync, mkdirSync, mkdtempSync, readFileSync, readdirSync, rmSync, statSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { pathToFileURL } from 'node:url';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { openFileKeyManager } from '../src/issuer/file-keys.js';
import { openKeyManager } from '../src/issuer/open-keys.js';
import { rejection } from './helpers/rejection.js';

let root: string;
let n = 0;
/** A fresh directory path (not created) under the test's temp dir. */
const fresh = () => join(root, `keys-${n++}`);

beforeAll(() => {
  root = mkdtempSync(join(tmpdir(), 'attestor-file-keys-'));
});
afterAll(() => {
  if (root) rmSync(root, { recursive: true, force: true });
});

describe('file key manager', () => {
  it('generates a PKCS#8 P-256 key per role, 0600 in a 0700 directory, and signs r||s with it', async () => {
    const dir = fresh();
    const manager = await openFileKeyManager(dir);
    try {
      expect(manager.software).toBe(true);
      const signer = await manager.signer('jwt');
      expect(signer.software).toBe(true);
      expect(signer.uri).toBe(`file:${join(dir, 'jwt.pem')}`);
      expect(statSync(dir).mode & 0o777).toBe(0o700);
      expect(statSync(join(dir, 'jwt.pem')).mode & 0o777).toBe(0o600);
      expect(readFileSync(join(dir, 'jwt.pem'), 'utf8')).toMatch(/^-----BEGIN PRIVATE KEY-----\n/);
      expect(readdirSync(dir)).toEqual(['jwt.pem']);
      expect(signer.publicKey.asymmetricKeyDetails).toEqual({ namedCurve: 'prime256v1' });
      expect(signer.publicKey.export({ type: 'spki', format: 'der' }).equals(signer.spki)).toBe(true);
      const data = Buffer.from('to be signed');
      const signature = await signer.sign(data);
      expect(signature.length).toBe(64);
      expect(verify('sha256', data, { key: signer.publicKey, dsaEncoding: 'ieee-p1363' }, signature)).toBe(true);
      // The three roles are three keys.
      const others = await Promise.all([manager.signer('x509-ca'), manager.signer('audit')]);
      expect(new Set([signer, ...others].map((s) => createHash('sha256').update(s.spki).digest('hex'))).size).toBe(3);
    } finally {
      await manager.close();
    }
  });

  it('generates a rotation key in a file of its own and finds it again by its URI, in this directory only', async () => {
    const dir = fresh();
    const manager = await openFileKeyManager(dir);
    const first = await manager.signer('x509-ca');
    const next = await manager.generate('x509-ca');
    expect(next.uri).toMatch(new RegExp(`^file:${join(dir, 'x509-ca')}\\.[0-9a-f]{16}\\.pem$`));
    expect(statSync(next.uri.slice('file:'.length)).mode & 0o777).toBe(0o600);
    expect(Buffer.from(next.spki).equals(Buffer.from(first.spki))).toBe(false);
    expect(await manager.signer('x509-ca')).toBe(first);
    expect(await manager.signerAt(next.uri, 'x509-ca')).toBe(next);
    await manager.close();

    const again = await openFileKeyManager(dir);
    expect(Buffer.from((await again.signerAt(next.uri, 'x509-ca')).spki).equals(Buffer.from(next.spki))).toBe(true);
    expect(Buffer.from((await again.signerAt(first.uri, 'x509-ca')).spki).equals(Buffer.from(first.spki))).toBe(true);
    // Only key files of its own directory, by the names it gives them.
    const elsewhere = fresh();
    mkdirSync(elsewhere, { mode: 0o700 });
    writeFileSync(join(elsewhere, 'jwt.pem'), readFileSync(next.uri.slice('file:'.length)), { mode: 0o600 });
    await rejection(again.signerAt(`file:${join(elsewhere, 'jwt.pem')}`, 'jwt'), 'ERR_KEYS');
    await rejection(again.signerAt(`file:${join(dir, '..', 'jwt.pem')}`, 'jwt'), 'ERR_KEYS');
    await rejection(again.signerAt(`file:${join(dir, 'other.pem')}`, 'jwt'), 'ERR_KEYS');
    await rejection(again.signerAt(`file:${join(dir, 'jwt.0123456789abcdef.pem')}`, 'jwt'), 'ERR_KEYS');
    await rejection(again.signerAt('pkcs11:token=attestor;object=jwt', 'jwt'), 'ERR_KEYS');
    // A key of one role is no other role's key, whatever a keys table row claims.
    await rejection(again.signerAt(next.uri, 'jwt'), 'ERR_KEYS');
    await rejection(again.signerAt(first.uri, 'audit'), 'ERR_KEYS');
    await again.close();
  });

  it('finds the same key again, and concurrent openings of an empty directory end with one key per role', async () => {
    const dir = fresh();
    const managers = await Promise.all([openFileKeyManager(dir), openFileKeyManager(dir), openFileKeyManager(dir)]);
    const signers = await Promise.all(managers.flatMap((m) => [m.signer('x509-ca'), m.signer('x509-ca')]));
    expect(new Set(signers.map((s) => Buffer.from(s.spki).toString('hex'))).size).toBe(1);
    expect(readdirSync(dir)).toEqual(['x509-ca.pem']);
    const again = await openFileKeyManager(dir);
    expect(Buffer.from((await again.signer('x509-ca')).spki).equals(signers[0]!.spki)).toBe(true);
    await Promise.all([...managers, again].map((m) => m.close()));
  });

  it('refuses a key file group or others can read, and a directory they can write (ERR_KEYS)', async () => {
    const dir = fresh();
    const manager = await openFileKeyManager(dir);
    await manager.signer('audit');
    await manager.close();
    chmodSync(join(dir, 'audit.pem'), 0o640);
    const e = await rejection((await openFileKeyManager(dir)).signer('audit'), 'ERR_KEYS');
    expect(e.message).toContain('chmod 600');
    chmodSync(join(dir, 'audit.pem'), 0o600);
    chmodSync(dir, 0o770);
    await rejection(openFileKeyManager(dir), 'ERR_KEYS');
  });

  it('refuses a symbolic link, a key that is not P-256 and a file that is not a key, without quoting it', async () => {
    const dir = fresh();
    mkdirSync(dir, { mode: 0o700 });
    const p384 = generateKeyPairSync('ec', { namedCurve: 'P-384' }).privateKey.export({ type: 'pkcs8', format: 'pem' });
    writeFileSync(join(root, 'elsewhere.pem'), p384, { mode: 0o600 });
    symlinkSync(join(root, 'elsewhere.pem'), join(dir, 'x509-ca.pem'));
    writeFileSync(join(dir, 'jwt.pem'), p384, { mode: 0o600 });
    const secret = 'not-a-key-but-secret';
    writeFileSync(join(dir, 'audit.pem'), secret, { mode: 0o600 });
    const manager = await openFileKeyManager(dir);
    expect((await rejection(manager.signer('x509-ca'), 'ERR_KEYS')).message).toContain('symbolic link');
    expect((await rejection(manager.signer('jwt'), 'ERR_KEYS')).message).toContain('not an EC P-256 key');
    expect((await rejection(manager.signer('audit'), 'ERR_KEYS')).message).not.toContain(secret);
    await manager.close();
    await rejection(manager.signer('jwt'), 'ERR_KEYS');
  });
});

describe('openKeyManager', () => {
  it('opens file:DIR and file:///DIR as software key managers', async () => {
    for (const uri of [`file:${fresh()}`, pathToFileURL(fresh()).href]) {
      const manager = await openKeyManager(uri);
      expect(manager.software).toBe(true);
      await manager.signer('jwt');
      await manager.close();
    }
  });

  it('refuses any other scheme or an empty path with ERR_KEYS_URI, quoting no more than the scheme', async () => {
    for (const uri of ['http://example.org/keys', 'pkcs12:keys', '/var/lib/attestor/keys', 'file:', 'file://host/keys']) {
      await rejection(openKeyManager(uri), 'ERR_KEYS_URI');
    }
    const e = await rejection(openKeyManager('pkcs 11:token=a?pin-value=123456'), 'ERR_KEYS_URI');
    expect(e.message).not.toContain('123456');
  });
});
