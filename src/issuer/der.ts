import { AttestorError } from '../errors.js';

/**
 * The small part of DER (X.690) the issuer writes and reads: definite lengths, single-byte
 * tags, positive INTEGERs, X.509 times. Certificates are built from prepared byte strings
 * plus a few variable fields, which costs microseconds where an ASN.1 object model costs
 * milliseconds (see x509-svid.ts).
 */

export const TAG = {
  INTEGER: 0x02,
  BIT_STRING: 0x03,
  OCTET_STRING: 0x04,
  NULL: 0x05,
  UTC_TIME: 0x17,
  GENERALIZED_TIME: 0x18,
  SEQUENCE: 0x30,
  /** [0] and [3] EXPLICIT, constructed (context-specific). */
  CONTEXT_0: 0xa0,
  CONTEXT_3: 0xa3,
  /** [0] IMPLICIT of a primitive type: AuthorityKeyIdentifier's keyIdentifier (RFC 5280 §4.2.1.1). */
  CONTEXT_0_PRIMITIVE: 0x80,
  /** GeneralName uniformResourceIdentifier [6] IA5String, implicit (RFC 5280 §4.2.1.6). */
  URI: 0x86,
} as const;

/** The length octets (X.690 §8.1.3): short form below 128, else 0x80|n followed by n big-endian bytes. */
export function derLength(length: number): Uint8Array {
  if (length < 0x80) return Uint8Array.of(length);
  if (length < 0x100) return Uint8Array.of(0x81, length);
  if (length < 0x10000) return Uint8Array.of(0x82, length >> 8, length & 0xff);
  if (length < 0x1000000) return Uint8Array.of(0x83, length >> 16, (length >> 8) & 0xff, length & 0xff);
  throw new AttestorError('ERR_ISSUANCE', `DER value of ${length} bytes is too large`);
}

/** Tag, length and the concatenation of `content`. */
export function der(tag: number, ...content: readonly Uint8Array[]): Buffer {
  let length = 0;
  for (const c of content) length += c.length;
  return Buffer.concat([Uint8Array.of(tag), derLength(length), ...content]);
}

/** A non-negative INTEGER from its big-endian magnitude: minimal, with a leading 0 when the top bit is set. */
export function derUnsignedInteger(magnitude: Uint8Array): Buffer {
  let start = 0;
  while (start < magnitude.length - 1 && magnitude[start] === 0) start++;
  const value = magnitude.subarray(start);
  if (value.length === 0) return Buffer.from([TAG.INTEGER, 1, 0]);
  return (value[0]! & 0x80) !== 0 ? der(TAG.INTEGER, Uint8Array.of(0), value) : der(TAG.INTEGER, value);
}

/**
 * A certificate validity time (RFC 5280 §4.1.2.5): UTCTime YYMMDDHHMMSSZ for the years 1950
 * to 2049, GeneralizedTime YYYYMMDDHHMMSSZ after; whole seconds (fractions are dropped).
 */
export function derTime(date: Date): Buffer {
  const t = date.getTime();
  const year = date.getUTCFullYear();
  if (!Number.isFinite(t) || year < 1950 || year > 9999) {
    throw new AttestorError('ERR_ISSUANCE', `time ${Number.isFinite(t) ? date.toISOString() : 'NaN'} is outside what X.509 encodes`);
  }
  const two = (n: number) => (n < 10 ? `0${n}` : `${n}`);
  const rest = `${two(date.getUTCMonth() + 1)}${two(date.getUTCDate())}${two(date.getUTCHours())}${two(date.getUTCMinutes())}${two(date.getUTCSeconds())}Z`;
  return year < 2050
    ? der(TAG.UTC_TIME, Buffer.from(`${two(year % 100)}${rest}`, 'latin1'))
    : der(TAG.GENERALIZED_TIME, Buffer.from(`${year}${rest}`, 'latin1'));
}

/** One element read from DER bytes: offsets into the buffer it was read from. */
export interface Tlv {
  readonly tag: number;
  /** Offset of the tag. */
  readonly start: number;
  /** Offset of the first value byte. */
  readonly valueStart: number;
  /** Offset just past the value. */
  readonly end: number;
}

/**
 * The element at `offset`, which must end by `limit`: single-byte tag, definite length in
 * minimal form (X.690 §10.1). Anything else is ERR_ISSUANCE naming `what`.
 */
export function readTlv(bytes: Uint8Array, offset: number, limit: number, what: string): Tlv {
  const bad = (why: string) => new AttestorError('ERR_ISSUANCE', `${what}: ${why}`);
  if (offset + 2 > limit) throw bad('truncated DER');
  const tag = bytes[offset]!;
  if ((tag & 0x1f) === 0x1f) throw bad('multi-byte DER tag');
  const first = bytes[offset + 1]!;
  let length = first;
  let valueStart = offset + 2;
  if (first >= 0x80) {
    const count = first & 0x7f;
    if (count === 0 || count > 3) throw bad('indefinite or oversized DER length');
    if (valueStart + count > limit) throw bad('truncated DER length');
    length = 0;
    for (let i = 0; i < count; i++) length = length * 256 + bytes[valueStart + i]!;
    if (length < 0x80 || bytes[valueStart] === 0) throw bad('DER length not in minimal form');
    valueStart += count;
  }
  const end = valueStart + length;
  if (end > limit) throw bad('DER value runs past its container');
  return { tag, start: offset, valueStart, end };
}

/** The elements inside a constructed element, in order; they must fill it exactly. */
export function readChildren(bytes: Uint8Array, parent: Tlv, what: string): Tlv[] {
  const children: Tlv[] = [];
  for (let at = parent.valueStart; at < parent.end; ) {
    const child = readTlv(bytes, at, parent.end, what);
    children.push(child);
    at = child.end;
  }
  return children;
}

/** The element's value bytes. */
export function valueOf(bytes: Uint8Array, tlv: Tlv): Uint8Array {
  return bytes.subarray(tlv.valueStart, tlv.end);
}

/** The whole element: tag, length and value. */
export function wholeOf(bytes: Uint8Array, tlv: Tlv): Uint8Array {
  return bytes.subarray(tlv.start, tlv.end);
}

/** A UTCTime or GeneralizedTime as derTime writes them (seconds and Z required). */
export function readDerTime(bytes: Uint8Array, tlv: Tlv, what: string): Date {
  const text = Buffer.from(valueOf(bytes, tlv)).toString('latin1');
  const m =
    tlv.tag === TAG.UTC_TIME
      ? /^(\d{2})(\d{2})(\d{2})(\d{2})(\d{2})(\d{2})Z$/.exec(text)
      : tlv.tag === TAG.GENERALIZED_TIME
        ? /^(\d{4})(\d{2})(\d{2})(\d{2})(\d{2})(\d{2})Z$/.exec(text)
        : null;
  if (!m) throw new AttestorError('ERR_ISSUANCE', `${what}: not a UTCTime or GeneralizedTime`);
  const [year, month, day, hour, minute, second] = m.slice(1).map(Number) as [number, number, number, number, number, number];
  const fullYear = tlv.tag === TAG.UTC_TIME ? year + (year >= 50 ? 1900 : 2000) : year;
  const date = new Date(Date.UTC(fullYear, month - 1, day, hour, minute, second));
  if (date.getUTCMonth() !== month - 1 || date.getUTCDate() !== day || hour > 23 || minute > 59 || second > 59) {
    throw new AttestorError('ERR_ISSUANCE', `${what}: invalid time "${text}"`);
  }
  return date;
}
