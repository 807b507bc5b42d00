import { readFileSync } from 'node:fs';
import { AttestorError } from '../errors.js';

/**
 * A PKCS#11 URI (RFC 7512) as Attestor takes it for keys in a token:
 *   pkcs11:token=attestor;object=x509-ca?module-path=/usr/lib/softhsm/libsofthsm2.so&pin-source=/etc/attestor/pin
 * Path attributes `token` (CKA token label) and `object` (CKA_LABEL); query attributes
 * `module-path` (required), `pin-source` (a file holding the user PIN) or `pin-value`. Other
 * attributes of RFC 7512 are refused, so a typo cannot silently select another token.
 */
export interface Pkcs11Uri {
  readonly token: string;
  readonly object?: string;
  readonly modulePath: string;
  readonly pinSource?: string;
  /** Present only when the URI carried pin-value; never printed (see redactPkcs11Uri). */
  readonly pinValue?: string;
}

const PATH_ATTRIBUTES = new Set(['token', 'object']);
const QUERY_ATTRIBUTES = new Set(['module-path', 'pin-source', 'pin-value']);

export function parsePkcs11Uri(uri: string, what = 'PKCS#11 URI'): Pkcs11Uri {
  if (!uri.startsWith('pkcs11:')) throw bad(what, 'must start with pkcs11:');
  const rest = uri.slice('pkcs11:'.length);
  const q = rest.indexOf('?');
  const path = q < 0 ? rest : rest.slice(0, q);
  const query = q < 0 ? '' : rest.slice(q + 1);
  const attrs = new Map<string, string>();
  const take = (part: string, allowed: Set<string>, where: string) => {
    if (part === '') return;
    const eq = part.indexOf('=');
    // The part itself is never quoted: a mistyped pin-value would put the PIN in the message.
    if (eq <= 0) throw bad(what, `a ${where} attribute has no name=value form (it must be one of ${[...allowed].join(', ')})`);
    const name = part.slice(0, eq).toLowerCase();
    if (!allowed.has(name)) {
      // Path attributes are named; query ones never: a PIN with an unencoded & splits into a
      // query part whose name is a piece of the PIN.
      const shown = where === 'path' && /^[a-z][a-z-]{0,31}$/.test(name) ? `${where} attribute "${name}"` : `a ${where} attribute`;
      throw bad(what, `${shown} is not supported (${[...allowed].join(', ')})`);
    }
    if (attrs.has(name)) throw bad(what, `attribute "${name}" is given twice`);
    let value: string;
    try {
      value = decodeURIComponent(part.slice(eq + 1));
    } catch {
      throw bad(what, `attribute "${name}" has a malformed percent-encoding`);
    }
    attrs.set(name, value);
  };
  for (const part of path.split(';')) take(part, PATH_ATTRIBUTES, 'path');
  for (const part of query.split('&')) take(part, QUERY_ATTRIBUTES, 'query');
  const token = attrs.get('token');
  const modulePath = attrs.get('module-path');
  if (!token) throw bad(what, 'needs token=<token label>');
  if (!modulePath) throw bad(what, 'needs ?module-path=<path of the PKCS#11 library>');
  if (attrs.has('pin-source') && attrs.has('pin-value')) throw bad(what, 'give pin-source or pin-value, not both');
  return {
    token,
    modulePath,
    ...(attrs.has('object') ? { object: attrs.get('object')! } : {}),
    ...(attrs.has('pin-source') ? { pinSource: attrs.get('pin-source')! } : {}),
    ...(attrs.has('pin-value') ? { pinValue: attrs.get('pin-value')! } : {}),
  };
}

/** The URI without its PIN, for logs, errors and the keys table. */
export function formatPkcs11Uri(uri: Pkcs11Uri, object = uri.object): string {
  const enc = (v: string) => encodeURIComponent(v).replace(/%2F/g, '/');
  const path = [`token=${enc(uri.token)}`, ...(object ? [`object=${enc(object)}`] : [])].join(';');
  return `pkcs11:${path}?module-path=${enc(uri.modulePath)}${uri.pinSource ? `&pin-source=${enc(uri.pinSource)}` : ''}`;
}

/**
 * The user PIN: pin-value, else the first line of pin-source, else the environment variable
 * `envName`. Missing or unreadable: ERR_KEYS_URI (the message never contains the PIN).
 */
export function readPkcs11Pin(uri: Pkcs11Uri, envName: string, env: NodeJS.ProcessEnv = process.env): string {
  if (uri.pinValue !== undefined) return uri.pinValue;
  if (uri.pinSource !== undefined) {
    let text: string;
    try {
      text = readFileSync(uri.pinSource, 'utf8');
    } catch (e) {
      throw new AttestorError('ERR_KEYS_URI', `cannot read the PIN file ${uri.pinSource}: ${(e as NodeJS.ErrnoException).code ?? 'unreadable'}`);
    }
    const pin = text.split(/\r?\n/, 1)[0] ?? '';
    if (pin === '') throw new AttestorError('ERR_KEYS_URI', `the PIN file ${uri.pinSource} is empty`);
    return pin;
  }
  const pin = env[envName];
  if (pin) return pin;
  throw new AttestorError('ERR_KEYS_URI', `no PIN for token "${uri.token}": give ?pin-source=FILE in the URI or set ${envName}`);
}

function bad(what: string, why: string): AttestorError {
  return new AttestorError('ERR_KEYS_URI', `${what}: ${why}`);
}
