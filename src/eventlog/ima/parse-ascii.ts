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
/** PATH_MAX (include/uapi/linux/limits.h): the longest name an entry may have, line breaks included. */
const PATH_MAX = 4096;
/** Every template's name is its second field: the fifth token, after pcr, template hash, template name and digest. */
const NAME_TOKEN = 4;
/**
 * Bytes that joining lines may parse and hash in one list: a base that covers a few names
 * of PATH_MAX line breaks, plus a few times the list's own size, so the work stays linear.
 */
const JOIN_WORK_BASE = 16 << 20;
const JOIN_WORK_PER_BYTE = 16;

/**
 * ascii_runtime_measurements (security/integrity/ima/ima_fs.c, ima_ascii_measurements_show):
 * one line per entry, `"%2d " pcr, hex template hash, template name, then each template field
 * after one space`. The kernel replaces spaces in names by '_', so single spaces delimit
 * exactly `3 + number of fields` tokens; an empty field leaves an empty token.
 *
 * Line breaks in names are printed as they are (only spaces are replaced), so an entry may
 * run over several lines. Its template hash says where it ends: when the first line is not an
 * entry whose data hashes to its template hash, the following lines are joined to it (the
 * whole name at most PATH_MAX bytes) and the first join whose data does is the entry; another
 * join would take a SHA-1 second preimage. A violation has no template hash: its name takes
 * the following lines that do not read as an entry, which a name's continuation (no spaces,
 * at most one field after it) never does. The hashed length precedes the name, so each join
 * is parsed and hashed anew: a name of n line breaks costs n joins. That work is bounded per
 * list (JOIN_WORK_*), and an entry left unresolved when it runs out is malformed; the binary
 * list has neither the ambiguity nor the cost, and is what agents should send.
 */
export class AsciiCursor implements ImaEntryCursor {
  private readonly text: Buffer;
  /** Bytes joins may still parse in this list. */
  private joinWork: number;

  constructor(
    bytes: Uint8Array,
    public offset: number,
    private index: number,
  ) {
    this.text = Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength);
    this.joinWork = JOIN_WORK_BASE + JOIN_WORK_PER_BYTE * Math.max(0, bytes.byteLength - offset);
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
    const nameLimit = this.nameLimit(eol);
    let firstLine: ImaEntry;
    try {
      firstLine = this.parseLine(this.text.subarray(this.offset, eol), where);
    } catch (e) {
      if (!(e instanceof ParseError)) throw e;
      const joined = this.joinedEntry(eol, nameLimit, where);
      if (joined) return joined;
      throw e;
    }
    if (firstLine.violation) return this.violationUpTo(eol, nameLimit, firstLine, where);
    if (hasItsTemplateHash(firstLine)) return { entry: firstLine, end: eol };
    // When no join explains the mismatch either, the replay reports it for this entry.
    return this.joinedEntry(eol, nameLimit, where) ?? { entry: firstLine, end: eol };
  }

  /**
   * Where the entry's name must end, if it runs on past its first line `this.offset..eol`:
   * PATH_MAX bytes after it starts. -1 when it cannot run on: the line has no name yet, the
   * name ends on it (a space follows), or it is already longer than PATH_MAX.
   */
  private nameLimit(eol: number): number {
    const line = this.text.subarray(this.offset, eol);
    let at = line[0] === SP ? 1 : 0;
    for (let token = 0; token < NAME_TOKEN; token++) {
      const sp = line.indexOf(SP, at);
      if (sp < 0) return -1;
      at = sp + 1;
    }
    if (line.indexOf(SP, at) >= 0 || line.length - at >= PATH_MAX) return -1;
    return Math.min(this.text.length, this.offset + at + PATH_MAX + 1);
  }

  /** The first join of the following lines that is an entry with its template hash, or a violation. */
  private joinedEntry(eol: number, nameLimit: number, where: string): { entry: ImaEntry; end: number } | undefined {
    for (const end of this.lineEndsAfter(eol, nameLimit)) {
      const entry = this.tryJoin(this.offset, end, where);
      if (entry?.violation) return this.violationUpTo(end, nameLimit, entry, where);
      if (entry && hasItsTemplateHash(entry)) return { entry, end };
    }
    return undefined;
  }

  /** A violation read up to `end`, its name extended over the following lines that do not read as an entry. */
  private violationUpTo(end: number, nameLimit: number, violation: ImaEntry, where: string): { entry: ImaEntry; end: number } {
    let result = { entry: violation, end };
    for (const next of this.lineEndsAfter(end, nameLimit)) {
      if (this.tryJoin(result.end + 1, next, where)) break;
      const joined = this.tryJoin(this.offset, next, where);
      if (!joined?.violation) break;
      result = { entry: joined, end: next };
    }
    return result;
  }

  /**
   * Where an entry may end past the line break `after`, if its name holds line breaks: each
   * line break before the first space and before `nameLimit` (the name goes on without
   * spaces), then the end of the line with that space (a field follows the name).
   */
  private *lineEndsAfter(after: number, nameLimit: number): Generator<number> {
    if (nameLimit <= after) return;
    const at = this.text.subarray(after + 1, nameLimit).indexOf(SP);
    const name = this.text.subarray(0, at < 0 ? nameLimit : after + 1 + at);
    for (let end = name.indexOf(NL, after + 1); end >= 0; end = name.indexOf(NL, end + 1)) yield end;
    const fieldsEnd = at < 0 ? -1 : this.text.indexOf(NL, after + 1 + at);
    if (fieldsEnd >= 0) yield fieldsEnd;
  }

  /** The lines `from..to` as one entry, if they are one; charged to the list's join work. */
  private tryJoin(from: number, to: number, where: string): ImaEntry | undefined {
    this.joinWork -= to - from;
    if (this.joinWork < 0) {
      throw new ParseError(
        'ERR_IMA_MALFORMED',
        `${where} (byte ${this.offset}): names with line breaks take more joining than this list's size allows; send binary_runtime_measurements`,
      );
    }
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
    if ((tokens[NAME_TOKEN] as Buffer).length > PATH_MAX) {
      throw new ParseError('ERR_IMA_MALFORMED', `${where}: name longer than PATH_MAX (${PATH_MAX} bytes)`);
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
