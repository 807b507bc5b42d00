import { hash as oneShotHash } from 'node:crypto';
import { ParseError } from '../errors.js';
import { equalBytes, hex } from '../bytes.js';
import { EFI_GUID, ucs2Text } from './efi.js';
import { decodeEventData, decodeVariable, utf8Text, withoutStrayByte, type VariableEvent } from './event-data.js';
import { eventTypeName } from './event-types.js';
import { bankGaps, isExtended } from './replay.js';
import type { EventDigest, TcgEvent, TcgLog } from './tcg-log.js';

/*
 * Facts for policy, derived from events a quote vouches for and from nothing else.
 *
 * An event is trusted when it was extended into a PCR whose replay equalled the quoted
 * value (the caller says which, per bank: `verified`); only its digests in those banks are
 * used, and a bank vouches for a PCR's events only when every one of them has a digest in it
 * (else its digests could be paired with another event's digests in the other banks). Every
 * trusted digest must agree: data is proven, or a separator found, only in all of them.
 * Event data, event types and text tags are unsigned, so:
 *  - data counts only where a trusted digest is the hash of that very data ("proven"):
 *    the SecureBoot variable, PK/KEK/db/dbx, kernel command lines. Data is hashed before it
 *    is decoded, and only proven data is decoded (once);
 *  - events are recognised by what their proven data is, never by their type, nor by a tag
 *    the digest does not cover (grub hashes the text after "kernel_cmdline: ", not the tag):
 *    retyping or retagging an event cannot hide it or change what it says;
 *  - the PCR 7 separator is found by its digest (hash of 00000000 or FFFFFFFF), so data
 *    that the firmware measured before it cannot be confused with what a boot loader
 *    measured after it;
 *  - images and files are judged by their digest alone, which is the hash of the image (its
 *    Authenticode hash in PCR 4, the file in PCR 9), not of the event data. In PCR 4 every
 *    event is a boot component except separators and proven text (EV_EFI_ACTION strings):
 *    an image cannot pass for text, so giving a component's bytes as its data cannot hide
 *    it. In PCR 9, where boot loaders measure only what they load, every event is a file;
 *  - in PCR 8 and 12, where command lines are measured, an event whose digests prove none
 *    of its data is reported (unprovenCmdlineEvents): it could be a command line whose text
 *    was replaced, so a rule on command lines must fail while one exists. Proven text is a
 *    command line unless it is one of grub's other commands (PCR 8): all of PCR 12 (systemd),
 *    grub's kernel_cmdline and module_cmdline (multiboot2 and Xen boots put the hypervisor's
 *    and dom0's there), its commands that load a kernel or module (grub-legacy's
 *    legacy_kernel too, after grub's `!` and `time`), grub_cmd text other than grub's commands
 *    known to load nothing (an allowlist: fail closed) and lone assignments (kfreebsd's
 *    `kFreeBSD.*` environment is judged), and any text in no form grub uses. A tag counts
 *    only when the digest proves the text after it alone: text proven whole is not grub's.
 *    Text is compared as measured: a BOM or a Unicode blank is part of it.
 * Callers that have no quote (the CLI's `show`) pass every replayed PCR as verified, and
 * then the facts are only what the log claims.
 */

/** Per bank, the PCR indexes whose replay matched the quote. */
export type VerifiedPcrs = { readonly [bank: string]: readonly number[] };

/** Lowercase hex digests by bank name, only for banks the quote verified. */
export type Digests = { readonly [bank: string]: string };

export interface SecureBootFact {
  readonly state: 'enabled' | 'disabled' | 'unknown';
  /** The event whose proven data decided the state, or whose unproven data left it unknown. */
  readonly event?: number;
  readonly detail: string;
}

export interface SignatureDatabaseFact {
  readonly name: 'PK' | 'KEK' | 'db' | 'dbx';
  readonly event: number;
  /** The event's digests: the hash of the UEFI_VARIABLE_DATA as measured. */
  readonly digests: Digests;
  readonly entries: ReadonlyArray<{ readonly type: string; readonly owner: string; readonly data: string }>;
}

export interface BootComponentFact {
  /** 0 for the first component measured into PCR 4. */
  readonly position: number;
  readonly event: number;
  readonly digests: Digests;
  /** Type and device path as the log states them: a name for people, not evidence. */
  readonly label: string;
}

/** A file a boot loader measured into PCR 9 (grub: its configuration, the kernel, the initrd). */
export interface BootFileFact {
  readonly event: number;
  /** The hash of the file: what decides. */
  readonly digests: Digests;
  /** Type and path as the log states them: a name for people, not evidence. */
  readonly label: string;
}

export interface KernelCmdlineFact {
  readonly event: number;
  readonly pcr: number;
  /**
   * grub: its "kernel_cmdline:" and "module_cmdline:" events (PCR 8); grub-command: grub's
   * `linux`, `multiboot2`, `module2`, `legacy_kernel` ... commands (PCR 8), whose measured text
   * names the kernel or module and its command line whatever the event's tag says, and any
   * grub_cmd text that is not one of grub's commands known to load nothing (judged whole);
   * systemd: systemd-boot's or -stub's UTF-16 command line (PCR 12, 8 before v251), and any
   * other proven text of PCR 8 or 12 that is in none of grub's forms.
   */
  readonly source: 'grub' | 'grub-command' | 'systemd';
  readonly cmdline: string;
}

/** An event of PCR 8 or 12 whose digests prove none of its data. */
export interface UnprovenEventFact {
  readonly event: number;
  readonly pcr: number;
  readonly label: string;
}

export interface EventlogFacts {
  readonly secureBoot: SecureBootFact;
  readonly signatureDatabases: readonly SignatureDatabaseFact[];
  readonly bootComponents: readonly BootComponentFact[];
  readonly bootFiles: readonly BootFileFact[];
  readonly kernelCmdlines: readonly KernelCmdlineFact[];
  readonly unprovenCmdlineEvents: readonly UnprovenEventFact[];
}

const SEPARATOR_VALUES = [new Uint8Array([0, 0, 0, 0]), new Uint8Array([0xff, 0xff, 0xff, 0xff])];
const DATABASES: ReadonlyArray<{ guid: string; name: SignatureDatabaseFact['name'] }> = [
  { guid: EFI_GUID.GLOBAL_VARIABLE, name: 'PK' },
  { guid: EFI_GUID.GLOBAL_VARIABLE, name: 'KEK' },
  { guid: EFI_GUID.IMAGE_SECURITY_DATABASE, name: 'db' },
  { guid: EFI_GUID.IMAGE_SECURITY_DATABASE, name: 'dbx' },
];
/**
 * grub's tags of command lines: the kernel's, and (multiboot2, Xen) the modules' (dom0's
 * kernel is a module of Xen). The tag is not under the digest, so both are judged alike.
 */
const GRUB_CMDLINE_TAGS = ['kernel_cmdline', 'module_cmdline'];
/** grub's tag of its commands: text that is not a command line, unless it loads a kernel or module. */
const GRUB_COMMAND_TAG = 'grub_cmd';
/**
 * grub's commands that load a kernel or a module (Linux, multiboot and multiboot2, Xen on
 * Arm, grub-legacy configurations, the BSDs, XNU): their arguments are its path and command
 * line. grub measures the command as run (grub_cmd) before the loader measures the line,
 * which for multiboot, Xen and XNU has no path and retagged could pass for a command; the
 * command's own event always carries both, so it is judged by its text whatever its tag.
 */
const GRUB_LOADER_COMMANDS = new Set([
  'linux', 'linuxefi', 'linux16', 'multiboot', 'multiboot2', 'module', 'module2', 'xen_hypervisor', 'xen_module',
  // grub-legacy configurations: these call the loaders above directly, unmeasured.
  'legacy_kernel', 'legacy_initrd', 'legacy_initrd_nounzip',
  'kfreebsd', 'knetbsd', 'kopenbsd', 'xnu_kernel', 'xnu_kernel64',
  // An EFI image's load options are the command line of a Linux kernel with an EFI stub.
  'chainloader', 'plan9',
]);
/**
 * Words grub's script runs before the command they prefix (`! cmd` inverts its status,
 * `time cmd` calls it directly, unmeasured): the command after them is what is judged.
 */
const GRUB_PREFIXES = new Set(['!', 'time']);
/**
 * grub's commands (and the functions distributions' grub.cfg defines) that load no kernel
 * or module: their text is not judged. An allowlist, so that text in any other form (a
 * command unknown here that could run a loader unmeasured, a command-line event retagged)
 * is judged as a command line: fail closed.
 */
const GRUB_OTHER_COMMANDS = new Set([
  '[', 'test', 'true', 'false', 'set', 'unset', 'export', 'setparams', 'shift', 'return', 'break', 'continue', 'exit',
  'insmod', 'rmmod', 'lsmod', 'search', 'search.fs_uuid', 'search.fs_label', 'search.file',
  'menuentry', 'submenu', 'configfile', 'source', 'normal', 'normal_exit', 'blscfg', 'boot', 'reboot', 'halt', 'fwsetup',
  'load_env', 'save_env', 'list_env', 'echo', 'sleep', 'clear', 'read', 'regexp', 'probe', 'hwmatch', 'smbios', 'cpuid',
  'terminal_input', 'terminal_output', 'terminfo', 'serial', 'loadfont', 'background_image', 'background_color',
  'initrd', 'initrd16', 'initrdefi', 'devicetree', 'cryptomount', 'loopback', 'ls', 'cat',
  'password', 'password_pbkdf2', 'authenticate', 'gettext', 'keystatus', 'play', 'videoinfo', 'lsefi',
  'net_bootp', 'net_dhcp', 'net_add_addr', 'net_add_route', 'net_add_dns', 'gfxterm_background_color', 'gfxterm_background_image',
  'verify_detached', 'trust', 'distrust', 'list_trusted', 'hashsum', 'sha256sum', 'sha512sum',
  // Functions of Debian's, Ubuntu's, Fedora's and SUSE's grub.cfg.
  'load_video', 'recordfail', 'initrdfail', 'gfxmode', 'savedefault',
]);
/**
 * grub's kfreebsd loader hands every variable named `kFreeBSD.*` to the kernel as its
 * environment: a command that names one (`set`, `export`, `read`, `--set=` of `search`,
 * `regexp`, `probe` ...) states a command line.
 */
const KFREEBSD_ENVIRONMENT = /kFreeBSD\./;
/**
 * A grub variable assignment `name=value` (grub's script: one word, the rest ignored). The
 * kernel splits its command line at any blank and control character, not at spaces only.
 */
const GRUB_ASSIGNMENT = /^([A-Za-z_][\w.]*)=/;
const BLANK_OR_CONTROL = /[\s\x00-\x1f\x7f]/;
/** What grub's script text never holds (it measures menu entries with their tabs and line breaks). */
const CONTROL = /[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]/;
const COMMAND_LINE_PCRS = [8, 12];
/** grub's tags ("grub_cmd", "kernel_cmdline", "module_cmdline") are short; longer runs are not tags. */
const MAX_TAG = 32;
/** Labels are for messages: bounded, whatever the log holds. */
const MAX_LABEL = 256;

export function deriveEventlogFacts(log: TcgLog, verified: VerifiedPcrs): EventlogFacts {
  const trusted = trustedEvents(log, verified);
  const { secureBoot, signatureDatabases } = pcr7Facts(trusted.filter((t) => t.event.pcrIndex === 7));
  const { kernelCmdlines, unprovenCmdlineEvents } = commandLineFacts(trusted.filter((t) => COMMAND_LINE_PCRS.includes(t.event.pcrIndex)));
  return {
    secureBoot,
    signatureDatabases,
    bootComponents: bootComponents(trusted.filter((t) => t.event.pcrIndex === 4)),
    bootFiles: trusted.filter((t) => t.event.pcrIndex === 9).map((t) => ({ event: t.event.index, digests: t.digestsByBank(), label: labelOf(t.event) })),
    kernelCmdlines,
    unprovenCmdlineEvents,
  };
}

/** An event a verified PCR vouches for, with its digests in the verified banks (never empty). */
class TrustedEvent {
  private dataProven: boolean | undefined;

  constructor(
    readonly event: TcgEvent,
    readonly digests: readonly EventDigest[],
  ) {}

  /** Whether every trusted digest is the hash of `bytes`: then `bytes` is what was measured. */
  proves(bytes: Uint8Array): boolean {
    return this.digests.every((d) => equalBytes(oneShotHash(d.hash!.name, bytes, 'buffer'), d.digest));
  }

  /** Whether the event's own data is what was measured (hashed once, whoever asks). */
  get provesData(): boolean {
    this.dataProven ??= this.proves(this.event.data);
    return this.dataProven;
  }

  /** A separator, by digest: H(00000000) or H(FFFFFFFF) in every trusted bank (PFP §10.4.1 EV_SEPARATOR). */
  get isSeparator(): boolean {
    return SEPARATOR_VALUES.some((_, i) => this.digests.every((d) => equalBytes(separatorDigests(d.hash!.name)[i]!, d.digest)));
  }

  digestsByBank(): Digests {
    return Object.fromEntries(this.digests.map((d) => [d.hash!.name, hex(d.digest)]));
  }
}

const separatorDigestCache = new Map<string, readonly Uint8Array[]>();

function separatorDigests(hashName: string): readonly Uint8Array[] {
  let digests = separatorDigestCache.get(hashName);
  if (!digests) {
    digests = SEPARATOR_VALUES.map((value) => oneShotHash(hashName, value, 'buffer'));
    separatorDigestCache.set(hashName, digests);
  }
  return digests;
}

function trustedEvents(log: TcgLog, verified: VerifiedPcrs): TrustedEvent[] {
  const gaps = bankGaps(log);
  const vouches = (bank: string, pcr: number) => verified[bank]?.includes(pcr) === true && gaps[bank]?.[pcr] === undefined;
  const out: TrustedEvent[] = [];
  for (const event of log.events) {
    // EV_NO_ACTION digests are never extended, so no quote vouches for them.
    if (!isExtended(event)) continue;
    const digests = event.digests.filter((d) => d.hash && vouches(d.hash.name, event.pcrIndex));
    if (digests.length > 0) out.push(new TrustedEvent(event, digests));
  }
  return out;
}

/** "sha1:<hex> sha256:<hex>", as digest rules are written. */
export function formatDigests(digests: Digests): string {
  return Object.entries(digests)
    .map(([bank, digest]) => `${bank}:${digest}`)
    .join(' ');
}

interface ProvenVariable {
  readonly t: TrustedEvent;
  readonly v: VariableEvent;
}

/**
 * Secure boot and the signature databases, from PCR 7 up to its separator: hashed first,
 * then only the variables the digests prove are decoded, each once.
 */
function pcr7Facts(pcr7: TrustedEvent[]): Pick<EventlogFacts, 'secureBoot' | 'signatureDatabases'> {
  const at = pcr7.findIndex((t) => t.isSeparator);
  if (at < 0) {
    const detail = 'PCR 7 has no verified separator: firmware and boot loader measurements cannot be told apart';
    return { secureBoot: { state: 'unknown', detail }, signatureDatabases: [] };
  }
  const preOs = pcr7.slice(0, at);
  const variables = preOs.filter((t) => t.provesData).flatMap((t) => {
    const v = variableOf(t);
    return v ? [{ t, v }] : [];
  });
  return { secureBoot: secureBootFact(variables, preOs.find((t) => !t.provesData)), signatureDatabases: signatureDatabases(variables) };
}

function variableOf(t: TrustedEvent): VariableEvent | undefined {
  try {
    return decodeVariable(t.event.data);
  } catch (e) {
    if (e instanceof ParseError) return undefined;
    throw e;
  }
}

function secureBootFact(variables: readonly ProvenVariable[], unproven: TrustedEvent | undefined): SecureBootFact {
  // An unproven event could be the firmware's SecureBoot measurement with its data replaced,
  // whatever a proven one says (that one could be measured twice, or its digests misplaced).
  if (unproven) {
    const event = unproven.event.index;
    return { state: 'unknown', event, detail: `event ${event}: its data is not what its digest measured, and it precedes the PCR 7 separator, where SecureBoot is measured` };
  }
  const measured = variables.filter(({ v }) => v.guid === EFI_GUID.GLOBAL_VARIABLE && v.name === 'SecureBoot');
  if (measured.length === 0) return { state: 'unknown', detail: 'no verified SecureBoot measurement in PCR 7 before the separator' };
  const states = measured.map(({ t, v }) => ({ event: t.event.index, state: secureBootState(v.data) }));
  const first = states[0]!;
  if (states.some((s) => s.state !== first.state)) {
    return { state: 'unknown', event: first.event, detail: `SecureBoot measured ${states.length} times with different values` };
  }
  const detail =
    first.state === 'unknown'
      ? `event ${first.event}: SecureBoot value is neither 0 nor 1`
      : `event ${first.event}: SecureBoot variable measured ${first.state}`;
  return { state: first.state, event: first.event, detail };
}

/** UEFI §3.3: SecureBoot is one byte, 1 when enabled; firmware measures an absent variable with no data. */
function secureBootState(data: Uint8Array): SecureBootFact['state'] {
  if (data.length === 0) return 'disabled';
  if (data.length !== 1 || data[0]! > 1) return 'unknown';
  return data[0] === 1 ? 'enabled' : 'disabled';
}

function signatureDatabases(variables: readonly ProvenVariable[]): SignatureDatabaseFact[] {
  const out: SignatureDatabaseFact[] = [];
  for (const { t, v } of variables) {
    const db = DATABASES.find((d) => d.guid === v.guid && d.name === v.name);
    if (!db) continue;
    const lists = v.value.kind === 'signature-lists' ? v.value.lists : [];
    const entries = lists.flatMap((l) => l.entries.map((e) => ({ type: l.type, owner: e.owner, data: hex(e.data) })));
    out.push({ name: db.name, event: t.event.index, digests: t.digestsByBank(), entries });
  }
  return out;
}

/** PCR 4's images: every event but separators and proven text, whatever its type says. */
function bootComponents(pcr4: TrustedEvent[]): BootComponentFact[] {
  return pcr4
    .filter((t) => !t.isSeparator && !(isText(t.event.data) && t.provesData))
    .map((t, position) => ({ position, event: t.event.index, digests: t.digestsByBank(), label: labelOf(t.event) }));
}

/** Printable ASCII (tabs and line breaks included), NUL-terminated or not: what no executable image is. */
function isText(data: Uint8Array): boolean {
  const end = data[data.length - 1] === 0 ? data.length - 1 : data.length;
  if (end === 0) return false;
  for (let i = 0; i < end; i++) {
    const b = data[i]!;
    if ((b < 0x20 || b > 0x7e) && b !== 0x09 && b !== 0x0a && b !== 0x0d) return false;
  }
  return true;
}

function labelOf(event: TcgEvent): string {
  const data = decodeEventData(event.eventType, event.data);
  let name: string | undefined;
  if (data.kind === 'image-load') name = data.devicePath?.filePath ?? data.devicePath?.text;
  else if (data.kind === 'text' || data.kind === 'tagged') name = data.text;
  const type = eventTypeName(event.eventType);
  return name ? `${type} ${name.slice(0, MAX_LABEL)}` : type;
}

function commandLineFacts(events: TrustedEvent[]): Pick<EventlogFacts, 'kernelCmdlines' | 'unprovenCmdlineEvents'> {
  const kernelCmdlines: KernelCmdlineFact[] = [];
  const unprovenCmdlineEvents: UnprovenEventFact[] = [];
  const environmentLoads: KernelCmdlineFact[] = [];
  let kfreebsd = false;
  for (const t of events) {
    const { pcrIndex: pcr, index: event } = t.event;
    const measured = measuredText(t);
    if (measured === undefined) {
      unprovenCmdlineEvents.push({ event, pcr, label: labelOf(t.event) });
      continue;
    }
    const cmdline = commandLineOf(pcr, measured);
    if (cmdline === undefined) continue;
    const { loader, environmentLoad, ...fact } = cmdline;
    // With kfreebsd, the unmeasured grubenv that a `load_env` naming no variables reads is the
    // kernel's environment too.
    if (loader === 'kfreebsd') kfreebsd = true;
    (environmentLoad ? environmentLoads : kernelCmdlines).push({ event, pcr, ...fact });
  }
  if (kfreebsd) kernelCmdlines.push(...environmentLoads);
  kernelCmdlines.sort((a, b) => a.event - b.event);
  return { kernelCmdlines, unprovenCmdlineEvents };
}

interface MeasuredText {
  /**
   * The tag before ": " (grub's "kernel_cmdline", "grub_cmd"), only when the digests prove the
   * text after it alone, as grub measures: text proven whole is not grub's, whatever it reads.
   */
  readonly tag?: string;
  /** The data after the tag (all of it when there is none): covered by the digest either way. */
  readonly content: Uint8Array;
  /** The bytes the digests prove: the whole data, or the content. */
  readonly proven: Uint8Array;
}

/**
 * What the digests prove of an event's data: the whole data, or (grub) the text after its
 * "<tag>: " prefix, with its NUL (grub >= 2.06) or without. Undefined when they prove none.
 */
function measuredText(t: TrustedEvent): MeasuredText | undefined {
  const { data } = t.event;
  const tagEnd = tagLength(data);
  if (tagEnd === 0) return t.provesData ? { content: data, proven: data } : undefined;
  const tag = Buffer.from(data.subarray(0, tagEnd - 2)).toString('latin1');
  const content = data.subarray(tagEnd);
  const bare = content[content.length - 1] === 0 ? content.subarray(0, content.length - 1) : content;
  const proven = t.proves(content) ? content : bare !== content && t.proves(bare) ? bare : undefined;
  if (proven !== undefined) {
    // grub's text has at most its one final NUL; systemd's UTF-16 line ends in two or more, and a
    // tag put in front of it must not make it read as grub's (ASCII hidden in its code units).
    const inner = proven.subarray(0, proven.length - 1);
    return inner.includes(0) ? { content: proven, proven } : { tag, content, proven: content };
  }
  // systemd's UTF-16 line can spell "<tag>: <grub command>" in its bytes: judged as what it is.
  return t.provesData ? { content: data, proven: data } : undefined;
}

/** Length of a leading "<tag>: " with a tag of [A-Za-z0-9_], or 0 when the data has none. */
function tagLength(data: Uint8Array): number {
  for (let i = 0; i < Math.min(data.length - 1, MAX_TAG + 1); i++) {
    const b = data[i]!;
    if (b === 0x3a /* : */) return i > 0 && data[i + 1] === 0x20 ? i + 2 : 0;
    const tagChar = (b >= 0x30 && b <= 0x39) || (b >= 0x41 && b <= 0x5a) || (b >= 0x61 && b <= 0x7a) || b === 0x5f;
    if (!tagChar) return 0;
  }
  return 0;
}

/**
 * The kernel command line an event's proven text states, by what the text is, never by a
 * tag: in PCR 12 (systemd) all of it; in PCR 8 grub's kernel and module command lines and
 * its commands that load one, nothing for grub's other commands, and any other proven text,
 * which could be a command line in a form this does not know, so a rule must allow it.
 */
function commandLineOf(pcr: number, measured: MeasuredText): CommandLine | undefined {
  if (pcr === 8 && measured.tag !== undefined) {
    const text = utf8Text(measured.content);
    const words = text.split(' ');
    let first = 0;
    while (first < words.length - 1 && GRUB_PREFIXES.has(words[first]!)) first++;
    const command = words[first]!;
    if (GRUB_LOADER_COMMANDS.has(command) && first < words.length - 1) return { source: 'grub-command', cmdline: words.slice(first + 1).join(' '), loader: command };
    if (GRUB_CMDLINE_TAGS.includes(measured.tag)) return { source: 'grub', cmdline: text };
    // grub's commands are text: NULs or other control characters inside (systemd's UTF-16 line
    // with a tag put in front of it reads as `echo` or `set` in UTF-8) are judged as they are.
    if (measured.tag === GRUB_COMMAND_TAG && !CONTROL.test(text) && isOtherGrubCommand(words.slice(first))) {
      return command === 'load_env' && loadsWholeEnvironment(words.slice(first + 1)) ? { source: 'grub-command', cmdline: text, environmentLoad: true } : undefined;
    }
    return { source: 'grub-command', cmdline: text };
  }
  return { source: 'systemd', cmdline: provenText(measured.proven) };
}

/**
 * A command line an event states; `loader`: the grub command that loads it; `environmentLoad`:
 * a `load_env` naming no variables, a command line only where a kfreebsd loader runs.
 */
type CommandLine = Pick<KernelCmdlineFact, 'source' | 'cmdline'> & { readonly loader?: string; readonly environmentLoad?: true };

/** Whether `load_env`'s arguments name no variables (options and a file only): it loads all the file holds. */
function loadsWholeEnvironment(args: readonly string[]): boolean {
  for (let i = 0; i < args.length; i++) {
    if (args[i] === '-f' || args[i] === '--file') i++;
    else if (!args[i]!.startsWith('-')) return false;
  }
  return true;
}

/** Whether grub's command (its words, prefixes removed) is one that loads nothing with a command line. */
function isOtherGrubCommand(words: readonly string[]): boolean {
  const [command, ...args] = words as [string, ...string[]];
  const assignment = GRUB_ASSIGNMENT.exec(command);
  // A command line retagged could also be `name=value ...`: only a lone assignment is grub's.
  if (assignment) return args.length === 0 && !BLANK_OR_CONTROL.test(command) && !KFREEBSD_ENVIRONMENT.test(assignment[1]!);
  if (!GRUB_OTHER_COMMANDS.has(command)) return false;
  return !args.some((arg) => KFREEBSD_ENVIRONMENT.test(arg));
}

/**
 * systemd measures its command line as CHAR16 (UTF-16LE), before v251 with one stray byte
 * at the end: proven bytes of even length (that byte aside) are read so, others as UTF-8.
 * Decided by length, not by what the characters look like, so no content can avoid it.
 */
function provenText(bytes: Uint8Array): string {
  const even = withoutStrayByte(bytes);
  return even.length % 2 === 0 ? ucs2Text(even) : utf8Text(bytes);
}
