import { hash } from 'node:crypto';
import { ParseError } from '../../errors.js';
import { decodeHex } from './hex.js';
import { imaHashByName, IMA_SHA1, type ImaHashAlgo } from './hash-algos.js';

/*
 * IMA templates (Documentation/security/IMA-templates.rst; security/integrity/ima/
 * ima_template.c and ima_template_lib.c). A template is a list of fields; each field's data is
 * what `struct ima_field_data` holds, and the template hash is computed over those data.
 */

export type ImaTemplateName = 'ima' | 'ima-ng' | 'ima-sig' | 'ima-buf';

export type ImaFieldId = 'd' | 'n' | 'd-ng' | 'n-ng' | 'sig' | 'buf';

const TEMPLATE_FIELDS: Readonly<Record<ImaTemplateName, readonly ImaFieldId[]>> = {
  ima: ['d', 'n'],
  'ima-ng': ['d-ng', 'n-ng'],
  'ima-sig': ['d-ng', 'n-ng', 'sig'],
  'ima-buf': ['d-ng', 'n-ng', 'buf'],
};

/** PCRs a TPM has; IMA's policy may name any of them. */
export const IMA_MAX_PCR = 23;

/** IMA_EVENT_NAME_LEN_MAX: the 'ima' template pads its name to this + 1 bytes when hashing. */
const IMA_EVENT_NAME_LEN_MAX = 255;
/** Both list forms carry the SHA-1 template hash (TPM_DIGEST_SIZE), whatever the TPM's banks. */
export const IMA_TEMPLATE_HASH_SIZE = 20;
/** The 'ima' template's d field is a bare SHA-1 digest (DATA_FMT_DIGEST). */
export const IMA_LEGACY_DIGEST_SIZE = 20;

/** One measurement of an IMA runtime measurement list, whichever form it was read from. */
export interface ImaEntry {
  /** 0-based position in the whole list; its line in the ASCII form is index + 1. */
  readonly index: number;
  readonly pcr: number;
  readonly template: ImaTemplateName;
  /** SHA-1 template hash as the list records it (zeros for a violation). */
  readonly templateHash: Uint8Array;
  /** ToMToU / open-writers violation: the kernel logs a zero hash and extends all ones. */
  readonly violation: boolean;
  /** The template's field data, one per field (`struct ima_field_data`). */
  readonly fieldData: readonly Uint8Array[];
  /** The bytes the kernel hashes into the template hash (ima_calc_field_array_hash). */
  readonly hashInput: Uint8Array;
  /** Algorithm of the file (or buffer) digest. */
  readonly digestAlgo: ImaHashAlgo;
  readonly digest: Uint8Array;
  /** File path or event name as recorded, without its NUL. */
  readonly nameBytes: Uint8Array;
  /** `nameBytes` decoded as UTF-8 (invalid sequences replaced) for rules and messages. */
  readonly path: string;
  /** ima-sig: the security.ima signature xattr, when the file had one. */
  readonly signature: Uint8Array | undefined;
  /** ima-buf: the measured buffer. */
  readonly buffer: Uint8Array | undefined;
}

const TEMPLATES = new Map(Object.keys(TEMPLATE_FIELDS).map((name) => [name, name as ImaTemplateName]));

export function imaTemplateByName(name: string, where: string): ImaTemplateName {
  const template = TEMPLATES.get(name);
  if (!template) {
    throw new ParseError('ERR_IMA_TEMPLATE_UNSUPPORTED', `${where}: template "${name.slice(0, 32)}" is not supported`);
  }
  return template;
}

export function templateFields(template: ImaTemplateName): readonly ImaFieldId[] {
  return TEMPLATE_FIELDS[template];
}

const COLON = 0x3a;

/** A name field's data (DATA_FMT_STRING): the text and its terminating NUL. */
export function withNul(text: Uint8Array): Uint8Array {
  const out = new Uint8Array(text.length + 1);
  out.set(text);
  return out;
}

/**
 * ASCII list token -> field data, the reverse of the kernel's ima_show_template_* in
 * IMA_SHOW_ASCII mode: digests print as hex ("algo:" prefix for d-ng), names as strings
 * (their NUL is dropped), sig and buf as hex. An empty field prints as an empty token.
 */
export function fieldDataFromAscii(id: ImaFieldId, token: Uint8Array, where: string): Uint8Array {
  switch (id) {
    case 'd':
      return decodeHex(token, `${where} d`);
    case 'd-ng': {
      const colon = token.indexOf(COLON);
      if (colon <= 0) throw new ParseError('ERR_IMA_MALFORMED', `${where}: d-ng field lacks its "algo:" prefix`);
      const digest = decodeHex(token.subarray(colon + 1), `${where} d-ng`);
      // DATA_FMT_DIGEST_WITH_ALGO: "<algo>:" then a NUL, then the digest.
      const out = new Uint8Array(colon + 2 + digest.length);
      out.set(token.subarray(0, colon + 1));
      out.set(digest, colon + 2);
      return out;
    }
    case 'n':
    case 'n-ng':
      return withNul(token);
    case 'sig':
    case 'buf':
      return decodeHex(token, `${where} ${id}`);
  }
}

/** A name field's text: one terminating NUL and no other (DATA_FMT_STRING). */
function nameOf(data: Uint8Array, id: ImaFieldId, where: string): Uint8Array {
  const nul = data.indexOf(0);
  if (nul !== data.length - 1) {
    throw new ParseError('ERR_IMA_MALFORMED', `${where}: ${id} field is not one NUL-terminated string`);
  }
  if (id === 'n' && nul > IMA_EVENT_NAME_LEN_MAX) {
    throw new ParseError('ERR_IMA_MALFORMED', `${where}: n field longer than ${IMA_EVENT_NAME_LEN_MAX} bytes`);
  }
  return data.subarray(0, nul);
}

/** A d-ng field: "<algo>:\0<digest>" with the digest as long as the algorithm's. */
function digestNg(data: Uint8Array, where: string): { algo: ImaHashAlgo; digest: Uint8Array } {
  const colon = data.indexOf(COLON);
  if (colon <= 0 || colon > 32 || data[colon + 1] !== 0) {
    throw new ParseError('ERR_IMA_MALFORMED', `${where}: d-ng field is not "<algo>:\\0<digest>"`);
  }
  const algo = imaHashByName(Buffer.from(data.subarray(0, colon)).toString('latin1'), where);
  const digest = data.subarray(colon + 2);
  if (digest.length !== algo.size) {
    throw new ParseError('ERR_IMA_MALFORMED', `${where}: ${algo.name} digest is ${digest.length} bytes, expected ${algo.size}`);
  }
  return { algo, digest };
}

/**
 * The bytes of the template hash: for 'ima' the digest followed by the name NUL-padded to
 * IMA_EVENT_NAME_LEN_MAX + 1; for every other template each field's data preceded by its
 * length as a little-endian u32, which is also the template data of binary_runtime_measurements.
 */
function templateHashInput(template: ImaTemplateName, fieldData: readonly Uint8Array[]): Uint8Array {
  if (template === 'ima') {
    const out = new Uint8Array(IMA_LEGACY_DIGEST_SIZE + IMA_EVENT_NAME_LEN_MAX + 1);
    out.set(fieldData[0] as Uint8Array);
    out.set(fieldData[1] as Uint8Array, IMA_LEGACY_DIGEST_SIZE);
    return out;
  }
  let size = 0;
  for (const data of fieldData) size += 4 + data.length;
  const out = Buffer.allocUnsafe(size);
  let at = 0;
  for (const data of fieldData) {
    out.writeUInt32LE(data.length, at);
    out.set(data, at + 4);
    at += 4 + data.length;
  }
  return out;
}

/**
 * Validates field data and interprets it into an entry. `hashInput` is passed when the list
 * already holds the hashed bytes (binary template data), else it is built from the fields.
 */
export function imaEntry(
  index: number,
  pcr: number,
  template: ImaTemplateName,
  templateHash: Uint8Array,
  fieldData: readonly Uint8Array[],
  where: string,
  hashInput?: Uint8Array,
): ImaEntry {
  const ids = TEMPLATE_FIELDS[template];
  if (fieldData.length !== ids.length) {
    throw new ParseError('ERR_IMA_MALFORMED', `${where}: ${template} has ${ids.length} fields, found ${fieldData.length}`);
  }
  const [digestField, nameField, extra] = fieldData as [Uint8Array, Uint8Array, Uint8Array | undefined];
  let digestAlgo = IMA_SHA1;
  let digest = digestField;
  if (template === 'ima') {
    if (digestField.length !== IMA_LEGACY_DIGEST_SIZE) {
      throw new ParseError('ERR_IMA_MALFORMED', `${where}: d field is ${digestField.length} bytes, expected ${IMA_LEGACY_DIGEST_SIZE}`);
    }
  } else {
    ({ algo: digestAlgo, digest } = digestNg(digestField, where));
  }
  const nameBytes = nameOf(nameField, ids[1] as ImaFieldId, where);
  return {
    index,
    pcr,
    template,
    templateHash,
    violation: templateHash.every((b) => b === 0),
    fieldData,
    hashInput: hashInput ?? templateHashInput(template, fieldData),
    digestAlgo,
    digest,
    nameBytes,
    path: UTF8.decode(nameBytes),
    signature: template === 'ima-sig' && extra && extra.length > 0 ? extra : undefined,
    buffer: template === 'ima-buf' ? extra : undefined,
  };
}

const UTF8 = new TextDecoder('utf-8');

/** The SHA-1 template hash of an entry's data, as the kernel computes it (ima_calc_field_array_hash). */
export function computeTemplateHash(entry: ImaEntry): Buffer {
  return hash('sha1', entry.hashInput, 'buffer');
}

/** An entry named for messages: its index, its ASCII line and its (bounded, escaped) path. */
export function describeEntry(entry: ImaEntry): string {
  return `entry ${entry.index} (line ${entry.index + 1}) ${JSON.stringify(entry.path.slice(0, 256))}`;
}
