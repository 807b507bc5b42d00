import { hash as oneShotHash } from 'node:crypto';
import { ParseError } from '../errors.js';
import { equalBytes, hex } from './bytes.js';
import { EFI_GUID } from './efi.js';
import { decodeEventData, decodeVariable, textOf, type VariableEvent } from './event-data.js';
import { eventTypeName } from './event-types.js';
import { isExtended } from './replay.js';
import type { EventDigest, TcgEvent, TcgLog } from './tcg-log.js';

/*
 * Facts for policy, derived from events a quote vouches for and from nothing else.
 *
 * An event is trusted when it was extended into a PCR whose replay equalled the quoted
 * value (the caller says which, per bank: `verified`); only its digests in those banks are
 * used. Event data and event types are unsigned, so:
 *  - data counts only where a trusted digest is the hash of that very data ("proven"):
 *    the SecureBoot variable, PK/KEK/db/dbx, kernel command lines;
 *  - events are recognised by what their proven data is, never by their type: retyping an
 *    event cannot hide it or change what it says (go-attestation's event-type confusion);
 *  - the PCR 7 separator is found by its digest (hash of 00000000 or FFFFFFFF), so data
 *    that the firmware measured before it cannot be confused with what a boot loader
 *    measured after it;
 *  - boot components are the PCR 4 events whose digest is NOT the hash of their data
 *    (images: the digest is the image's Authenticode hash), whatever their type says.
 * Callers that have no quote (the CLI's `show`) pass every replayed PCR as verified, and
 * then the facts are only what the log claims.
 */

/** Per bank, the PCR indexes whose replay matched the quote. */
export type VerifiedPcrs = { readonly [bank: string]: readonly number[] };

/** Lowercase hex digests by bank name, only for banks the quote verified. */
export type Digests = { readonly [bank: string]: string };

export interface SecureBootFact {
  readonly state: 'enabled' | 'disabled' | 'unknown';
  /** The event whose proven data decided the state. */
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

export interface KernelCmdlineFact {
  readonly event: number;
  readonly pcr: number;
  /** grub's "kernel_cmdline:" (PCR 8) or systemd-boot/-stub's UTF-16 command line (PCR 12, 8 before v251). */
  readonly source: 'grub' | 'systemd';
  readonly cmdline: string;
}

export interface EventlogFacts {
  readonly secureBoot: SecureBootFact;
  readonly signatureDatabases: readonly SignatureDatabaseFact[];
  readonly bootComponents: readonly BootComponentFact[];
  readonly kernelCmdlines: readonly KernelCmdlineFact[];
}

const SEPARATOR_VALUES = [new Uint8Array([0, 0, 0, 0]), new Uint8Array([0xff, 0xff, 0xff, 0xff])];
const DATABASES: ReadonlyArray<{ guid: string; name: SignatureDatabaseFact['name'] }> = [
  { guid: EFI_GUID.GLOBAL_VARIABLE, name: 'PK' },
  { guid: EFI_GUID.GLOBAL_VARIABLE, name: 'KEK' },
  { guid: EFI_GUID.IMAGE_SECURITY_DATABASE, name: 'db' },
  { guid: EFI_GUID.IMAGE_SECURITY_DATABASE, name: 'dbx' },
];
const GRUB_CMDLINE = Buffer.from('kernel_cmdline: ', 'latin1');

export function deriveEventlogFacts(log: TcgLog, verified: VerifiedPcrs): EventlogFacts {
  const trusted = trustedEvents(log, verified);
  const preOs7 = beforeSeparator(trusted.filter((t) => t.event.pcrIndex === 7));
  return {
    secureBoot: secureBootFact(preOs7),
    signatureDatabases: preOs7 === undefined ? [] : signatureDatabases(preOs7),
    bootComponents: bootComponents(trusted),
    kernelCmdlines: kernelCmdlines(trusted),
  };
}

interface TrustedEvent {
  readonly event: TcgEvent;
  /** The event's digests in the banks where its PCR was verified (never empty). */
  readonly digests: readonly EventDigest[];
}

function trustedEvents(log: TcgLog, verified: VerifiedPcrs): TrustedEvent[] {
  const out: TrustedEvent[] = [];
  for (const event of log.events) {
    // EV_NO_ACTION digests are never extended, so no quote vouches for them.
    if (!isExtended(event)) continue;
    const digests = event.digests.filter((d) => d.hash && verified[d.hash.name]?.includes(event.pcrIndex));
    if (digests.length > 0) out.push({ event, digests });
  }
  return out;
}

/** Whether every trusted digest of the event is the hash of `bytes`: then `bytes` is what was measured. */
function proves(t: TrustedEvent, bytes: Uint8Array): boolean {
  return t.digests.every((d) => equalBytes(oneShotHash(d.hash!.name, bytes, 'buffer'), d.digest));
}

/** "sha1:<hex> sha256:<hex>", as digest rules are written. */
export function formatDigests(digests: Digests): string {
  return Object.entries(digests)
    .map(([bank, digest]) => `${bank}:${digest}`)
    .join(' ');
}

function digestsOf(t: TrustedEvent): Digests {
  return Object.fromEntries(t.digests.map((d) => [d.hash!.name, hex(d.digest)]));
}

/** PCR 7's events up to its separator (found by digest), or undefined when it has none. */
function beforeSeparator(pcr7: TrustedEvent[]): TrustedEvent[] | undefined {
  const at = pcr7.findIndex((t) => SEPARATOR_VALUES.some((value) => proves(t, value)));
  return at < 0 ? undefined : pcr7.slice(0, at);
}

function variableOf(t: TrustedEvent): VariableEvent | undefined {
  try {
    return decodeVariable(t.event.data);
  } catch (e) {
    if (e instanceof ParseError) return undefined;
    throw e;
  }
}

function secureBootFact(preOs7: TrustedEvent[] | undefined): SecureBootFact {
  if (preOs7 === undefined) {
    return { state: 'unknown', detail: 'PCR 7 has no verified separator: firmware and boot loader measurements cannot be told apart' };
  }
  const candidates = preOs7
    .map((t) => ({ t, v: variableOf(t) }))
    .filter(({ v }) => v?.guid === EFI_GUID.GLOBAL_VARIABLE && v.name === 'SecureBoot');
  const unproven = candidates.find(({ t }) => !proves(t, t.event.data));
  if (unproven) {
    const event = unproven.t.event.index;
    return { state: 'unknown', event, detail: `event ${event}: SecureBoot data is not what its digest measured` };
  }
  if (candidates.length === 0) return { state: 'unknown', detail: 'no verified SecureBoot measurement in PCR 7 before the separator' };
  const states = candidates.map(({ t, v }) => ({ event: t.event.index, state: secureBootState(v!.data) }));
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

function signatureDatabases(preOs7: TrustedEvent[]): SignatureDatabaseFact[] {
  const out: SignatureDatabaseFact[] = [];
  for (const t of preOs7) {
    const v = variableOf(t);
    const db = v && DATABASES.find((d) => d.guid === v.guid && d.name === v.name);
    if (!v || !db || !proves(t, t.event.data)) continue;
    const lists = v.value.kind === 'signature-lists' ? v.value.lists : [];
    const entries = lists.flatMap((l) => l.entries.map((e) => ({ type: l.type, owner: e.owner, data: hex(e.data) })));
    out.push({ name: db.name, event: t.event.index, digests: digestsOf(t), entries });
  }
  return out;
}

function bootComponents(trusted: TrustedEvent[]): BootComponentFact[] {
  return trusted
    .filter((t) => t.event.pcrIndex === 4 && !proves(t, t.event.data))
    .map((t, position) => ({ position, event: t.event.index, digests: digestsOf(t), label: labelOf(t.event) }));
}

function labelOf(event: TcgEvent): string {
  const data = decodeEventData(event.eventType, event.data);
  const path = data.kind === 'image-load' ? (data.devicePath?.filePath ?? data.devicePath?.text) : undefined;
  return path ? `${eventTypeName(event.eventType)} ${path}` : eventTypeName(event.eventType);
}

function kernelCmdlines(trusted: TrustedEvent[]): KernelCmdlineFact[] {
  const out: KernelCmdlineFact[] = [];
  for (const t of trusted) {
    const { pcrIndex, data, index } = t.event;
    if (pcrIndex === 8 && startsWith(data, GRUB_CMDLINE)) {
      // grub hashes the text after the prefix, with its NUL (grub >= 2.06) or without.
      const text = data.subarray(GRUB_CMDLINE.length);
      const bare = text[text.length - 1] === 0 ? text.subarray(0, text.length - 1) : text;
      if (proves(t, bare) || proves(t, text)) out.push({ event: index, pcr: pcrIndex, source: 'grub', cmdline: textOf(bare).text });
      continue;
    }
    const text = (pcrIndex === 12 || pcrIndex === 8) && textOf(data);
    if (text && text.encoding === 'utf-16le' && proves(t, data)) {
      out.push({ event: index, pcr: pcrIndex, source: 'systemd', cmdline: text.text });
    }
  }
  return out;
}

function startsWith(data: Uint8Array, prefix: Uint8Array): boolean {
  return data.length >= prefix.length && prefix.every((b, i) => data[i] === b);
}
