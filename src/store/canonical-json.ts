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
  return write(value, undefined);
}

/**
 * Where a value sits, as a chain to its parent: the text of a path is built only for an error
 * message (a string per member cost more than the canonical text itself).
 */
interface At {
  readonly parent: At | undefined;
  readonly key: string | number;
}

function write(value: unknown, at: At | undefined): string {
  switch (typeof value) {
    case 'string':
    case 'boolean':
      return JSON.stringify(value);
    case 'number':
      if (!Number.isFinite(value)) throw notJson(at, String(value));
      return JSON.stringify(value);
    case 'object': {
      if (value === null) return 'null';
      if (Array.isArray(value)) {
        // An index loop, not map(): map skips the holes of a sparse array, which have no JSON form.
        let text = '[';
        for (let i = 0; i < value.length; i++) {
          if (value[i] === undefined) throw notJson({ parent: at, key: i }, 'undefined');
          text += (i === 0 ? '' : ',') + write(value[i], { parent: at, key: i });
        }
        return `${text}]`;
      }
      const proto = Object.getPrototypeOf(value) as unknown;
      if (proto !== Object.prototype && proto !== null) throw notJson(at, 'an instance of a class');
      const record = value as { readonly [key: string]: unknown };
      let text = '{';
      for (const key of Object.keys(record).sort()) {
        const member = record[key];
        if (member !== undefined) text += (text.length === 1 ? '' : ',') + JSON.stringify(key) + ':' + write(member, { parent: at, key });
      }
      return `${text}}`;
    }
    default:
      throw notJson(at, `a ${typeof value}`);
  }
}

/** A loop, not recursion: the value may be nested as deep as the stack allows write() to go. */
function pathOf(at: At | undefined): string {
  const parts: string[] = [];
  for (let a = at; a !== undefined; a = a.parent) parts.push(typeof a.key === 'number' ? `[${a.key}]` : `.${a.key}`);
  return `$${parts.reverse().join('')}`;
}

function notJson(at: At | undefined, what: string): AttestorError {
  return new AttestorError('ERR_INPUT', `${pathOf(at)} is ${what}, which has no JSON form`);
}
