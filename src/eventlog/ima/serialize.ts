import { hex } from '../../bytes.js';
import type { ImaHashAlgo } from './hash-algos.js';
import {
  IMA_LEGACY_DIGEST_SIZE,
  IMA_TEMPLATE_HASH_SIZE,
  computeTemplateHash,
  imaEntry,
  templateFields,
  withNul,
  type ImaEntry,
  type ImaFieldId,
  type ImaTemplateName,
} from './templates.js';

/*
 * Writing IMA measurement lists in both of the kernel's forms: tests and the bench build
 * their lists with it, and the tests round-trip the parsers through it (a list read and
 * written again must come out byte for byte, in either form).
 */

/** What a measurement records, before the kernel turns it into template field data. */
export interface ImaFieldValues {
  readonly digestAlgo: ImaHashAlgo;
  readonly digest: Uint8Array;
  /** Path or event name bytes, without a NUL. */
  readonly name: Uint8Array;
  readonly signature?: Uint8Array;
  readonly buffer?: Uint8Array;
}

/** Field data for a measurement, as the kernel builds it (ima_eventdigest_ng_init & co). */
function fieldDataFor(template: ImaTemplateName, values: ImaFieldValues): Uint8Array[] {
  const name = withNul(values.name);
  if (template === 'ima') return [values.digest, name];
  // DATA_FMT_DIGEST_WITH_ALGO: "<algo>:" then a NUL, then the digest.
  const algo = Buffer.from(`${values.digestAlgo.name}:`, 'latin1');
  const digestField = new Uint8Array(algo.length + 1 + values.digest.length);
  digestField.set(algo);
  digestField.set(values.digest, algo.length + 1);
  if (template === 'ima-ng') return [digestField, name];
  return [digestField, name, (template === 'ima-sig' ? values.signature : values.buffer) ?? new Uint8Array(0)];
}

/** A measurement as the kernel would log it; a violation gets the zero template hash. */
export function buildImaEntry(
  index: number,
  pcr: number,
  template: ImaTemplateName,
  values: ImaFieldValues,
  violation = false,
): ImaEntry {
  // Validated first (as a violation, whose zero hash needs no data), then hashed.
  const entry = imaEntry(index, pcr, template, new Uint8Array(IMA_TEMPLATE_HASH_SIZE), fieldDataFor(template, values), `entry ${index}`);
  return violation ? entry : { ...entry, violation: false, templateHash: computeTemplateHash(entry) };
}

/**
 * One field as the kernel prints it in IMA_SHOW_ASCII mode (ima_show_template_*): digests
 * as hex, d-ng with its "algo:" prefix, names as their bytes, sig and buf as hex (an empty
 * field as an empty token). The reverse of fieldDataFromAscii.
 */
function asciiField(entry: ImaEntry, id: ImaFieldId, data: Uint8Array): string {
  switch (id) {
    case 'd':
    case 'sig':
    case 'buf':
      return hex(data);
    case 'd-ng':
      return `${entry.digestAlgo.name}:${hex(entry.digest)}`;
    case 'n':
    case 'n-ng':
      // Names are raw bytes; latin1 carries them through a string unchanged.
      return Buffer.from(entry.nameBytes).toString('latin1');
  }
}

/** ascii_runtime_measurements: `"%2d " pcr, template hash, name, " field"...`, one line each. */
export function formatImaAscii(entries: Iterable<ImaEntry>): Buffer {
  const lines: string[] = [];
  for (const e of entries) {
    const fields = templateFields(e.template).map((id, i) => asciiField(e, id, e.fieldData[i] as Uint8Array));
    lines.push(`${String(e.pcr).padStart(2)} ${hex(e.templateHash)} ${e.template} ${fields.join(' ')}\n`);
  }
  return Buffer.from(lines.join(''), 'latin1');
}

function u32le(value: number): Buffer {
  const out = Buffer.alloc(4);
  out.writeUInt32LE(value);
  return out;
}

/** binary_runtime_measurements, little-endian (see parse-binary.ts for the layout). */
export function formatImaBinary(entries: Iterable<ImaEntry>): Buffer {
  const parts: Uint8Array[] = [];
  for (const e of entries) {
    parts.push(u32le(e.pcr), e.templateHash, u32le(e.template.length), Buffer.from(e.template, 'latin1'));
    if (e.template === 'ima') {
      parts.push(e.hashInput.subarray(0, IMA_LEGACY_DIGEST_SIZE), u32le(e.nameBytes.length), e.nameBytes);
    } else {
      parts.push(u32le(e.hashInput.length), e.hashInput);
    }
  }
  return Buffer.concat(parts);
}
