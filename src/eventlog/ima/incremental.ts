import { VerificationError, type ErrorCode } from '../../errors.js';
import type { PcrValues } from '../../tpm/pcr-selection.js';
import { equalBytes, hex } from '../../bytes.js';
import { pcrIndexOfKey } from '../pcr-index.js';
import { openImaCursor, type ImaFormat } from './parse.js';
import { ImaReplay, IMA_BANK_HASH, IMA_BANKS, type ImaBank, type ImaPcrValues, type ImaReplayOptions } from './replay.js';
import { describeEntry, IMA_MAX_PCR, type ImaEntry } from './templates.js';

/**
 * What a verifier keeps per agent between appraisals, so each one parses and replays only the
 * entries added since: the list only grows while the host runs, and the running PCR values
 * stand for every entry already verified. JSON-serializable.
 *
 * A reboot (the quote's resetCount changed) starts a new list: the caller must then begin
 * again from `initialImaState`. A list shorter than the verified prefix is refused
 * (ERR_IMA_LOG_SHRUNK) rather than taken for a reboot, since only the quote can prove one.
 */
export interface ImaState {
  readonly format: ImaFormat;
  /** Entries verified so far, i.e. the list index of the next entry. */
  readonly entries: number;
  /** Byte offset in the list at which the next entry starts. */
  readonly offset: number;
  readonly paddedSha1Banks: boolean;
  /** Values, after the verified entries, of the PCRs IMA extends. */
  readonly pcrs: ImaPcrValues;
}

/**
 * The state before the first entry. `options.pcrs` lists the PCRs the IMA policy extends
 * (default PCR 10 only): each must be quoted, and an entry extending any other is refused.
 */
export function initialImaState(format: ImaFormat, options: ImaReplayOptions = {}): ImaState {
  const paddedSha1Banks = options.paddedSha1Banks === true;
  return { format, entries: 0, offset: 0, paddedSha1Banks, pcrs: new ImaReplay(undefined, { ...options, paddedSha1Banks }).values() };
}

/** The list, or its tail, as the agent sent it. */
export interface ImaLogChunk {
  readonly format: ImaFormat;
  readonly bytes: Uint8Array;
  /** Offset of bytes[0] in the whole list: 0 for the whole list, the state's offset for only what is new. */
  readonly offset?: number;
}

/** PCR values as the quote signed them, per bank and PCR index. */
export type ImaQuotedPcrs = PcrValues;

export interface ImaAdvance {
  /** The entries verified by this step, in list order. */
  readonly entries: readonly ImaEntry[];
  readonly state: ImaState;
  /** Bytes after the verified entries: measured after the quote, left for the next step. */
  readonly pendingBytes: number;
}

/** A PCR the list cannot be reconciled with; names it for the appraisal's reasons. */
export class ImaPcrError extends VerificationError {
  constructor(
    readonly pcr: number,
    code: ErrorCode,
    message: string,
  ) {
    super(code, message);
  }
}

/**
 * Verifies the entries after `state` against the quoted PCRs: replays them one at a time and
 * stops at the first (shortest) prefix whose replay equals every quoted bank of every PCR IMA
 * has extended. Entries after that prefix were measured after the quote and are left for the
 * next step. Cost is proportional to the entries verified, whatever the list's total size.
 */
export function advanceIma(state: ImaState, chunk: ImaLogChunk, quoted: ImaQuotedPcrs): ImaAdvance {
  checkState(state);
  if (chunk.format !== state.format) {
    throw new VerificationError('ERR_IMA_STATE_INVALID', `the list is ${chunk.format}, the state was built from an ${state.format} list`);
  }
  const base = chunk.offset ?? 0;
  const start = state.offset - base;
  if (!Number.isSafeInteger(base) || base < 0 || start < 0) {
    throw new VerificationError('ERR_IMA_STATE_INVALID', `the list given starts at byte ${base}, after the ${state.offset} bytes already verified`);
  }
  if (start > chunk.bytes.length) {
    throw new VerificationError(
      'ERR_IMA_LOG_SHRUNK',
      `the list ends at byte ${base + chunk.bytes.length}, before the ${state.offset} bytes already verified (a reboot must be signalled as a reset)`,
    );
  }
  const replay = new ImaReplay(state.pcrs, { paddedSha1Banks: state.paddedSha1Banks });
  const pcrs = replay.indices();
  requireQuoted(pcrs, quoted);
  const cursor = openImaCursor(chunk.format, chunk.bytes, start, state.entries);
  const entries: ImaEntry[] = [];
  for (let diff = firstDifference(replay, pcrs, quoted); diff; diff = firstDifference(replay, pcrs, quoted)) {
    const entry = cursor.next();
    if (!entry) {
      throw new ImaPcrError(
        diff.index,
        'ERR_IMA_PCR_MISMATCH',
        `PCR ${diff.index} (${diff.bank}): no prefix of the list replays to the quoted ${hex(diff.quoted)}; ` +
          `all ${state.entries + entries.length} entries give ${hex(diff.replayed)}`,
      );
    }
    if (!pcrs.includes(entry.pcr)) {
      throw new ImaPcrError(entry.pcr, 'ERR_IMA_PCR_NOT_QUOTED', `${describeEntry(entry)} extends PCR ${entry.pcr}, not one of the IMA PCRs ${pcrs.join(', ')} appraised`);
    }
    replay.extend(entry);
    entries.push(entry);
  }
  return {
    entries,
    state: {
      format: state.format,
      entries: state.entries + entries.length,
      offset: base + cursor.offset,
      paddedSha1Banks: state.paddedSha1Banks,
      pcrs: replay.values(),
    },
    pendingBytes: chunk.bytes.length - cursor.offset,
  };
}

/** A state comes back from storage: refuse one that initialImaState and advanceIma cannot have made. */
function checkState(state: ImaState): void {
  const corrupt = (what: string) => new VerificationError('ERR_IMA_STATE_INVALID', `the IMA state is not valid: ${what}`);
  if (state.format !== 'ascii' && state.format !== 'binary') throw corrupt('unknown list format');
  if (![state.entries, state.offset].every((n) => Number.isSafeInteger(n) && n >= 0)) throw corrupt('entries and offset must be counts');
  const indices = Object.keys(state.pcrs?.sha1 ?? {});
  if (indices.length === 0) throw corrupt('no PCR values');
  for (const bank of IMA_BANKS) {
    const values: Readonly<Record<string, string>> = state.pcrs?.[bank] ?? {};
    if (Object.keys(values).join() !== indices.join()) throw corrupt(`the ${bank} bank has other PCRs than the sha1 bank`);
    const digest = new RegExp(`^[0-9a-f]{${IMA_BANK_HASH[bank].size * 2}}$`);
    for (const index of indices) {
      if (pcrIndexOfKey(index, IMA_MAX_PCR) === undefined || !digest.test(values[index] ?? '')) throw corrupt(`PCR ${index.slice(0, 8)} in the ${bank} bank`);
    }
  }
}

interface PcrDifference {
  readonly index: number;
  readonly bank: ImaBank;
  readonly quoted: Uint8Array;
  readonly replayed: Uint8Array;
}

function requireQuoted(pcrs: readonly number[], quoted: ImaQuotedPcrs): void {
  for (const index of pcrs) {
    if (!IMA_BANKS.some((bank) => quoted[bank]?.[index])) {
      throw new ImaPcrError(index, 'ERR_IMA_PCR_NOT_QUOTED', `IMA extends PCR ${index}, which the quote does not include in the sha1 or sha256 bank`);
    }
  }
}

/** The first quoted value of an IMA PCR that the replay does not reach (yet). */
function firstDifference(replay: ImaReplay, pcrs: readonly number[], quoted: ImaQuotedPcrs): PcrDifference | undefined {
  for (const index of pcrs) {
    for (const bank of IMA_BANKS) {
      const value = quoted[bank]?.[index];
      const replayed = replay.value(bank, index) as Uint8Array;
      if (value && !equalBytes(replayed, value)) return { index, bank, quoted: value, replayed };
    }
  }
  return undefined;
}
