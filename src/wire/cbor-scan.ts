import { AttestorError } from '../errors.js';

/*
 * A well-formedness scan of a CBOR body (RFC 8949 §3) before cbor-x decodes it. The wire
 * contract uses maps, arrays, byte and text strings, integers, floats, booleans and null, all
 * of definite length: nothing else is accepted. Tags in particular are refused whatever their
 * number: cbor-x gives some of them meanings (value sharing 28/29, packed tables 51/6/216-255,
 * bignums 2/3, records) under which a few hundred bytes decode into an exponentially larger
 * value or take super-linear time. Every declared length is checked against the bytes left, so
 * the scan is linear in the body and refuses before any allocation follows a length.
 */

const MT_UNSIGNED = 0;
const MT_NEGATIVE = 1;
const MT_BYTES = 2;
const MT_TEXT = 3;
const MT_ARRAY = 4;
const MT_MAP = 5;
const MT_TAG = 6;

function refuse(why: string): never {
  throw new AttestorError('ERR_DECODE', `the body is not CBOR this API takes: ${why}`);
}

/**
 * Throws ERR_DECODE unless `body` is exactly one well-formed CBOR item of the accepted kinds,
 * nested at most `maxDepth` deep, no array or map of more than `maxEntries` entries.
 */
export function scanCbor(body: Uint8Array, maxDepth: number, maxEntries: number): void {
  let at = 0;
  // Items still to read at each open level (maps count keys and values).
  const pending: number[] = [1];
  while (pending.length > 0) {
    if (pending[pending.length - 1] === 0) {
      pending.pop();
      continue;
    }
    pending[pending.length - 1]!--;
    if (at >= body.length) refuse('it ends inside an item');
    const initial = body[at++]!;
    const major = initial >> 5;
    const info = initial & 0x1f;
    if (major === MT_TAG) refuse('tags are not used by this API');
    if (info === 31) refuse('indefinite lengths are not used by this API');
    if (info >= 28) refuse('reserved additional information');
    let value = info;
    if (info >= 24) {
      const size = 1 << (info - 24);
      if (at + size > body.length) refuse('it ends inside an item head');
      value = 0;
      for (let i = 0; i < size; i++) {
        // Lengths beyond 2^53 cannot fit any body; the check below refuses them.
        value = value * 256 + body[at + i]!;
      }
      at += size;
    }
    switch (major) {
      case MT_UNSIGNED:
      case MT_NEGATIVE:
        break;
      case MT_BYTES:
      case MT_TEXT:
        if (value > body.length - at) refuse('a string is longer than the body');
        at += value;
        break;
      case MT_ARRAY:
      case MT_MAP: {
        if (value > maxEntries) throw new AttestorError('ERR_DECODE', `the body has a list or map of more than ${maxEntries} entries`);
        const items = major === MT_MAP ? value * 2 : value;
        // Every item takes at least one byte.
        if (items > body.length - at) refuse('a container declares more items than the body holds');
        if (pending.length > maxDepth) throw new AttestorError('ERR_DECODE', `the body is nested deeper than ${maxDepth} levels`);
        pending.push(items);
        break;
      }
      default:
        // Major type 7: simple values and floats. Only false, true, null and floats are used.
        if (info < 20 || info === 23 || info === 24) refuse('simple values other than false, true and null are not used by this API');
    }
  }
  if (at !== body.length) refuse('bytes follow the item');
}
