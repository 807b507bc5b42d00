import { rulePcrs, trimCmdline, type DigestRule, type EventlogRules } from '../baseline/eventlog-rules.js';
import { equalBytes, hex } from '../bytes.js';
import { deriveEventlogFacts, formatDigests, type Digests, type EventlogFacts, type VerifiedPcrs } from '../eventlog/facts.js';
import { bankGaps, initialPcrValue, isExtended, replayPcrHistory, replayTcgLog } from '../eventlog/replay.js';
import type { TcgLog } from '../eventlog/tcg-log.js';
import { hashByName, type HashInfo } from '../tpm/constants.js';
import type { PcrValues } from '../tpm/pcr-selection.js';

/*
 * Appraisal of a measured-boot log against the PCR values a verified quote proves, then
 * against the operator's rules. Pure and synchronous.
 *
 * PCR by PCR (each quoted bank and index):
 *  - the log extends it in that bank: the replay must equal the quoted value, else the log
 *    is not the one that produced the quote and the appraisal fails (the reason says at
 *    which event a replay stops agreeing when it can: events appended after the quote);
 *  - the log extends it, but never in that bank, or skips that bank in one of its events:
 *    fails, the log cannot be checked there (a digest left out lets the other banks' digests
 *    of an event be paired with another event's; the reason names the event);
 *  - the log never extends it: verified (with no events) when it holds its reset value;
 *    otherwise something outside this log extended it (PCR 10 for IMA, 11-15 for the OS),
 *    which fails only when the rules depend on that PCR.
 * Facts come only from events in verified PCRs (see facts.ts), so a PCR that is not quoted,
 * or did not match, contributes nothing: rules that need it fail closed, and so does a rule
 * that finds nothing to judge (no boot component in PCR 4, no kernel in PCR 9, no proven
 * command line in PCR 8 or 12): an empty PCR proves nothing about what booted.
 */

export type EventlogReasonCode =
  | 'EVENTLOG_PCR_MISMATCH'
  | 'EVENTLOG_EXTRA_EVENTS'
  | 'EVENTLOG_BANK_MISSING'
  | 'EVENTLOG_PCR_NOT_IN_LOG'
  | 'SECURE_BOOT_DISABLED'
  | 'SECURE_BOOT_UNPROVEN'
  | 'BOOT_COMPONENTS_UNVERIFIED'
  | 'BOOT_COMPONENT_COUNT'
  | 'BOOT_COMPONENT_NOT_ALLOWED'
  | 'BOOT_COMPONENTS_MISSING'
  | 'KERNELS_UNVERIFIED'
  | 'KERNEL_NOT_MEASURED'
  | 'BOOT_FILE_NOT_ALLOWED'
  | 'SIGNATURE_DATABASE_MISSING'
  | 'SIGNATURE_DATABASE_NOT_ALLOWED'
  | 'KERNEL_CMDLINE_UNPROVEN'
  | 'KERNEL_CMDLINE_NOT_ALLOWED'
  | 'PCR_NOT_QUOTED'
  | 'PCR_VALUE_NOT_ALLOWED';

export interface EventlogReason {
  readonly code: EventlogReasonCode;
  readonly bank?: string;
  readonly pcr?: number;
  /** Index of the event in the log (tpm2_eventlog's EventNum). */
  readonly event?: number;
  /** The boot component, boot file or signature database concerned, by name (a label, not evidence). */
  readonly component?: string;
  readonly message: string;
}

export interface EventlogAppraisal {
  readonly ok: boolean;
  readonly reasons: readonly EventlogReason[];
  readonly facts: EventlogFacts;
  /** Per bank, the PCRs whose quoted value the log accounts for. */
  readonly verified: VerifiedPcrs;
}

/** Command lines are shown in reasons up to this many characters. */
const MAX_SHOWN_CMDLINE = 512;

export function appraiseEventlog(log: TcgLog, quoted: PcrValues, rules: EventlogRules): EventlogAppraisal {
  const reasons: EventlogReason[] = [];
  const verified = checkReplay(log, quoted, new Set(rulePcrs(rules)), reasons);
  const facts = deriveEventlogFacts(log, verified);
  checkSecureBoot(rules, facts, reasons);
  checkBootComponents(rules, facts, verified, reasons);
  checkKernels(rules, facts, verified, reasons);
  checkSignatureDatabases(rules, facts, reasons);
  checkKernelCmdlines(rules, facts, verified, reasons);
  checkPcrValues(rules, quoted, reasons);
  return { ok: reasons.length === 0, reasons, facts, verified };
}

function checkReplay(log: TcgLog, quoted: PcrValues, relied: ReadonlySet<number>, reasons: EventlogReason[]): VerifiedPcrs {
  const replayed = replayTcgLog(log, new Set(Object.keys(quoted)));
  const gaps = bankGaps(log);
  const extended = new Set(log.events.filter(isExtended).map((e) => e.pcrIndex));
  const verified: Record<string, number[]> = {};
  for (const [bank, byIndex] of Object.entries(quoted)) {
    const hash = hashByName(bank);
    const ok: number[] = [];
    for (const [key, value] of Object.entries(byIndex)) {
      const pcr = Number(key);
      const replay = replayed[bank]?.[pcr];
      const at = { bank, pcr };
      const gap = gaps[bank]?.[pcr];
      if (replay !== undefined && gap !== undefined) {
        const message = `${bank} PCR ${pcr}: event ${gap} carries no ${bank} digest, so the log's ${bank} digests of PCR ${pcr} cannot be matched to its events`;
        reasons.push({ code: 'EVENTLOG_BANK_MISSING', ...at, event: gap, message });
      } else if (replay !== undefined) {
        if (equalBytes(replay, value)) ok.push(pcr);
        else reasons.push(mismatch(log, hash, pcr, value));
      } else if (extended.has(pcr)) {
        const message = `${bank} PCR ${pcr}: the log extends PCR ${pcr} but gives no ${bank} digests`;
        reasons.push({ code: 'EVENTLOG_BANK_MISSING', ...at, message });
      } else if (equalBytes(value, initialPcrValue(hash, pcr, log.startupLocality))) {
        ok.push(pcr);
      } else if (relied.has(pcr)) {
        const message = `${bank} PCR ${pcr} was extended but the log has no event for it`;
        reasons.push({ code: 'EVENTLOG_PCR_NOT_IN_LOG', ...at, message });
      }
    }
    verified[bank] = ok;
  }
  return verified;
}

/** Says where the replay leaves the quote: an exact earlier state means events were added after the quote. */
function mismatch(log: TcgLog, hash: HashInfo, pcr: number, quoted: Uint8Array): EventlogReason {
  const history = replayPcrHistory(log, hash, pcr);
  const at = { bank: hash.name, pcr };
  // states[k]: the PCR after the first k of its events; states[0] is the reset value.
  const states = [initialPcrValue(hash, pcr, log.startupLocality), ...history.map((h) => h.value)];
  const included = states.findIndex((v) => equalBytes(v, quoted));
  if (included >= 0) {
    const extra = history[included]!.event;
    const upTo = included === 0 ? 'its reset value' : `event ${history[included - 1]!.event}`;
    return {
      code: 'EVENTLOG_EXTRA_EVENTS',
      ...at,
      event: extra,
      message: `${hash.name} PCR ${pcr}: the quote matches the log up to ${upTo}; event ${extra} and later were not extended`,
    };
  }
  const last = history[history.length - 1]!;
  return {
    code: 'EVENTLOG_PCR_MISMATCH',
    ...at,
    event: last.event,
    message:
      `${hash.name} PCR ${pcr}: replaying its ${history.length} events (last: event ${last.event}) ` +
      `gives ${hex(last.value)}, the quote has ${hex(quoted)}`,
  };
}

function checkSecureBoot(rules: EventlogRules, facts: EventlogFacts, reasons: EventlogReason[]): void {
  if (!rules.requireSecureBoot) return;
  const { state, event, detail } = facts.secureBoot;
  if (state === 'enabled') return;
  reasons.push({
    code: state === 'disabled' ? 'SECURE_BOOT_DISABLED' : 'SECURE_BOOT_UNPROVEN',
    pcr: 7,
    ...(event === undefined ? {} : { event }),
    message: `secure boot is required: ${detail}`,
  });
}

function checkBootComponents(rules: EventlogRules, facts: EventlogFacts, verified: VerifiedPcrs, reasons: EventlogReason[]): void {
  const rule = rules.bootComponents;
  if (!rule) return;
  if (!isVerified(verified, 4)) {
    const message = 'boot components are ruled but PCR 4 is not verified by the quote';
    reasons.push({ code: 'BOOT_COMPONENTS_UNVERIFIED', pcr: 4, message });
    return;
  }
  const components = facts.bootComponents;
  if (components.length === 0) {
    // Nothing measured into PCR 4 proves nothing was booted from it: a rule needs a component to judge.
    reasons.push({ code: 'BOOT_COMPONENTS_MISSING', pcr: 4, message: 'boot components are ruled but PCR 4 has no verified boot component' });
    return;
  }
  if (rule.match === 'sequence' && components.length !== rule.allowed.length) {
    reasons.push({
      code: 'BOOT_COMPONENT_COUNT',
      pcr: 4,
      message:
        `${components.length} boot components measured, the baseline lists ${rule.allowed.length}: ` +
        components.map((c) => c.label).join(', '),
    });
  }
  for (const c of components) {
    const allowed = rule.match === 'sequence' ? rule.allowed[c.position] : rule.allowed;
    if (allowed && matches(c.digests, allowed)) continue;
    reasons.push({
      code: 'BOOT_COMPONENT_NOT_ALLOWED',
      pcr: 4,
      event: c.event,
      component: c.label,
      message:
        `boot component ${c.position} (event ${c.event}, ${c.label}) ${formatDigests(c.digests)} ` +
        `is not allowed${rule.match === 'sequence' ? ' at this position' : ''}`,
    });
  }
}

function checkKernels(rules: EventlogRules, facts: EventlogFacts, verified: VerifiedPcrs, reasons: EventlogReason[]): void {
  const rule = rules.kernels;
  if (!rule) return;
  if (!isVerified(verified, 9)) {
    reasons.push({ code: 'KERNELS_UNVERIFIED', pcr: 9, message: 'kernels are ruled but PCR 9 is not verified by the quote' });
    return;
  }
  const files = facts.bootFiles;
  if (!files.some((f) => matches(f.digests, rule.allowed))) {
    const measured = files.length === 0 ? 'no file is measured into PCR 9' : `none of the ${files.length} file${files.length === 1 ? '' : 's'} measured into PCR 9 is an allowed kernel`;
    reasons.push({ code: 'KERNEL_NOT_MEASURED', pcr: 9, message: `kernels are ruled but ${measured}` });
  }
  for (const f of files) {
    if (matches(f.digests, rule.allowed) || matches(f.digests, rule.otherFiles)) continue;
    reasons.push({
      code: 'BOOT_FILE_NOT_ALLOWED',
      pcr: 9,
      event: f.event,
      component: f.label,
      message: `file measured into PCR 9 (event ${f.event}, ${f.label}) ${formatDigests(f.digests)} is neither an allowed kernel nor an allowed file`,
    });
  }
}

function checkSignatureDatabases(rules: EventlogRules, facts: EventlogFacts, reasons: EventlogReason[]): void {
  for (const [name, allowed] of Object.entries(rules.signatureDatabases ?? {})) {
    const measured = facts.signatureDatabases.filter((d) => d.name === name);
    if (measured.length === 0) {
      reasons.push({ code: 'SIGNATURE_DATABASE_MISSING', pcr: 7, component: name, message: `no verified measurement of ${name} in PCR 7` });
    }
    for (const db of measured) {
      if (matches(db.digests, allowed!)) continue;
      reasons.push({
        code: 'SIGNATURE_DATABASE_NOT_ALLOWED',
        pcr: 7,
        event: db.event,
        component: name,
        message: `${name} (event ${db.event}) ${formatDigests(db.digests)} is not an allowed value`,
      });
    }
  }
}

/**
 * The command line is known only from events whose digests prove their text. An event of
 * PCR 8 or 12 that proves none could be the real command line with its text replaced (the
 * PCR still replays), while an allowed one is extended after boot: so it fails the rule.
 */
function checkKernelCmdlines(rules: EventlogRules, facts: EventlogFacts, verified: VerifiedPcrs, reasons: EventlogReason[]): void {
  const allowed = rules.kernelCmdlines;
  if (!allowed) return;
  const before = reasons.length;
  for (const pcr of [8, 12]) {
    if (isVerified(verified, pcr)) continue;
    reasons.push({ code: 'KERNEL_CMDLINE_UNPROVEN', pcr, message: `kernel command lines are ruled but PCR ${pcr} is not verified by the quote` });
  }
  for (const u of facts.unprovenCmdlineEvents) {
    const message = `PCR ${u.pcr} event ${u.event} (${u.label}): its digest is not the hash of its data, which may hide a kernel command line`;
    reasons.push({ code: 'KERNEL_CMDLINE_UNPROVEN', pcr: u.pcr, event: u.event, message });
  }
  if (reasons.length === before && facts.kernelCmdlines.length === 0) {
    reasons.push({ code: 'KERNEL_CMDLINE_UNPROVEN', message: 'kernel command lines are ruled but none is proven by a verified PCR (8 or 12)' });
  }
  for (const k of facts.kernelCmdlines) {
    const cmdline = trimCmdline(k.cmdline);
    if (allowed.includes(cmdline)) continue;
    const message = `kernel command line ${JSON.stringify(cmdline.slice(0, MAX_SHOWN_CMDLINE))} (event ${k.event}, ${k.source}) is not allowed`;
    reasons.push({ code: 'KERNEL_CMDLINE_NOT_ALLOWED', pcr: k.pcr, event: k.event, message });
  }
}

function checkPcrValues(rules: EventlogRules, quoted: PcrValues, reasons: EventlogReason[]): void {
  for (const [bank, byIndex] of Object.entries(rules.pcrs ?? {})) {
    for (const [key, allowed] of Object.entries(byIndex)) {
      const pcr = Number(key);
      const value = quoted[bank]?.[pcr];
      if (value === undefined) {
        reasons.push({ code: 'PCR_NOT_QUOTED', bank, pcr, message: `${bank} PCR ${pcr} has allowed values but is not in the quote` });
      } else if (!allowed.includes(hex(value))) {
        reasons.push({ code: 'PCR_VALUE_NOT_ALLOWED', bank, pcr, message: `${bank} PCR ${pcr} is ${hex(value)}, not an allowed value` });
      }
    }
  }
}

function isVerified(verified: VerifiedPcrs, pcr: number): boolean {
  return Object.values(verified).some((pcrs) => pcrs.includes(pcr));
}

/**
 * Allowed when every trusted digest in a bank the rule lists is listed, and there is at least
 * one: agreement in one bank is not enough, as another bank could hold a different image.
 */
function matches(digests: Digests, allowed: readonly DigestRule[]): boolean {
  const ruled = Object.entries(digests).filter(([bank]) => allowed.some((rule) => rule.bank === bank));
  return ruled.length > 0 && ruled.every(([bank, digest]) => allowed.some((rule) => rule.bank === bank && rule.digest === digest));
}
