import { execFileSync } from 'node:child_process';
import { createHash, generateKeyPairSync, X509Certificate, type webcrypto } from 'node:crypto';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { connect, createServer, type Server } from 'node:tls';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { BACKDATE_SECONDS, createCaCertificate, createServerCertificate } from '../src/issuer/ca-certificate.js';
import { openFileKeyManager } from '../src/issuer/file-keys.js';
import type { KeyManager, Signer } from '../src/issuer/signer.js';
import { signerCrypto } from '../src/issuer/signer-crypto.js';
import { rejection } from './helpers/rejection.js';

const NOW = new Date('2031-02-03T04:05:06.789Z');
const NOW_SECONDS = Math.floor(NOW.getTime() / 1000);
const LIFETIME = 10 * 365 * 86400;

let dir: string;
let manager: KeyManager;
let signer: Signer;
let ca: Uint8Array;

beforeAll(async () => {
  dir = mkdtempSync(join(tmpdir(), 'attestor-ca-'));
  manager = await openFileKeyManager(join(dir, 'keys'));
  signer = await manager.signer('x509-ca');
  ca = await createCaCertificate({ signer, trustDomain: 'prod.example.org', now: NOW, lifetimeSeconds: LIFETIME });
  writeFileSync(join(dir, 'ca.pem'), new X509Certificate(ca).toString());
});
afterAll(async () => {
  await manager?.close();
  if (dir) rmSync(dir, { recursive: true, force: true });
});

function openssl(...args: string[]): string {
  return execFileSync('openssl', args, { cwd: dir, encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] });
}
const AT_NOW = ['-attime', String(NOW_SECONDS + 60)];
const colons = (b: Buffer) => b.toString('hex').toUpperCase().match(/../g)!.join(':');

describe('root CA certificate', () => {
  it('is self-signed with the CA profile of SERVICE.md', () => {
    const cert = new X509Certificate(ca);
    expect(cert.subject).toBe('O=prod.example.org\nCN=Attestor root CA');
    expect(cert.issuer).toBe(cert.subject);
    expect(cert.ca).toBe(true);
    expect(cert.subjectAltName).toBe('URI:spiffe://prod.example.org');
    expect(cert.checkIssued(cert) && cert.verify(signer.publicKey)).toBe(true);
    expect(cert.publicKey.export({ type: 'spki', format: 'der' }).equals(signer.spki)).toBe(true);
    expect(new Date(cert.validFrom).getTime()).toBe((NOW_SECONDS - BACKDATE_SECONDS) * 1000);
    expect(new Date(cert.validTo).getTime()).toBe((NOW_SECONDS + LIFETIME) * 1000);
    expect(cert.serialNumber).toMatch(/^[0-7][0-9A-F]{31}$/);
    expect(cert.serialNumber).not.toMatch(/^00/);

    const ext = (name: string) => openssl('x509', '-in', 'ca.pem', '-noout', '-ext', name);
    expect(ext('basicConstraints')).toMatch(/Basic Constraints: critical\n\s+CA:TRUE\n/);
    expect(ext('keyUsage')).toMatch(/Key Usage: critical\n\s+Certificate Sign, CRL Sign\n/);
    const ski = colons(createHash('sha1').update(signer.spki.subarray(-65)).digest());
    expect(ext('subjectKeyIdentifier')).toContain(ski);
    expect(ext('authorityKeyIdentifier')).toContain(ski);
    expect(openssl('x509', '-in', 'ca.pem', '-noout', '-text')).toContain('Signature Algorithm: ecdsa-with-SHA256');
    expect(openssl('verify', ...AT_NOW, '-x509_strict', '-CAfile', 'ca.pem', 'ca.pem')).toBe('ca.pem: OK\n');
  });

  it('refuses a trust domain SPIFFE-ID.md does not allow and a lifetime that is not a positive whole number of seconds', async () => {
    for (const trustDomain of ['Example.org', 'example.org/x', '', 'exa mple.org']) {
      await rejection(createCaCertificate({ signer, trustDomain, now: NOW, lifetimeSeconds: LIFETIME }), 'ERR_ISSUANCE');
    }
    for (const lifetimeSeconds of [0, -1, 1.5, Number.NaN]) {
      await rejection(createCaCertificate({ signer, trustDomain: 'example.org', now: NOW, lifetimeSeconds }), 'ERR_ISSUANCE');
    }
  });

  it('signs through the Signer only for ECDSA with SHA-256; other keys go to @peculiar/webcrypto', async () => {
    const { crypto, signingKey } = signerCrypto(signer);
    const data = new Uint8Array([1, 2, 3]);
    await rejection(crypto.subtle.sign({ name: 'ECDSA', hash: 'SHA-384' }, signingKey, data), 'ERR_ISSUANCE');
    await rejection(crypto.subtle.sign('RSASSA-PKCS1-v1_5', signingKey, data), 'ERR_ISSUANCE');
    const hmac = await crypto.subtle.generateKey({ name: 'HMAC', hash: 'SHA-256' }, false, ['sign']);
    expect((await crypto.subtle.sign('HMAC', hmac as webcrypto.CryptoKey, data)).byteLength).toBe(32);
  });
});

describe('server certificate', () => {
  let server: Server | undefined;
  afterAll(() => new Promise<void>((resolve) => (server ? server.close(() => resolve()) : resolve())));

  it('carries the TLS server profile and verifies for serverAuth', async () => {
    const { publicKey } = generateKeyPairSync('ec', { namedCurve: 'P-256' });
    const der = await createServerCertificate({
      ca: { certificate: ca, signer },
      subjectSpki: publicKey.export({ type: 'spki', format: 'der' }),
      dnsNames: ['attestor.example.org', 'localhost'],
      ipAddresses: ['127.0.0.1', '::1'],
      now: NOW,
      lifetimeSeconds: 30 * 86400,
    });
    const cert = new X509Certificate(der);
    writeFileSync(join(dir, 'server.pem'), cert.toString());
    expect(cert.subject).toBe('CN=attestor.example.org');
    expect(cert.issuer).toBe(new X509Certificate(ca).subject);
    expect(cert.ca).toBe(false);
    expect(cert.keyUsage).toEqual(['1.3.6.1.5.5.7.3.1']);
    expect(cert.subjectAltName).toBe('DNS:attestor.example.org, DNS:localhost, IP Address:127.0.0.1, IP Address:0:0:0:0:0:0:0:1');
    expect(new Date(cert.validFrom).getTime()).toBe((NOW_SECONDS - BACKDATE_SECONDS) * 1000);
    const ext = (name: string) => openssl('x509', '-in', 'server.pem', '-noout', '-ext', name);
    expect(ext('basicConstraints')).toMatch(/critical\n\s+CA:FALSE\n/);
    expect(ext('keyUsage')).toMatch(/critical\n\s+Digital Signature\n/);
    expect(ext('authorityKeyIdentifier')).toContain(colons(createHash('sha1').update(signer.spki.subarray(-65)).digest()));
    expect(openssl('verify', ...AT_NOW, '-x509_strict', '-purpose', 'sslserver', '-CAfile', 'ca.pem', 'server.pem')).toBe('server.pem: OK\n');
  });

  it('serves TLS that a client pinning the CA accepts', async () => {
    const pair = generateKeyPairSync('ec', { namedCurve: 'P-256' });
    const now = new Date();
    // This handshake runs on the real clock, so this CA and certificate are made for it.
    const liveCa = await createCaCertificate({ signer, trustDomain: 'example.org', now, lifetimeSeconds: 86400 });
    const der = await createServerCertificate({
      ca: { certificate: liveCa, signer },
      subjectSpki: pair.publicKey.export({ type: 'spki', format: 'der' }),
      dnsNames: ['localhost'],
      ipAddresses: [],
      now,
      lifetimeSeconds: 3600,
    });
    const pem = (d: Uint8Array) => new X509Certificate(d).toString();
    server = createServer({ key: pair.privateKey.export({ type: 'pkcs8', format: 'pem' }), cert: pem(der) }, (socket) => socket.end('hello'));
    await new Promise<void>((resolve) => server!.listen(0, '127.0.0.1', resolve));
    const port = (server.address() as { port: number }).port;
    const reply = await new Promise<string>((resolve, reject) => {
      const socket = connect({ host: '127.0.0.1', port, servername: 'localhost', ca: pem(liveCa) }, () => {
        socket.setEncoding('utf8');
        let text = '';
        socket.on('data', (d) => (text += d));
        socket.on('end', () => resolve(text));
      });
      socket.on('error', reject);
    });
    expect(reply).toBe('hello');
  });

  it('has digitalSignature + keyEncipherment for an RSA key and never outlives the CA', async () => {
    const { publicKey } = generateKeyPairSync('rsa', { modulusLength: 2048 });
    const der = await createServerCertificate({
      ca: { certificate: ca, signer },
      subjectSpki: publicKey.export({ type: 'spki', format: 'der' }),
      dnsNames: [],
      ipAddresses: ['10.0.0.1'],
      now: NOW,
      lifetimeSeconds: 2 * LIFETIME,
    });
    const cert = new X509Certificate(der);
    writeFileSync(join(dir, 'server-rsa.pem'), cert.toString());
    expect(cert.subject).toBe('CN=10.0.0.1');
    expect(cert.validTo).toBe(new X509Certificate(ca).validTo);
    expect(openssl('x509', '-in', 'server-rsa.pem', '-noout', '-ext', 'keyUsage')).toMatch(/critical\n\s+Digital Signature, Key Encipherment\n/);
  });

  it('refuses bad names, no names, a CA of another key and an unsupported key', async () => {
    const { publicKey } = generateKeyPairSync('ec', { namedCurve: 'P-256' });
    const base = {
      ca: { certificate: ca, signer },
      subjectSpki: publicKey.export({ type: 'spki', format: 'der' }),
      dnsNames: ['localhost'],
      ipAddresses: [],
      now: NOW,
      lifetimeSeconds: 3600,
    };
    await rejection(createServerCertificate({ ...base, dnsNames: ['bad name'] }), 'ERR_ISSUANCE');
    await rejection(createServerCertificate({ ...base, dnsNames: ['-leading.example'] }), 'ERR_ISSUANCE');
    await rejection(createServerCertificate({ ...base, dnsNames: [], ipAddresses: ['999.1.1.1'] }), 'ERR_ISSUANCE');
    await rejection(createServerCertificate({ ...base, dnsNames: [] }), 'ERR_ISSUANCE');
    const p384 = generateKeyPairSync('ec', { namedCurve: 'P-384' }).publicKey.export({ type: 'spki', format: 'der' });
    await rejection(createServerCertificate({ ...base, subjectSpki: p384 }), 'ERR_ISSUANCE');
    const otherSigner = await manager.signer('jwt');
    await rejection(createServerCertificate({ ...base, ca: { certificate: ca, signer: otherSigner } }), 'ERR_ISSUANCE');
  });
});
