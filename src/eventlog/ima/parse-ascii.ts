import { ParseError } from '../../errors.js';
import { decodeHex } from './hex.js';
import type { ImaEntryCursor } from './parse.js';
import { equalBytes } from '../../bytes.js';
import {
  computeTemplateHash,
  fieldDataFromAscii,
  IMA_MAX_PCR,
  IMA_TEMPLATE_HASH_SIZE,
  imaEntry,
  imaTemplateByName,
  templateFields,
  type ImaEntry,
} from './templates.js';

const NL = 0x0a;
const SP = 0x20;
/** PATH_MAX: how many bytes past its first line break a name may run. */
const MAX_NAME_CONTINUATION = 4096;

/**
 * ascii_runtime_measurements (security/integrity/ima/ima_fs.c, ima_ascii_measurements_show):
 * one line per entry, `"%2d " pcr, hex template hash, template name, then each template field
 * after one space`. The kernel replaces spaces in names by '_', so single spaces delimit
 * exactly `3 + number of fields` tokens; an empty field leaves an empty token.
 *
 * Line breaks in names are printed as they are (only spaces are replaced), so an entry may
 * run over several lines. Its template hash says where it ends: when the first line is not an
 * entry whose data hashes to its template hash, the following lines are joined to it (up to
 * PATH_MAX more bytes) and the first join whose data does is the entry; another join would
 * take a SHA-1 second preimage. A violation has no template hash: its name takes the
 * following lines that do not read as an entry, which a name's continuation (no spaces, at
 * most one field after it) never does. Each join is parsed and hashed again, so such names
 * cost up to PATH_MAX times more to read; the binary list has neither the ambiguity nor the
 * cost, and is what agents should send.
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
    const { entry, end } = this.readEntry(eol, where);
    this.offset = end + 1;
    this.index++;
    return entry;
  }

  /** The entry from `this.offset` and the line break that ends it (`eol` or a later one). */
  private readEntry(eol: number, where: string): { entry: ImaEntry; end: number } {
    let firstLine: ImaEntry;
    try {
      firstLine = this.parseLine(this.text.subarray(this.offset, eol), where);
    } catch (e) {
      if (!(e instanceof ParseError)) throw e;
      const joined = this.joinedEntry(eol, where);
      if (joined) return joined;
      throw e;
    }
    if (firstLine.violation) return this.violationUpTo(eol, firstLine, where);
    if (hasItsTemplateHash(firstLine)) return { entry: firstLine, end: eol };
    // When no join explains the mismatch either, the replay reports it for this entry.
    return this.joinedEntry(eol, where) ?? { entry: firstLine, end: eol };
  }

  /** The first join of the following lines that is an entry with its template hash, or a violation. */
  private joinedEntry(eol: number, where: string): { entry: ImaEntry; end: number } | undefined {
    for (const end of this.lineEndsAfter(eol)) {
      const entry = this.tryParse(this.offset, end, where);
      if (entry?.violation) return this.violationUpTo(end, entry, where);
      if (entry && hasItsTemplateHash(entry)) return { entry, end };
    }
    return undefined;
  }

  /** A violation read up to `end`, its name extended over the following lines that do not read as an entry. */
  private violationUpTo(end: number, violation: ImaEntry, where: string): { entry: ImaEntry; end: number } {
    let result = { entry: violation, end };
    for (const next of this.lineEndsAfter(end)) {
      if (this.tryParse(result.end + 1, next, where)) break;
      const joined = this.tryParse(this.offset, next, where);
      if (!joined?.violation) break;
      result = { entry: joined, end: next };
    }
    return result;
  }

  /**
   * Where an entry whose first line ends at `eol` may end instead, if its name holds line
   * breaks: each line break before the first space (the name goes on without spaces, for at
   * most PATH_MAX bytes), then the end of the line with that space (a field follows the name).
   */
  private *lineEndsAfter(eol: number): Generator<number> {
    const limit = Math.min(this.text.length, eol + 1 + MAX_NAME_CONTINUATION);
    const at = this.text.subarray(eol + 1, limit).indexOf(SP);
    const name = this.text.subarray(0, at < 0 ? limit : eol + 1 + at);
    for (let end = name.indexOf(NL, eol + 1); end >= 0; end = name.indexOf(NL, end + 1)) yield end;
    const fieldsEnd = at < 0 ? -1 : this.text.indexOf(NL, eol + 1 + at);
    if (fieldsEnd >= 0) yield fieldsEnd;
  }

  private tryParse(from: number, to: number, where: string): ImaEntry | undefined {
    try {
      return this.parseLine(this.text.subarray(from, to), where);
    } catch (e) {
      if (e instanceof ParseError) return undefined;
      throw e;
    }
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

function hasItsTemplateHash(entry: ImaEntry): boolean {
  return equalBytes(computeTemplateHash(entry), entry.templateHash);
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
