import { ParseError } from '../errors.js';
import { TpmReader } from '../tpm/reader.js';
import { hex, withoutTrailingNuls } from '../bytes.js';
import { u64le } from './tcg-reader.js';

/*
 * UEFI data structures that PC Client event data embeds (UEFI Specification 2.10):
 * EFI_GUID, CHAR16 strings, device paths (§10), EFI_SIGNATURE_LIST (§32.4.1) and
 * EFI_LOAD_OPTION (§3.1.3). All reads go through TpmReader, so every length is checked.
 */

export const EFI_GUID = {
  GLOBAL_VARIABLE: '8be4df61-93ca-11d2-aa0d-00e098032b8c',
  IMAGE_SECURITY_DATABASE: 'd719b2cb-3d3a-4596-a3bc-dad00e67656f',
  SHIM_LOCK: '605dab50-e046-4300-abb6-3dd810dd8b23',
} as const;

/** EFI_SIGNATURE_LIST.SignatureType values (UEFI §32.4.1) by the name we show. */
const SIGNATURE_TYPES: ReadonlyMap<string, string> = new Map([
  ['a5c059a1-94e4-4aa7-87b5-ab155c2bf072', 'x509'],
  ['c1c41626-504c-4092-aca9-41f936934328', 'sha256'],
  ['826ca512-cf10-4ac9-b187-be01496631bd', 'sha1'],
  ['0b6e5233-a65c-44c9-9407-d9ab83bfc8bd', 'sha224'],
  ['ff3e5307-9fd0-48c9-85f1-8ad56c701e01', 'sha384'],
  ['093e0fae-a6c4-4f50-9f1b-d41e2b89c19a', 'sha512'],
  ['3c5766e8-269c-4e34-aa14-ed776e85b3b6', 'rsa2048'],
  ['3bd2a492-96c0-4079-b420-fcf98ef103ed', 'x509-sha256'],
  ['7076876e-80c2-4ee6-aad2-28b349a6865b', 'x509-sha384'],
  ['446dbf63-2502-4cda-bcfa-2465d2b0fe9d', 'x509-sha512'],
]);

/** EFI_GUID: UINT32, UINT16, UINT16 little-endian, then 8 bytes in order; shown as UEFI writes it. */
export function readGuid(r: TpmReader, field: string): string {
  const b = r.bytesOf(16, field);
  // A copy to reverse: `b` may be a Buffer, whose slice() is a view of the caller's bytes.
  const littleEndian = (from: number, to: number): string => hex(Uint8Array.from(b.subarray(from, to)).reverse());
  return `${littleEndian(0, 4)}-${littleEndian(4, 6)}-${littleEndian(6, 8)}-${hex(b.subarray(8, 10))}-${hex(b.subarray(10, 16))}`;
}

const utf16 = new TextDecoder('utf-16le', { ignoreBOM: true });

/** UTF-16LE text without its trailing NULs (some firmware counts the terminator). */
export function ucs2Text(bytes: Uint8Array): string {
  return withoutTrailingNuls(utf16.decode(bytes));
}

/** CHAR16 text of `chars` code units. */
export function readUcs2(r: TpmReader, chars: number, field: string): string {
  return ucs2Text(r.bytesOf(chars * 2, field));
}

/** A NUL-terminated CHAR16 string (EFI_LOAD_OPTION.Description, file path nodes). */
function readUcs2z(r: TpmReader, field: string): string {
  const chars: number[] = [];
  for (let c = r.u16le(field); c !== 0; c = r.u16le(field)) chars.push(c);
  return utf16.decode(new Uint16Array(chars));
}

export interface SignatureEntry {
  readonly owner: string;
  readonly data: Uint8Array;
}

export interface SignatureList {
  /** "x509", "sha256", ... or the GUID when the type is not one UEFI defines. */
  readonly type: string;
  readonly header: Uint8Array;
  readonly entries: readonly SignatureEntry[];
}

const SIGNATURE_LIST_HEADER = 28;
const SIGNATURE_OWNER = 16;

/** A sequence of EFI_SIGNATURE_LISTs (the value of PK, KEK, db, dbx, MokList). */
export function readSignatureLists(bytes: Uint8Array, what: string): SignatureList[] {
  const r = new TpmReader(bytes, what);
  const lists: SignatureList[] = [];
  while (r.remaining > 0) {
    const type = readGuid(r, 'SignatureType');
    const listSize = r.u32le('SignatureListSize');
    const headerSize = r.u32le('SignatureHeaderSize');
    const signatureSize = r.u32le('SignatureSize');
    const bodySize = listSize - SIGNATURE_LIST_HEADER - headerSize;
    // SignatureSize 0 would make the entry count infinite; each entry holds at least its owner.
    if (bodySize < 0 || signatureSize < SIGNATURE_OWNER || bodySize % signatureSize !== 0) {
      throw new ParseError(
        'ERR_TPM_BAD_VALUE',
        `${what}: signature list ${lists.length} sizes are inconsistent (list ${listSize}, header ${headerSize}, entry ${signatureSize})`,
      );
    }
    const header = r.bytesOf(headerSize, 'SignatureHeader');
    const body = new TpmReader(r.bytesOf(bodySize, 'Signatures'), what);
    const entries: SignatureEntry[] = [];
    while (body.remaining > 0) {
      entries.push({
        owner: readGuid(body, 'SignatureOwner'),
        data: body.bytesOf(signatureSize - SIGNATURE_OWNER, 'SignatureData'),
      });
    }
    lists.push({ type: SIGNATURE_TYPES.get(type) ?? type, header, entries });
  }
  return lists;
}

/** One EFI_SIGNATURE_DATA (the db entry an EV_EFI_VARIABLE_AUTHORITY event names). */
export function readSignatureData(bytes: Uint8Array, what: string): SignatureEntry {
  const r = new TpmReader(bytes, what);
  return { owner: readGuid(r, 'SignatureOwner'), data: r.bytesOf(r.remaining, 'SignatureData') };
}

export interface DevicePathNode {
  readonly type: number;
  readonly subType: number;
  readonly data: Uint8Array;
}

export interface DevicePath {
  readonly nodes: readonly DevicePathNode[];
  /** UEFI's text form for the common nodes ("PciRoot(0x0)/Pci(0x1,0x1)/HD(1,GPT,...)/\EFI\BOOT\BOOTX64.EFI"). */
  readonly text: string;
  /** The media file path, when the path names a file: a label for people, never a decision. */
  readonly filePath?: string;
}

const DEVICE_PATH_HEADER = 4;
const END_TYPE = 0x7f;
const END_ENTIRE = 0xff;

/** EFI_DEVICE_PATH_PROTOCOL nodes (UEFI §10.3), up to the end-of-entire-path node. */
export function readDevicePath(bytes: Uint8Array, what: string): DevicePath {
  const r = new TpmReader(bytes, what);
  const nodes: DevicePathNode[] = [];
  const parts: string[] = [];
  let filePath: string | undefined;
  while (r.remaining > 0) {
    const type = r.u8('DevicePath.Type');
    const subType = r.u8('DevicePath.SubType');
    const length = r.u16le('DevicePath.Length');
    if (length < DEVICE_PATH_HEADER) {
      throw new ParseError('ERR_TPM_BAD_VALUE', `${what}: device path node length ${length} is below ${DEVICE_PATH_HEADER}`);
    }
    const data = r.bytesOf(length - DEVICE_PATH_HEADER, 'DevicePath.Data');
    nodes.push({ type, subType, data });
    if (type === END_TYPE) {
      if (subType === END_ENTIRE) break;
      parts.push(',');
      continue;
    }
    const text = nodeText(type, subType, data, what);
    if (type === 4 && subType === 4) filePath = text;
    parts.push(parts.length === 0 || parts[parts.length - 1] === ',' ? text : `/${text}`);
  }
  return { nodes, text: parts.join(''), ...(filePath === undefined ? {} : { filePath }) };
}

const PNP0A03 = 0x0a0341d0;

function nodeText(type: number, subType: number, data: Uint8Array, what: string): string {
  const r = new TpmReader(data, what);
  if (type === 2 && subType === 1 && data.length === 8) {
    const hid = r.u32le('ACPI.HID');
    const uid = r.u32le('ACPI.UID');
    return hid === PNP0A03 ? `PciRoot(0x${uid.toString(16)})` : `Acpi(0x${hid.toString(16)},0x${uid.toString(16)})`;
  }
  if (type === 1 && subType === 1 && data.length === 2) {
    const fn = r.u8('PCI.Function');
    return `Pci(0x${r.u8('PCI.Device').toString(16)},0x${fn.toString(16)})`;
  }
  if (type === 4 && subType === 1 && data.length === 38) {
    const partition = r.u32le('HD.PartitionNumber');
    const start = u64le(r, 'HD.PartitionStart');
    const size = u64le(r, 'HD.PartitionSize');
    const signature = new TpmReader(r.bytesOf(16, 'HD.Signature'), what);
    r.u8('HD.MBRType');
    const id =
      r.u8('HD.SignatureType') === 2
        ? `GPT,${readGuid(signature, 'HD.Signature')}`
        : `MBR,0x${signature.u32le('HD.Signature').toString(16)}`;
    return `HD(${partition},${id},0x${start.toString(16)},0x${size.toString(16)})`;
  }
  if (type === 4 && subType === 4) return readUcs2z(r, 'FilePath.PathName');
  if (type === 4 && (subType === 6 || subType === 7) && data.length === 16) {
    return `${subType === 6 ? 'FvFile' : 'Fv'}(${readGuid(r, 'Fv.Name')})`;
  }
  return `Path(${type},${subType},${hex(data)})`;
}

export interface LoadOption {
  readonly attributes: number;
  /** LOAD_OPTION_ACTIVE. */
  readonly active: boolean;
  readonly description: string;
  readonly devicePath: Uint8Array;
  readonly optionalData: Uint8Array;
}

/** EFI_LOAD_OPTION (UEFI §3.1.3): the value of Boot####. */
export function readLoadOption(bytes: Uint8Array, what: string): LoadOption {
  const r = new TpmReader(bytes, what);
  const attributes = r.u32le('Attributes');
  const filePathListLength = r.u16le('FilePathListLength');
  const description = readUcs2z(r, 'Description');
  return {
    attributes,
    active: (attributes & 1) === 1,
    description,
    devicePath: r.bytesOf(filePathListLength, 'FilePathList'),
    optionalData: r.bytesOf(r.remaining, 'OptionalData'),
  };
}

/** BootOrder: UINT16 option numbers. */
export function readBootOrder(bytes: Uint8Array, what: string): number[] {
  if (bytes.length % 2 !== 0) throw new ParseError('ERR_TPM_BAD_VALUE', `${what}: BootOrder has an odd length ${bytes.length}`);
  const r = new TpmReader(bytes, what);
  const order: number[] = [];
  while (r.remaining > 0) order.push(r.u16le('BootOrder'));
  return order;
}
