import { AttestorError } from '../errors.js';
import { TAG, readChildren, readDerTime, readTlv, valueOf, wholeOf, type Tlv } from './der.js';

/**
 * The fields of an X.509 certificate (RFC 5280 §4.1) the issuer needs: the CA's subject as
 * its exact DER (a leaf's issuer must match it byte for byte), its key and key identifier,
 * and its notAfter. The certificates read here are the verifier's own (its CA, the leaves it
 * just issued); malformed input is ERR_ISSUANCE.
 */
export interface CertificateFields {
  /** The DER Name, tag and length included. */
  readonly subject: Uint8Array;
  /** The DER SubjectPublicKeyInfo. */
  readonly spki: Uint8Array;
  readonly notAfter: Date;
  /** The subjectKeyIdentifier extension's key identifier, when present. */
  readonly subjectKeyId?: Uint8Array;
}

/** OID 2.5.29.14 id-ce-subjectKeyIdentifier, with its tag and length. */
const SUBJECT_KEY_IDENTIFIER = Buffer.from('0603551d0e', 'hex');

export function readCertificateFields(certificate: Uint8Array): CertificateFields {
  const what = 'certificate';
  const outer = readTlv(certificate, 0, certificate.length, what);
  if (outer.tag !== TAG.SEQUENCE || outer.end !== certificate.length) throw malformed('is not one DER SEQUENCE');
  const [tbs] = readChildren(certificate, outer, what);
  if (!tbs || tbs.tag !== TAG.SEQUENCE) throw malformed('has no tbsCertificate');
  const fields = readChildren(certificate, tbs, what);
  // version [0] is absent in v1 certificates; everything after it is positional.
  const [, , issuer, validity, subject, spki, ...rest] = fields[0]?.tag === TAG.CONTEXT_0 ? fields.slice(1) : fields;
  if (!issuer || !validity || !subject || !spki || validity.tag !== TAG.SEQUENCE || subject.tag !== TAG.SEQUENCE || spki.tag !== TAG.SEQUENCE) {
    throw malformed('has an incomplete tbsCertificate');
  }
  const [notBefore, notAfter] = readChildren(certificate, validity, what);
  if (!notBefore || !notAfter) throw malformed('has an incomplete validity');
  const extensions = rest.find((t) => t.tag === TAG.CONTEXT_3);
  const subjectKeyId = extensions && findSubjectKeyId(certificate, extensions);
  return {
    subject: wholeOf(certificate, subject),
    spki: wholeOf(certificate, spki),
    notAfter: readDerTime(certificate, notAfter, 'certificate notAfter'),
    ...(subjectKeyId ? { subjectKeyId } : {}),
  };
}

/** Extensions ::= SEQUENCE OF Extension { extnID, critical DEFAULT FALSE, extnValue OCTET STRING }. */
function findSubjectKeyId(certificate: Uint8Array, extensions: Tlv): Uint8Array | undefined {
  const [list] = readChildren(certificate, extensions, 'certificate extensions');
  if (!list || list.tag !== TAG.SEQUENCE) throw malformed('has malformed extensions');
  for (const extension of readChildren(certificate, list, 'certificate extensions')) {
    const parts = readChildren(certificate, extension, 'certificate extension');
    const id = parts[0];
    const value = parts[parts.length - 1];
    if (!id || !value || !Buffer.from(wholeOf(certificate, id)).equals(SUBJECT_KEY_IDENTIFIER)) continue;
    // extnValue OCTET STRING holds KeyIdentifier ::= OCTET STRING.
    const inner = readTlv(certificate, value.valueStart, value.end, 'subjectKeyIdentifier');
    if (value.tag !== TAG.OCTET_STRING || inner.tag !== TAG.OCTET_STRING || inner.end !== value.end) {
      throw malformed('has a malformed subjectKeyIdentifier');
    }
    return valueOf(certificate, inner);
  }
  return undefined;
}

function malformed(why: string): AttestorError {
  return new AttestorError('ERR_ISSUANCE', `certificate ${why}`);
}
