import { AttestorError } from '../errors.js';
import { certificatesIn, isSignedBy, parseCertificate, type ParsedCertificate } from './ek-certificate.js';

/** A certificate of the EK root store, with the place it takes in the store's own chains. */
export interface TrustedCertificate extends ParsedCertificate {
  /** The store entry it came from (a file name; "name#2" for the second certificate of a bundle). */
  readonly name: string;
  /** Subject equals issuer and its own key verifies its signature. */
  readonly selfSigned: boolean;
  /** Other store certificates whose key verifies its signature. */
  readonly parents: readonly TrustedCertificate[];
}

export interface PemText {
  readonly name: string;
  readonly pem: string;
}

/**
 * The EK trust store: vendor root and intermediate CA certificates as an operator configures
 * them (a directory of PEM files mixing both). A chain may end at an entry that is
 * self-signed, or whose issuer the store does not hold (e.g. Infineon's "IFX TPM EK Root CA",
 * issued by a VeriSign root that vendors no longer publish): putting a certificate in the
 * store is the decision to trust it. An entry whose issuer is in the store is an intermediate,
 * usable only through that issuer, so its own validity and its issuer's are checked.
 */
export class EkRootStore {
  readonly entries: readonly TrustedCertificate[];
  readonly anchors: readonly TrustedCertificate[];
  private readonly bySubject = new Map<string, TrustedCertificate[]>();
  private readonly members = new Map<ParsedCertificate, TrustedCertificate>();

  /** Builds the store from parsed certificates; duplicates (same DER) keep the first name. */
  constructor(certificates: readonly (ParsedCertificate & { name: string })[]) {
    const seen = new Set<string>();
    const entries: (TrustedCertificate & { parents: TrustedCertificate[] })[] = [];
    for (const c of certificates) {
      const fingerprint = Buffer.from(c.der).toString('base64');
      if (seen.has(fingerprint)) continue;
      seen.add(fingerprint);
      const entry = { ...c, selfSigned: c.subjectKey === c.issuerKey && isSignedBy(c, c.publicKey), parents: [] };
      entries.push(entry);
      this.members.set(entry, entry);
      this.bySubject.set(entry.subjectKey, [...this.named(entry.subjectKey), entry]);
    }
    // Links inside the store are checked once here, so a verification only checks the new ones.
    for (const entry of entries) {
      if (!entry.selfSigned) {
        entry.parents = this.named(entry.issuerKey).filter((p) => p !== entry && isSignedBy(entry, p.publicKey));
      }
    }
    this.entries = entries;
    this.anchors = entries.filter((e) => e.selfSigned || e.parents.length === 0);
    if (this.anchors.length === 0) {
      throw new AttestorError('ERR_EK_ROOTS_EMPTY', 'the EK root store holds no trust anchor: configure vendor root certificates');
    }
  }

  /** Store certificates with this normalized subject name. */
  named(subjectKey: string): readonly TrustedCertificate[] {
    return this.bySubject.get(subjectKey) ?? [];
  }

  isAnchor(c: ParsedCertificate): boolean {
    const entry = this.members.get(c);
    return entry !== undefined && (entry.selfSigned || entry.parents.length === 0);
  }

  /** For a store certificate, its verified issuers in the store; undefined for any other certificate. */
  verifiedParents(c: ParsedCertificate): readonly TrustedCertificate[] | undefined {
    return this.members.get(c)?.parents;
  }
}

/**
 * The store from PEM texts the caller has read (this module does no I/O). Every text must hold
 * at least one well-formed CERTIFICATE block (ERR_EK_CERT_MALFORMED names the entry); a store
 * without any trust anchor is refused (ERR_EK_ROOTS_EMPTY).
 */
export function rootStoreFromPemTexts(texts: readonly PemText[]): EkRootStore {
  return new EkRootStore(
    texts.flatMap(({ name, pem }) => {
      const ders = certificatesIn(pem, name);
      return ders.map((der, i) => ({ ...parseCertificate(der, name), name: ders.length > 1 ? `${name}#${i + 1}` : name }));
    }),
  );
}
