import * as x509 from '@peculiar/x509';
import { derUnsignedInteger } from './der.js';
import type { IssuingCa } from './issuing-ca.js';
import { signerCrypto } from './signer-crypto.js';

/** id-ce-cRLNumber (RFC 5280 §5.2.3). */
const CRL_NUMBER = '2.5.29.20';

export interface CrlRequest {
  readonly ca: IssuingCa;
  /** Increasing with every CRL the CA issues (RFC 5280 §5.2.3). */
  readonly number: number;
  readonly thisUpdate: Date;
  readonly nextUpdate: Date;
  /** Serials (lowercase hex) of revoked, unexpired certificates. */
  readonly revoked: readonly { readonly serial: string; readonly at: Date }[];
}

/**
 * A CRL of the CA (RFC 5280 §5), DER: issuer = the CA's subject, authorityKeyIdentifier, CRL
 * number, thisUpdate/nextUpdate, the revoked serials. Signed with the CA's Signer. Issued rarely
 * (on change and periodically), so @peculiar/x509's high-level API serves.
 */
export async function createCrl(req: CrlRequest): Promise<Uint8Array> {
  const { crypto, signingKey, signingAlgorithm } = signerCrypto(req.ca.signer);
  const crl = await x509.X509CrlGenerator.create(
    {
      issuer: new x509.Name(req.ca.subject),
      thisUpdate: req.thisUpdate,
      nextUpdate: req.nextUpdate,
      signingKey,
      signingAlgorithm,
      entries: req.revoked.map((r) => ({ serialNumber: r.serial, revocationDate: r.at })),
      extensions: [
        new x509.AuthorityKeyIdentifierExtension(Buffer.from(req.ca.keyId).toString('hex')),
        new x509.Extension(CRL_NUMBER, false, derUnsignedInteger(bigEndian(req.number))),
      ],
    },
    crypto,
  );
  return new Uint8Array(crl.rawData);
}

function bigEndian(n: number): Uint8Array {
  const hex = n.toString(16);
  return Buffer.from(hex.length % 2 === 1 ? `0${hex}` : hex, 'hex');
}
