import { AttestorError } from '../errors.js';
import type { Json } from './store.js';

/**
 * Canonical JSON of the audit chain: object keys sorted recursively (by UTF-16 code units, as
 * RFC 8785 sorts them), no whitespace, strings and numbers as JSON.stringify writes them (the
 * serialization RFC 8785 adopts). Equal values give equal text whatever their key order, so
 * a hash over it can be recomputed from the stored entry.
 *
 * An object member whose value is undefined is left out, as JSON.stringify leaves it out:
 * parsing the text back and canonicalizing again gives the same text. Anything that has no
 * JSON form (NaN, Infinity, undefined in an array, bigint, functions, class instances such as
 * Date or Uint8Array) is refused with ERR_INPUT rather than silently changed.
 */
export function canonicalJson(value: Json): string {
  return write(value, '$');
}

function write(value: unknown, path: string): string {
  switch (typeof value) {
    case 'string':
    case 'boolean':
      return JSON.stringify(value);
    case 'number':
      if (!Number.isFinite(value)) throw notJson(path, String(value));
      return JSON.stringify(value);
    case 'object': {
      if (value === null) return 'null';
      if (Array.isArray(value)) {
        // An index loop, not map(): map skips the holes of a sparse array, which have no JSON form.
        const items: string[] = [];
        for (let i = 0; i < value.length; i++) {
          if (value[i] === undefined) throw notJson(`${path}[${i}]`, 'undefined');
          items.push(write(value[i], `${path}[${i}]`));
        }
        return `[${items.join(',')}]`;
      }
      const proto = Object.getPrototypeOf(value) as unknown;
      if (proto !== Object.prototype && proto !== null) throw notJson(path, 'an instance of a class');
      const record = value as { readonly [key: string]: unknown };
      const members: string[] = [];
      for (const key of Object.keys(record).sort()) {
        const member = record[key];
        if (member !== undefined) members.push(`${JSON.stringify(key)}:${write(member, `${path}.${key}`)}`);
      }
      return `{${members.join(',')}}`;
    }
    default:
      throw notJson(path, `a ${typeof value}`);
  }
}

function notJson(path: string, what: string): AttestorError {
  return new AttestorError('ERR_INPUT', `${path} is ${what}, which has no JSON form`);
}
