import { AttestorError } from '../errors.js';

/** The media type of HTML form bodies (RFC 7662 §2.1 sends introspection requests so). */
export const FORM_TYPE = 'application/x-www-form-urlencoded';

/** Parameters a form body may have: introspection takes two. */
const MAX_PARAMETERS = 8;

export function isForm(contentType: string | undefined): boolean {
  return contentType?.split(';', 1)[0]?.trim().toLowerCase() === FORM_TYPE;
}

/**
 * A form body as an object of its parameters. A repeated parameter is refused (RFC 6749 §3.2:
 * "parameters MUST NOT be included more than once"), as is one past MAX_PARAMETERS.
 */
export function decodeForm(body: Uint8Array): Record<string, string> {
  const params = new URLSearchParams(Buffer.from(body.buffer, body.byteOffset, body.byteLength).toString('utf8'));
  // No prototype: a parameter named __proto__ is a parameter like any other (and refused by the schema).
  const out: Record<string, string> = Object.create(null) as Record<string, string>;
  let count = 0;
  for (const [name, value] of params) {
    if (++count > MAX_PARAMETERS) throw new AttestorError('ERR_DECODE', `the form has more than ${MAX_PARAMETERS} parameters`);
    if (Object.hasOwn(out, name)) throw new AttestorError('ERR_DECODE', `the form repeats a parameter`);
    out[name] = value;
  }
  return out;
}
