import { ParseError } from '../errors.js';
import { TPM_ST, hex16 } from './constants.js';
import { readPcrSelection, type PcrBankSelection } from './pcr-selection.js';
import { TpmReader } from './reader.js';

/** TPMS_CLOCK_INFO (Part 2 §10.11.1). */
export interface ClockInfo {
  /** Milliseconds the TPM has been powered since its last TPM2_Clear; never set backwards. */
  readonly clock: bigint;
  readonly resetCount: number;
  readonly restartCount: number;
  readonly safe: boolean;
}

/** TPMS_QUOTE_INFO (Part 2 §10.12). */
export interface QuoteInfo {
  readonly type: 'quote';
  readonly pcrSelect: PcrBankSelection[];
  readonly pcrDigest: Uint8Array;
}

/** TPMS_CERTIFY_INFO (Part 2 §10.12). */
export interface CertifyInfo {
  readonly type: 'certify';
  readonly name: Uint8Array;
  readonly qualifiedName: Uint8Array;
}

/** TPMS_CREATION_INFO (Part 2 §10.12). */
export interface CreationInfo {
  readonly type: 'creation';
  readonly objectName: Uint8Array;
  readonly creationHash: Uint8Array;
}

/** The other attestation kinds are parsed only so that a wrong type is reported as such. */
export interface OtherInfo {
  readonly type: 'time' | 'nv' | 'nv-digest' | 'command-audit' | 'session-audit';
}

export type AttestedInfo = QuoteInfo | CertifyInfo | CreationInfo | OtherInfo;

/** TPMS_ATTEST (Part 2 §10.12, attestation structures): what TPM2_Quote, TPM2_Certify, ... sign. */
export interface Attest {
  readonly magic: number;
  readonly type: number;
  readonly qualifiedSigner: Uint8Array;
  readonly extraData: Uint8Array;
  readonly clockInfo: ClockInfo;
  readonly firmwareVersion: bigint;
  readonly attested: AttestedInfo;
}

/** sizeof(TPMU_NAME): a digest of up to 64 bytes plus its algorithm, or a 4-byte handle. */
const NAME_MAX = 66;
/** sizeof(TPMU_HA): the largest digest (SHA-512). */
const DIGEST_MAX = 64;
/** TPM2B_DATA holds up to sizeof(TPMT_HA): a digest and its algorithm. */
const DATA_MAX = 66;

/**
 * Parses a TPMS_ATTEST. The magic is returned, not checked here: the verifiers check it and
 * report their own codes, so a quote with a forged magic is refused as a quote.
 */
export function parseAttest(bytes: Uint8Array): Attest {
  const r = new TpmReader(bytes, 'TPMS_ATTEST');
  const magic = r.u32('magic');
  const type = r.u16('type');
  const qualifiedSigner = r.tpm2b('qualifiedSigner', NAME_MAX);
  const extraData = r.tpm2b('extraData', DATA_MAX);
  const clockInfo = readClockInfo(r);
  const firmwareVersion = r.u64('firmwareVersion');
  const attested = readAttested(r, type);
  r.end();
  return { magic, type, qualifiedSigner, extraData, clockInfo, firmwareVersion, attested };
}

function readClockInfo(r: TpmReader): ClockInfo {
  const clock = r.u64('clockInfo.clock');
  const resetCount = r.u32('clockInfo.resetCount');
  const restartCount = r.u32('clockInfo.restartCount');
  const safe = r.u8('clockInfo.safe');
  // TPMI_YES_NO (§9.2) admits only 0 and 1.
  if (safe > 1) throw new ParseError('ERR_TPM_BAD_VALUE', `TPMS_ATTEST: clockInfo.safe is ${safe}, not YES or NO`);
  return { clock, resetCount, restartCount, safe: safe === 1 };
}

/** TPMU_ATTEST (Part 2 §10.12), selected by the TPMI_ST_ATTEST type. */
function readAttested(r: TpmReader, type: number): AttestedInfo {
  switch (type) {
    case TPM_ST.ATTEST_QUOTE:
      return { type: 'quote', pcrSelect: readPcrSelection(r), pcrDigest: r.tpm2b('pcrDigest', DIGEST_MAX) };
    case TPM_ST.ATTEST_CERTIFY:
      return { type: 'certify', name: r.tpm2b('name', NAME_MAX), qualifiedName: r.tpm2b('qualifiedName', NAME_MAX) };
    case TPM_ST.ATTEST_CREATION:
      return { type: 'creation', objectName: r.tpm2b('objectName', NAME_MAX), creationHash: r.tpm2b('creationHash', DIGEST_MAX) };
    case TPM_ST.ATTEST_TIME:
      // TPMS_TIME_ATTEST_INFO (Part 2 §10.12): TPMS_TIME_INFO then firmwareVersion.
      r.u64('time.time');
      readClockInfo(r);
      r.u64('time.firmwareVersion');
      return { type: 'time' };
    case TPM_ST.ATTEST_NV:
      // TPMS_NV_CERTIFY_INFO (Part 2 §10.12).
      r.tpm2b('indexName', NAME_MAX);
      r.u16('offset');
      r.tpm2b('nvContents', 2048);
      return { type: 'nv' };
    case TPM_ST.ATTEST_NV_DIGEST:
      // TPMS_NV_DIGEST_CERTIFY_INFO (Part 2 §10.12).
      r.tpm2b('indexName', NAME_MAX);
      r.tpm2b('nvDigest', DIGEST_MAX);
      return { type: 'nv-digest' };
    case TPM_ST.ATTEST_COMMAND_AUDIT:
      // TPMS_COMMAND_AUDIT_INFO (Part 2 §10.12).
      r.u64('auditCounter');
      r.u16('digestAlg');
      r.tpm2b('auditDigest', DIGEST_MAX);
      r.tpm2b('commandDigest', DIGEST_MAX);
      return { type: 'command-audit' };
    case TPM_ST.ATTEST_SESSION_AUDIT:
      // TPMS_SESSION_AUDIT_INFO (Part 2 §10.12).
      r.u8('exclusiveSession');
      r.tpm2b('sessionDigest', DIGEST_MAX);
      return { type: 'session-audit' };
    default:
      throw new ParseError('ERR_TPM_BAD_VALUE', `TPMS_ATTEST: type 0x${hex16(type)} is not an attestation type`);
  }
}
