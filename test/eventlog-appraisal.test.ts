import { createHash } from 'node:crypto';
import { describe, expect, it } from 'vitest';
import { appraiseEventlog, type EventlogReason } from '../src/appraisal/appraise-eventlog.js';
import { parseEventlogRules, trimCmdline, type EventlogRules } from '../src/baseline/eventlog-rules.js';
import { EV } from '../src/eventlog/event-types.js';
import { parseTcgLog } from '../src/eventlog/tcg-log.js';
import { TPM_ALG } from '../src/tpm/constants.js';
import type { PcrValues } from '../src/tpm/pcr-selection.js';
import { eventlogVector, rebuildLog, replayedPcrs, specsOf, variableData, type EventSpec } from './eventlog-fixtures.js';

/*
 * The quote is played by the replay of the untampered log: those are the values a TPM that
 * ran this boot holds. Then the log is tampered with and appraised against them.
 */

const MOK = eventlogVector('event-moklisttrusted.bin'); // sha256 only, secure boot enabled, shim + grub
const GCE = eventlogVector('event-gce-ubuntu-2104-log.bin'); // sha1, sha256, sha384, secure boot disabled
const GLOBAL = '8be4df61-93ca-11d2-aa0d-00e098032b8c';

/** Edits the events of a real log; `events[n]` is event n (the Spec ID event 0 stays as it is). */
function tamper(bytes: Uint8Array, edit: (events: Array<EventSpec | undefined>) => void): Uint8Array {
  const log = parseTcgLog(bytes);
  const events: Array<EventSpec | undefined> = [undefined, ...specsOf(log)];
  edit(events);
  return rebuildLog(log, bytes, events.slice(1).filter((e): e is EventSpec => e !== undefined));
}

function appraise(bytes: Uint8Array, quoted: PcrValues, rules: { readonly kernelCmdlines?: readonly string[] } & Record<string, unknown> = {}) {
  // These tests judge command lines alone; the rules' need for bootComponents or PCR 8 pinned with them is in eventlog-cmdline.test.ts.
  const { kernelCmdlines, ...others } = rules;
  const parsed = parseEventlogRules(others);
  return appraiseEventlog(parseTcgLog(bytes), quoted, kernelCmdlines ? { ...parsed, kernelCmdlines: kernelCmdlines.map(trimCmdline) } : parsed);
}

const codes = (reasons: readonly EventlogReason[]) => reasons.map((r) => r.code);
const at = (reasons: readonly EventlogReason[]) => reasons.map((r) => [r.code, r.bank, r.pcr, r.event]);

/** What a TPM quoting `pcrs` as well holds after this log: the PCRs the log never extends are at reset. */
function quoteWith(bytes: Uint8Array, pcrs: readonly number[]): PcrValues {
  const quoted = replayedPcrs(bytes);
  return Object.fromEntries(
    Object.entries(quoted).map(([bank, values]) => {
      const size = Object.values(values)[0]!.length;
      return [bank, { ...Object.fromEntries(pcrs.map((pcr) => [pcr, new Uint8Array(size)])), ...values }];
    }),
  );
}
const cmdlinePcrs = [8, 12];

/** Digests of `data` in every bank of the log `bytes`, as an event that measured exactly these bytes has. */
const measuredIn = (bytes: Uint8Array, data: Uint8Array): EventSpec['digests'] =>
  parseTcgLog(bytes).algorithms.map((a) => [a.algorithmId, createHash(a.hash!.name).update(data).digest()] as const);
/** Digests of `data` in GCE's three banks (sha1, sha256, sha384). */
const gceDigests = (data: Uint8Array): EventSpec['digests'] => measuredIn(GCE, data);
const only = (pcrs: PcrValues, bank: string): PcrValues => ({ [bank]: pcrs[bank]! });

describe('replay against the quoted PCRs', () => {
  it('every untampered vector is accepted against its own PCRs, every quoted PCR verified', () => {
    for (const name of ['event-moklisttrusted.bin', 'event-gce-ubuntu-2104-log.bin', 'event-uefi-sha1-log.bin', 'event-sd-boot-fedora37.bin', 'event-postcode.bin']) {
      const bytes = eventlogVector(name);
      const quoted = replayedPcrs(bytes);
      const result = appraise(bytes, quoted);
      expect(result.reasons, name).toEqual([]);
      expect(result.ok).toBe(true);
      for (const [bank, values] of Object.entries(quoted)) expect(result.verified[bank]).toEqual(Object.keys(values).map(Number));
    }
  });

  it('a changed digest: the PCR it went into fails, naming bank and PCR', () => {
    const tampered = tamper(MOK, (e) => {
      const digest = new Uint8Array(e[25]!.digests![0]![1]);
      digest[0]! ^= 1;
      e[25] = { ...e[25]!, digests: [[TPM_ALG.SHA256, digest]] };
    });
    const result = appraise(tampered, replayedPcrs(MOK), { bootComponents: { match: 'any', allowed: [`sha256:${'00'.repeat(32)}`] } });
    expect(result.ok).toBe(false);
    expect(result.reasons[0]).toMatchObject({ code: 'EVENTLOG_PCR_MISMATCH', bank: 'sha256', pcr: 4 });
    expect(result.reasons[0]!.message).toMatch(/sha256 PCR 4: replaying its \d+ events/);
    // PCR 4 is not verified, so no component comes from it and a rule on components fails closed.
    expect(result.facts.bootComponents).toEqual([]);
    expect(codes(result.reasons)).toEqual(['EVENTLOG_PCR_MISMATCH', 'BOOT_COMPONENTS_UNVERIFIED']);
  });

  it('a dropped event: its PCR fails', () => {
    const result = appraise(tamper(MOK, (e) => (e[32] = undefined)), replayedPcrs(MOK));
    expect(result.reasons).toEqual([expect.objectContaining({ code: 'EVENTLOG_PCR_MISMATCH', bank: 'sha256', pcr: 4 })]);
  });

  it('an appended event: the reason names the first event the quote does not include', () => {
    const extra = { pcr: 4, type: EV.EFI_BOOT_SERVICES_APPLICATION, data: new Uint8Array(32), digests: [[TPM_ALG.SHA256, new Uint8Array(32).fill(7)]] as const };
    const result = appraise(tamper(MOK, (e) => e.push(extra)), replayedPcrs(MOK));
    expect(result.reasons).toEqual([expect.objectContaining({ code: 'EVENTLOG_EXTRA_EVENTS', bank: 'sha256', pcr: 4, event: 97 })]);
    expect(result.reasons[0]!.message).toContain('up to event 91; event 97 and later');
  });

  it('events of a PCR the quote shows at its reset value are extra events from the first one', () => {
    const quoted = replayedPcrs(MOK);
    const reset = { sha256: { ...quoted.sha256, 14: new Uint8Array(32) } };
    expect(appraise(MOK, reset).reasons).toEqual([expect.objectContaining({ code: 'EVENTLOG_EXTRA_EVENTS', pcr: 14, event: 26 })]);
  });

  it('an event retyped to EV_NO_ACTION (so never extended): its PCR fails in every bank', () => {
    const result = appraise(tamper(GCE, (e) => (e[27] = { ...e[27]!, type: EV.NO_ACTION })), replayedPcrs(GCE));
    expect(result.reasons.map((r) => [r.code, r.bank, r.pcr])).toEqual([
      ['EVENTLOG_PCR_MISMATCH', 'sha1', 4],
      ['EVENTLOG_PCR_MISMATCH', 'sha256', 4],
      ['EVENTLOG_PCR_MISMATCH', 'sha384', 4],
    ]);
  });

  it('an EV_NO_ACTION event retyped to an extended type: its PCR fails in every bank', () => {
    const data = Buffer.from('vendor note, not measured');
    const withNote = tamper(GCE, (e) => e.splice(24, 0, { pcr: 4, type: EV.NO_ACTION, data, digests: gceDigests(data) }));
    const quoted = replayedPcrs(withNote);
    expect(appraise(withNote, quoted).ok).toBe(true);
    const retyped = tamper(withNote, (e) => (e[24] = { ...e[24]!, type: EV.EFI_BOOT_SERVICES_APPLICATION }));
    expect(appraise(retyped, quoted).reasons.map((r) => [r.code, r.bank, r.pcr])).toEqual([
      ['EVENTLOG_PCR_MISMATCH', 'sha1', 4],
      ['EVENTLOG_PCR_MISMATCH', 'sha256', 4],
      ['EVENTLOG_PCR_MISMATCH', 'sha384', 4],
    ]);
  });

  it('a quoted bank the log has no digests in, for a PCR it extends, fails', () => {
    const quoted = { ...replayedPcrs(MOK), sha1: { 4: new Uint8Array(20).fill(1) } };
    expect(appraise(MOK, quoted).reasons).toEqual([expect.objectContaining({ code: 'EVENTLOG_BANK_MISSING', bank: 'sha1', pcr: 4 })]);
  });

  it('a quoted PCR the log never extends: verified at its reset value, otherwise ignored unless the rules need it', () => {
    const replayed = replayedPcrs(GCE);
    const quoted = { sha256: { ...replayed.sha256, 10: new Uint8Array(32).fill(9), 12: new Uint8Array(32).fill(3), 16: new Uint8Array(32) } };
    const plain = appraise(GCE, quoted);
    expect(plain.ok).toBe(true);
    expect(plain.verified.sha256).toContain(16);
    expect(plain.verified.sha256).not.toContain(10);
    const cmdline = plain.facts.kernelCmdlines[0]!.cmdline;
    const ruled = appraise(GCE, quoted, { kernelCmdlines: [cmdline] });
    expect(ruled.reasons).toEqual([
      expect.objectContaining({ code: 'EVENTLOG_PCR_NOT_IN_LOG', bank: 'sha256', pcr: 12 }),
      expect.objectContaining({ code: 'KERNEL_CMDLINE_UNPROVEN', pcr: 12 }),
    ]);
  });

  it('facts carry only the banks the quote verified', () => {
    const result = appraise(GCE, only(replayedPcrs(GCE), 'sha256'));
    expect(result.ok).toBe(true);
    expect(Object.keys(result.facts.bootComponents[0]!.digests)).toEqual(['sha256']);
    expect(Object.keys(result.verified)).toEqual(['sha256']);
  });
});

describe('facts are not fooled by event types or unsigned data', () => {
  it('retyping the SecureBoot event keeps the replay and the decision: its digest proves its data', () => {
    const retyped = tamper(MOK, (e) => (e[4] = { ...e[4]!, type: EV.EFI_ACTION }));
    const result = appraise(retyped, replayedPcrs(MOK), { requireSecureBoot: true });
    expect(result.ok).toBe(true);
    expect(result.facts.secureBoot).toMatchObject({ state: 'enabled', event: 4 });
  });

  it('SecureBoot=1 written next to the digest of SecureBoot=0 (and retyped) gives no "enabled"', () => {
    const forged = tamper(GCE, (e) => (e[3] = { ...e[3]!, type: EV.EFI_ACTION, data: variableData(GLOBAL, 'SecureBoot', new Uint8Array([1])) }));
    const result = appraise(forged, replayedPcrs(GCE), { requireSecureBoot: true });
    expect(codes(result.reasons)).toEqual(['SECURE_BOOT_UNPROVEN']);
    expect(result.reasons[0]).toMatchObject({ pcr: 7, event: 3 });
    expect(result.facts.secureBoot.state).toBe('unknown');
  });

  it('a SecureBoot=1 event with matching digests but never extended (EV_NO_ACTION) does not count', () => {
    const data = variableData(GLOBAL, 'SecureBoot', new Uint8Array([1]));
    const digests = (['sha1', 'sha256', 'sha384'] as const).map((h, i) => [[TPM_ALG.SHA1, TPM_ALG.SHA256, TPM_ALG.SHA384][i]!, createHash(h).update(data).digest()] as const);
    const injected = tamper(GCE, (e) => e.splice(3, 0, { pcr: 7, type: EV.NO_ACTION, data, digests }));
    const result = appraise(injected, replayedPcrs(GCE), { requireSecureBoot: true });
    expect(codes(result.reasons)).toEqual(['SECURE_BOOT_DISABLED']);
    expect(result.facts.secureBoot).toMatchObject({ state: 'disabled', event: 4 });
  });

  it('a SecureBoot=1 measurement after the PCR 7 separator (a boot loader could make one) does not count', () => {
    const data = variableData(GLOBAL, 'SecureBoot', new Uint8Array([1]));
    const late = tamper(GCE, (e) => e.push({ pcr: 7, type: EV.EFI_VARIABLE_DRIVER_CONFIG, data, digests: gceDigests(data) }));
    const quoted = replayedPcrs(late);
    const result = appraise(late, quoted, { requireSecureBoot: true });
    expect(codes(result.reasons)).toEqual(['SECURE_BOOT_DISABLED']);
  });

  it('a retyped separator is still found by its digest', () => {
    const separator = parseTcgLog(GCE).events.find((e) => e.pcrIndex === 7 && e.eventType === EV.SEPARATOR)!.index;
    const retyped = tamper(GCE, (e) => (e[separator] = { ...e[separator]!, type: EV.EFI_ACTION }));
    expect(appraise(retyped, replayedPcrs(GCE)).facts.secureBoot).toMatchObject({ state: 'disabled', event: 3 });
  });

  it('a boot component retyped to EV_EFI_ACTION is still a component, and still judged', () => {
    const facts = appraise(GCE, replayedPcrs(GCE)).facts;
    const [shim, grub] = facts.bootComponents;
    expect(grub!.event).toBe(27);
    const retyped = tamper(GCE, (e) => (e[27] = { ...e[27]!, type: EV.EFI_ACTION }));
    const result = appraise(retyped, replayedPcrs(GCE), { bootComponents: { match: 'any', allowed: [`sha256:${shim!.digests.sha256}`] } });
    expect(result.facts.bootComponents.map((c) => c.digests)).toEqual(facts.bootComponents.map((c) => c.digests));
    expect(result.reasons).toEqual([expect.objectContaining({ code: 'BOOT_COMPONENT_NOT_ALLOWED', pcr: 4, event: 27 })]);
  });

  it('an image whose bytes are given as its event data (its digest then proves them) is still a component', () => {
    const [shim, grub] = appraise(GCE, replayedPcrs(GCE)).facts.bootComponents;
    // What an Authenticode hash is computed over: PE headers and sections, binary from the first bytes on.
    const image = Buffer.concat([Buffer.from('4d5a90000300000004000000ffff0000', 'hex'), Buffer.from('payload')]);
    const loaded = tamper(GCE, (e) => e.push({ pcr: 4, type: EV.EFI_BOOT_SERVICES_APPLICATION, data: image, digests: gceDigests(image) }));
    const rule = { bootComponents: { match: 'any', allowed: [`sha256:${shim!.digests.sha256}`, `sha256:${grub!.digests.sha256}`] } };
    const result = appraise(loaded, replayedPcrs(loaded), rule);
    expect(result.facts.bootComponents.map((c) => c.event)).toEqual([23, 27, 112]);
    expect(result.reasons).toEqual([expect.objectContaining({ code: 'BOOT_COMPONENT_NOT_ALLOWED', pcr: 4, event: 112 })]);
  });
});

/*
 * Forged logs that pair one measurement's digest in a bank with another's in another bank:
 * each bank of the log still replays to the quote, but an event carries digests of only some
 * banks, so the banks' sequences are shifted against each other.
 */
describe('digests of different banks paired across events', () => {
  type Digests = NonNullable<EventSpec['digests']>;
  const ALGS = { sha1: TPM_ALG.SHA1, sha256: TPM_ALG.SHA256, sha384: TPM_ALG.SHA384 } as const;
  const digestIn = (e: EventSpec, bank: keyof typeof ALGS): Uint8Array => e.digests!.find(([alg]) => alg === ALGS[bank])![1];
  const pick = (e: EventSpec, banks: ReadonlyArray<keyof typeof ALGS>): Digests => banks.map((b) => [ALGS[b], digestIn(e, b)] as const);
  /** The log `bytes` with its events (Spec ID event aside) replaced by `edit`'s. */
  const rewrite = (bytes: Uint8Array, edit: (events: EventSpec[]) => EventSpec[]) => rebuildLog(parseTcgLog(bytes), bytes, edit(specsOf(parseTcgLog(bytes))));
  const quotedBanks = (pcrs: PcrValues, banks: readonly string[]): PcrValues => Object.fromEntries(banks.map((b) => [b, pcrs[b]!]));
  const gce = specsOf(parseTcgLog(GCE)); // gce[n - 1] is event n
  const KERNEL = 101;
  const garbage = Buffer.from('x');

  it('SecureBoot=1 extended after boot and moved before the separator by shifting the sha1 bank: BANK_MISSING, secure boot unproven', () => {
    const sb0 = gce[2]!; // event 3: SecureBoot=0
    const sb1data = Buffer.from(sb0.data);
    sb1data[sb1data.length - 1] = 1;
    const sb1: EventSpec = { pcr: 7, type: EV.EFI_VARIABLE_DRIVER_CONFIG, data: sb1data, digests: gceDigests(sb1data) };
    const sep2: EventSpec = { pcr: 7, type: EV.SEPARATOR, data: new Uint8Array(4), digests: gceDigests(new Uint8Array(4)) };
    // What the TPM holds: the boot, then SecureBoot=1 and a separator extended by root after boot.
    const quoted = replayedPcrs(rewrite(GCE, (events) => [...events, sb1, sep2]));
    const [PK, KEK, db, dbx, sep] = gce.slice(3, 8) as EventSpec[];
    const sbat = gce.find((e) => e.pcr === 7 && e.type === EV.EFI_VARIABLE_AUTHORITY)!;
    const others = ['sha256', 'sha384'] as const;
    const separatorData = { pcr: 7, type: EV.SEPARATOR, data: garbage };
    const pcr7: EventSpec[] = [
      { pcr: 7, type: EV.EFI_VARIABLE_DRIVER_CONFIG, data: garbage, digests: sb0.digests }, // SecureBoot=0, now unproven
      PK!,
      KEK!,
      db!,
      { ...dbx!, digests: pick(dbx!, others) }, // sha1 lags the other banks by one from here
      { ...separatorData, digests: [[TPM_ALG.SHA1, digestIn(dbx!, 'sha1')], ...pick(sep!, others)] },
      { ...separatorData, digests: [[TPM_ALG.SHA1, digestIn(sep!, 'sha1')], ...pick(sbat, others)] },
      { ...separatorData, digests: [[TPM_ALG.SHA1, digestIn(sbat, 'sha1')], ...pick(sb1, others)] },
      { ...sb1, digests: pick(sb1, ['sha1']) }, // SecureBoot=1 proven by sha1 alone
      sep2, // the first separator in every bank
    ];
    const forged = rewrite(GCE, (events) => [...events.filter((e) => e.pcr !== 7), ...pcr7]);
    const result = appraise(forged, quoted, { requireSecureBoot: true });
    expect(at(result.reasons)).toEqual([
      ['EVENTLOG_BANK_MISSING', 'sha1', 7, 109],
      ['EVENTLOG_BANK_MISSING', 'sha256', 7, 113],
      ['EVENTLOG_BANK_MISSING', 'sha384', 7, 113],
      ['SECURE_BOOT_UNPROVEN', undefined, 7, undefined],
    ]);
    expect(result.reasons[0]!.message).toBe("sha1 PCR 7: event 109 carries no sha1 digest, so the log's sha1 digests of PCR 7 cannot be matched to its events");
    expect(result.facts.secureBoot.state).toBe('unknown');
    expect(result.facts.signatureDatabases).toEqual([]);
    // Quoted in two banks only: the same.
    expect(at(appraise(forged, quotedBanks(quoted, ['sha1', 'sha256']), { requireSecureBoot: true }).reasons)).toEqual([
      ['EVENTLOG_BANK_MISSING', 'sha1', 7, 109],
      ['EVENTLOG_BANK_MISSING', 'sha256', 7, 113],
      ['SECURE_BOOT_UNPROVEN', undefined, 7, undefined],
    ]);
  });

  it("an evil kernel in PCR 9, the allowed kernel extended after boot, each evil digest paired with another bank's allowed one: BANK_MISSING, kernels unverified", () => {
    const pcr9 = gce.filter((e) => e.pcr === 9);
    const kernel = pcr9.at(-1)!;
    const prev = pcr9.at(-2)!;
    expect(gce[KERNEL - 1]).toBe(kernel);
    const evil: EventSpec = { ...kernel, digests: gceDigests(Buffer.from('evil kernel')) };
    // What the TPM holds: the evil kernel where the allowed one was, and the allowed one extended after boot.
    const quoted = quotedBanks(replayedPcrs(rewrite(GCE, (events) => [...events.map((e, i) => (i === KERNEL - 1 ? evil : e)), kernel])), ['sha1', 'sha256']);
    const both = ['sha1', 'sha256'] as const;
    const rule = (e: EventSpec) => both.map((b) => `${b}:${Buffer.from(digestIn(e, b)).toString('hex')}`);
    const rules = { kernels: { allowed: rule(kernel), otherFiles: pcr9.slice(0, -1).flatMap(rule) } };
    const forged9: EventSpec[] = [
      ...pcr9.slice(0, -2),
      { ...prev, digests: pick(prev, ['sha1']) },
      { ...evil, digests: [[TPM_ALG.SHA1, digestIn(evil, 'sha1')], [TPM_ALG.SHA256, digestIn(prev, 'sha256')]] },
      { ...kernel, digests: [[TPM_ALG.SHA1, digestIn(kernel, 'sha1')], [TPM_ALG.SHA256, digestIn(evil, 'sha256')]] },
      { ...kernel, digests: pick(kernel, ['sha256']) },
    ];
    const forged = rewrite(GCE, (events) => [...events.filter((e) => e.pcr !== 9), ...forged9]);
    const result = appraise(forged, quoted, rules);
    expect(at(result.reasons)).toEqual([
      ['EVENTLOG_BANK_MISSING', 'sha1', 9, 113],
      ['EVENTLOG_BANK_MISSING', 'sha256', 9, 110],
      ['KERNELS_UNVERIFIED', undefined, 9, undefined],
    ]);
    expect(result.facts.bootFiles).toEqual([]);
  });

  it('a file whose digests agree with an allowed kernel in one bank only is not allowed: every ruled bank must agree', () => {
    const pcr9 = gce.filter((e) => e.pcr === 9);
    const kernel = pcr9.at(-1)!;
    const evil256 = createHash('sha256').update('evil kernel').digest();
    const mixed = rewrite(GCE, (events) => events.map((e, i) => (i === KERNEL - 1 ? { ...e, digests: [...pick(e, ['sha1']), [TPM_ALG.SHA256, evil256], ...pick(e, ['sha384'])] } : e)));
    const rule = (e: EventSpec) => (['sha1', 'sha256'] as const).map((b) => `${b}:${Buffer.from(digestIn(e, b)).toString('hex')}`);
    const rules = { kernels: { allowed: rule(kernel), otherFiles: pcr9.slice(0, -1).flatMap(rule) } };
    const result = appraise(mixed, replayedPcrs(mixed), rules);
    expect(at(result.reasons)).toEqual([
      ['KERNEL_NOT_MEASURED', undefined, 9, undefined],
      ['BOOT_FILE_NOT_ALLOWED', undefined, 9, 101],
    ]);
    // A rule naming a bank the event has no trusted digest in matches nothing.
    const sha512Only = { kernels: { allowed: [`sha512:${'ab'.repeat(64)}`], otherFiles: pcr9.slice(0, -1).flatMap(rule) } };
    expect(codes(appraise(GCE, replayedPcrs(GCE), sha512Only).reasons)).toEqual(['KERNEL_NOT_MEASURED', 'BOOT_FILE_NOT_ALLOWED']);
  });

  it('a proven SecureBoot=1 does not outweigh an unproven event before the separator (the real SecureBoot measurement, its data replaced)', () => {
    const sb1data = variableData(GLOBAL, 'SecureBoot', new Uint8Array([1]));
    const log = rewrite(GCE, (events) => {
      const out = [...events];
      out[2] = { ...out[2]!, data: garbage };
      out.splice(3, 0, { pcr: 7, type: EV.EFI_VARIABLE_DRIVER_CONFIG, data: sb1data, digests: gceDigests(sb1data) });
      return out;
    });
    const result = appraise(log, replayedPcrs(log), { requireSecureBoot: true });
    expect(at(result.reasons)).toEqual([['SECURE_BOOT_UNPROVEN', undefined, 7, 3]]);
    expect(result.facts.secureBoot).toMatchObject({ state: 'unknown', event: 3 });
  });

  it('vectors with an event of fewer banks than the log declares stay usable in the banks it has; a quote of another bank fails', () => {
    const action = eventlogVector('event-uefiaction.bin'); // banks sha1..sha512, its one event in sha1 and sha256
    const own = appraise(action, replayedPcrs(action));
    expect([own.ok, own.verified]).toEqual([true, { sha1: [4], sha256: [4] }]);
    const sha384 = { ...replayedPcrs(action), sha384: { 4: new Uint8Array(48) } };
    expect(at(appraise(action, sha384).reasons)).toEqual([['EVENTLOG_BANK_MISSING', 'sha384', 4, undefined]]);
  });
});

describe('kernel command lines are known by their proven content, not by a tag or a guess', () => {
  const sdBoot = eventlogVector('event-sd-boot-fedora37.bin');
  const sd = specsOf(parseTcgLog(sdBoot));
  const allowedLine = 'console=ttyS0 quiet';
  const utf16 = (s: string) => Buffer.from(`${s}\0`, 'utf16le');
  const systemdCmdline = (line: string): EventSpec => ({ pcr: 12, type: EV.IPL, data: utf16(line), digests: measuredIn(sdBoot, utf16(line)) });
  const rebuilt = (events: EventSpec[]) => rebuildLog(parseTcgLog(sdBoot), sdBoot, events);
  /** The TPM after `events`, quoted in sha256 over PCRs 0-9 and 12. */
  const quoteOf = (events: EventSpec[]): PcrValues => {
    const pcrs = replayedPcrs(rebuilt(events)).sha256!;
    return { sha256: Object.fromEntries([0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 12].map((i) => [i, pcrs[i] ?? new Uint8Array(32)])) };
  };

  it("systemd's UTF-16 command line behind a fake tag, an allowed one extended after boot: the real one is still judged", () => {
    const trueEvents = [...sd, systemdCmdline(allowedLine)];
    const tagged = rebuilt(trueEvents.map((e, i) => (e.pcr === 12 && i < sd.length ? { ...e, data: Buffer.concat([Buffer.from('x: '), e.data]) } : e)));
    const result = appraise(tagged, quoteOf(trueEvents), { kernelCmdlines: [allowedLine] });
    expect(at(result.reasons)).toEqual([
      ['KERNEL_CMDLINE_NOT_ALLOWED', undefined, 12, 23],
      ['KERNEL_CMDLINE_NOT_ALLOWED', undefined, 12, 24],
    ]);
    expect(result.reasons[0]!.message).toBe('kernel command line "console=ttyS0 console=tty0 efi=debug" (event 23, systemd) is not allowed');
  });

  it('a UTF-16 command line of mostly non-Latin characters (an honest log): judged as a command line', () => {
    const evilLine = `init=/bin/sh x=${'\u3042'.repeat(8)}`;
    const trueEvents = [...sd.filter((e) => e.pcr !== 12), systemdCmdline(evilLine), systemdCmdline(allowedLine)];
    const result = appraise(rebuilt(trueEvents), quoteOf(trueEvents), { kernelCmdlines: [allowedLine] });
    expect(at(result.reasons)).toEqual([['KERNEL_CMDLINE_NOT_ALLOWED', undefined, 12, 26]]);
    expect(result.reasons[0]!.message).toBe(`kernel command line ${JSON.stringify(evilLine)} (event 26, systemd) is not allowed`);
  });

  it('proven PCR 8 text under a tag grub does not use is judged as a command line; unproven text stays unproven', () => {
    const line = 'root=/dev/sda1 init=/bin/sh';
    const log = tamper(GCE, (e) => {
      e.push({ pcr: 8, type: EV.IPL, data: Buffer.from(`note: ${line}`), digests: gceDigests(Buffer.from(line)) });
      e.push({ pcr: 8, type: EV.IPL, data: Buffer.from(`note: ${allowedLine}`), digests: gceDigests(Buffer.from(line)) });
    });
    const cmdline = appraise(GCE, replayedPcrs(GCE)).facts.kernelCmdlines[0]!.cmdline;
    const result = appraise(log, quoteWith(log, cmdlinePcrs), { kernelCmdlines: [cmdline, allowedLine] });
    expect(at(result.reasons)).toEqual([
      ['KERNEL_CMDLINE_UNPROVEN', undefined, 8, 113],
      ['KERNEL_CMDLINE_NOT_ALLOWED', undefined, 8, 112],
    ]);
  });
});

describe('rules', () => {
  const gceFacts = appraise(GCE, replayedPcrs(GCE)).facts;
  const [shim, grub] = gceFacts.bootComponents;

  it('secure boot required: refused when the log proves it off, naming the event', () => {
    const result = appraise(GCE, replayedPcrs(GCE), { requireSecureBoot: true });
    expect(result.reasons).toEqual([expect.objectContaining({ code: 'SECURE_BOOT_DISABLED', pcr: 7, event: 3 })]);
    expect(appraise(MOK, replayedPcrs(MOK), { requireSecureBoot: true }).ok).toBe(true);
  });

  it('secure boot required: unproven when PCR 7 is not quoted', () => {
    const quoted = replayedPcrs(MOK);
    const without7 = { sha256: Object.fromEntries(Object.entries(quoted.sha256!).filter(([i]) => i !== '7')) };
    expect(codes(appraise(MOK, without7, { requireSecureBoot: true }).reasons)).toEqual(['SECURE_BOOT_UNPROVEN']);
  });

  it('boot components in sequence: the golden list passes; a wrong one or a missing one is named', () => {
    const quoted = replayedPcrs(GCE);
    const golden = [[`sha256:${shim!.digests.sha256}`], [`sha1:${grub!.digests.sha1}`]];
    expect(appraise(GCE, quoted, { bootComponents: { match: 'sequence', allowed: golden } }).ok).toBe(true);
    const swapped = appraise(GCE, quoted, { bootComponents: { match: 'sequence', allowed: [golden[1], golden[0]] } });
    expect(swapped.reasons.map((r) => [r.code, r.event])).toEqual([
      ['BOOT_COMPONENT_NOT_ALLOWED', 23],
      ['BOOT_COMPONENT_NOT_ALLOWED', 27],
    ]);
    expect(swapped.reasons[1]!.component).toBe('EV_EFI_BOOT_SERVICES_APPLICATION \\EFI\\ubuntu\\grubx64.efi');
    const short = appraise(GCE, quoted, { bootComponents: { match: 'sequence', allowed: [golden[0]] } });
    expect(codes(short.reasons)).toEqual(['BOOT_COMPONENT_COUNT', 'BOOT_COMPONENT_NOT_ALLOWED']);
  });

  it('boot components ruled but none measured (PCR 4 at its reset value): BOOT_COMPONENTS_MISSING naming PCR 4', () => {
    const log = parseTcgLog(GCE);
    const noPcr4 = rebuildLog(log, GCE, specsOf(log).filter((e) => e.pcr !== 4));
    const result = appraise(noPcr4, quoteWith(noPcr4, [4]), { bootComponents: { match: 'any', allowed: [`sha256:${shim!.digests.sha256}`] } });
    expect(result.verified.sha256).toContain(4);
    expect(result.reasons).toEqual([expect.objectContaining({ code: 'BOOT_COMPONENTS_MISSING', pcr: 4 })]);
  });

  it('a digest rule matches only in a bank the quote verified', () => {
    const sha1Rule = { bootComponents: { match: 'any', allowed: [`sha1:${shim!.digests.sha1}`, `sha1:${grub!.digests.sha1}`] } };
    expect(appraise(GCE, replayedPcrs(GCE), sha1Rule).ok).toBe(true);
    expect(codes(appraise(GCE, only(replayedPcrs(GCE), 'sha256'), sha1Rule).reasons)).toEqual(['BOOT_COMPONENT_NOT_ALLOWED', 'BOOT_COMPONENT_NOT_ALLOWED']);
  });

  it('signature databases: the measured digest decides; a missing database is named', () => {
    const db = gceFacts.signatureDatabases.find((d) => d.name === 'db')!;
    expect(db.entries.map((e) => e.type)).toEqual(['x509', 'x509']);
    const quoted = replayedPcrs(GCE);
    expect(appraise(GCE, quoted, { signatureDatabases: { db: [`sha384:${db.digests.sha384}`] } }).ok).toBe(true);
    const wrong = appraise(GCE, quoted, { signatureDatabases: { db: [`sha256:${'11'.repeat(32)}`] } });
    expect(wrong.reasons).toEqual([expect.objectContaining({ code: 'SIGNATURE_DATABASE_NOT_ALLOWED', component: 'db', event: 6, pcr: 7 })]);
    const noSeparator = eventlogVector('event-uefivar.bin');
    const missing = appraise(noSeparator, replayedPcrs(noSeparator), { signatureDatabases: { dbx: [`sha256:${'11'.repeat(32)}`] } });
    expect(missing.reasons).toEqual([expect.objectContaining({ code: 'SIGNATURE_DATABASE_MISSING', component: 'dbx' })]);
  });

  it('kernel command lines: grub (PCR 8) and systemd-boot (PCR 12) are proven by their digests', () => {
    const gceCmdline =
      '/boot/vmlinuz-5.11.0-1008-gcp root=PARTUUID=bf817bdf-6a3a-4221-8edb-2c1ca7c5537f ro scsi_mod.use_blk_mq=Y ima_hash=sha256 console=ttyS0 panic=-1';
    // grub measures its `linux` command and then the command line it hands the kernel: both prove the same text.
    expect(gceFacts.kernelCmdlines).toEqual([
      { event: 100, pcr: 8, source: 'grub-command', cmdline: gceCmdline },
      { event: 102, pcr: 8, source: 'grub', cmdline: gceCmdline },
    ]);
    expect(gceFacts.unprovenCmdlineEvents).toEqual([]);
    const quoted = quoteWith(GCE, cmdlinePcrs);
    expect(appraise(GCE, quoted, { kernelCmdlines: [gceCmdline] }).ok).toBe(true);
    expect(appraise(GCE, quoted, { kernelCmdlines: ['ro quiet'] }).reasons).toEqual([
      expect.objectContaining({ code: 'KERNEL_CMDLINE_NOT_ALLOWED', pcr: 8, event: 100 }),
      expect.objectContaining({ code: 'KERNEL_CMDLINE_NOT_ALLOWED', pcr: 8, event: 102 }),
    ]);
    const sdBoot = eventlogVector('event-sd-boot-fedora37.bin');
    const systemd = appraise(sdBoot, quoteWith(sdBoot, cmdlinePcrs), { kernelCmdlines: ['console=ttyS0 console=tty0 efi=debug'] });
    expect(systemd.reasons).toEqual([]);
    expect(systemd.facts.kernelCmdlines.map((k) => [k.source, k.pcr, k.event])).toEqual([
      ['systemd', 12, 23],
      ['systemd', 12, 24],
    ]);
  });

  it('kernel command lines: a log that proves none fails, naming the event (systemd-boot before v251 did not hash its data)', () => {
    const arch = eventlogVector('event-arch-linux.bin');
    const result = appraise(arch, quoteWith(arch, cmdlinePcrs), { kernelCmdlines: ['ro'] });
    expect(result.reasons).toEqual([expect.objectContaining({ code: 'KERNEL_CMDLINE_UNPROVEN', pcr: 8, event: 24 })]);
  });

  it('kernel command lines: PCR 8 and 12 must both be verified by the quote', () => {
    const cmdline = gceFacts.kernelCmdlines[0]!.cmdline;
    const result = appraise(GCE, replayedPcrs(GCE), { kernelCmdlines: [cmdline] });
    expect(result.reasons).toEqual([expect.objectContaining({ code: 'KERNEL_CMDLINE_UNPROVEN', pcr: 12 })]);
  });

  it('kernel command lines: a log that states none fails', () => {
    const uefi = eventlogVector('event-uefi-sha1-log.bin');
    const result = appraise(uefi, quoteWith(uefi, cmdlinePcrs), { kernelCmdlines: ['ro'] });
    expect(result.reasons).toEqual([{ code: 'KERNEL_CMDLINE_UNPROVEN', message: 'kernel command lines are ruled but none is proven by a verified PCR (8 or 12)' }]);
  });

  it('a forged grub command line next to the real digest is not a fact, and fails a rule naming the event', () => {
    const forged = tamper(GCE, (e) => (e[102] = { ...e[102]!, data: Buffer.from('kernel_cmdline: /boot/vmlinuz ro init=/bin/sh\0') }));
    const result = appraise(forged, quoteWith(GCE, cmdlinePcrs), { kernelCmdlines: ['/boot/vmlinuz ro init=/bin/sh'] });
    expect(result.facts.kernelCmdlines.map((k) => k.event)).toEqual([100]);
    expect(result.facts.unprovenCmdlineEvents).toEqual([{ event: 102, pcr: 8, label: 'EV_IPL kernel_cmdline: /boot/vmlinuz ro init=/bin/sh' }]);
    expect(result.reasons).toEqual([
      expect.objectContaining({ code: 'KERNEL_CMDLINE_UNPROVEN', pcr: 8, event: 102 }),
      expect.objectContaining({ code: 'KERNEL_CMDLINE_NOT_ALLOWED', pcr: 8, event: 100 }),
    ]);
  });

  /** A command line a root user extends into PCR 8 after boot, written as grub would (digest of the text after the tag). */
  const allowedCmdline = 'root=/dev/sda1 ro quiet';
  const appendedCmdline = (): EventSpec => ({
    pcr: 8,
    type: EV.IPL,
    data: Buffer.from(`kernel_cmdline: ${allowedCmdline}`),
    digests: gceDigests(Buffer.from(allowedCmdline)),
  });

  it('the real command line hidden (data rewritten, digest kept) and an allowed one appended: KERNEL_CMDLINE_UNPROVEN naming the event', () => {
    const log = tamper(GCE, (e) => {
      e[102] = { ...e[102]!, data: Buffer.from('grub_cmd: nothing to see\0') };
      e.push(appendedCmdline());
    });
    // What the TPM holds: the boot's digests and the extend made after boot (event data moves no PCR).
    const result = appraise(log, quoteWith(log, cmdlinePcrs), { kernelCmdlines: [allowedCmdline] });
    expect(result.ok).toBe(false);
    expect(codes(result.reasons)).toEqual(['KERNEL_CMDLINE_UNPROVEN', 'KERNEL_CMDLINE_NOT_ALLOWED']);
    expect(result.reasons[0]).toMatchObject({ pcr: 8, event: 102 });
    expect(result.reasons[0]!.message).toContain('event 102 (EV_IPL grub_cmd: nothing to see)');
  });

  it('the real command line retagged (its digest covers only the text after the tag) and an allowed one appended: still judged', () => {
    const log = tamper(GCE, (e) => {
      const untag = (n: number, tag: string) => {
        const data = Buffer.from(e[n]!.data);
        e[n] = { ...e[n]!, data: Buffer.concat([Buffer.from(tag), data.subarray(data.indexOf(': '))]) };
      };
      untag(102, 'grub_cmd');
      untag(100, 'module_cmdline');
      e.push(appendedCmdline());
    });
    const result = appraise(log, quoteWith(log, cmdlinePcrs), { kernelCmdlines: [allowedCmdline] });
    expect(result.facts.unprovenCmdlineEvents).toEqual([]);
    // The `linux` command's text is covered by its digest: whatever its tag, it states the real
    // command line; and the command line retagged grub_cmd starts with the kernel's path, which
    // no grub command does: judged too.
    expect(result.reasons).toEqual([
      expect.objectContaining({ code: 'KERNEL_CMDLINE_NOT_ALLOWED', pcr: 8, event: 100 }),
      expect.objectContaining({ code: 'KERNEL_CMDLINE_NOT_ALLOWED', pcr: 8, event: 102 }),
    ]);
    expect(result.facts.kernelCmdlines.map((k) => [k.event, k.source])).toEqual([
      [100, 'grub-command'],
      [102, 'grub-command'],
      [112, 'grub'],
    ]);
  });

  describe('kernels (files grub measured into PCR 9, known by digest)', () => {
    const files = gceFacts.bootFiles;
    const kernel = files.find((f) => f.label === 'EV_IPL /boot/vmlinuz-5.11.0-1008-gcp')!;
    const others = files.filter((f) => f !== kernel).map((f) => `sha256:${f.digests.sha256}`);
    const quoted = replayedPcrs(GCE);

    it('lists every file with its digests and path label', () => {
      expect(files.map((f) => f.event)).toEqual([28, 31, 32, 33, 34, 36, 38, 41, 101]);
      expect(kernel).toMatchObject({ event: 101, digests: { sha256: expect.stringMatching(/^[0-9a-f]{64}$/) } });
      expect(files[0]!.label).toBe('EV_IPL (hd0,gpt15)/EFI/ubuntu/grub.cfg');
    });

    it('the allowed kernel and the other files listed: passes', () => {
      expect(appraise(GCE, quoted, { kernels: { allowed: [`sha384:${kernel.digests.sha384}`], otherFiles: others } }).reasons).toEqual([]);
    });

    it('a file neither an allowed kernel nor listed: BOOT_FILE_NOT_ALLOWED naming it', () => {
      const result = appraise(GCE, quoted, { kernels: { allowed: [`sha256:${kernel.digests.sha256}`], otherFiles: others.slice(1) } });
      expect(result.reasons).toEqual([expect.objectContaining({ code: 'BOOT_FILE_NOT_ALLOWED', pcr: 9, event: 28, component: 'EV_IPL (hd0,gpt15)/EFI/ubuntu/grub.cfg' })]);
    });

    it('another kernel: KERNEL_NOT_MEASURED, and the kernel that booted is named', () => {
      const result = appraise(GCE, quoted, { kernels: { allowed: [`sha256:${'ab'.repeat(32)}`], otherFiles: others } });
      expect(result.reasons).toEqual([
        expect.objectContaining({ code: 'KERNEL_NOT_MEASURED', pcr: 9 }),
        expect.objectContaining({ code: 'BOOT_FILE_NOT_ALLOWED', pcr: 9, event: 101, component: 'EV_IPL /boot/vmlinuz-5.11.0-1008-gcp' }),
      ]);
    });

    it('the kernel that booted relabelled, and an allowed one extended after boot: the unknown digest is still named', () => {
      const golden = Buffer.from('the golden kernel image');
      const log = tamper(GCE, (e) => {
        e[101] = { ...e[101]!, data: Buffer.from('(hd0,gpt1)/boot/grub/grubenv\0') };
        e.push({ pcr: 9, type: EV.IPL, data: Buffer.from('/boot/vmlinuz-5.11.0-1008-gcp\0'), digests: gceDigests(golden) });
      });
      const goldenSha256 = createHash('sha256').update(golden).digest('hex');
      const result = appraise(log, replayedPcrs(log), { kernels: { allowed: [`sha256:${goldenSha256}`], otherFiles: others } });
      expect(result.reasons).toEqual([expect.objectContaining({ code: 'BOOT_FILE_NOT_ALLOWED', pcr: 9, event: 101, component: 'EV_IPL (hd0,gpt1)/boot/grub/grubenv' })]);
    });

    it('PCR 9 not verified by the quote: KERNELS_UNVERIFIED', () => {
      const without9 = { sha256: Object.fromEntries(Object.entries(quoted.sha256!).filter(([i]) => i !== '9')) };
      const result = appraise(GCE, without9, { kernels: { allowed: [`sha256:${kernel.digests.sha256}`], otherFiles: others } });
      expect(result.reasons).toEqual([expect.objectContaining({ code: 'KERNELS_UNVERIFIED', pcr: 9 })]);
    });

    it('a boot whose kernel is not among the PCR 9 files (systemd-boot: the EFI stub measures only the initrd there): KERNEL_NOT_MEASURED', () => {
      const sdBoot = eventlogVector('event-sd-boot-fedora37.bin');
      const result = appraise(sdBoot, replayedPcrs(sdBoot), { kernels: { allowed: [`sha256:${kernel.digests.sha256}`] } });
      expect(result.reasons).toEqual([
        expect.objectContaining({ code: 'KERNEL_NOT_MEASURED', pcr: 9, message: 'kernels are ruled but none of the 1 file measured into PCR 9 is an allowed kernel' }),
        expect.objectContaining({ code: 'BOOT_FILE_NOT_ALLOWED', pcr: 9, event: 25, component: 'EV_EVENT_TAG Linux initrd' }),
      ]);
      const uefi = eventlogVector('event-uefi-sha1-log.bin');
      const none = appraise(uefi, quoteWith(uefi, [9]), { kernels: { allowed: [`sha1:${kernel.digests.sha1}`] } });
      expect(none.reasons).toEqual([expect.objectContaining({ code: 'KERNEL_NOT_MEASURED', pcr: 9, message: 'kernels are ruled but no file is measured into PCR 9' })]);
    });
  });

  it('PCR values: allowed, not allowed, not quoted', () => {
    const quoted = replayedPcrs(GCE);
    const value = Buffer.from(quoted.sha256![0]!).toString('hex');
    expect(appraise(GCE, quoted, { pcrs: { sha256: { 0: [value] } } }).ok).toBe(true);
    expect(appraise(GCE, quoted, { pcrs: { sha256: { 0: ['00'.repeat(32)] } } }).reasons).toEqual([
      expect.objectContaining({ code: 'PCR_VALUE_NOT_ALLOWED', bank: 'sha256', pcr: 0 }),
    ]);
    expect(appraise(GCE, quoted, { pcrs: { sha512: { 0: ['00'.repeat(64)] } } }).reasons).toEqual([
      expect.objectContaining({ code: 'PCR_NOT_QUOTED', bank: 'sha512', pcr: 0 }),
    ]);
  });

  it('rules typed in code work the same as parsed ones', () => {
    const zeros = '00'.repeat(32);
    const typed: EventlogRules = {
      requireSecureBoot: true,
      bootComponents: { match: 'any', allowed: [{ bank: 'sha256', digest: zeros }] },
      pcrs: { sha256: { 0: [zeros] } },
    };
    const json = { requireSecureBoot: true, bootComponents: { match: 'any', allowed: [`sha256:${zeros}`] }, pcrs: { sha256: { 0: [zeros] } } };
    for (const bytes of [MOK, GCE]) {
      const quoted = replayedPcrs(bytes);
      const result = appraiseEventlog(parseTcgLog(bytes), quoted, typed);
      expect(result).toEqual(appraiseEventlog(parseTcgLog(bytes), quoted, parseEventlogRules(json)));
      expect(result.reasons.length).toBeGreaterThan(0);
    }
    const secureBoot: EventlogRules = { requireSecureBoot: true };
    const accepted = appraiseEventlog(parseTcgLog(MOK), replayedPcrs(MOK), secureBoot);
    expect(accepted).toEqual(appraiseEventlog(parseTcgLog(MOK), replayedPcrs(MOK), parseEventlogRules({ requireSecureBoot: true })));
    expect(accepted.ok).toBe(true);
  });
});
