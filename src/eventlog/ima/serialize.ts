import { IMA_LEGACY_DIGEST_SIZE, IMA_TEMPLATE_HASH_SIZE, computeTemplateHash, fieldDataFor, fieldDataToAscii, imaEntry, templateFields } from './templates.js';
import type { ImaEntry, ImaFieldValues, ImaTemplateName } from './templates.js';
import { hex } from '../../bytes.js';

/*
 * Writing measurement lists the way the kernel prints them: for synthetic logs (tests, the
 * bench) and for converting one form into the other.
 */

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

/** ascii_runtime_measurements: `"%2d " pcr, template hash, name, " field"...`, one line each. */
export function formatImaAscii(entries: Iterable<ImaEntry>): Buffer {
  const lines: string[] = [];
  for (const e of entries) {
    const fields = templateFields(e.template).map((id, i) => fieldDataToAscii(id, e.fieldData[i] as Uint8Array));
    lines.push(`${String(e.pcr).padStart(2)} ${hex(e.templateHash)} ${e.template} ${fields.join(' ')}\n`);
  }
  // Names are raw bytes; latin1 carries them through a string unchanged.
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
