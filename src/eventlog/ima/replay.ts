import { hash } from 'node:crypto';
import { VerificationError, type ErrorCode } from '../../errors.js';
import { equalBytes, hex } from '../../bytes.js';
import { hashByName, type HashInfo } from '../../tpm/constants.js';
import { extendPcr } from '../replay.js';
import { computeTemplateHash, describeEntry, IMA_TEMPLATE_HASH_SIZE, type ImaEntry } from './templates.js';

/** The PCR banks IMA's replay produces. */
export type ImaBank = 'sha1' | 'sha256';
export const IMA_BANKS: readonly ImaBank[] = ['sha1', 'sha256'];
/** Each bank's hash, as the TPM names and sizes it. */
export const IMA_BANK_HASH: Readonly<Record<ImaBank, HashInfo>> = { sha1: hashByName('sha1'), sha256: hashByName('sha256') };

/** CONFIG_IMA_MEASURE_PCR_IDX: where IMA extends unless its policy names another PCR. */
const IMA_PCR = 10;

/** PCR values per bank and PCR index, lowercase hex: JSON-ready, as tpm2_eventlog prints `pcrs:`. */
export type ImaPcrValues = Readonly<Record<ImaBank, Readonly<Record<string, string>>>>;

export interface ImaReplayOptions {
  /**
   * Kernels before 5.11 extend the SHA-1 template hash, zero-padded, into every bank (a
   * violation as 0xff * 20, zero-padded). From 5.11 ("ima: extend PCR with template digests
   * per bank") each bank gets the template data hashed with its own algorithm. The padded
   * form binds the SHA-256 bank with SHA-1 strength only, so it is opt-in per host.
   */
  readonly paddedSha1Banks?: boolean;
  /** PCRs that start at reset when no previous values are given (default: PCR 10 only). */
  readonly pcrs?: readonly number[];
}

/** A check of one entry that failed; carries the entry's index and path for the appraisal's reasons. */
export class ImaEntryError extends VerificationError {
  readonly index: number;
  readonly path: string;

  constructor(entry: ImaEntry, code: ErrorCode, message: string) {
    super(code, `${describeEntry(entry)}: ${message}`);
    this.index = entry.index;
    this.path = entry.path;
  }
}

type BankValues = Record<ImaBank, Uint8Array>;

function violationDigest(bank: ImaBank, padded: boolean): Uint8Array {
  const out = new Uint8Array(IMA_BANK_HASH[bank].size);
  return out.fill(0xff, 0, padded ? IMA_TEMPLATE_HASH_SIZE : out.length);
}

/**
 * Replays entries into PCRs the way the kernel extends them (ima_add_template_entry,
 * ima_pcr_extend): PCR := H(PCR || per-bank template digest). A violation was logged with a
 * zero template hash but extended as all ones. Every other entry's logged SHA-1 template hash
 * is checked against its data first, so a list cannot claim a digest its data does not have.
 */
export class ImaReplay {
  private readonly pcrs = new Map<number, BankValues>();
  private readonly padded: boolean;
  private readonly violation: BankValues;

  /** Starts from `start` (a previous replay's values) or from `options.pcrs` reset to zeros. */
  constructor(start?: ImaPcrValues, options: ImaReplayOptions = {}) {
    this.padded = options.paddedSha1Banks === true;
    this.violation = { sha1: violationDigest('sha1', this.padded), sha256: violationDigest('sha256', this.padded) };
    if (!start) {
      for (const index of options.pcrs ?? [IMA_PCR]) this.reset(index);
      return;
    }
    for (const index of Object.keys(start.sha1)) {
      this.pcrs.set(Number(index), {
        sha1: Buffer.from(start.sha1[index] as string, 'hex'),
        sha256: Buffer.from(start.sha256[index] as string, 'hex'),
      });
    }
  }

  extend(entry: ImaEntry): void {
    const digests = entry.violation ? this.violation : this.templateDigests(entry);
    const pcr = this.pcrs.get(entry.pcr) ?? this.reset(entry.pcr);
    for (const bank of IMA_BANKS) pcr[bank] = extendPcr(IMA_BANK_HASH[bank], pcr[bank], digests[bank]);
  }

  private reset(index: number): BankValues {
    const pcr = { sha1: new Uint8Array(IMA_BANK_HASH.sha1.size), sha256: new Uint8Array(IMA_BANK_HASH.sha256.size) };
    this.pcrs.set(index, pcr);
    return pcr;
  }

  private templateDigests(entry: ImaEntry): BankValues {
    const sha1 = computeTemplateHash(entry);
    if (!equalBytes(sha1, entry.templateHash)) {
      throw new ImaEntryError(
        entry,
        'ERR_IMA_TEMPLATE_HASH_MISMATCH',
        `template hash ${hex(entry.templateHash)} is not the SHA-1 of its data (${hex(sha1)})`,
      );
    }
    const sha256 = this.padded ? paddedTo(IMA_BANK_HASH.sha256.size, sha1) : hash('sha256', entry.hashInput, 'buffer');
    return { sha1, sha256 };
  }

  /** The PCR indices replayed: those it started with and those entries extended. */
  indices(): number[] {
    return [...this.pcrs.keys()];
  }

  value(bank: ImaBank, index: number): Uint8Array | undefined {
    return this.pcrs.get(index)?.[bank];
  }

  values(): ImaPcrValues {
    const out = { sha1: {} as Record<string, string>, sha256: {} as Record<string, string> };
    for (const [index, pcr] of [...this.pcrs].sort((a, b) => a[0] - b[0])) {
      for (const bank of IMA_BANKS) out[bank][String(index)] = hex(pcr[bank]);
    }
    return out;
  }
}

/** `digest` followed by zeros up to `size` bytes. */
function paddedTo(size: number, digest: Uint8Array): Uint8Array {
  const out = new Uint8Array(size);
  out.set(digest);
  return out;
}

/** A whole list replayed from reset. */
export function replayIma(entries: Iterable<ImaEntry>, options: ImaReplayOptions = {}): ImaPcrValues {
  const replay = new ImaReplay(undefined, options);
  for (const entry of entries) replay.extend(entry);
  return replay.values();
}
