import { X509Certificate } from 'node:crypto';
import { AttestorError } from '../errors.js';
import { TAG, der, derTime } from './der.js';
import { ecdsaSignatureDer } from './ecdsa-signature.js';
import { issuingCa } from './issuing-ca.js';
import { SERIAL_BYTES, createSerialNumbers } from './serial-number.js';
import type { Signer } from './signer.js';
import { parseSpiffeId } from './spiffe-id.js';
import { readSubjectKey } from './subject-key.js';

/**
 * X509-SVIDs (SPIFFE X509-SVID.md, SERVICE.md "Credentials"), built for speed: everything
 * that is the same for every leaf of one CA is DER prepared once per issuer, and a leaf adds
 * only its serial, validity, key, key identifier and SPIFFE ID. @peculiar/x509's object model
 * spends about 3 ms of CPU per certificate on what costs tens of microseconds here.
 *
 * The profile: version 3; random positive 128-bit serial; ecdsa-with-SHA256; issuer = the CA's
 * subject (its exact DER); empty subject; the subject key as given (P-256 or RSA); extensions
 * basicConstraints cA=false (critical), keyUsage digitalSignature + keyAgreement (EC) or
 * + keyEncipherment (RSA) (critical), extKeyUsage serverAuth + clientAuth, authorityKeyIdentifier
 * = the CA's key id, CRL distribution point, subjectKeyIdentifier (RFC 5280 §4.2.1.2 method 1)
 * and exactly one URI SAN, the SPIFFE ID (critical, since the subject is empty: §4.2.1.6).
 */

export interface X509SvidIssuerOptions {
  /** DER of the CA certificate whose key `signer` holds. */
  readonly caCertificate: Uint8Array;
  readonly signer: Signer;
  /** Where relying parties fetch the CRL (http or https). */
  readonly crlUrl: string;
}

export interface X509SvidRequest {
  /** DER SubjectPublicKeyInfo of the attested key: EC P-256 or RSA 2048..8192. */
  readonly subjectSpki: Uint8Array;
  /** A SPIFFE ID with a path, in the CA's trust domain. */
  readonly spiffeId: string;
  /** Whole seconds are kept (X.509 times have no fractions). */
  readonly notBefore: Date;
  /** At most the CA's notAfter: the caller cuts the lifetime to it (X509SvidIssuer.caNotAfter). */
  readonly notAfter: Date;
}

export interface X509Svid {
  readonly der: Uint8Array;
  /** The serial number, lowercase hex (32 digits). */
  readonly serial: string;
}

export interface X509SvidIssuer {
  /** No leaf may outlive its CA. */
  readonly caNotAfter: Date;
  issue(request: X509SvidRequest): Promise<X509Svid>;
}

/** Prepared DER: OIDs with tag and length, and constant fields. */
const DER = {
  version3: fromHex('a003020102'),
  serialHeader: Uint8Array.of(TAG.INTEGER, SERIAL_BYTES),
  ecdsaWithSha256: fromHex('300a06082a8648ce3d040302'),
  emptyName: Uint8Array.of(TAG.SEQUENCE, 0),
  critical: fromHex('0101ff'),
  basicConstraints: fromHex('0603551d13'),
  keyUsage: fromHex('0603551d0f'),
  extKeyUsage: fromHex('0603551d25'),
  subjectKeyIdentifier: fromHex('0603551d0e'),
  authorityKeyIdentifier: fromHex('0603551d23'),
  subjectAltName: fromHex('0603551d11'),
  crlDistributionPoints: fromHex('0603551d1f'),
  /** SEQUENCE { id-kp-serverAuth, id-kp-clientAuth } (RFC 5280 §4.2.1.12). */
  serverAndClientAuth: fromHex('301406082b0601050507030106082b06010505070302'),
  /** KeyUsage BIT STRINGs (RFC 5280 §4.2.1.3; bit 0 first, trailing zero bits unused). */
  digitalSignatureKeyAgreement: fromHex('03020388'),
  digitalSignatureKeyEncipherment: fromHex('030205a0'),
  noUnusedBits: Uint8Array.of(0),
};

/** Extension ::= SEQUENCE { extnID, critical BOOLEAN DEFAULT FALSE, extnValue OCTET STRING }. */
function extension(oid: Uint8Array, critical: boolean, value: Uint8Array): Buffer {
  return critical ? der(TAG.SEQUENCE, oid, DER.critical, der(TAG.OCTET_STRING, value)) : der(TAG.SEQUENCE, oid, der(TAG.OCTET_STRING, value));
}

export function createX509SvidIssuer(opts: X509SvidIssuerOptions): X509SvidIssuer {
  const ca = issuingCa(opts.caCertificate, opts.signer);
  const trustDomain = caTrustDomain(opts.caCertificate);
  const crlUrl = checkCrlUrl(opts.crlUrl);
  const serials = createSerialNumbers();

  // The signature algorithm and issuer, and the extensions that are the same for every leaf.
  const head = Buffer.concat([DER.ecdsaWithSha256, ca.subject]);
  const common = [
    extension(DER.basicConstraints, true, der(TAG.SEQUENCE)),
    extension(DER.extKeyUsage, false, DER.serverAndClientAuth),
    // AuthorityKeyIdentifier ::= SEQUENCE { keyIdentifier [0] IMPLICIT KeyIdentifier }.
    extension(DER.authorityKeyIdentifier, false, der(TAG.SEQUENCE, der(TAG.CONTEXT_0_PRIMITIVE, ca.keyId))),
    // CRLDistributionPoints ::= SEQUENCE OF DistributionPoint { distributionPoint [0] { fullName [0] { URI } } }.
    extension(DER.crlDistributionPoints, false, der(TAG.SEQUENCE, der(TAG.SEQUENCE, der(TAG.CONTEXT_0, der(TAG.CONTEXT_0, der(TAG.URI, crlUrl)))))),
  ];
  const constantExtensions = {
    ec: Buffer.concat([extension(DER.keyUsage, true, DER.digitalSignatureKeyAgreement), ...common]),
    rsa: Buffer.concat([extension(DER.keyUsage, true, DER.digitalSignatureKeyEncipherment), ...common]),
  };

  return {
    caNotAfter: ca.notAfter,
    async issue(request) {
      const id = parseSpiffeId(request.spiffeId);
      if (id.path === '') throw new AttestorError('ERR_ISSUANCE', `${request.spiffeId} has no path: a leaf SVID names a workload (X509-SVID §3.1)`);
      if (trustDomain !== undefined && id.trustDomain !== trustDomain) {
        throw new AttestorError('ERR_ISSUANCE', `${request.spiffeId} is outside the CA's trust domain ${trustDomain}`);
      }
      const notBefore = Math.floor(request.notBefore.getTime() / 1000);
      const notAfter = Math.floor(request.notAfter.getTime() / 1000);
      if (!(notBefore < notAfter)) throw new AttestorError('ERR_ISSUANCE', 'notBefore must be before notAfter');
      if (notAfter * 1000 > ca.notAfter.getTime()) {
        throw new AttestorError('ERR_ISSUANCE', `notAfter ${request.notAfter.toISOString()} is past the CA's notAfter ${ca.notAfter.toISOString()}`);
      }
      const key = readSubjectKey(request.subjectSpki);
      const serial = serials();
      const tbs = der(
        TAG.SEQUENCE,
        DER.version3,
        DER.serialHeader,
        serial,
        head,
        der(TAG.SEQUENCE, derTime(new Date(notBefore * 1000)), derTime(new Date(notAfter * 1000))),
        DER.emptyName,
        key.spki,
        der(
          TAG.CONTEXT_3,
          der(
            TAG.SEQUENCE,
            constantExtensions[key.kind],
            extension(DER.subjectKeyIdentifier, false, der(TAG.OCTET_STRING, key.keyId)),
            extension(DER.subjectAltName, true, der(TAG.SEQUENCE, der(TAG.URI, Buffer.from(request.spiffeId, 'latin1')))),
          ),
        ),
      );
      const signature = ecdsaSignatureDer(await ca.signer.sign(tbs));
      const certificate = der(TAG.SEQUENCE, tbs, DER.ecdsaWithSha256, der(TAG.BIT_STRING, DER.noUnusedBits, signature));
      return { der: certificate, serial: serial.toString('hex') };
    },
  };
}

/** The trust domain of the CA's SPIFFE ID (its URI SAN), if it has one. */
function caTrustDomain(certificate: Uint8Array): string | undefined {
  const uris = (new X509Certificate(certificate).subjectAltName ?? '')
    .split(', ')
    .filter((name) => name.startsWith('URI:spiffe://'))
    .map((name) => parseSpiffeId(name.slice('URI:'.length)).trustDomain);
  if (uris.length > 1) throw new AttestorError('ERR_ISSUANCE', 'the CA certificate has more than one SPIFFE ID');
  return uris[0];
}

function checkCrlUrl(url: string): Buffer {
  let parsed: URL | undefined;
  try {
    parsed = new URL(url);
  } catch {
    parsed = undefined;
  }
  // An IA5String, and one that no relying party could split or misread: printable ASCII, no spaces.
  if (!parsed || (parsed.protocol !== 'http:' && parsed.protocol !== 'https:') || !/^[\x21-\x7e]+$/.test(url)) {
    throw new AttestorError('ERR_ISSUANCE', `CRL URL ${JSON.stringify(url)} is not an http(s) URL of printable ASCII`);
  }
  return Buffer.from(url, 'latin1');
}

function fromHex(h: string): Buffer {
  return Buffer.from(h, 'hex');
}
