/**
 * grub's PCR 8 text judged as a command line, at the appraisal (the HTTP path of the same
 * code is in eventlog.test.ts): the "<tag>: " prefix and the event type are outside the
 * digest, so what decides is the proven text. A loader's command-line event starts with the
 * image's path, so retagged as grub_cmd it does not look like one of grub's commands and is
 * judged; grub-legacy's `legacy_kernel` is a loader like `linux`; and text is compared as
 * measured, without the Unicode blanks String.prototype.trim would remove.
 */
import { createHash } from 'node:crypto';
import { describe, expect, it } from 'vitest';
import { appraiseEventlog } from '../../src/appraisal/appraise-eventlog.js';
import { parseBaselineDocument } from '../../src/baseline/document.js';
import { parseEventlogRules } from '../../src/baseline/eventlog-rules.js';
import { EV } from '../../src/eventlog/event-types.js';
import { replayTcgLog } from '../../src/eventlog/replay.js';
import { parseTcgLog } from '../../src/eventlog/tcg-log.js';
import { TPM_ALG } from '../../src/tpm/constants.js';
import { agileLog, imageEvent, type EventSpec } from '../eventlog-fixtures.js';
import { codeOf } from '../helpers/code-of.js';

const ALLOWED = '/boot/vmlinuz root=/dev/sda1 ro lockdown=confidentiality';
const EVIL = `${ALLOWED} init=/bin/sh`;

/** What grub measures: the digest is of `measured`, the event data carries the tag and a NUL. */
function grubEvent(tag: string, text: string | Uint8Array): EventSpec {
  const measured = Buffer.from(text);
  return {
    pcr: 8,
    type: EV.IPL,
    data: Buffer.concat([Buffer.from(`${tag}: `), measured, Buffer.from([0])]),
    digests: [
      [TPM_ALG.SHA1, createHash('sha1').update(measured).digest()],
      [TPM_ALG.SHA256, createHash('sha256').update(measured).digest()],
    ],
  };
}

/** Text proven whole, as systemd-boot measured its UTF-16 line into PCR 8 before v251: the digest covers any "<tag>: " in it. */
function wholeEvent(data: Uint8Array): EventSpec {
  return {
    pcr: 8,
    type: EV.IPL,
    data,
    digests: [
      [TPM_ALG.SHA1, createHash('sha1').update(data).digest()],
      [TPM_ALG.SHA256, createHash('sha256').update(data).digest()],
    ],
  };
}

/** The PCRs of `log` as they replay, PCR 12 (and PCR 4, without events of its own) at its reset value. */
function quotedAsReplayed(log: ReturnType<typeof parseTcgLog>) {
  return Object.fromEntries(
    Object.entries(replayTcgLog(log)).map(([bank, values]) => {
      const reset = new Uint8Array(bank === 'sha1' ? 20 : 32);
      return [bank, { 4: reset, ...values, 12: reset }];
    }),
  );
}

/** The appraisal of a log of `events` whose PCRs are quoted as they replay (PCR 12 at its reset value). */
function appraise(events: readonly EventSpec[], cmdlines: string[] = [ALLOWED]) {
  const log = parseTcgLog(agileLog(events));
  const quoted = quotedAsReplayed(log);
  // PCR 4 pinned to its value: command-line rules need it or the boot components (see 'the loader that wrote PCR 8').
  const pcr4 = Buffer.from(quoted.sha256![4]!).toString('hex');
  return appraiseEventlog(log, quoted, parseEventlogRules({ kernelCmdlines: cmdlines, pcrs: { sha256: { 4: [pcr4] } } }));
}
const codes = (events: readonly EventSpec[], cmdlines?: string[]) => appraise(events, cmdlines).reasons.map((r) => [r.code, r.event]);

/** An allowed Linux boot: grub's command, then the command line the loader hands over. */
const HONEST = [grubEvent('grub_cmd', 'set root=hd0,gpt2'), grubEvent('grub_cmd', `linux ${ALLOWED}`), grubEvent('kernel_cmdline', ALLOWED)];

describe('grub text in PCR 8 judged as a command line', () => {
  it("an allowed boot, with grub's other commands (set, insmod, [, functions, assignments) between: affirmed", () => {
    const others = [
      'insmod part_gpt', '[ -s (hd0,gpt1)/boot/grub/grubenv ]', 'load_video', 'menuentry_id_option=--id', 'search.fs_uuid 1234 root', 'recordfail',
      '! search --no-floppy --fs-uuid --set=root 1234', 'time insmod gzio', 'set kernel_args=quiet',
    ];
    expect(codes([...others.map((t) => grubEvent('grub_cmd', t)), ...HONEST])).toEqual([]);
  });

  it("grub-legacy's legacy_kernel loading a tampered line, whose command-line event is retagged grub_cmd: both judged, KERNEL_CMDLINE_NOT_ALLOWED", () => {
    // An allowed kernel loaded first supplies the one proven line a rule needs.
    const events = [...HONEST, grubEvent('grub_cmd', `legacy_kernel ${EVIL}`), grubEvent('grub_cmd', EVIL), grubEvent('grub_cmd', 'boot')];
    expect(codes(events)).toEqual([
      ['KERNEL_CMDLINE_NOT_ALLOWED', 4],
      ['KERNEL_CMDLINE_NOT_ALLOWED', 5],
    ]);
  });

  it('a command-line event retagged grub_cmd (it starts with the path, or a device), or text in no form grub uses: judged', () => {
    for (const text of [EVIL, `(hd0,gpt2)${EVIL}`, ` linux ${EVIL}`]) {
      expect(codes([...HONEST, grubEvent('grub_cmd', text)]), text).toEqual([['KERNEL_CMDLINE_NOT_ALLOWED', 4]]);
    }
    // The other loaders, BSDs and XNU included, are judged by their arguments.
    for (const loader of ['kfreebsd', 'knetbsd', 'kopenbsd', 'xnu_kernel64', 'multiboot', 'xen_module', 'chainloader']) {
      expect(codes([...HONEST, grubEvent('grub_cmd', `${loader} ${EVIL}`)]), loader).toEqual([['KERNEL_CMDLINE_NOT_ALLOWED', 4]]);
    }
  });

  it("multiboot's, Xen's and XNU's arguments without a path, a relative kernel name, or any other text not known as grub's: judged when retagged grub_cmd", () => {
    const others = ['init=/bin/sh\tquiet', 'init=/bin/sh\nquiet', 'init=/bin/sh\u00a0quiet', 'set\tinit=/bin/sh'];
    for (const text of ['root=/dev/sda1 ro init=/bin/sh', 'quiet init=/bin/sh', 'init=/bin/sh quiet', 'vmlinuz root=/dev/sda1 init=/bin/sh', 'eval linux /boot/vmlinuz init=/bin/sh', ...others]) {
      expect(codes([...HONEST, grubEvent('grub_cmd', text)]), text).toEqual([['KERNEL_CMDLINE_NOT_ALLOWED', 4]]);
    }
  });

  it("a loader behind grub's `!` or `time`, or grub-legacy's initrd loaders: judged by the arguments after them", () => {
    for (const command of ['time linux', '! linux', 'time time multiboot2', '! time module2', 'legacy_initrd', 'legacy_initrd_nounzip']) {
      expect(codes([...HONEST, grubEvent('grub_cmd', `${command} ${EVIL}`)]), command).toEqual([['KERNEL_CMDLINE_NOT_ALLOWED', 4]]);
    }
    expect(codes([grubEvent('grub_cmd', `time linux ${ALLOWED}`), grubEvent('kernel_cmdline', ALLOWED)])).toEqual([]);
  });

  it("kfreebsd's environment (variables kFreeBSD.*), set or assigned: judged", () => {
    for (const text of ['set kFreeBSD.vfs.root.mountfrom=ufs:/dev/ada0s1a', 'export kFreeBSD.init_path', 'kFreeBSD.init_path=/rescue/sh']) {
      expect(codes([...HONEST, grubEvent('grub_cmd', text)]), text).toEqual([['KERNEL_CMDLINE_NOT_ALLOWED', 4]]);
    }
  });

  it("kfreebsd's environment named by grub's other commands (read, --set=, load_env): judged; a load_env naming no variables too where kfreebsd boots, but not where Linux does", () => {
    for (const text of ['read kFreeBSD.init_path', 'search --set=kFreeBSD.init_path -f /x', 'regexp --set=kFreeBSD.init_path x x', 'load_env kFreeBSD.init_path', 'probe --set=kFreeBSD.x -u (hd0)']) {
      expect(codes([...HONEST, grubEvent('grub_cmd', text)]), text).toEqual([['KERNEL_CMDLINE_NOT_ALLOWED', 4]]);
    }
    const kernel = '/boot/kernel/kernel';
    const kfreebsd = [grubEvent('grub_cmd', 'load_env'), grubEvent('grub_cmd', `kfreebsd ${kernel}`)];
    expect(codes(kfreebsd, [kernel])).toEqual([['KERNEL_CMDLINE_NOT_ALLOWED', 1]]);
    for (const options of ['-f (hd0,1)/boot/grub/grubenv', '--skip-sig', '-s', '--file=(hd0,1)/grubenv']) {
      expect(codes([grubEvent('grub_cmd', `load_env ${options}`), grubEvent('grub_cmd', `kfreebsd ${kernel}`)], [kernel]), options).toEqual([['KERNEL_CMDLINE_NOT_ALLOWED', 1]]);
    }
    // Named variables other than kFreeBSD.* load nothing the kernel gets.
    expect(codes([grubEvent('grub_cmd', 'load_env -f (hd0,1)/grubenv saved_entry'), grubEvent('grub_cmd', `kfreebsd ${kernel}`)], [kernel])).toEqual([]);
    expect(codes([grubEvent('grub_cmd', 'load_env'), ...HONEST])).toEqual([]);
  });

  it("text proven whole (systemd-boot's UTF-16 line) whose bytes spell a grub tag and command: judged as the UTF-16 text it is, never as grub's", () => {
    // Bytes that read "xx: linux <allowed line>" to grub's eye; the kernel gets UTF-16 text without any of it.
    const spelled = (text: string) => Buffer.concat([Buffer.from(text), Buffer.alloc(text.length % 2 === 0 ? 2 : 3)]);
    const allowedLookalike = wholeEvent(spelled(`xx: linux ${ALLOWED}`));
    expect(codes([allowedLookalike])).toEqual([['KERNEL_CMDLINE_NOT_ALLOWED', 1]]);
    expect(codes([...HONEST, allowedLookalike])).toEqual([['KERNEL_CMDLINE_NOT_ALLOWED', 4]]);
    // "grub_cmd: set " then UTF-16 "=1 init=/bin/sh": not dropped as grub's `set`.
    const hidden = wholeEvent(Buffer.concat([Buffer.from('grub_cmd: set '), Buffer.from('=1 init=/bin/sh', 'utf16le'), Buffer.alloc(2)]));
    expect(codes([...HONEST, hidden])).toEqual([['KERNEL_CMDLINE_NOT_ALLOWED', 4]]);
    // Code units whose bytes are ASCII: under any tag, a line ending in systemd's two NULs is judged as UTF-16.
    const units = (text: string) => Buffer.concat([Buffer.from(text.length % 2 === 0 ? text : `${text} `), Buffer.alloc(2)]);
    expect(codes([grubEvent('kernel_cmdline', units(ALLOWED))])).toEqual([['KERNEL_CMDLINE_NOT_ALLOWED', 1]]);
    expect(codes([grubEvent('grub_cmd', units(`linux ${ALLOWED}`))])).toEqual([['KERNEL_CMDLINE_NOT_ALLOWED', 1]]);
    // "[ " then each character with 0x78 as its high byte: a stub that truncates UCS-2 gets "[ <line> init=/bin/sh".
    const interleaved = Buffer.concat([Buffer.from('[ '), ...[...` ${EVIL}`].map((c) => Buffer.from([c.charCodeAt(0), 0x78])), Buffer.alloc(2)]);
    expect(codes([...HONEST, grubEvent('grub_cmd', interleaved)])).toEqual([['KERNEL_CMDLINE_NOT_ALLOWED', 4]]);
    // A tag put in front of the proven UTF-16 line, which then reads `echo` in UTF-8: judged, not dropped.
    for (const stray of [2, 3]) {
      const line = Buffer.concat([Buffer.from('echo'), Buffer.from(' init=/bin/sh', 'utf16le'), Buffer.alloc(stray)]);
      expect(codes([...HONEST, grubEvent('grub_cmd', line)]), `stray ${stray}`).toEqual([['KERNEL_CMDLINE_NOT_ALLOWED', 4]]);
    }
  });

  it('blanks and marks the kernel does not strip (no-break space, BOM, ideographic space) or bytes that are not UTF-8: another line, KERNEL_CMDLINE_NOT_ALLOWED', () => {
    for (const bytes of [
      Buffer.concat([Buffer.from(ALLOWED), Buffer.from([0xc2, 0xa0])]),
      Buffer.concat([Buffer.from([0xef, 0xbb, 0xbf]), Buffer.from(ALLOWED)]),
      Buffer.concat([Buffer.from(ALLOWED), Buffer.from('\u3000')]),
      Buffer.concat([Buffer.from(ALLOWED), Buffer.from([0xff])]),
    ]) {
      const events = [grubEvent('grub_cmd', Buffer.concat([Buffer.from('linux '), bytes])), grubEvent('kernel_cmdline', bytes)];
      expect(codes(events), bytes.toString('hex')).toEqual([
        ['KERNEL_CMDLINE_NOT_ALLOWED', 1],
        ['KERNEL_CMDLINE_NOT_ALLOWED', 2],
      ]);
    }
    // ASCII blanks around the line are not part of it.
    expect(codes([grubEvent('grub_cmd', `linux ${ALLOWED} `), grubEvent('kernel_cmdline', `${ALLOWED}\t`)])).toEqual([]);
  });

  it('a rule cannot allow the replacement character, which every byte that is not UTF-8 decodes to', () => {
    expect(codeOf(() => parseEventlogRules({ kernelCmdlines: [`${ALLOWED}\ufffd`] }))).toBe('ERR_BASELINE_EVENTLOG_RULES');
  });
});

describe('the loader that wrote PCR 8', () => {
  const GRUB = imageEvent('grub');
  const allowGrub = { match: 'any', allowed: [`sha256:${createHash('sha256').update('grub').digest('hex')}`] };

  it('command-line rules need the boot components (PCR 4), ruled or pinned: ERR_BASELINE_EVENTLOG_RULES without, and a PCR 8 pin is no substitute', () => {
    expect(codeOf(() => parseEventlogRules({ kernelCmdlines: [ALLOWED] }))).toBe('ERR_BASELINE_EVENTLOG_RULES');
    for (const pcr of [8, 9]) {
      expect(codeOf(() => parseEventlogRules({ kernelCmdlines: [ALLOWED], pcrs: { sha256: { [pcr]: ['00'.repeat(32)] } } }))).toBe('ERR_BASELINE_EVENTLOG_RULES');
    }
    expect(parseEventlogRules({ kernelCmdlines: [ALLOWED], bootComponents: allowGrub }).kernelCmdlines).toEqual([ALLOWED]);
    expect(parseEventlogRules({ kernelCmdlines: [ALLOWED], pcrs: { sha256: { 4: ['00'.repeat(32)] } } }).kernelCmdlines).toEqual([ALLOWED]);
    // A baseline document's own pcrs count too, PCR 4 only.
    const documentWith = (pcr: number) => ({ version: 1, pcrs: { sha256: { [pcr]: ['00'.repeat(32)] } }, eventlog: { kernelCmdlines: [ALLOWED] } });
    expect(parseBaselineDocument(documentWith(4)).rules.eventlog?.kernelCmdlines).toEqual([ALLOWED]);
    for (const pcr of [8, 9]) expect(codeOf(() => parseBaselineDocument(documentWith(pcr)))).toBe('ERR_BASELINE_INVALID');
  });

  it("a UKI booted from a Boot#### entry (its line in PCR 11), PCR 8 replayed from reset to grub's allowed value by root: PCR 4 pinned to grub's boot refuses it", () => {
    const grubBoot = parseTcgLog(agileLog([GRUB, ...HONEST]));
    const pcr4 = Buffer.from(replayTcgLog(grubBoot).sha256![4]!).toString('hex');
    const rules = parseEventlogRules({ kernelCmdlines: [ALLOWED], pcrs: { sha256: { 4: [pcr4] } } });
    expect(appraiseEventlog(grubBoot, quotedAsReplayed(grubBoot), rules).reasons).toEqual([]);
    const uki = parseTcgLog(agileLog([imageEvent('a UKI with init=/bin/sh in its .cmdline'), ...HONEST]));
    expect(appraiseEventlog(uki, quotedAsReplayed(uki), rules).reasons.map((r) => [r.code, r.pcr])).toEqual([['PCR_VALUE_NOT_ALLOWED', 4]]);
  });

  it("a systemd-stub before v251 booted from a Boot#### entry after grub's allowed line: its load options read as grub's `[` command, the kernel gets their low bytes; the stub is an image the rules do not allow", () => {
    // The stub measures its load options as they are; the kernel gets the low byte of each UTF-16 unit: "[ init=/bin/sh".
    const options = Buffer.from([...'[ init=/bin/sh'].flatMap((c, i) => [c.charCodeAt(0), i === 0 ? 0x20 : 0x78]));
    expect(options.toString('latin1')).toBe('[  xixnxixtx=x/xbxixnx/xsxhx');
    const stub = imageEvent('systemd-stub v250');
    const events = [GRUB, ...HONEST, stub, grubEvent('grub_cmd', options)];
    const log = parseTcgLog(agileLog(events));
    const rules = parseEventlogRules({ bootComponents: allowGrub, kernelCmdlines: [ALLOWED] });
    const result = appraiseEventlog(log, quotedAsReplayed(log), rules);
    expect(result.reasons.map((r) => [r.code, r.event])).toEqual([['BOOT_COMPONENT_NOT_ALLOWED', 5]]);
    // Without the stub, the same PCR 8 passes: the boot components are what tell the two boots apart.
    const grubOnly = parseTcgLog(agileLog([GRUB, ...HONEST, grubEvent('grub_cmd', options)]));
    expect(appraiseEventlog(grubOnly, quotedAsReplayed(grubOnly), rules).reasons).toEqual([]);
  });
});
