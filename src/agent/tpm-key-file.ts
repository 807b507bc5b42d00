import type { KeyBlobs } from './state-dir.js';

/*
 * A TPM key as OpenSSL's tpm2 provider (tpm2-openssl) and tpm2-tss-engine load it: the
 * "TSS2 PRIVATE KEY" PEM of the TCG-adopted "ASN.1 Specification for TPM 2.0 Key Files":
 *
 *   TPMKey ::= SEQUENCE {
 *     type        OBJECT IDENTIFIER,         -- id-loadablekey 2.23.133.10.1.3
 *     emptyAuth   [0] EXPLICIT BOOLEAN OPTIONAL,
 *     parent      INTEGER,                   -- 0x40000001: a primary re-created under the owner hierarchy
 *     pubkey      OCTET STRING,              -- TPM2B_PUBLIC
 *     privkey     OCTET STRING }             -- TPM2B_PRIVATE
 *
 * For parent TPM_RH_OWNER the loader re-creates the ECC P-256 Storage Root Key of the TCG
 * Provisioning Guidance (tpm2-openssl 1.1: its primaryEccTemplate), the same template as
 * srkTemplate('ecc') the agent creates its keys under, so the blob loads under the same SRK.
 */

export const TSS2_PRIVATE_KEY_LABEL = 'TSS2 PRIVATE KEY';

/** TPM_RH_OWNER (Part 2 §7.4): the key's parent is the SRK re-created in the owner hierarchy. */
export const OWNER_PARENT = 0x40000001;

/** DER of OBJECT IDENTIFIER 2.23.133.10.1.3 (id-loadablekey). */
const LOADABLE_KEY_OID = Uint8Array.from([0x06, 0x06, 0x67, 0x81, 0x05, 0x0a, 0x01, 0x03]);
/** DER of [0] EXPLICIT BOOLEAN TRUE: the key has no authorization value (the identity key has none). */
const EMPTY_AUTH_TRUE = Uint8Array.from([0xa0, 0x03, 0x01, 0x01, 0xff]);

const TAG = { integer: 0x02, octetString: 0x04, sequence: 0x30 } as const;

/** The DER TPMKey of a loadable key with empty auth under the owner SRK. */
export function tss2PrivateKeyDer(blobs: KeyBlobs): Uint8Array {
  return tlv(
    TAG.sequence,
    Buffer.concat([
      LOADABLE_KEY_OID,
      EMPTY_AUTH_TRUE,
      tlv(TAG.integer, unsignedInteger(OWNER_PARENT)),
      tlv(TAG.octetString, blobs.public),
      tlv(TAG.octetString, blobs.private),
    ]),
  );
}

/** The "TSS2 PRIVATE KEY" PEM of tss2PrivateKeyDer. */
export function tss2PrivateKeyPem(blobs: KeyBlobs): string {
  const lines = Buffer.from(tss2PrivateKeyDer(blobs)).toString('base64').match(/.{1,64}/g) ?? [];
  return `-----BEGIN ${TSS2_PRIVATE_KEY_LABEL}-----\n${lines.join('\n')}\n-----END ${TSS2_PRIVATE_KEY_LABEL}-----\n`;
}

/** A DER TLV with a definite length: short form below 128, else long form (X.690 §8.1.3). */
function tlv(tag: number, content: Uint8Array): Uint8Array {
  const length: number[] = [];
  for (let n = content.length; n > 0; n = Math.floor(n / 256)) length.unshift(n & 0xff);
  const header = content.length < 0x80 ? [tag, content.length] : [tag, 0x80 | length.length, ...length];
  return Buffer.concat([Uint8Array.from(header), content]);
}

/** The minimal two's-complement content of a non-negative integer (a 0x00 first when the top bit is set). */
function unsignedInteger(value: number): Uint8Array {
  const bytes: number[] = [];
  for (let v = value; v > 0; v = Math.floor(v / 256)) bytes.unshift(v & 0xff);
  if (bytes.length === 0 || bytes[0]! & 0x80) bytes.unshift(0);
  return Uint8Array.from(bytes);
}
