import { AttestorError, type ErrorCode } from '../errors.js';
import { parseImaSignature, verifyImaSignature } from '../eventlog/ima/digsig.js';
import {
  advanceIma,
  initialImaState,
  ImaPcrError,
  type ImaLogChunk,
  type ImaQuotedPcrs,
  type ImaState,
} from '../eventlog/ima/incremental.js';
import { ImaEntryError, type ImaReplayOptions } from '../eventlog/ima/replay.js';
import { describeEntry, type ImaEntry } from '../eventlog/ima/templates.js';
import { imaDigestText, isExcluded, isSignatureRequired, type ImaRules } from '../baseline/ima-rules.js';

/** An error code the list's verification throws (parse, template hash, replay, quote, state, signature format). */
type ImaErrorCode = Extract<ErrorCode, `ERR_IMA_${string}`>;

function isImaErrorCode(code: ErrorCode): code is ImaErrorCode {
  return code.startsWith('ERR_IMA_');
}

/**
 * Why an IMA appraisal failed: the code of the error that stopped the list's verification,
 * or what the rules found wrong with an entry.
 */
export type ImaReasonCode =
  | ImaErrorCode
  /** Measured while open for writing (content unknown), and not excused by the rules. */
  | 'ERR_IMA_VIOLATION'
  /** A path without an allowlist entry, and no valid signature. */
  | 'ERR_IMA_FILE_NOT_ALLOWED'
  /** A path in the allowlist measured with another digest, and no valid signature. */
  | 'ERR_IMA_DIGEST_NOT_ALLOWED'
  | 'ERR_IMA_SIGNATURE_MISSING'
  | 'ERR_IMA_SIGNATURE_UNKNOWN_KEY'
  /** A signature by a trusted key that does not verify, or is over another hash than the measurement. */
  | 'ERR_IMA_SIGNATURE_INVALID';

/** Why an IMA appraisal failed: a PCR, or an entry named by index and path. */
export interface ImaReason {
  readonly code: ImaReasonCode;
  readonly message: string;
  /** The entry's 0-based index in the list (its line in the ASCII form is index + 1). */
  readonly index?: number;
  readonly path?: string;
  readonly pcr?: number;
}

export interface ImaAppraisalInput {
  /** The list, or the part of it from `state.offset` on, as the agent sent it. */
  readonly log: ImaLogChunk;
  /** PCR values the verified quote signed. */
  readonly quoted: ImaQuotedPcrs;
  readonly rules: ImaRules;
  /** The agent's state after its last successful IMA appraisal; absent for the first. */
  readonly state?: ImaState;
  /**
   * The host restarted since `state` (the quote's resetCount changed): the kernel began a new
   * list and PCR 10 was reset, so the appraisal starts from the first entry again.
   */
  readonly reset?: boolean;
  /** For a state started here (first appraisal or reset). */
  readonly replay?: ImaReplayOptions;
}

export interface ImaAppraisal {
  readonly ok: boolean;
  readonly reasons: readonly ImaReason[];
  /**
   * What to keep for the next appraisal. It moves past the entries appraised only when they
   * all passed: a failing entry keeps failing every appraisal until the host restarts.
   */
  readonly newState: ImaState;
  /** Entries verified and appraised by this call. */
  readonly entries: number;
  /** Bytes of the list measured after the quote, left for the next appraisal. */
  readonly pendingBytes: number;
}

/**
 * Appraises the IMA entries added since `state`: the list must replay to the quoted PCRs
 * (trailing entries logged after the quote are left for later), and every entry so verified
 * must satisfy the rules. Pure and synchronous; cost grows with the new entries only.
 */
export function appraiseIma(input: ImaAppraisalInput): ImaAppraisal {
  const start = !input.state || input.reset ? initialImaState(input.log.format, input.replay) : input.state;
  let advance;
  try {
    advance = advanceIma(start, input.log, input.quoted);
  } catch (e) {
    if (!(e instanceof AttestorError) || !isImaErrorCode(e.code)) throw e;
    return { ok: false, reasons: [reasonOf(e, e.code)], newState: start, entries: 0, pendingBytes: 0 };
  }
  const reasons = appraiseImaEntries(advance.entries, input.rules);
  return {
    ok: reasons.length === 0,
    reasons,
    newState: reasons.length === 0 ? advance.state : start,
    entries: advance.entries.length,
    pendingBytes: advance.pendingBytes,
  };
}

function reasonOf(e: AttestorError, code: ImaErrorCode): ImaReason {
  if (e instanceof ImaEntryError) return { code, message: e.message, index: e.index, path: e.path };
  if (e instanceof ImaPcrError) return { code, message: e.message, pcr: e.pcr };
  return { code, message: e.message };
}

/** The rules applied to entries already verified against the quote: one reason per failing entry. */
export function appraiseImaEntries(entries: Iterable<ImaEntry>, rules: ImaRules): ImaReason[] {
  const reasons: ImaReason[] = [];
  for (const entry of entries) {
    const reason = appraiseEntry(entry, rules);
    if (reason) reasons.push(reason);
  }
  return reasons;
}

/**
 * One entry against the rules. A signature requirement wins over everything else: an exclude
 * pattern broader than `requiredFor` never drops it. A violation's name is not measured (see
 * ima-rules.ts), so no pattern exempts it: only allowViolations does.
 */
function appraiseEntry(entry: ImaEntry, rules: ImaRules): ImaReason | undefined {
  const required = isSignatureRequired(rules, entry.path);
  if (entry.violation) {
    if (rules.allowViolations && !required) return undefined;
    const unknown = 'measured while open for writing or changed while measured (violation): its content is unknown';
    return entryReason(entry, 'ERR_IMA_VIOLATION', required ? `a signature is required and it was ${unknown}` : unknown);
  }
  if (!required && isExcluded(rules, entry.path)) return undefined;
  const allowed = rules.allow.get(entry.path);
  if (!required && allowed?.has(imaDigestText(entry))) return undefined;
  const signature = signatureProblem(entry, rules);
  if (signature === undefined) return undefined;
  if (required) return entryReason(entry, signature.code, `a signature is required and ${signature.problem}`);
  if (allowed) {
    return entryReason(entry, 'ERR_IMA_DIGEST_NOT_ALLOWED', `digest ${imaDigestText(entry)} is not allowed for this path and ${signature.problem}`);
  }
  return entryReason(entry, 'ERR_IMA_FILE_NOT_ALLOWED', `the path is not in the allowlist and ${signature.problem}`);
}

/** Undefined when the entry carries a valid signature by a trusted key, else what is wrong with it. */
function signatureProblem(entry: ImaEntry, rules: ImaRules): { code: ImaReasonCode; problem: string } | undefined {
  if (!entry.signature) return { code: 'ERR_IMA_SIGNATURE_MISSING', problem: 'the entry carries no IMA signature' };
  let sig;
  try {
    sig = parseImaSignature(entry.signature);
  } catch (e) {
    if (!(e instanceof AttestorError) || !isImaErrorCode(e.code)) throw e;
    return { code: e.code, problem: `its signature cannot be used: ${e.message}` };
  }
  const keys = rules.signatureKeys.get(sig.keyId);
  if (!keys) return { code: 'ERR_IMA_SIGNATURE_UNKNOWN_KEY', problem: `its signature is by key id ${sig.keyId}, which is not trusted` };
  if (sig.hashAlgo !== entry.digestAlgo) {
    return { code: 'ERR_IMA_SIGNATURE_INVALID', problem: `its signature is over a ${sig.hashAlgo.name} digest, the measurement is ${entry.digestAlgo.name}` };
  }
  if (keys.some((key) => verifyImaSignature(sig, entry.digest, key))) return undefined;
  return { code: 'ERR_IMA_SIGNATURE_INVALID', problem: `its signature by key id ${sig.keyId} does not verify` };
}

function entryReason(entry: ImaEntry, code: ImaReasonCode, message: string): ImaReason {
  return { code, message: `${describeEntry(entry)}: ${message}`, index: entry.index, path: entry.path };
}
