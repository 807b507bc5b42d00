import type { CapturedEvidence } from '../baseline/capture.js';
import { pcrSelectionOf, type BaselineDocument, type KeyResidence, type TokenMatch } from '../baseline/document.js';
import { hex } from '../bytes.js';
import { AttestorError, ParseError, type ErrorCode } from '../errors.js';
import type { ImaState } from '../eventlog/ima/incremental.js';
import { detectImaFormat } from '../eventlog/ima/parse.js';
import { parseTcgLog, type TcgLog } from '../eventlog/tcg-log.js';
import { parseAttest, type ClockInfo, type QuoteInfo } from '../tpm/attest.js';
import { TPM_ALG } from '../tpm/constants.js';
import { formatPcrSelection, type PcrValues } from '../tpm/pcr-selection.js';
import { parseTpm2bPublic, type TpmPublic } from '../tpm/public.js';
import { parseSignature } from '../tpm/signature.js';
import { appraiseEventlog, type EventlogAppraisal } from './appraise-eventlog.js';
import { appraiseIma, type ImaAppraisal } from './appraise-ima.js';
import { tpmKeySpki } from './attested-key.js';
import { evidenceHash, type AttestationEvidence, type KeyEvidence } from './evidence.js';
import type { HsmKeyReport } from './hsm-key-report.js';
import { quoteQualifyingData } from './key-binding.js';
import { checkQuoteProgress } from './quote-progress.js';
import { boundedReasons, errorReason, imaReason, type Reason, type ReasonCode } from './reasons.js';
import { verifyCertify } from './verify-certify.js';
import { verifyHsmKey } from './verify-hsm-key.js';
import { verifyQuote } from './verify-quote.js';

/*
 * appraise: the service's one decision about an attestation, pure and synchronous. It joins the
 * quote, the agent's clock history, the event log, the IMA list and the key evidence with the
 * applicable baseline into a verdict with reasons, claims for the credentials, and what the
 * caller stores (clock, evidence for capture, IMA progress).
 *
 * Decision rules:
 * 1. Evidence that is not authentic for this agent THROWS the core's typed error, and the
 *    caller answers it without touching the agent's record (else anyone could spoil an agent's
 *    verdict with garbage): a quote, signature or key structure that does not parse; a quote
 *    not signed by the enrolled AK (ERR_SIGNATURE_INVALID, ERR_SIGNATURE_SCHEME_MISMATCH), not
 *    made by a TPM (ERR_QUOTE_MAGIC) or no quote (ERR_QUOTE_TYPE); qualifying data that is not
 *    SHA-256(nonce || SHA-256(key evidence)) for this nonce and this key evidence
 *    (ERR_QUOTE_NONCE_MISMATCH: another challenge, or key evidence swapped after the quote);
 *    legacy SHA-1 where it is not allowed (ERR_QUOTE_SHA1_NOT_ALLOWED, ERR_AK_ATTRIBUTES).
 * 2. Once the quote is the agent's, everything else is a reason with a code, and any reason
 *    makes the verdict contraindicated: supplied PCR values that are not the signed ones
 *    (ERR_QUOTE_PCR_DIGEST_MISMATCH, ERR_QUOTE_PCR_MISSING); a clock behind the last accepted
 *    one (ERR_QUOTE_CLOCK_ROLLBACK); a PCR the baseline needs outside the signed selection
 *    (ERR_QUOTE_PCR_NOT_SIGNED, bank and PCR named); a PCR value the baseline does not allow
 *    (PCR_VALUE_NOT_ALLOWED); event-log findings (EVENTLOG_*, ERR_EVENTLOG_* when it does not
 *    parse, EVENTLOG_MISSING when rules need one); IMA findings (ERR_IMA_*, IMA_LOG_MISSING);
 *    key evidence that fails (ERR_CERTIFY_*, ERR_SIGNATURE_*, ERR_HSM_KEY_ATTRIBUTES,
 *    ERR_HSM_TOKEN_NOT_ALLOWED, ERR_KEY_UNSUPPORTED) or a residence the baseline does not allow
 *    (KEY_RESIDENCE_NOT_ALLOWED). ERR_HSM_KEY_NOT_BOUND cannot arise here: a report that is not
 *    the one the quote vouches for already fails rule 1. The logs and the certification are
 *    not under the quote's signature, but they only count when they agree with it.
 * 3. No enforced baseline: contraindicated with NO_BASELINE (fail closed), and the verified
 *    PCR values are still returned for capture.
 * 4. warning: nothing failed, but legacy SHA-1 was accepted because the baseline allows it
 *    (LEGACY_SHA1_ACCEPTED), or a staged baseline would contraindicate
 *    (STAGED_BASELINE_CONTRAINDICATED). Credentials are issued on warning.
 * 5. Staged baselines are judged by the same rules on the same evidence and reported, never
 *    enforced. `reasons` always explain the status: failures when contraindicated, warnings
 *    when warning, none when affirming; at most MAX_REASONS, without secrets.
 *
 * IMA is incremental: the caller keeps the progress this returns and passes it back. The list
 * is appraised from the first entry again when the quote's resetCount differs (the host
 * restarted) or the enforced baseline is another one (its rules never judged the entries
 * before). Staged baselines judge the entries the enforced baseline's progress has not passed.
 */

/** A baseline as the caller found it: id and version name it in verdicts and claims. */
export interface AppraisedBaseline {
  readonly id: string;
  readonly version: number;
  readonly document: BaselineDocument;
}

/** Where IMA appraisal stands for an agent; the caller stores it (JSON) and passes it back. */
export interface ImaProgress {
  /** resetCount of the quote that got this far: another one means the host restarted. */
  readonly resetCount: number;
  readonly state: ImaProgressState;
}

export type ImaProgressState = {
  /** The enforced baseline whose rules passed the entries up to `list`. */
  readonly baselineId: string;
  readonly list: ImaState;
};

export interface AppraisalInput {
  /** The enrolled AK, parsed once and kept by the caller: checks on it are remembered per object. */
  readonly akPublic: TpmPublic;
  /** Clock of the agent's last quote that verified. */
  readonly lastClock?: ClockInfo;
  /** The nonce of the challenge the caller has just consumed (issued to this agent, unexpired). */
  readonly nonce: Uint8Array;
  readonly evidence: AttestationEvidence;
  /** The enforced baseline that applies to the agent. */
  readonly baseline?: AppraisedBaseline;
  /** Staged baselines that apply: judged and reported, not enforced. */
  readonly staged?: readonly AppraisedBaseline[];
  readonly ima?: ImaProgress;
  /**
   * Legacy SHA-1 (quote signatures, AKs, certifications) for agents no enforced baseline
   * applies to, so SHA-1-only fleets can be captured; an enforced baseline's allowSha1 decides
   * otherwise.
   */
  readonly allowSha1?: boolean;
}

export type AppraisalStatus = 'affirming' | 'warning' | 'contraindicated';

export interface Verdict {
  readonly status: AppraisalStatus;
  readonly reasons: readonly Reason[];
}

export interface StagedVerdict extends Verdict {
  readonly id: string;
  readonly version: number;
}

/** What the credentials may state about the attestation (JSON). */
export type AppraisalClaims = {
  /** The quote's pcrDigest, hex. */
  readonly pcrDigest: string;
  /** evidence.ts's evidenceHash, hex. */
  readonly evidenceHash: string;
  readonly baseline: { readonly id: string; readonly version: number } | null;
  readonly keyResidence: KeyResidence;
  /** Secure boot as the enforced baseline's event-log appraisal proved it; absent when unproven. */
  readonly secureBoot?: boolean;
};

/** The key credentials may be bound to. */
export interface AttestedKey {
  readonly kind: KeyResidence;
  /** SubjectPublicKeyInfo, DER. */
  readonly spki: Uint8Array;
}

export interface Appraisal extends Verdict {
  readonly claims: AppraisalClaims;
  /** To store as the agent's lastClock: the quote's, or the last one still when the quote's went back. */
  readonly clock: ClockInfo;
  /** The attested key; null when its evidence failed or the baseline refuses it. */
  readonly key: AttestedKey | null;
  /**
   * Contraindicated for the host's own state or word (quote, PCRs, logs, clock, key evidence
   * that does not verify), not only because the baseline's key policy refused an authentic key:
   * what quarantines an agent (asking for an unsuitable key is the request's fault).
   */
  readonly hostFailed: boolean;
  /** The verified PCR values for capture; null when the supplied values are not the signed ones or the clock went back. */
  readonly evidence: CapturedEvidence | null;
  /** IMA progress to store, when it moved. */
  readonly ima?: ImaProgress;
  readonly staged: readonly StagedVerdict[];
}

/**
 * Key refusals that are policy, not the host's word being false: an authentic statement of a
 * key the baseline does not accept. Every other failure of the key evidence (a certification
 * or report that does not verify, is not bound, or is malformed) is the host's act.
 */
const KEY_POLICY_CODES: ReadonlySet<ReasonCode> = new Set([
  'KEY_RESIDENCE_NOT_ALLOWED',
  'ERR_HSM_TOKEN_NOT_ALLOWED',
  'ERR_CERTIFY_KEY_ATTRIBUTES',
  'ERR_HSM_KEY_ATTRIBUTES',
  'ERR_KEY_UNSUPPORTED',
]);

/** verifyQuote checks the supplied PCR values last: when these fail, the quote itself verified. */
const UNSIGNED_VALUE_CODES: ReadonlySet<ErrorCode> = new Set(['ERR_QUOTE_PCR_MISSING', 'ERR_QUOTE_PCR_DIGEST_MISMATCH']);

export function appraise(input: AppraisalInput): Appraisal {
  const enforced = input.baseline;
  const allowSha1 = enforced ? enforced.document.allowSha1 : input.allowSha1 === true;
  const checks = createEvidenceChecks(input, allowSha1);
  const main = checks.judge(enforced);
  const staged = (input.staged ?? []).map((b): StagedVerdict => ({ id: b.id, version: b.version, ...verdictOf(checks.judge(b)) }));
  if (main.failures.length === 0) {
    for (const s of staged.filter((v) => v.status === 'contraindicated')) {
      const codes = [...new Set(s.reasons.map((r) => r.code))].join(', ');
      main.warnings.push({ code: 'STAGED_BASELINE_CONTRAINDICATED', message: `staged baseline ${s.id} (version ${s.version}) would contraindicate: ${codes}` });
    }
  }

  const secureBoot = secureBootOf(main.eventlog);
  const kind = input.evidence.key.kind;
  return {
    ...verdictOf(main),
    hostFailed: main.hostFailed,
    claims: {
      pcrDigest: hex(checks.quote.pcrDigest),
      evidenceHash: hex(evidenceHash(input.evidence)),
      baseline: enforced ? { id: enforced.id, version: enforced.version } : null,
      keyResidence: kind,
      ...(secureBoot !== undefined && { secureBoot }),
    },
    clock: checks.clock,
    key: main.spki ? { kind, spki: main.spki } : null,
    evidence: checks.captured && { ...checks.captured, ...(secureBoot !== undefined && { secureBoot }) },
    ...(enforced && main.ima && imaProgress(input, checks.resetCount, enforced.id, main.ima)),
    staged,
  };
}

/** What one baseline (or none) makes of the evidence. */
interface Findings {
  readonly failures: Reason[];
  readonly warnings: Reason[];
  /** Some failure is the host's (its quote, PCRs, logs, clock, or key evidence that is not true), not only a key policy refusal. */
  readonly hostFailed: boolean;
  /** The key's SPKI when its evidence passed and the baseline allows it. */
  readonly spki?: Uint8Array;
  readonly eventlog?: EventlogAppraisal;
  readonly ima?: ImaAppraisal;
}

interface KeyCheck {
  readonly reasons: readonly Reason[];
  readonly spki?: Uint8Array;
  /** Where the key evidence used legacy SHA-1 (accepted, since it passed). */
  readonly sha1?: string;
}

/** The key's check for a baseline's allowed tokens (PKCS#11 only), each computed once. */
type KeyChecks = (allowedTokens: readonly TokenMatch[] | undefined) => KeyCheck;

/**
 * Verifies what does not depend on a baseline once (rule 1 throws here), and returns the
 * judge of the evidence against a baseline, sharing parsed logs and key checks between the
 * enforced and the staged baselines.
 */
function createEvidenceChecks(input: AppraisalInput, allowSha1: boolean) {
  const { evidence, nonce, akPublic } = input;
  const key = evidence.key;
  const qualifyingData = quoteQualifyingData(nonce, key.kind === 'tpm' ? { kind: 'tpm', public: key.public } : { kind: 'pkcs11', evidence: key.report });

  // Rule 1: throws unless the quote is the agent's answer to this challenge for this key.
  const common: Reason[] = [];
  let attest;
  let pcrs: PcrValues | null = null;
  try {
    const verified = verifyQuote(akPublic, evidence, { qualifyingData, allowSha1 });
    attest = verified.attest;
    pcrs = verified.pcrs;
  } catch (e) {
    if (!(e instanceof AttestorError) || !UNSIGNED_VALUE_CODES.has(e.code)) throw e;
    attest = parseAttest(evidence.quote);
    common.push(errorReason(e));
  }
  const quote = attest.attested as QuoteInfo;

  let clock = attest.clockInfo;
  try {
    checkQuoteProgress(input.lastClock, clock);
  } catch (e) {
    common.push(reasonOf(e));
    // Kept, so that a TPM state restored to an older one keeps being caught.
    clock = input.lastClock!;
  }

  const keyChecks = key.kind === 'tpm' ? tpmKeyChecks(input, key, allowSha1) : hsmKeyChecks(input, key.report, attest.extraData);
  const legacy = allowSha1 ? legacySha1(input) : [];
  let log: TcgLog | AttestorError | undefined;
  const parsedLog = (bytes: Uint8Array) => (log ??= parseOrError(() => parseTcgLog(bytes)));
  const signedHex = pcrs && hexPcrs(quote, pcrs);
  const { resetCount } = attest.clockInfo;
  const imaResume = resumableIma(input, resetCount);

  const judge = (baseline: AppraisedBaseline | undefined): Findings => {
    const doc = baseline?.document;
    const failures: Reason[] = [];
    const warnings: Reason[] = [];
    if (!doc) failures.push({ code: 'NO_BASELINE', message: 'no enforced baseline applies to this agent: nothing to affirm its evidence against' });
    failures.push(...common);

    const keyCheck = keyChecks(doc?.key.allowedTokens);
    const sha1 = [...legacy, ...(keyCheck.sha1 ? [keyCheck.sha1] : []), ...(doc?.reliesOnSha1 ? ['the baseline relies on sha1 PCR values or digests'] : [])];
    if (sha1.length > 0) {
      if (doc ? doc.allowSha1 : allowSha1) warnings.push({ code: 'LEGACY_SHA1_ACCEPTED', message: `legacy SHA-1 accepted: ${sha1.join('; ')}` });
      else failures.push({ code: 'ERR_QUOTE_SHA1_NOT_ALLOWED', message: `legacy SHA-1 is not allowed: ${sha1.join('; ')}` });
    }

    const keyFailures = [...keyCheck.reasons];
    if (doc && !doc.key.residence.includes(key.kind)) {
      keyFailures.push({ code: 'KEY_RESIDENCE_NOT_ALLOWED', message: `the key is a ${key.kind} key; the baseline allows ${doc.key.residence.join(', ')} keys` });
    }
    failures.push(...keyFailures);
    const spki = keyFailures.length === 0 ? keyCheck.spki : undefined;
    const keyPolicyRefusals = keyFailures.filter((r) => KEY_POLICY_CODES.has(r.code)).length;
    if (!doc) return { failures, warnings, hostFailed: failures.length > keyPolicyRefusals, ...(spki && { spki }) };

    failures.push(...unsignedPcrs(doc, quote));
    if (signedHex) failures.push(...disallowedPcrValues(doc, signedHex));

    let eventlog: EventlogAppraisal | undefined;
    const eventlogRules = doc.rules.eventlog;
    if (eventlogRules && !evidence.eventLog) {
      failures.push({ code: 'EVENTLOG_MISSING', message: 'the baseline has event-log rules but the agent sent no event log' });
    } else if (eventlogRules && pcrs) {
      const parsed = parsedLog(evidence.eventLog!);
      if (parsed instanceof AttestorError) failures.push(errorReason(parsed));
      else {
        eventlog = appraiseEventlog(parsed, pcrs, eventlogRules);
        failures.push(...eventlog.reasons);
      }
    }

    let ima: ImaAppraisal | undefined;
    const imaRules = doc.rules.ima;
    if (imaRules && !evidence.imaLog) {
      failures.push({ code: 'IMA_LOG_MISSING', message: 'the baseline has IMA rules but the agent sent no IMA measurement list' });
    } else if (imaRules && pcrs) {
      const bytes = evidence.imaLog!;
      ima = appraiseIma({ log: { format: detectImaFormat(bytes), bytes }, quoted: pcrs, rules: imaRules, ...(imaResume && { state: imaResume }) });
      failures.push(...ima.reasons.map(imaReason));
    }
    const hostFailed = failures.length > keyPolicyRefusals;
    return { failures, warnings, hostFailed, ...(spki && { spki }), ...(eventlog && { eventlog }), ...(ima && { ima }) };
  };

  const rolledBack = clock !== attest.clockInfo;
  return {
    quote,
    clock,
    /** The quote's: IMA progress belongs to the boot it was made in. */
    resetCount,
    judge,
    /** What capture may build on: PCR values the signature covers, from a TPM that did not go back. */
    captured: signedHex && !rolledBack ? ({ version: 1, pcrs: signedHex, keyResidence: key.kind } satisfies CapturedEvidence) : null,
  };
}

/**
 * TPM2_Certify by the AK with the bare nonce as its qualifying data: the key is loaded in the
 * same TPM and cannot leave it. No baseline setting changes this check.
 */
function tpmKeyChecks(input: AppraisalInput, key: Extract<KeyEvidence, { kind: 'tpm' }>, allowSha1: boolean): KeyChecks {
  const keyPublic = parseTpm2bPublic(key.public);
  let check: KeyCheck;
  try {
    verifyCertify(input.akPublic, { keyPublic, certifyInfo: key.certifyInfo, signature: key.signature }, { qualifyingData: input.nonce, allowSha1 });
    const sha1 = keyPublic.nameAlg === TPM_ALG.SHA1 || parseSignature(key.signature).hash.alg === TPM_ALG.SHA1;
    check = {
      reasons: [],
      spki: tpmKeySpki(keyPublic),
      ...(sha1 && { sha1: 'the key is named or certified with SHA-1' }),
    };
  } catch (e) {
    check = { reasons: [reasonOf(e)] };
  }
  return () => check;
}

/**
 * The report's attributes and signature, bound by the quote's qualifying data, and its token
 * among a baseline's allowed ones. Verified for the enforced baseline's tokens at once, so a
 * malformed report throws (rule 1) whatever the baselines.
 */
function hsmKeyChecks(input: AppraisalInput, report: HsmKeyReport, quotedQualifyingData: Uint8Array): KeyChecks {
  const checks = new Map<readonly TokenMatch[] | undefined, KeyCheck>();
  const checkFor: KeyChecks = (allowedTokens) => {
    let check = checks.get(allowedTokens);
    if (!check) {
      try {
        verifyHsmKey(report, { nonce: input.nonce, quotedQualifyingData, ...(allowedTokens && { requirements: { allowedTokens } }) });
        check = { reasons: [], spki: new Uint8Array(report.publicKey) };
      } catch (e) {
        check = { reasons: [reasonOf(e)] };
      }
      checks.set(allowedTokens, check);
    }
    return check;
  };
  checkFor(input.baseline?.document.key.allowedTokens);
  return checkFor;
}

/** A check's refusal as a reason; malformed structures (rule 1) and anything untyped still throw. */
function reasonOf(e: unknown): Reason {
  if (e instanceof AttestorError && !(e instanceof ParseError)) return errorReason(e);
  throw e;
}

function parseOrError<T>(parse: () => T): T | AttestorError {
  try {
    return parse();
  } catch (e) {
    if (e instanceof AttestorError) return e;
    throw e;
  }
}

/** Where the quote used SHA-1 (asked only when it was allowed: otherwise verification refused it). */
function legacySha1(input: AppraisalInput): string[] {
  const uses: string[] = [];
  const ak = input.akPublic;
  if (parseSignature(input.evidence.signature).hash.alg === TPM_ALG.SHA1) uses.push('the quote is signed with SHA-1');
  if (ak.nameAlg === TPM_ALG.SHA1 || ak.scheme?.hashAlg === TPM_ALG.SHA1) uses.push('the AK uses SHA-1');
  return uses;
}

/** Every PCR the baseline needs must be inside the signed selection (go-attestation CVE-2022-0317). */
function unsignedPcrs(doc: BaselineDocument, quote: QuoteInfo): Reason[] {
  const reasons: Reason[] = [];
  for (const [bank, needed] of Object.entries(pcrSelectionOf(doc))) {
    const signed = quote.pcrSelect.find((s) => s.hash.name === bank)?.pcrs ?? [];
    for (const pcr of needed.filter((p) => !signed.includes(p))) {
      reasons.push({
        code: 'ERR_QUOTE_PCR_NOT_SIGNED',
        bank,
        pcr,
        message: `${bank} PCR ${pcr} is needed by the baseline but not in the signed selection ${formatPcrSelection(quote.pcrSelect) || '(none)'}`,
      });
    }
  }
  return reasons;
}

/** The baseline's allowed values; PCRs outside the signed selection are unsignedPcrs' to report. */
function disallowedPcrValues(doc: BaselineDocument, signed: HexPcrs): Reason[] {
  const reasons: Reason[] = [];
  for (const [bank, byIndex] of Object.entries(doc.pcrs ?? {})) {
    for (const [index, allowed] of Object.entries(byIndex)) {
      const value = signed[bank]?.[index];
      if (value !== undefined && !allowed.includes(value)) {
        reasons.push({ code: 'PCR_VALUE_NOT_ALLOWED', bank, pcr: Number(index), message: `${bank} PCR ${index} is ${value}, not an allowed value` });
      }
    }
  }
  return reasons;
}

/** The state to continue from: none after a restart, for another enforced baseline, or without progress. */
function resumableIma(input: AppraisalInput, resetCount: number): ImaState | undefined {
  const progress = input.ima;
  const state = progress?.state;
  if (!progress || progress.resetCount !== resetCount || state?.baselineId !== input.baseline?.id) return undefined;
  return state?.list;
}

/** The progress to store: after a restart, or when entries were passed. */
function imaProgress(input: AppraisalInput, resetCount: number, baselineId: string, ima: ImaAppraisal): { ima: ImaProgress } | undefined {
  const resumed = resumableIma(input, resetCount);
  const moved = !resumed || ima.newState.entries !== resumed.entries;
  return moved ? { ima: { resetCount, state: { baselineId, list: ima.newState } } } : undefined;
}

type HexPcrs = CapturedEvidence['pcrs'];

/** The verified values of the signed selection, lowercase hex: as baselines list them. */
function hexPcrs(quote: QuoteInfo, pcrs: PcrValues): HexPcrs {
  return Object.fromEntries(
    quote.pcrSelect.map((bank) => [bank.hash.name, Object.fromEntries(bank.pcrs.map((pcr) => [pcr, hex(pcrs[bank.hash.name]![pcr]!)]))]),
  );
}

function secureBootOf(eventlog: EventlogAppraisal | undefined): boolean | undefined {
  const state = eventlog?.facts.secureBoot.state;
  return state === 'enabled' ? true : state === 'disabled' ? false : undefined;
}

function verdictOf(findings: Findings): Verdict {
  if (findings.failures.length > 0) return { status: 'contraindicated', reasons: boundedReasons(findings.failures) };
  if (findings.warnings.length > 0) return { status: 'warning', reasons: boundedReasons(findings.warnings) };
  return { status: 'affirming', reasons: [] };
}
