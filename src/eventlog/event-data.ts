import { ParseError } from '../errors.js';
import { TpmReader } from '../tpm/reader.js';
import { withoutTrailingNuls } from '../bytes.js';
import {
  EFI_GUID,
  readBootOrder,
  readDevicePath,
  readGuid,
  readLoadOption,
  readSignatureData,
  readSignatureLists,
  readUcs2,
  ucs2Text,
  type DevicePath,
  type LoadOption,
  type SignatureEntry,
  type SignatureList,
} from './efi.js';
import { EV } from './event-types.js';
import { count64le, u64le, withCode } from './tcg-reader.js';

/*
 * Event data by event type, as the TCG PC Client Platform Firmware Profile (PFP) §10.4
 * defines it. Event data is unsigned: it is decoded to show people what an event claims
 * and, in facts.ts, trusted only where the event's digest is the hash of these very bytes.
 */

/** TCG_EfiSpecIDEventStruct (PFP §10.4.5.1): the first event of a crypto-agile log. */
export interface SpecIdEvent {
  readonly signature: string;
  readonly platformClass: number;
  readonly specVersionMinor: number;
  readonly specVersionMajor: number;
  readonly specErrata: number;
  readonly uintnSize: number;
  /** TCG_EfiSpecIdEventAlgorithmSize: the banks the log carries and each digest's size. */
  readonly algorithms: ReadonlyArray<{ readonly algorithmId: number; readonly digestSize: number }>;
  readonly vendorInfo: Uint8Array;
}

export const SPEC_ID_SIGNATURE = 'Spec ID Event03';
const SIGNATURE_SIZE = 16;
const STARTUP_LOCALITY_SIGNATURE = 'StartupLocality';
/** A TPM has a handful of PCR banks; 16 bounds the table without excluding any. */
const MAX_ALGORITHMS = 16;

/** Reads TCG_EfiSpecIDEventStruct where `r` stands; the caller has checked the signature. */
export function readSpecIdEvent(r: TpmReader): SpecIdEvent {
  const signature = signatureOf(r.bytesOf(SIGNATURE_SIZE, 'Spec ID signature'));
  const platformClass = r.u32le('platformClass');
  const specVersionMinor = r.u8('specVersionMinor');
  const specVersionMajor = r.u8('specVersionMajor');
  const specErrata = r.u8('specErrata');
  const uintnSize = r.u8('uintnSize');
  const count = r.u32le('numberOfAlgorithms');
  if (count > MAX_ALGORITHMS) throw new ParseError('ERR_EVENTLOG_MALFORMED', `Spec ID event: ${count} algorithms, at most ${MAX_ALGORITHMS}`);
  const algorithms: Array<{ algorithmId: number; digestSize: number }> = [];
  for (let i = 0; i < count; i++) {
    algorithms.push({ algorithmId: r.u16le('algorithmId'), digestSize: r.u16le('digestSize') });
  }
  const vendorInfo = r.bytesOf(r.u8('vendorInfoSize'), 'vendorInfo');
  return { signature, platformClass, specVersionMinor, specVersionMajor, specErrata, uintnSize, algorithms, vendorInfo };
}

/** The ASCII signature of an EV_NO_ACTION event, up to its NUL ("StartupLocality"). */
export function signatureOf(data: Uint8Array): string {
  const head = data.subarray(0, SIGNATURE_SIZE);
  const end = head.indexOf(0);
  return Buffer.from(head.subarray(0, end < 0 ? head.length : end)).toString('latin1');
}

/**
 * The locality of an EV_NO_ACTION "StartupLocality" event (PFP §10.4.5.3): TPM2_Startup ran
 * at this locality, so PCR 0 starts at 0...0<locality> instead of zeros. Undefined for any
 * other EV_NO_ACTION event.
 */
export function startupLocalityOf(data: Uint8Array): number | undefined {
  if (data.length !== SIGNATURE_SIZE + 1 || data[SIGNATURE_SIZE - 1] !== 0) return undefined;
  return signatureOf(data) === STARTUP_LOCALITY_SIGNATURE ? data[SIGNATURE_SIZE] : undefined;
}

/** UEFI_VARIABLE_DATA (PFP §10.4.6): the data of EV_EFI_VARIABLE_* events. */
export interface VariableEvent {
  readonly guid: string;
  readonly name: string;
  readonly data: Uint8Array;
  readonly value: VariableValue;
}

export type VariableValue =
  | { readonly kind: 'signature-lists'; readonly lists: readonly SignatureList[] }
  | { readonly kind: 'signature'; readonly entry: SignatureEntry }
  | { readonly kind: 'boot-order'; readonly order: readonly number[] }
  | { readonly kind: 'load-option'; readonly option: LoadOption; readonly path?: DevicePath }
  | { readonly kind: 'bytes'; readonly error?: string };

/** Reads UEFI_VARIABLE_DATA; throws ERR_EVENTLOG_EVENT_DATA when its lengths do not fit. */
export function decodeVariable(data: Uint8Array, authority = false): VariableEvent {
  return withCode('ERR_EVENTLOG_EVENT_DATA', () => {
    const r = new TpmReader(data, 'UEFI_VARIABLE_DATA');
    const guid = readGuid(r, 'VariableName');
    const nameLength = count64le(r, 'UnicodeNameLength');
    const dataLength = count64le(r, 'VariableDataLength');
    const name = readUcs2(r, nameLength, 'UnicodeName');
    const value = r.bytesOf(dataLength, 'VariableData');
    return { guid, name, data: value, value: variableValue(guid, name, value, authority) };
  });
}

/** Variables whose value is a sequence of EFI_SIGNATURE_LISTs, by vendor GUID. */
const SIGNATURE_DATABASES: ReadonlyMap<string, ReadonlySet<string>> = new Map([
  [EFI_GUID.GLOBAL_VARIABLE, new Set(['PK', 'KEK'])],
  [EFI_GUID.IMAGE_SECURITY_DATABASE, new Set(['db', 'dbx', 'dbt', 'dbr'])],
  [EFI_GUID.SHIM_LOCK, new Set(['MokList', 'MokListX'])],
]);

function variableValue(guid: string, name: string, data: Uint8Array, authority: boolean): VariableValue {
  const what = `variable ${name}`;
  const database = SIGNATURE_DATABASES.get(guid)?.has(name) === true;
  try {
    // EV_EFI_VARIABLE_AUTHORITY names the one database entry that verified an image (PFP
    // §10.4.6.3); shim also logs its built-in certificate ("Shim") and SbatLevel this way.
    if (authority) return database ? { kind: 'signature', entry: readSignatureData(data, what) } : { kind: 'bytes' };
    if (database) return { kind: 'signature-lists', lists: readSignatureLists(data, what) };
    if (guid === EFI_GUID.GLOBAL_VARIABLE && name === 'BootOrder') return { kind: 'boot-order', order: readBootOrder(data, what) };
    if (guid === EFI_GUID.GLOBAL_VARIABLE && /^Boot[0-9A-Fa-f]{4}$/.test(name)) {
      const option = readLoadOption(data, what);
      const path = devicePathOf(option.devicePath, what);
      return { kind: 'load-option', option, ...(path ? { path } : {}) };
    }
  } catch (e) {
    if (e instanceof ParseError) return { kind: 'bytes', error: e.message };
    throw e;
  }
  return { kind: 'bytes' };
}

/** The decoded device path, or undefined when its nodes do not parse (the bytes stay available). */
function devicePathOf(bytes: Uint8Array, what: string): DevicePath | undefined {
  if (bytes.length === 0) return undefined;
  try {
    return readDevicePath(bytes, what);
  } catch (e) {
    if (e instanceof ParseError) return undefined;
    throw e;
  }
}

/** UEFI_IMAGE_LOAD_EVENT (PFP §10.4.7): where an image was loaded and its device path. */
export interface ImageLoadEvent {
  readonly imageLocationInMemory: bigint;
  readonly imageLengthInMemory: bigint;
  readonly imageLinkTimeAddress: bigint;
  readonly devicePathBytes: Uint8Array;
  readonly devicePath?: DevicePath;
  /** Bytes after the device path (event-uefi-sha1-log.bin has 9 after a LengthOfDevicePath of 0). */
  readonly trailing: Uint8Array;
}

export function decodeImageLoad(data: Uint8Array): ImageLoadEvent {
  return withCode('ERR_EVENTLOG_EVENT_DATA', () => {
    const r = new TpmReader(data, 'UEFI_IMAGE_LOAD_EVENT');
    const imageLocationInMemory = u64le(r, 'ImageLocationInMemory');
    const imageLengthInMemory = u64le(r, 'ImageLengthInMemory');
    const imageLinkTimeAddress = u64le(r, 'ImageLinkTimeAddress');
    const devicePathBytes = r.bytesOf(count64le(r, 'LengthOfDevicePath'), 'DevicePath');
    const trailing = r.bytesOf(r.remaining, 'trailing');
    const devicePath = devicePathOf(devicePathBytes, 'DevicePath');
    return { imageLocationInMemory, imageLengthInMemory, imageLinkTimeAddress, devicePathBytes, ...(devicePath ? { devicePath } : {}), trailing };
  });
}

export interface GptPartition {
  readonly typeGuid: string;
  readonly uniqueGuid: string;
  readonly startingLba: bigint;
  readonly endingLba: bigint;
  readonly attributes: bigint;
  readonly name: string;
}

export interface GptEvent {
  readonly diskGuid: string;
  readonly headerRevision: number;
  readonly sizeOfPartitionEntry: number;
  readonly partitions: readonly GptPartition[];
}

const GPT_HEADER_SIZE = 92;
const GPT_ENTRY_MIN = 128;

/** UEFI_GPT_DATA (PFP §10.4.8): the GPT header (92 bytes) and the partitions in use. */
function readGpt(r: TpmReader): GptEvent {
  const header = new TpmReader(r.bytesOf(GPT_HEADER_SIZE, 'UEFI_PARTITION_TABLE_HEADER'), 'GPT header');
  if (signatureOf(header.bytesOf(8, 'Signature')) !== 'EFI PART') {
    throw new ParseError('ERR_TPM_BAD_VALUE', 'UEFI_GPT_DATA: header signature is not "EFI PART"');
  }
  const headerRevision = header.u32le('Revision');
  header.bytesOf(4 + 4 + 4 + 8 * 4, 'HeaderSize..LastUsableLBA');
  const diskGuid = readGuid(header, 'DiskGUID');
  header.bytesOf(8 + 4, 'PartitionEntryLBA, NumberOfPartitionEntries');
  const sizeOfPartitionEntry = header.u32le('SizeOfPartitionEntry');
  if (sizeOfPartitionEntry < GPT_ENTRY_MIN) {
    throw new ParseError('ERR_TPM_BAD_VALUE', `UEFI_GPT_DATA: SizeOfPartitionEntry ${sizeOfPartitionEntry} is below ${GPT_ENTRY_MIN}`);
  }
  const count = count64le(r, 'NumberOfPartitions');
  const partitions: GptPartition[] = [];
  for (let i = 0; i < count; i++) {
    const e = new TpmReader(r.bytesOf(sizeOfPartitionEntry, 'UEFI_PARTITION_ENTRY'), 'GPT partition');
    partitions.push({
      typeGuid: readGuid(e, 'PartitionTypeGUID'),
      uniqueGuid: readGuid(e, 'UniquePartitionGUID'),
      startingLba: u64le(e, 'StartingLBA'),
      endingLba: u64le(e, 'EndingLBA'),
      attributes: u64le(e, 'Attributes'),
      name: readUcs2(e, 36, 'PartitionName'),
    });
  }
  return { diskGuid, headerRevision, sizeOfPartitionEntry, partitions };
}

/** UEFI_PLATFORM_FIRMWARE_BLOB(2) (PFP §10.4.3): a region of firmware that was measured. */
function readBlob(r: TpmReader, described: boolean): { description?: string; base: bigint; length: bigint } {
  const description = described ? textOf(r.bytesOf(r.u8('BlobDescriptionSize'), 'BlobDescription')).text : undefined;
  return { ...(description === undefined ? {} : { description }), base: u64le(r, 'BlobBase'), length: u64le(r, 'BlobLength') };
}

/** UEFI_HANDOFF_TABLE_POINTERS(2) (PFP §10.4.4): configuration tables passed to the OS. */
function readHandoffTables(r: TpmReader, described: boolean): { description?: string; tables: Array<{ guid: string; address: bigint }> } {
  const description = described ? textOf(r.bytesOf(r.u8('TableDescriptionSize'), 'TableDescription')).text : undefined;
  const count = count64le(r, 'NumberOfTables');
  // EFI_CONFIGURATION_TABLE is a GUID and a UINTN pointer: 24 bytes on 64-bit firmware, 20 on 32-bit.
  const entrySize = count === 0 ? 24 : r.remaining / count;
  if (entrySize !== 24 && entrySize !== 20) {
    throw new ParseError('ERR_TPM_BAD_VALUE', `UEFI_HANDOFF_TABLE_POINTERS: ${r.remaining} bytes do not hold ${count} tables`);
  }
  const tables: Array<{ guid: string; address: bigint }> = [];
  for (let i = 0; i < count; i++) {
    tables.push({ guid: readGuid(r, 'VendorGuid'), address: entrySize === 24 ? u64le(r, 'VendorTable') : BigInt(r.u32le('VendorTable')) });
  }
  return { ...(description === undefined ? {} : { description }), tables };
}

export interface TextData {
  readonly encoding: 'utf-8' | 'utf-16le';
  readonly text: string;
}

// A leading BOM is kept: text is compared as measured, and the kernel would see it as part of a parameter.
const utf8 = new TextDecoder('utf-8', { ignoreBOM: true });

/**
 * Strings in event data: ASCII/UTF-8 (grub, EV_EFI_ACTION) or UTF-16LE (systemd-boot's
 * kernel command line, EV_S_CRTM_VERSION). UTF-16 is recognised by its zero high bytes;
 * trailing NULs are dropped. For display only: facts.ts decodes proven text by where it was
 * measured, never by this guess.
 */
export function textOf(bytes: Uint8Array): TextData {
  const even = withoutStrayByte(bytes);
  if (looksUtf16(even)) return { encoding: 'utf-16le', text: ucs2Text(even) };
  return { encoding: 'utf-8', text: utf8Text(bytes) };
}

/** systemd-boot before v251 logged its UTF-16 command line with one stray NUL byte at the end. */
export function withoutStrayByte(bytes: Uint8Array): Uint8Array {
  return bytes.length % 2 === 1 && bytes[bytes.length - 1] === 0 ? bytes.subarray(0, bytes.length - 1) : bytes;
}

export function utf8Text(bytes: Uint8Array): string {
  return withoutTrailingNuls(utf8.decode(bytes));
}

/** CHAR16 text of ASCII characters has a zero high byte in (nearly) every unit. */
function looksUtf16(b: Uint8Array): boolean {
  if (b.length < 2 || b.length % 2 !== 0 || b[1] !== 0 || b[0] === 0) return false;
  let zeroHigh = 0;
  for (let i = 1; i < b.length; i += 2) if (b[i] === 0) zeroHigh++;
  return zeroHigh * 4 >= (b.length / 2) * 3;
}

export type EventData =
  | ({ readonly kind: 'spec-id' } & SpecIdEvent)
  | { readonly kind: 'startup-locality'; readonly locality: number }
  | { readonly kind: 'no-action'; readonly signature: string }
  | { readonly kind: 'separator'; readonly value: number }
  | ({ readonly kind: 'text' } & TextData)
  | { readonly kind: 'firmware-blob'; readonly description?: string; readonly base: bigint; readonly length: bigint }
  | ({ readonly kind: 'variable' } & VariableEvent)
  | ({ readonly kind: 'image-load' } & ImageLoadEvent)
  | ({ readonly kind: 'gpt' } & GptEvent)
  | { readonly kind: 'handoff-tables'; readonly description?: string; readonly tables: ReadonlyArray<{ guid: string; address: bigint }> }
  | { readonly kind: 'tagged'; readonly id: number; readonly data: Uint8Array; readonly text?: string }
  /** Data this decoder does not interpret, or that does not fit its type (`error` says why). */
  | { readonly kind: 'raw'; readonly bytes: Uint8Array; readonly error?: string };

/**
 * Decodes the data of an event by its type. Never throws for bad data: event data is
 * unsigned and firmware writes odd things, so undecodable data comes back as `raw` with the
 * reason, and the log stays usable (its digests are what replay and facts rely on).
 */
export function decodeEventData(eventType: number, data: Uint8Array): EventData {
  try {
    return decode(eventType, data);
  } catch (e) {
    if (e instanceof ParseError) return { kind: 'raw', bytes: data, error: e.message };
    throw e;
  }
}

function decode(type: number, data: Uint8Array): EventData {
  const r = new TpmReader(data, 'event data');
  const whole = <T>(read: () => T): T =>
    withCode('ERR_EVENTLOG_EVENT_DATA', () => {
      const v = read();
      if (r.remaining !== 0) throw new ParseError('ERR_EVENTLOG_EVENT_DATA', `event data: ${r.remaining} bytes after the structure`);
      return v;
    });
  switch (type) {
    case EV.NO_ACTION: {
      const signature = signatureOf(data);
      if (signature === SPEC_ID_SIGNATURE) return { kind: 'spec-id', ...whole(() => readSpecIdEvent(r)) };
      const locality = startupLocalityOf(data);
      return locality === undefined ? { kind: 'no-action', signature } : { kind: 'startup-locality', locality };
    }
    case EV.SEPARATOR:
      return data.length === 4 ? { kind: 'separator', value: r.u32le('separator') } : { kind: 'raw', bytes: data };
    case EV.ACTION:
    case EV.EFI_ACTION:
    case EV.IPL:
    case EV.OMIT_BOOT_DEVICE_EVENTS:
    case EV.EFI_HCRTM_EVENT:
      return { kind: 'text', ...textOf(data) };
    case EV.S_CRTM_VERSION:
      // A UTF-16 version string, or on some firmware a GUID (PFP §10.4.1).
      return looksUtf16(data) ? { kind: 'text', ...textOf(data) } : { kind: 'raw', bytes: data };
    case EV.POST_CODE:
      // PFP §10.4.1: EV_POST_CODE holds either a UEFI_PLATFORM_FIRMWARE_BLOB or a string ("ACPI DATA").
      return data.length === 16 ? { kind: 'firmware-blob', ...whole(() => readBlob(r, false)) } : { kind: 'text', ...textOf(data) };
    case EV.S_CRTM_CONTENTS:
    case EV.EFI_PLATFORM_FIRMWARE_BLOB:
      return { kind: 'firmware-blob', ...whole(() => readBlob(r, false)) };
    case EV.EFI_PLATFORM_FIRMWARE_BLOB2:
      return { kind: 'firmware-blob', ...whole(() => readBlob(r, true)) };
    case EV.EFI_HANDOFF_TABLES:
    case EV.EFI_HANDOFF_TABLES2:
      return { kind: 'handoff-tables', ...whole(() => readHandoffTables(r, type === EV.EFI_HANDOFF_TABLES2)) };
    case EV.EFI_VARIABLE_DRIVER_CONFIG:
    case EV.EFI_VARIABLE_BOOT:
    case EV.EFI_VARIABLE_BOOT2:
    case EV.EFI_VARIABLE_AUTHORITY:
      return { kind: 'variable', ...decodeVariable(data, type === EV.EFI_VARIABLE_AUTHORITY) };
    case EV.EFI_BOOT_SERVICES_APPLICATION:
    case EV.EFI_BOOT_SERVICES_DRIVER:
    case EV.EFI_RUNTIME_SERVICES_DRIVER:
      return { kind: 'image-load', ...decodeImageLoad(data) };
    case EV.EFI_GPT_EVENT:
    case EV.EFI_GPT_EVENT2:
      return { kind: 'gpt', ...whole(() => readGpt(r)) };
    case EV.EVENT_TAG: {
      // TCG_PCClientTaggedEvent (PFP §10.4.2); systemd tags its initrd and its credentials.
      const tagged = whole(() => ({ id: r.u32le('taggedEventID'), data: r.bytesOf(r.u32le('taggedEventDataSize'), 'taggedEventData') }));
      const text = textOf(tagged.data);
      return { kind: 'tagged', ...tagged, ...(/^[\x20-\x7e]*$/.test(text.text) ? { text: text.text } : {}) };
    }
    default:
      return { kind: 'raw', bytes: data };
  }
}
