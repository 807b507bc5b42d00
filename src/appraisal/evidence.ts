import { createHash } from 'node:crypto';
import type { PcrValues } from '../tpm/pcr-selection.js';
import { canonicalKeyEvidence, type HsmKeyReport } from './hsm-key-report.js';

/** How the agent proves the key its credentials are for (DESIGN flow 3). */
export type KeyEvidence =
  /** A TPM key: its TPM2B_PUBLIC, and TPM2_Certify of it by the AK (TPMS_ATTEST and TPMT_SIGNATURE). */
  | { readonly kind: 'tpm'; readonly public: Uint8Array; readonly certifyInfo: Uint8Array; readonly signature: Uint8Array }
  /** A PKCS#11 key: the token's attribute report, signed by the key over the nonce. */
  | { readonly kind: 'pkcs11'; readonly report: HsmKeyReport };

/** One attestation's evidence, as the agent sent it (the wire's AttestationRequest, decoded). */
export interface AttestationEvidence {
  /** TPMS_ATTEST of TPM2_Quote and its TPMT_SIGNATURE. */
  readonly quote: Uint8Array;
  readonly signature: Uint8Array;
  /** The PCR values the agent read (unsigned: only those the quote's pcrDigest covers count). */
  readonly pcrs: PcrValues;
  /** The UEFI measured-boot log (binary_bios_measurements). */
  readonly eventLog?: Uint8Array;
  /** The IMA measurement list, whole, ASCII or binary. */
  readonly imaLog?: Uint8Array;
  readonly key: KeyEvidence;
}

const DOMAIN = Buffer.from('attestor/evidence/v1');
const ABSENT = Uint8Array.of(0);
const PRESENT = Uint8Array.of(1);

/**
 * SHA-256 of the canonical evidence, version 1: names one attestation's evidence (in verdicts,
 * JWT claims and the audit trail) without keeping it. Every field is prefixed by its UINT32
 * big-endian length; the key kind decides which fields follow; an optional field is one byte
 * 0x00 when absent, 0x01 then the field when present. So no two evidences share an encoding.
 *
 *   field("attestor/evidence/v1") field(quote) field(signature)
 *   field("tpm")    field(key TPM2B_PUBLIC) field(certifyInfo) field(certify signature)
 *    or field("pkcs11") field(canonicalKeyEvidence(report)) field(report.signature)
 *   optional(eventLog) optional(imaLog)
 *
 * The PCR values are not hashed on their own: the quote's pcrDigest stands for those that
 * count. The lists are hashed whole, so this costs time linear in the IMA list.
 */
export function evidenceHash(evidence: AttestationEvidence): Uint8Array {
  const h = createHash('sha256');
  const field = (bytes: Uint8Array) => {
    const length = Buffer.alloc(4);
    length.writeUInt32BE(bytes.length);
    h.update(length).update(bytes);
  };
  const optional = (bytes: Uint8Array | undefined) => {
    if (bytes === undefined) {
      h.update(ABSENT);
    } else {
      h.update(PRESENT);
      field(bytes);
    }
  };
  field(DOMAIN);
  field(evidence.quote);
  field(evidence.signature);
  const key = evidence.key;
  field(Buffer.from(key.kind));
  if (key.kind === 'tpm') {
    field(key.public);
    field(key.certifyInfo);
    field(key.signature);
  } else {
    field(canonicalKeyEvidence(key.report));
    field(key.report.signature);
  }
  optional(evidence.eventLog);
  optional(evidence.imaLog);
  return h.digest();
}
