import type { AttestorError, ErrorCode } from '../errors.js';
import type { EventlogReasonCode } from './appraise-eventlog.js';
import type { ImaReason, ImaReasonCode } from './appraise-ima.js';

/** What an appraisal reports: the codes of the checks it runs, and its own. */
export type ReasonCode =
  | ErrorCode
  | EventlogReasonCode
  | ImaReasonCode
  /** The baseline has event-log rules, the agent sent no log. */
  | 'EVENTLOG_MISSING'
  /** The baseline has IMA rules, the agent sent no list. */
  | 'IMA_LOG_MISSING'
  | 'KEY_RESIDENCE_NOT_ALLOWED'
  /** No enforced baseline applies to the agent: nothing to affirm against (fail closed). */
  | 'NO_BASELINE'
  /** Warning: the baseline allowed legacy SHA-1 and the evidence used it. */
  | 'LEGACY_SHA1_ACCEPTED'
  /** Warning: a staged baseline would contraindicate this evidence. */
  | 'STAGED_BASELINE_CONTRAINDICATED'
  /** The last of a capped list: how many more were found. */
  | 'MORE_REASONS';

/** Why an appraisal is not affirming. JSON; never a secret. */
export type Reason = {
  readonly code: ReasonCode;
  readonly message: string;
  readonly bank?: string;
  readonly pcr?: number;
  /** Index of the event (UEFI log, tpm2_eventlog's EventNum) or of the entry (IMA list, 0-based). */
  readonly event?: number;
  /** The file an IMA entry measured. */
  readonly path?: string;
  /** The boot component, boot file or signature database concerned, by name. */
  readonly component?: string;
};

/** Reasons per verdict: a host can fail on every IMA entry, a verdict stays small. */
const MAX_REASONS = 32;
const MAX_MESSAGE = 1024;
const MAX_PATH = 1024;
const MAX_COMPONENT = 256;

export function errorReason(e: AttestorError): Reason {
  return { code: e.code, message: e.message };
}

export function imaReason(r: ImaReason): Reason {
  const { index, ...rest } = r;
  return index === undefined ? rest : { ...rest, event: index };
}

/** At most MAX_REASONS, the last saying how many more there were; texts cut to bounded sizes. */
export function boundedReasons(reasons: readonly Reason[]): Reason[] {
  const kept = reasons.length <= MAX_REASONS ? reasons : reasons.slice(0, MAX_REASONS - 1);
  const out = kept.map(bounded);
  if (kept.length < reasons.length) out.push({ code: 'MORE_REASONS', message: `and ${reasons.length - kept.length} more` });
  return out;
}

function bounded(r: Reason): Reason {
  return {
    ...r,
    message: cut(r.message, MAX_MESSAGE),
    ...(r.path !== undefined && { path: cut(r.path, MAX_PATH) }),
    ...(r.component !== undefined && { component: cut(r.component, MAX_COMPONENT) }),
  };
}

function cut(text: string, max: number): string {
  return text.length <= max ? text : `${text.slice(0, max - 1)}…`;
}
