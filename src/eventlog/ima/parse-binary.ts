import { ParseError } from '../../errors.js';
import { TpmReader } from '../../tpm/reader.js';
import { withCode } from '../tcg-reader.js';
import type { ImaEntryCursor } from './parse.js';
import {
  IMA_LEGACY_DIGEST_SIZE,
  IMA_MAX_PCR,
  IMA_TEMPLATE_HASH_SIZE,
  imaEntry,
  imaTemplateByName,
  templateFields,
  withNul,
  type ImaEntry,
} from './templates.js';

/** IMA_TEMPLATE_NAME_LEN_MAX (security/integrity/ima/ima.h). */
const TEMPLATE_NAME_MAX = 15;

/**
 * binary_runtime_measurements (ima_fs.c, ima_measurements_show), little-endian
 * (ima_canonical_fmt, and the native order of x86 and arm64): u32 pcr, 20-byte SHA-1 template
 * hash, u32 name length, name; then for 'ima' the 20-byte digest and a u32-length-prefixed
 * name without NUL, for every other template a u32 template data length and the template
 * data, itself each field's data prefixed by a u32 length.
 */
export class BinaryCursor implements ImaEntryCursor {
  private readonly reader: TpmReader;

  constructor(
    bytes: Uint8Array,
    private readonly start: number,
    private index: number,
  ) {
    this.reader = new TpmReader(bytes.subarray(start), 'binary_runtime_measurements');
  }

  get offset(): number {
    return this.start + this.reader.position;
  }

  next(): ImaEntry | undefined {
    if (this.reader.remaining === 0) return undefined;
    const where = `entry ${this.index} at byte ${this.offset}`;
    const entry = withCode('ERR_IMA_TRUNCATED', () => this.read(where));
    this.index++;
    return entry;
  }

  private read(where: string): ImaEntry {
    const r = this.reader;
    const pcr = r.u32le(`${where} pcr`);
    if (pcr > IMA_MAX_PCR) throw new ParseError('ERR_IMA_MALFORMED', `${where}: PCR index ${pcr} is above ${IMA_MAX_PCR}`);
    const templateHash = r.bytesOf(IMA_TEMPLATE_HASH_SIZE, `${where} template hash`);
    const nameLength = r.u32le(`${where} template name length`);
    if (nameLength === 0 || nameLength > TEMPLATE_NAME_MAX) {
      throw new ParseError('ERR_IMA_MALFORMED', `${where}: template name length ${nameLength} is not 1..${TEMPLATE_NAME_MAX}`);
    }
    const template = imaTemplateByName(Buffer.from(r.bytesOf(nameLength, `${where} template name`)).toString('latin1'), where);
    if (template === 'ima') {
      // IMA_SHOW_BINARY_NO_FIELD_LEN digest, IMA_SHOW_BINARY_OLD_STRING_FMT name (strlen, no NUL).
      const digest = r.bytesOf(IMA_LEGACY_DIGEST_SIZE, `${where} d`);
      const name = r.bytesOf(r.u32le(`${where} n length`), `${where} n`);
      return imaEntry(this.index, pcr, template, templateHash, [digest, withNul(name)], where);
    }
    const data = r.bytesOf(r.u32le(`${where} template data length`), `${where} template data`);
    const fieldData = withCode('ERR_IMA_MALFORMED', () => splitFields(data, templateFields(template).length, where));
    return imaEntry(this.index, pcr, template, templateHash, fieldData, where, data);
  }
}

/** Template data -> each field's data (u32 length + bytes), with nothing left over. */
function splitFields(data: Uint8Array, count: number, where: string): Uint8Array[] {
  const r = new TpmReader(data, `${where} template data`);
  const fields: Uint8Array[] = [];
  for (let i = 0; i < count; i++) fields.push(r.bytesOf(r.u32le(`field ${i} length`), `field ${i}`));
  if (r.remaining !== 0) throw new ParseError('ERR_IMA_MALFORMED', `${where}: ${r.remaining} bytes after the template's fields`);
  return fields;
}
