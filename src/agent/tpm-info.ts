import { isAttestorError } from '../errors.js';
import { TPM_PT } from '../tpm/capability.js';
import { EK_CERT_NV } from '../tpm/constants.js';
import { parseEkCertificate, verifyEkCertificate } from '../tpm/ek-certificate.js';
import type { EkRootStore } from '../tpm/ek-roots.js';
import { parseTpm2bPublic, type TpmPublic } from '../tpm/public.js';
import { deriveEk, EK_CERT_INDEX } from './tpm-session.js';
import type { KeyType } from './tpm-templates.js';
import type { Tpm } from './tss.js';

/*
 * What a host operator checks of the machine's TPM before enrolling it (`attestor-agent tpm
 * info`): who made it, its firmware, its PCR banks, and whether its EK certificates chain to
 * a trusted root and certify the EKs the TPM derives.
 */

/** From TPM_PT_FAMILY_INDICATOR to TPM_PT_FIRMWARE_VERSION_2: the identity properties, one capability call. */
const IDENTITY_PROPERTIES = TPM_PT.FIRMWARE_VERSION_2 - TPM_PT.FAMILY_INDICATOR + 1;

/**
 * The EK certificates reported (TCG EK Credential Profile 2.0 §2.2.1.5): the low range
 * (templates L-1, L-2, whose EK the agent re-derives to compare keys) and H-1..H-3.
 */
const EK_CERTIFICATES: readonly { readonly index: number; readonly key: string; readonly template: string }[] = [
  { index: EK_CERT_NV.rsa2048, key: 'RSA 2048', template: 'L-1' },
  { index: EK_CERT_NV.eccP256, key: 'ECC NIST P-256', template: 'L-2' },
  { index: EK_CERT_NV.rsa2048High, key: 'RSA 2048', template: 'H-1' },
  { index: EK_CERT_NV.eccP256High, key: 'ECC NIST P-256', template: 'H-2' },
  { index: EK_CERT_NV.eccP384, key: 'ECC NIST P-384', template: 'H-3' },
];

/** What `tpm info` reports; fields the TPM does not report are absent. */
export interface TpmInfo {
  readonly tcti: string;
  /** TPM_PT_MANUFACTURER as the TCG attributes of EK certificates write it ("id:49424D00") and in ASCII ("IBM"). */
  readonly manufacturer?: { readonly id: string; readonly ascii: string };
  /** TPM_PT_VENDOR_STRING_1..4. */
  readonly vendor?: string;
  /** TPM_PT_FIRMWARE_VERSION_1 || _2 in hex, as TPMS_ATTEST.firmwareVersion carries it. */
  readonly firmwareVersion?: string;
  readonly spec: { readonly family?: string; readonly level?: number; readonly revision?: number; readonly year?: number; readonly dayOfYear?: number };
  readonly pcrBanks: readonly { readonly bank: string; readonly pcrs: number }[];
  readonly ekCertificates: readonly EkCertificateReport[];
}

export interface EkCertificateReport {
  /** "0x01c00002". */
  readonly nvIndex: string;
  readonly key: string;
  /** EK template of the TCG EK Credential Profile ("L-1"). */
  readonly template: string;
  readonly subject?: string;
  readonly issuer?: string;
  /** TCG attributes of the certificate (tcg-at-tpmManufacturer, -tpmModel, -tpmVersion). */
  readonly tpmManufacturer?: string;
  readonly tpmModel?: string;
  readonly tpmVersion?: string;
  /** The root store entry the certificate chains to. */
  readonly anchor?: string;
  /** The certificate certifies the EK this TPM derives from the template (checked for L-1 and L-2). */
  readonly ekKeyChecked?: boolean;
  /** Why the certificate does not parse, chain or match. */
  readonly error?: { readonly code: string; readonly message: string };
}

/** The TPM's identity, PCR banks and EK certificates, each certificate checked against `store`. */
export async function readTpmInfo(tpm: Tpm, store: EkRootStore): Promise<TpmInfo> {
  const p = await tpm.getProperties(TPM_PT.FAMILY_INDICATOR, IDENTITY_PROPERTIES);
  const text = (...props: number[]) => {
    const values = props.map((prop) => p.get(prop));
    return values.every((v) => v === undefined) ? undefined : values.map((v) => (v === undefined ? '' : propertyText(v))).join('');
  };
  const manufacturer = p.get(TPM_PT.MANUFACTURER);
  const [fw1, fw2] = [p.get(TPM_PT.FIRMWARE_VERSION_1), p.get(TPM_PT.FIRMWARE_VERSION_2)];
  const present = new Set(await tpm.getHandles(EK_CERT_NV.rsa2048));
  const ekCertificates: EkCertificateReport[] = [];
  for (const slot of EK_CERTIFICATES.filter((c) => present.has(c.index))) {
    const der = await tpm.nvRead(slot.index);
    const ekType = derivableEk(slot.index);
    const ekPublic = ekType && parseTpm2bPublic(await deriveEk(tpm, ekType));
    ekCertificates.push({
      nvIndex: `0x${slot.index.toString(16).padStart(8, '0')}`,
      key: slot.key,
      template: slot.template,
      ...checkEkCertificate(der, store, ekPublic),
    });
  }
  return {
    tcti: tpm.tcti,
    manufacturer:
      manufacturer === undefined
        ? undefined
        : { id: `id:${manufacturer.toString(16).toUpperCase().padStart(8, '0')}`, ascii: propertyText(manufacturer).trim() },
    vendor: text(TPM_PT.VENDOR_STRING_1, TPM_PT.VENDOR_STRING_2, TPM_PT.VENDOR_STRING_3, TPM_PT.VENDOR_STRING_4),
    firmwareVersion: fw1 === undefined || fw2 === undefined ? undefined : ((BigInt(fw1) << 32n) | BigInt(fw2)).toString(16),
    spec: {
      family: text(TPM_PT.FAMILY_INDICATOR),
      level: p.get(TPM_PT.LEVEL),
      revision: p.get(TPM_PT.REVISION),
      year: p.get(TPM_PT.YEAR),
      dayOfYear: p.get(TPM_PT.DAY_OF_YEAR),
    },
    pcrBanks: (await tpm.getPcrBanks()).map((b) => ({ bank: b.hash.name, pcrs: b.pcrs.length })),
    ekCertificates,
  };
}

/** The EK type whose default template the agent re-derives, for its certificate index; undefined for H-1..H-3. */
function derivableEk(index: number): KeyType | undefined {
  return (Object.keys(EK_CERT_INDEX) as KeyType[]).find((type) => EK_CERT_INDEX[type] === index);
}

/** A UINT32 property that holds four characters (Part 2 §6.13), without its NUL padding. */
function propertyText(value: number): string {
  return Buffer.from([value >>> 24, (value >>> 16) & 0xff, (value >>> 8) & 0xff, value & 0xff]).toString('latin1').replace(/\0/g, '');
}

type EkCertificateFacts = Omit<EkCertificateReport, 'nvIndex' | 'key' | 'template'>;

function checkEkCertificate(der: Uint8Array, store: EkRootStore, ekPublic?: TpmPublic): EkCertificateFacts {
  let facts: EkCertificateFacts = {};
  try {
    const cert = parseEkCertificate(der);
    facts = {
      subject: cert.certificate.subject,
      issuer: cert.certificate.issuer,
      tpmManufacturer: cert.manufacturer?.id,
      tpmModel: cert.model,
      tpmVersion: cert.version,
    };
    const verified = verifyEkCertificate(cert, store, { ekPublic });
    return { ...facts, anchor: verified.anchor, ekKeyChecked: ekPublic !== undefined };
  } catch (e) {
    if (!isAttestorError(e)) throw e;
    return { ...facts, error: { code: e.code, message: e.message } };
  }
}
