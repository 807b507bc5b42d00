import { isIP } from 'node:net';
import '../reflect-metadata.js';
import * as x509 from '@peculiar/x509';
import { hex } from '../bytes.js';
import { AttestorError } from '../errors.js';
import { issuingCa } from './issuing-ca.js';
import { createSerialNumbers } from './serial-number.js';
import type { Signer } from './signer.js';
import { signerCrypto } from './signer-crypto.js';
import { checkTrustDomain } from './spiffe-id.js';
import { keyIdentifier, readSubjectKey } from './subject-key.js';

/**
 * The two certificates made rarely, with @peculiar/x509's object model: the self-signed root
 * CA of the trust domain, and the verifier's own TLS server certificate issued by it. The
 * private key signs through its Signer (signer-crypto.ts), wherever it lives.
 */

/** Clocks of relying parties may run a little behind ours (SERVICE.md "Credentials"). */
export const BACKDATE_SECONDS = 10;
const CA_COMMON_NAME = 'Attestor root CA';
/** A DNS name as TLS clients match it: letters, digits, hyphens, dots; a leading `*.` wildcard. */
const DNS_NAME = /^(\*\.)?[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?(\.[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*$/;

export interface CaCertificateOptions {
  readonly signer: Signer;
  readonly trustDomain: string;
  readonly now: Date;
  readonly lifetimeSeconds: number;
}

/**
 * The trust domain's root: self-signed, subject O=<trust domain>, CN=Attestor root CA;
 * basicConstraints cA=true and keyUsage keyCertSign+cRLSign (both critical); URI SAN
 * `spiffe://<trust domain>` (X509-SVID §3.2: a signing certificate's SPIFFE ID has no path);
 * SKI (RFC 5280 §4.2.1.2 method 1) and the same as AKI; a random positive 128-bit serial;
 * valid from 10 s before `now` for `lifetimeSeconds`. Returns the DER.
 */
export async function createCaCertificate(opts: CaCertificateOptions): Promise<Uint8Array> {
  const trustDomain = checkTrustDomain(opts.trustDomain);
  const { notBefore, notAfter } = validity(opts.now, opts.lifetimeSeconds);
  const keyId = hex(keyIdentifier(opts.signer.spki));
  const name = new x509.Name([{ O: [trustDomain] }, { CN: [CA_COMMON_NAME] }]);
  return signWith(opts.signer, {
    subject: name,
    issuer: name,
    notBefore,
    notAfter,
    publicKey: opts.signer.spki,
    extensions: [
      new x509.BasicConstraintsExtension(true, undefined, true),
      new x509.KeyUsagesExtension(x509.KeyUsageFlags.keyCertSign | x509.KeyUsageFlags.cRLSign, true),
      new x509.SubjectAlternativeNameExtension([{ type: 'url', value: `spiffe://${trustDomain}` }]),
      new x509.SubjectKeyIdentifierExtension(keyId),
      new x509.AuthorityKeyIdentifierExtension(keyId),
    ],
  });
}

export interface ServerCertificateOptions {
  readonly ca: { readonly certificate: Uint8Array; readonly signer: Signer };
  /** DER SubjectPublicKeyInfo of the TLS key: EC P-256 or RSA. */
  readonly subjectSpki: Uint8Array;
  readonly dnsNames: readonly string[];
  readonly ipAddresses: readonly string[];
  readonly now: Date;
  /** Cut to the CA's own notAfter. */
  readonly lifetimeSeconds: number;
}

/**
 * The verifier's TLS server certificate: subject CN = its first name, DNS and IP SANs,
 * basicConstraints cA=false and keyUsage digitalSignature (+keyEncipherment for RSA), both
 * critical, EKU serverAuth, SKI, AKI = the CA's key id. Returns the DER.
 */
export async function createServerCertificate(opts: ServerCertificateOptions): Promise<Uint8Array> {
  const ca = issuingCa(opts.ca.certificate, opts.ca.signer);
  const key = readSubjectKey(opts.subjectSpki);
  for (const d of opts.dnsNames) {
    if (!DNS_NAME.test(d) || d.length > 253) throw new AttestorError('ERR_ISSUANCE', `${JSON.stringify(d)} is not a DNS name`);
  }
  for (const ip of opts.ipAddresses) {
    if (isIP(ip) === 0) throw new AttestorError('ERR_ISSUANCE', `${JSON.stringify(ip)} is not an IP address`);
  }
  const first = opts.dnsNames[0] ?? opts.ipAddresses[0];
  if (first === undefined) throw new AttestorError('ERR_ISSUANCE', 'a server certificate needs a DNS name or an IP address');
  const { notBefore, notAfter } = validity(opts.now, opts.lifetimeSeconds);
  const usages = x509.KeyUsageFlags.digitalSignature | (key.kind === 'rsa' ? x509.KeyUsageFlags.keyEncipherment : 0);
  return signWith(ca.signer, {
    subject: new x509.Name([{ CN: [first] }]),
    issuer: new x509.Name(ca.subject),
    notBefore,
    notAfter: notAfter > ca.notAfter ? ca.notAfter : notAfter,
    publicKey: key.spki,
    extensions: [
      new x509.BasicConstraintsExtension(false, undefined, true),
      new x509.KeyUsagesExtension(usages, true),
      new x509.ExtendedKeyUsageExtension([x509.ExtendedKeyUsage.serverAuth]),
      new x509.SubjectAlternativeNameExtension([
        ...opts.dnsNames.map((value) => ({ type: 'dns' as const, value })),
        ...opts.ipAddresses.map((value) => ({ type: 'ip' as const, value })),
      ]),
      new x509.SubjectKeyIdentifierExtension(hex(key.keyId)),
      new x509.AuthorityKeyIdentifierExtension(hex(ca.keyId)),
    ],
  });
}

/** From BACKDATE_SECONDS before `now` for `lifetimeSeconds`, in whole seconds as X.509 encodes them. */
function validity(now: Date, lifetimeSeconds: number): { notBefore: Date; notAfter: Date } {
  if (!Number.isSafeInteger(lifetimeSeconds) || lifetimeSeconds <= 0) {
    throw new AttestorError('ERR_ISSUANCE', `lifetime must be a positive whole number of seconds, not ${lifetimeSeconds}`);
  }
  const seconds = Math.floor(now.getTime() / 1000);
  if (!Number.isFinite(seconds)) throw new AttestorError('ERR_ISSUANCE', 'now is not a valid date');
  return { notBefore: new Date((seconds - BACKDATE_SECONDS) * 1000), notAfter: new Date((seconds + lifetimeSeconds) * 1000) };
}

type Profile = Omit<x509.X509CertificateCreateWithKeyParams, 'signingKey' | 'signingAlgorithm' | 'serialNumber'>;

async function signWith(signer: Signer, profile: Profile): Promise<Uint8Array> {
  const { crypto, signingKey, signingAlgorithm } = signerCrypto(signer);
  const serialNumber = createSerialNumbers()().toString('hex');
  const certificate = await x509.X509CertificateGenerator.create(
    { ...profile, serialNumber, signingKey, signingAlgorithm },
    crypto,
  );
  return new Uint8Array(certificate.rawData);
}
