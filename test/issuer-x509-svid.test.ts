import { execFileSync } from 'node:child_process';
import { createHash, generateKeyPairSync, X509Certificate, type KeyObject } from 'node:crypto';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import '../src/reflect-metadata.js';
import * as x509 from '@peculiar/x509';
import fc from 'fast-check';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createCaCertificate } from '../src/issuer/ca-certificate.js';
import { readCertificateFields } from '../src/issuer/certificate-fields.js';
import { AttestorError } from '../src/errors.js';
import { openFileKeyManager } from '../src/issuer/file-keys.js';
import type { KeyManager, Signer } from '../src/issuer/signer.js';
import { checkTrustDomain, parseSpiffeId } from '../src/issuer/spiffe-id.js';
import { createX509SvidIssuer, type X509SvidIssuer } from '../src/issuer/x509-svid.js';
import { codeOf } from './helpers/code-of.js';
import { rejection } from './helpers/rejection.js';

const TRUST_DOMAIN = 'example.org';
const CRL_URL = 'https://attestor.example.org:8443/v1/crl';
const NOW = new Date('2030-06-01T12:00:00Z');
const HOUR = 3600_000;
const spkiOf = (key: KeyObject) => key.export({ type: 'spki', format: 'der' });

let dir: string;
let manager: KeyManager;
let signer: Signer;
let ca: Uint8Array;
let issuer: X509SvidIssuer;

beforeAll(async () => {
  dir = mkdtempSync(join(tmpdir(), 'attestor-x509-svid-'));
  manager = await openFileKeyManager(join(dir, 'keys'));
  signer = await manager.signer('x509-ca');
  ca = await createCaCertificate({ signer, trustDomain: TRUST_DOMAIN, now: NOW, lifetimeSeconds: 365 * 86400 });
  writeFileSync(join(dir, 'ca.pem'), new X509Certificate(ca).toString());
  issuer = createX509SvidIssuer({ caCertificate: ca, signer, crlUrl: CRL_URL });
});
afterAll(async () => {
  await manager?.close();
  if (dir) rmSync(dir, { recursive: true, force: true });
});

/** `openssl verify` as of NOW (the certificates are issued for a fixed time, not the clock's). */
const AT_NOW = ['-attime', String(NOW.getTime() / 1000 + 60)];

function openssl(...args: string[]): string {
  return execFileSync('openssl', args, { cwd: dir, encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] });
}

/** Writes `der` as name.pem and name.der in the temp dir. */
function save(name: string, der: Uint8Array): string {
  writeFileSync(join(dir, `${name}.der`), der);
  writeFileSync(join(dir, `${name}.pem`), new X509Certificate(der).toString());
  return `${name}.pem`;
}

const request = (subject: KeyObject, spiffeId = `spiffe://${TRUST_DOMAIN}/agent/tpm/${'ab'.repeat(32)}`) => ({
  subjectSpki: spkiOf(subject),
  spiffeId,
  notBefore: new Date(NOW.getTime() - 10_000),
  notAfter: new Date(NOW.getTime() + HOUR),
});

describe('X509-SVID profile, read back with openssl and node:crypto', () => {
  it('an EC leaf carries every item of the profile', async () => {
    const { publicKey } = generateKeyPairSync('ec', { namedCurve: 'P-256' });
    const req = request(publicKey);
    const leaf = await issuer.issue(req);
    const file = save('leaf-ec', leaf.der);

    const cert = new X509Certificate(leaf.der);
    const caCert = new X509Certificate(ca);
    expect(cert.subject ?? '').toBe('');
    expect(cert.issuer).toBe(caCert.subject);
    expect(cert.subjectAltName).toBe(`URI:${req.spiffeId}`);
    expect(cert.ca).toBe(false);
    expect(cert.keyUsage).toEqual(['1.3.6.1.5.5.7.3.1', '1.3.6.1.5.5.7.3.2']);
    expect(new Date(cert.validFrom).getTime()).toBe(req.notBefore.getTime());
    expect(new Date(cert.validTo).getTime()).toBe(req.notAfter.getTime());
    expect(cert.publicKey.export({ type: 'spki', format: 'der' }).equals(req.subjectSpki)).toBe(true);
    expect(cert.checkIssued(caCert)).toBe(true);
    expect(cert.verify(signer.publicKey)).toBe(true);
    // Random positive 128-bit serial: 16 bytes, top bit clear (so no leading 00 in DER).
    expect(leaf.serial).toMatch(/^[0-7][0-9a-f]{31}$/);
    expect(leaf.serial).not.toMatch(/^00/);
    expect(cert.serialNumber.toLowerCase()).toBe(leaf.serial);

    const text = openssl('x509', '-in', file, '-noout', '-text');
    expect(text).toContain('Signature Algorithm: ecdsa-with-SHA256');
    expect(text).toMatch(/Subject: *\n/);
    const ext = (name: string) => openssl('x509', '-in', file, '-noout', '-ext', name);
    expect(ext('basicConstraints')).toMatch(/X509v3 Basic Constraints: critical\n\s+CA:FALSE/);
    expect(ext('keyUsage')).toMatch(/X509v3 Key Usage: critical\n\s+Digital Signature, Key Agreement\n/);
    expect(ext('extendedKeyUsage')).toMatch(/Extended Key Usage: *\n\s+TLS Web Server Authentication, TLS Web Client Authentication/);
    expect(ext('subjectAltName')).toMatch(new RegExp(`Subject Alternative Name: critical\\n\\s+URI:${req.spiffeId}\\n`));
    expect(ext('crlDistributionPoints')).toContain(`URI:${CRL_URL}`);
    // SKI: SHA-1 of the subjectPublicKey BIT STRING's bytes (the 65-byte point); AKI: the CA's SKI.
    const colons = (b: Buffer) => b.toString('hex').toUpperCase().match(/../g)!.join(':');
    const ski = createHash('sha1').update(req.subjectSpki.subarray(-65)).digest();
    expect(ext('subjectKeyIdentifier')).toContain(colons(ski));
    const caSki = createHash('sha1').update(signer.spki.subarray(-65)).digest();
    expect(ext('authorityKeyIdentifier')).toContain(colons(caSki));

    expect(openssl('verify', ...AT_NOW, '-x509_strict', '-CAfile', 'ca.pem', file)).toBe(`${file}: OK\n`);
    for (const purpose of ['sslserver', 'sslclient']) {
      expect(openssl('verify', ...AT_NOW, '-x509_strict', '-purpose', purpose, '-CAfile', 'ca.pem', file)).toBe(`${file}: OK\n`);
    }
    // DER throughout: openssl parses it, and exactly one URI SAN is there.
    const asn1 = openssl('asn1parse', '-inform', 'DER', '-in', 'leaf-ec.der');
    expect(asn1).toContain('X509v3 Subject Alternative Name');
    expect(openssl('x509', '-in', file, '-noout', '-ext', 'subjectAltName').match(/URI:/g)).toHaveLength(1);
  });

  it('an RSA leaf has digitalSignature + keyEncipherment and verifies', async () => {
    const { publicKey } = generateKeyPairSync('rsa', { modulusLength: 2048 });
    const leaf = await issuer.issue(request(publicKey));
    const file = save('leaf-rsa', leaf.der);
    expect(openssl('x509', '-in', file, '-noout', '-ext', 'keyUsage')).toMatch(/critical\n\s+Digital Signature, Key Encipherment\n/);
    expect(openssl('verify', ...AT_NOW, '-x509_strict', '-CAfile', 'ca.pem', file)).toBe(`${file}: OK\n`);
    openssl('asn1parse', '-inform', 'DER', '-in', 'leaf-rsa.der');
  });

  it('random SPIFFE IDs, keys and validities come back from node:crypto as issued', async () => {
    const pool = [
      ...Array.from({ length: 3 }, () => generateKeyPairSync('ec', { namedCurve: 'P-256' }).publicKey),
      generateKeyPairSync('rsa', { modulusLength: 2048 }).publicKey,
    ];
    const caCert = new X509Certificate(ca);
    const segment = fc.stringMatching(/^[A-Za-z0-9._-]{1,40}$/).filter((s) => s !== '.' && s !== '..');
    const path = fc.array(segment, { minLength: 1, maxLength: 8 }).map((s) => `/${s.join('/')}`);
    const start = fc.integer({ min: NOW.getTime() - 30 * 86400_000, max: NOW.getTime() + 300 * 86400_000 });
    await fc.assert(
      fc.asyncProperty(path, fc.constantFrom(...pool), start, fc.integer({ min: 1, max: 30 * 86400 }), async (p, key, from, seconds) => {
        const spiffeId = `spiffe://${TRUST_DOMAIN}${p}`;
        const notBefore = new Date(from);
        const notAfter = new Date(Math.min(from + seconds * 1000, issuer.caNotAfter.getTime()));
        fc.pre(Math.floor(notBefore.getTime() / 1000) < Math.floor(notAfter.getTime() / 1000));
        const leaf = await issuer.issue({ subjectSpki: spkiOf(key), spiffeId, notBefore, notAfter });
        const cert = new X509Certificate(leaf.der);
        expect(cert.subjectAltName).toBe(`URI:${spiffeId}`);
        expect(new Date(cert.validFrom).getTime()).toBe(Math.floor(notBefore.getTime() / 1000) * 1000);
        expect(new Date(cert.validTo).getTime()).toBe(Math.floor(notAfter.getTime() / 1000) * 1000);
        expect(cert.publicKey.equals(key)).toBe(true);
        expect(cert.serialNumber.toLowerCase()).toBe(leaf.serial);
        expect(cert.checkIssued(caCert) && cert.verify(signer.publicKey)).toBe(true);
      }),
      { numRuns: 150 },
    );
  });
});

describe('X509-SVID refusals (ERR_ISSUANCE)', () => {
  const { publicKey } = generateKeyPairSync('ec', { namedCurve: 'P-256' });

  it('refuses SPIFFE IDs that SPIFFE-ID.md does not allow, or that name no workload or another trust domain', async () => {
    const bad = [
      'spiffe://example.org',
      'spiffe://example.org/',
      'spiffe://other.org/agent/x',
      'spiffe://Example.org/agent/x',
      'spiffe://example.org/agent//x',
      'spiffe://example.org/agent/./x',
      'spiffe://example.org/agent/../x',
      'spiffe://example.org/agent/x/',
      'spiffe://example.org/agent/%41',
      'spiffe://example.org/agent/x?y=1',
      'spiffe://example.org/agent/x#y',
      'spiffe://example.org:443/agent/x',
      'spiffe://user@example.org/agent/x',
      'spiffe:///agent/x',
      'https://example.org/agent/x',
      'spiffe://example.org/agent/ü',
      `spiffe://example.org/${'a'.repeat(2048)}`,
    ];
    for (const spiffeId of bad) {
      const e = await rejection(issuer.issue({ ...request(publicKey), spiffeId }), 'ERR_ISSUANCE');
      expect(e.message, spiffeId).toMatch(/SPIFFE ID|trust domain|no path/);
    }
  });

  it('refuses a validity that is empty, inverted or past the CA', async () => {
    const base = request(publicKey);
    await rejection(issuer.issue({ ...base, notAfter: base.notBefore }), 'ERR_ISSUANCE');
    await rejection(issuer.issue({ ...base, notBefore: base.notAfter }), 'ERR_ISSUANCE');
    await rejection(issuer.issue({ ...base, notAfter: new Date(issuer.caNotAfter.getTime() + 1000) }), 'ERR_ISSUANCE');
    await rejection(issuer.issue({ ...base, notBefore: new Date(Number.NaN) }), 'ERR_ISSUANCE');
    // Exactly the CA's notAfter is allowed.
    await issuer.issue({ ...base, notAfter: issuer.caNotAfter });
  });

  it('refuses subject keys other than P-256 and RSA', async () => {
    const p384 = generateKeyPairSync('ec', { namedCurve: 'P-384' }).publicKey;
    await rejection(issuer.issue(request(p384)), 'ERR_ISSUANCE');
    await rejection(issuer.issue({ ...request(publicKey), subjectSpki: new Uint8Array(91) }), 'ERR_ISSUANCE');
  });

  it('refuses a CA certificate of another key, a non-CA certificate and a CRL URL that is not http(s) ASCII', async () => {
    const other = await openFileKeyManager(join(dir, 'other-keys'));
    try {
      const otherSigner = await other.signer('x509-ca');
      expect(codeOf(() => createX509SvidIssuer({ caCertificate: ca, signer: otherSigner, crlUrl: CRL_URL }))).toBe('ERR_ISSUANCE');
      const leaf = await issuer.issue(request(otherSigner.publicKey));
      // A leaf certifies otherSigner's key, but is not a CA.
      expect(codeOf(() => createX509SvidIssuer({ caCertificate: leaf.der, signer: otherSigner, crlUrl: CRL_URL }))).toBe('ERR_ISSUANCE');
    } finally {
      await other.close();
    }
    for (const crlUrl of ['ftp://example.org/crl', 'not a url', 'https://example.org/crl?x= y', 'https://exämple.org/crl']) {
      expect(codeOf(() => createX509SvidIssuer({ caCertificate: ca, signer, crlUrl })), crlUrl).toBe('ERR_ISSUANCE');
    }
  });
});

describe('reading the CA certificate', () => {
  it('finds its subject DER, key, key identifier and notAfter', () => {
    const fields = readCertificateFields(ca);
    const caCert = new X509Certificate(ca);
    expect(Buffer.from(fields.spki).equals(signer.spki)).toBe(true);
    expect(fields.notAfter.getTime()).toBe(new Date(caCert.validTo).getTime());
    expect(Buffer.from(fields.subjectKeyId!).equals(createHash('sha1').update(signer.spki.subarray(-65)).digest())).toBe(true);
    // The subject as @peculiar/x509 reads it, an independent parser.
    expect(Buffer.from(fields.subject).equals(Buffer.from(new x509.X509Certificate(ca).subjectName.toArrayBuffer()))).toBe(true);
  });

  it('gives a value or ERR_ISSUANCE for any mutation of it, never another exception', () => {
    fc.assert(
      fc.property(fc.nat(ca.length - 1), fc.integer({ min: 1, max: 255 }), fc.nat(ca.length), (at, xor, cut) => {
        const mutated = Buffer.from(ca);
        mutated[at]! ^= xor;
        for (const bytes of [mutated, mutated.subarray(0, cut)]) {
          try {
            readCertificateFields(bytes);
          } catch (e) {
            expect(e).toBeInstanceOf(AttestorError);
            expect((e as AttestorError).code).toBe('ERR_ISSUANCE');
          }
        }
      }),
      { numRuns: 2000 },
    );
  });
});

describe('SPIFFE IDs', () => {
  it('accept every ID made of allowed characters and split it into trust domain and path', () => {
    const trustDomain = fc.stringMatching(/^[a-z0-9._-]{1,60}$/);
    const segment = fc.stringMatching(/^[A-Za-z0-9._-]{1,30}$/).filter((s) => s !== '.' && s !== '..');
    fc.assert(
      fc.property(trustDomain, fc.array(segment, { maxLength: 10 }), (td, segments) => {
        const path = segments.map((s) => `/${s}`).join('');
        expect(parseSpiffeId(`spiffe://${td}${path}`)).toEqual({ trustDomain: td, path });
        expect(checkTrustDomain(td)).toBe(td);
      }),
    );
  });

  it('refuse any ID with a character outside the allowed sets', () => {
    const outside = fc.string({ minLength: 1, maxLength: 1, unit: 'binary' }).filter((c) => !/[A-Za-z0-9._\-/]/.test(c));
    fc.assert(
      fc.property(outside, fc.nat(20), (c, at) => {
        const id = `spiffe://example.org/agent/${'x'.repeat(at)}${c}`;
        expect(codeOf(() => parseSpiffeId(id))).toBe('ERR_ISSUANCE');
        expect(codeOf(() => checkTrustDomain(`example${c}org`))).toBe('ERR_ISSUANCE');
      }),
    );
    expect(codeOf(() => checkTrustDomain('a'.repeat(256)))).toBe('ERR_ISSUANCE');
    expect(codeOf(() => checkTrustDomain('Example.org'))).toBe('ERR_ISSUANCE');
    expect(codeOf(() => checkTrustDomain(''))).toBe('ERR_ISSUANCE');
  });
});
