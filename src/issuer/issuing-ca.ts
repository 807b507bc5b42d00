import { X509Certificate } from 'node:crypto';
import { AttestorError } from '../errors.js';
import { readCertificateFields } from './certificate-fields.js';
import type { Signer } from './signer.js';
import { keyIdentifier } from './subject-key.js';

/** A CA certificate together with the Signer of its key: what every certificate it issues needs from it. */
export interface IssuingCa {
  readonly signer: Signer;
  /** The CA's subject Name, exact DER: the issuer field of what it signs. */
  readonly subject: Uint8Array;
  /** The CA's subject key identifier: the authorityKeyIdentifier of what it signs. */
  readonly keyId: Uint8Array;
  readonly notAfter: Date;
}

/**
 * Pairs a CA certificate with its Signer; ERR_ISSUANCE when the certificate is not a CA
 * certificate or certifies another key than the Signer's (what it signed would not verify).
 */
export function issuingCa(certificate: Uint8Array, signer: Signer): IssuingCa {
  const fields = readCertificateFields(certificate);
  if (!Buffer.from(fields.spki).equals(signer.spki)) {
    throw new AttestorError('ERR_ISSUANCE', `the CA certificate certifies another key than ${signer.uri}`);
  }
  if (!new X509Certificate(certificate).ca) {
    throw new AttestorError('ERR_ISSUANCE', 'the CA certificate does not have basicConstraints cA=true');
  }
  return { signer, subject: fields.subject, keyId: fields.subjectKeyId ?? keyIdentifier(fields.spki), notAfter: fields.notAfter };
}
