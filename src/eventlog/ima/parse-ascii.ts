import { ParseError } from '../../errors.js';
import { decodeHex } from './hex.js';
import type { ImaEntryCursor } from './parse.js';
import { fieldDataFromAscii, IMA_MAX_PCR, IMA_TEMPLATE_HASH_SIZE, imaEntry, imaTemplateByName, templateFields, type ImaEntry } from './templates.js';

const NL = 0x0a;
const SP = 0x20;

/**
 * ascii_runtime_measurements (security/integrity/ima/ima_fs.c, ima_ascii_measurements_show):
 * one line per entry, `"%2d " pcr, hex template hash, template name, then each template field
 * after one space`. The kernel replaces spaces in names by '_', so single spaces delimit
 * exactly `3 + number of fields` tokens; an empty field leaves an empty token.
 */
export class AsciiCursor implements ImaEntryCursor {
  private readonly text: Buffer;

  constructor(
    bytes: Uint8Array,
    public offset: number,
    private index: number,
  ) {
    this.text = Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  }

  next(): ImaEntry | undefined {
    if (this.offset >= this.text.length) return undefined;
    const where = `line ${this.index + 1}`;
    const eol = this.text.indexOf(NL, this.offset);
    if (eol < 0) throw new ParseError('ERR_IMA_TRUNCATED', `${where}: the list ends inside a line`);
    const entry = this.parseLine(this.text.subarray(this.offset, eol), where);
    this.offset = eol + 1;
    this.index++;
    return entry;
  }

  private parseLine(line: Buffer, where: string): ImaEntry {
    // "%2d" right-aligns single-digit PCRs with a space.
    const tokens = splitTokens(line.subarray(line[0] === SP ? 1 : 0));
    if (tokens.length < 3) throw new ParseError('ERR_IMA_MALFORMED', `${where}: expected "pcr template-hash template-name fields..."`);
    const [pcrText, hashText, nameText] = tokens as [Buffer, Buffer, Buffer];
    const pcr = decimalPcr(pcrText, where);
    const templateHash = decodeHex(hashText, `${where} template hash`);
    if (templateHash.length !== IMA_TEMPLATE_HASH_SIZE) {
      throw new ParseError('ERR_IMA_MALFORMED', `${where}: template hash is ${templateHash.length} bytes, expected ${IMA_TEMPLATE_HASH_SIZE}`);
    }
    const template = imaTemplateByName(nameText.toString('latin1'), where);
    const ids = templateFields(template);
    if (tokens.length !== 3 + ids.length) {
      throw new ParseError('ERR_IMA_MALFORMED', `${where}: ${template} has ${ids.length} fields, found ${tokens.length - 3}`);
    }
    const fieldData = ids.map((id, i) => fieldDataFromAscii(id, tokens[3 + i] as Buffer, where));
    return imaEntry(this.index, pcr, template, templateHash, fieldData, where);
  }
}

function splitTokens(line: Buffer): Buffer[] {
  const tokens: Buffer[] = [];
  let start = 0;
  for (let sp = line.indexOf(SP); sp >= 0; sp = line.indexOf(SP, start)) {
    tokens.push(line.subarray(start, sp));
    start = sp + 1;
  }
  tokens.push(line.subarray(start));
  return tokens;
}

function decimalPcr(text: Buffer, where: string): number {
  const value = /^\d{1,2}$/.test(text.toString('latin1')) ? Number(text.toString('latin1')) : NaN;
  if (!(value <= IMA_MAX_PCR)) throw new ParseError('ERR_IMA_MALFORMED', `${where}: PCR index is not a number 0..${IMA_MAX_PCR}`);
  return value;
}
