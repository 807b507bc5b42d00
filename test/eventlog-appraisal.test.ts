import { createHash } from 'node:crypto';
import { describe, expect, it } from 'vitest';
import { appraiseEventlog, type EventlogReason } from '../src/appraisal/appraise-eventlog.js';
import { parseEventlogRules, type EventlogRules } from '../src/baseline/eventlog-rules.js';
import { EV } from '../src/eventlog/event-types.js';
import { parseAndReplay } from '../src/eventlog/replay.js';
import { parseTcgLog } from '../src/eventlog/tcg-log.js';
import { TPM_ALG } from '../src/tpm/constants.js';
import type { PcrValues } from '../src/tpm/pcr-selection.js';
import { eventlogVector, rebuildLog, specsOf, variableData, type EventSpec } from './eventlog-fixtures.js';

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

function appraise(bytes: Uint8Array, quoted: PcrValues, rules: unknown = {}) {
  return appraiseEventlog(parseTcgLog(bytes), quoted, parseEventlogRules(rules));
}

const codes = (reasons: readonly EventlogReason[]) => reasons.map((r) => r.code);
const only = (pcrs: PcrValues, bank: string): PcrValues => ({ [bank]: pcrs[bank]! });

describe('replay against the quoted PCRs', () => {
  it('every untampered vector is accepted against its own PCRs, every quoted PCR verified', () => {
    for (const name of ['event-moklisttrusted.bin', 'event-gce-ubuntu-2104-log.bin', 'event-uefi-sha1-log.bin', 'event-sd-boot-fedora37.bin', 'event-postcode.bin']) {
      const bytes = eventlogVector(name);
      const quoted = parseAndReplay(bytes);
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
    const result = appraise(tampered, parseAndReplay(MOK), { bootComponents: { match: 'any', allowed: [`sha256:${'00'.repeat(32)}`] } });
    expect(result.ok).toBe(false);
    expect(result.reasons[0]).toMatchObject({ code: 'EVENTLOG_PCR_MISMATCH', bank: 'sha256', pcr: 4 });
    expect(result.reasons[0]!.message).toMatch(/sha256 PCR 4: replaying its \d+ events/);
    // PCR 4 is not verified, so no component comes from it and a rule on components fails closed.
    expect(result.facts.bootComponents).toEqual([]);
    expect(codes(result.reasons)).toEqual(['EVENTLOG_PCR_MISMATCH', 'BOOT_COMPONENTS_UNVERIFIED']);
  });

  it('a dropped event: its PCR fails', () => {
    const result = appraise(tamper(MOK, (e) => (e[32] = undefined)), parseAndReplay(MOK));
    expect(result.reasons).toEqual([expect.objectContaining({ code: 'EVENTLOG_PCR_MISMATCH', bank: 'sha256', pcr: 4 })]);
  });

  it('an appended event: the reason names the first event the quote does not include', () => {
    const extra = { pcr: 4, type: EV.EFI_BOOT_SERVICES_APPLICATION, data: new Uint8Array(32), digests: [[TPM_ALG.SHA256, new Uint8Array(32).fill(7)]] as const };
    const result = appraise(tamper(MOK, (e) => e.push(extra)), parseAndReplay(MOK));
    expect(result.reasons).toEqual([expect.objectContaining({ code: 'EVENTLOG_EXTRA_EVENTS', bank: 'sha256', pcr: 4, event: 97 })]);
    expect(result.reasons[0]!.message).toContain('up to event 91; event 97 and later');
  });

  it('events of a PCR the quote shows at its reset value are extra events from the first one', () => {
    const quoted = parseAndReplay(MOK);
    const reset = { sha256: { ...quoted.sha256, 14: new Uint8Array(32) } };
    expect(appraise(MOK, reset).reasons).toEqual([expect.objectContaining({ code: 'EVENTLOG_EXTRA_EVENTS', pcr: 14, event: 26 })]);
  });

  it('a quoted bank the log has no digests in, for a PCR it extends, fails', () => {
    const quoted = { ...parseAndReplay(MOK), sha1: { 4: new Uint8Array(20).fill(1) } };
    expect(appraise(MOK, quoted).reasons).toEqual([expect.objectContaining({ code: 'EVENTLOG_BANK_MISSING', bank: 'sha1', pcr: 4 })]);
  });

  it('a quoted PCR the log never extends: verified at its reset value, otherwise ignored unless the rules need it', () => {
    const replayed = parseAndReplay(GCE);
    const quoted = { sha256: { ...replayed.sha256, 10: new Uint8Array(32).fill(9), 12: new Uint8Array(32).fill(3), 16: new Uint8Array(32) } };
    const plain = appraise(GCE, quoted);
    expect(plain.ok).toBe(true);
    expect(plain.verified.sha256).toContain(16);
    expect(plain.verified.sha256).not.toContain(10);
    const cmdline = plain.facts.kernelCmdlines[0]!.cmdline;
    const ruled = appraise(GCE, quoted, { kernelCmdlines: [cmdline] });
    expect(ruled.reasons).toEqual([expect.objectContaining({ code: 'EVENTLOG_PCR_NOT_IN_LOG', bank: 'sha256', pcr: 12 })]);
  });

  it('facts carry only the banks the quote verified', () => {
    const result = appraise(GCE, only(parseAndReplay(GCE), 'sha256'));
    expect(result.ok).toBe(true);
    expect(Object.keys(result.facts.bootComponents[0]!.digests)).toEqual(['sha256']);
    expect(Object.keys(result.verified)).toEqual(['sha256']);
  });
});

describe('facts are not fooled by event types or unsigned data', () => {
  it('retyping the SecureBoot event keeps the replay and the decision: its digest proves its data', () => {
    const retyped = tamper(MOK, (e) => (e[4] = { ...e[4]!, type: EV.EFI_ACTION }));
    const result = appraise(retyped, parseAndReplay(MOK), { requireSecureBoot: true });
    expect(result.ok).toBe(true);
    expect(result.facts.secureBoot).toMatchObject({ state: 'enabled', event: 4 });
  });

  it('SecureBoot=1 written next to the digest of SecureBoot=0 (and retyped) gives no "enabled"', () => {
    const forged = tamper(GCE, (e) => (e[3] = { ...e[3]!, type: EV.EFI_ACTION, data: variableData(GLOBAL, 'SecureBoot', new Uint8Array([1])) }));
    const result = appraise(forged, parseAndReplay(GCE), { requireSecureBoot: true });
    expect(codes(result.reasons)).toEqual(['SECURE_BOOT_UNPROVEN']);
    expect(result.reasons[0]).toMatchObject({ pcr: 7, event: 3 });
    expect(result.facts.secureBoot.state).toBe('unknown');
  });

  it('a SecureBoot=1 event with matching digests but never extended (EV_NO_ACTION) does not count', () => {
    const data = variableData(GLOBAL, 'SecureBoot', new Uint8Array([1]));
    const digests = (['sha1', 'sha256', 'sha384'] as const).map((h, i) => [[TPM_ALG.SHA1, TPM_ALG.SHA256, TPM_ALG.SHA384][i]!, createHash(h).update(data).digest()] as const);
    const injected = tamper(GCE, (e) => e.splice(3, 0, { pcr: 7, type: EV.NO_ACTION, data, digests }));
    const result = appraise(injected, parseAndReplay(GCE), { requireSecureBoot: true });
    expect(codes(result.reasons)).toEqual(['SECURE_BOOT_DISABLED']);
    expect(result.facts.secureBoot).toMatchObject({ state: 'disabled', event: 4 });
  });

  it('a SecureBoot=1 measurement after the PCR 7 separator (a boot loader could make one) does not count', () => {
    const data = variableData(GLOBAL, 'SecureBoot', new Uint8Array([1]));
    const late = tamper(GCE, (e) => e.push({ pcr: 7, type: EV.EFI_VARIABLE_DRIVER_CONFIG, data }));
    const quoted = parseAndReplay(late);
    const result = appraise(late, quoted, { requireSecureBoot: true });
    expect(codes(result.reasons)).toEqual(['SECURE_BOOT_DISABLED']);
  });

  it('a retyped separator is still found by its digest', () => {
    const separator = parseTcgLog(GCE).events.find((e) => e.pcrIndex === 7 && e.eventType === EV.SEPARATOR)!.index;
    const retyped = tamper(GCE, (e) => (e[separator] = { ...e[separator]!, type: EV.EFI_ACTION }));
    expect(appraise(retyped, parseAndReplay(GCE)).facts.secureBoot).toMatchObject({ state: 'disabled', event: 3 });
  });

  it('a boot component retyped to EV_EFI_ACTION is still a component, and still judged', () => {
    const facts = appraise(GCE, parseAndReplay(GCE)).facts;
    const [shim, grub] = facts.bootComponents;
    expect(grub!.event).toBe(27);
    const retyped = tamper(GCE, (e) => (e[27] = { ...e[27]!, type: EV.EFI_ACTION }));
    const result = appraise(retyped, parseAndReplay(GCE), { bootComponents: { match: 'any', allowed: [`sha256:${shim!.digests.sha256}`] } });
    expect(result.facts.bootComponents.map((c) => c.digests)).toEqual(facts.bootComponents.map((c) => c.digests));
    expect(result.reasons).toEqual([expect.objectContaining({ code: 'BOOT_COMPONENT_NOT_ALLOWED', pcr: 4, event: 27 })]);
  });
});

describe('rules', () => {
  const gceFacts = appraise(GCE, parseAndReplay(GCE)).facts;
  const [shim, grub] = gceFacts.bootComponents;

  it('secure boot required: refused when the log proves it off, naming the event', () => {
    const result = appraise(GCE, parseAndReplay(GCE), { requireSecureBoot: true });
    expect(result.reasons).toEqual([expect.objectContaining({ code: 'SECURE_BOOT_DISABLED', pcr: 7, event: 3 })]);
    expect(appraise(MOK, parseAndReplay(MOK), { requireSecureBoot: true }).ok).toBe(true);
  });

  it('secure boot required: unproven when PCR 7 is not quoted', () => {
    const quoted = parseAndReplay(MOK);
    const without7 = { sha256: Object.fromEntries(Object.entries(quoted.sha256!).filter(([i]) => i !== '7')) };
    expect(codes(appraise(MOK, without7, { requireSecureBoot: true }).reasons)).toEqual(['SECURE_BOOT_UNPROVEN']);
  });

  it('boot components in sequence: the golden list passes; a wrong one or a missing one is named', () => {
    const quoted = parseAndReplay(GCE);
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

  it('a digest rule matches only in a bank the quote verified', () => {
    const sha1Rule = { bootComponents: { match: 'any', allowed: [`sha1:${shim!.digests.sha1}`, `sha1:${grub!.digests.sha1}`] } };
    expect(appraise(GCE, parseAndReplay(GCE), sha1Rule).ok).toBe(true);
    expect(codes(appraise(GCE, only(parseAndReplay(GCE), 'sha256'), sha1Rule).reasons)).toEqual(['BOOT_COMPONENT_NOT_ALLOWED', 'BOOT_COMPONENT_NOT_ALLOWED']);
  });

  it('signature databases: the measured digest decides; a missing database is named', () => {
    const db = gceFacts.signatureDatabases.find((d) => d.name === 'db')!;
    expect(db.entries.map((e) => e.type)).toEqual(['x509', 'x509']);
    const quoted = parseAndReplay(GCE);
    expect(appraise(GCE, quoted, { signatureDatabases: { db: [`sha384:${db.digests.sha384}`] } }).ok).toBe(true);
    const wrong = appraise(GCE, quoted, { signatureDatabases: { db: [`sha256:${'11'.repeat(32)}`] } });
    expect(wrong.reasons).toEqual([expect.objectContaining({ code: 'SIGNATURE_DATABASE_NOT_ALLOWED', component: 'db', event: 6, pcr: 7 })]);
    const noSeparator = eventlogVector('event-uefivar.bin');
    const missing = appraise(noSeparator, parseAndReplay(noSeparator), { signatureDatabases: { dbx: [`sha256:${'11'.repeat(32)}`] } });
    expect(missing.reasons).toEqual([expect.objectContaining({ code: 'SIGNATURE_DATABASE_MISSING', component: 'dbx' })]);
  });

  it('kernel command lines: grub (PCR 8) and systemd-boot (PCR 12) are proven by their digests', () => {
    expect(gceFacts.kernelCmdlines).toEqual([
      {
        event: 102,
        pcr: 8,
        source: 'grub',
        cmdline: '/boot/vmlinuz-5.11.0-1008-gcp root=PARTUUID=bf817bdf-6a3a-4221-8edb-2c1ca7c5537f ro scsi_mod.use_blk_mq=Y ima_hash=sha256 console=ttyS0 panic=-1',
      },
    ]);
    const quoted = parseAndReplay(GCE);
    expect(appraise(GCE, quoted, { kernelCmdlines: [gceFacts.kernelCmdlines[0]!.cmdline] }).ok).toBe(true);
    expect(appraise(GCE, quoted, { kernelCmdlines: ['ro quiet'] }).reasons).toEqual([expect.objectContaining({ code: 'KERNEL_CMDLINE_NOT_ALLOWED', pcr: 8, event: 102 })]);
    const sdBoot = eventlogVector('event-sd-boot-fedora37.bin');
    const systemd = appraise(sdBoot, parseAndReplay(sdBoot), { kernelCmdlines: ['console=ttyS0 console=tty0 efi=debug'] });
    expect(systemd.ok).toBe(true);
    expect(systemd.facts.kernelCmdlines.map((k) => [k.source, k.pcr, k.event])).toEqual([
      ['systemd', 12, 23],
      ['systemd', 12, 24],
    ]);
  });

  it('kernel command lines: a log that proves none fails (systemd-boot before v251 did not hash its data)', () => {
    const arch = eventlogVector('event-arch-linux.bin');
    expect(codes(appraise(arch, parseAndReplay(arch), { kernelCmdlines: ['ro'] }).reasons)).toEqual(['KERNEL_CMDLINE_UNPROVEN']);
  });

  it('a forged grub command line next to the real digest is not a fact', () => {
    const forged = tamper(GCE, (e) => (e[102] = { ...e[102]!, data: Buffer.from('kernel_cmdline: /boot/vmlinuz ro init=/bin/sh\0') }));
    expect(appraise(forged, parseAndReplay(GCE)).facts.kernelCmdlines).toEqual([]);
  });

  it('PCR values: allowed, not allowed, not quoted', () => {
    const quoted = parseAndReplay(GCE);
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
    const rules: EventlogRules = { requireSecureBoot: true };
    expect(appraiseEventlog(parseTcgLog(MOK), parseAndReplay(MOK), rules).ok).toBe(true);
  });
});
