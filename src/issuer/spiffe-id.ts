import { AttestorError } from '../errors.js';

/**
 * SPIFFE IDs as SPIFFE-ID.md defines them: `spiffe://` + trust domain (lowercase letters,
 * digits, `.`, `-`, `_`; at most 255 bytes) + a path of `/`-separated segments of letters,
 * digits, `.`, `-`, `_`, none empty, `.` or `..`; at most 2048 bytes in all. No percent-encoding,
 * query, fragment, port or userinfo can pass, since none of their characters are allowed.
 */

const PREFIX = 'spiffe://';
const MAX_ID_BYTES = 2048;
const MAX_TRUST_DOMAIN_BYTES = 255;
const TRUST_DOMAIN = /^[a-z0-9._-]+$/;
const SEGMENT = /^[A-Za-z0-9._-]+$/;

export interface SpiffeId {
  readonly trustDomain: string;
  /** '' for the trust domain's own ID, else `/segment/...`. */
  readonly path: string;
}

function isTrustDomain(name: string): boolean {
  return name.length > 0 && name.length <= MAX_TRUST_DOMAIN_BYTES && TRUST_DOMAIN.test(name);
}

/** The trust domain name, checked; ERR_ISSUANCE otherwise. */
export function checkTrustDomain(trustDomain: string): string {
  if (!isTrustDomain(trustDomain)) {
    throw new AttestorError(
      'ERR_ISSUANCE',
      `trust domain ${JSON.stringify(trustDomain.slice(0, 300))} is not 1..255 characters of [a-z0-9._-]`,
    );
  }
  return trustDomain;
}

/** Splits and checks a SPIFFE ID; ERR_ISSUANCE names the rule it breaks. */
export function parseSpiffeId(id: string): SpiffeId {
  const bad = (why: string) => new AttestorError('ERR_ISSUANCE', `SPIFFE ID ${JSON.stringify(id.slice(0, 300))} ${why}`);
  // The allowed characters are ASCII, so characters and bytes count alike.
  if (id.length > MAX_ID_BYTES) throw bad(`is longer than ${MAX_ID_BYTES} bytes`);
  if (!id.startsWith(PREFIX)) throw bad('does not start with spiffe://');
  const rest = id.slice(PREFIX.length);
  const slash = rest.indexOf('/');
  const trustDomain = slash < 0 ? rest : rest.slice(0, slash);
  const path = slash < 0 ? '' : rest.slice(slash);
  if (!isTrustDomain(trustDomain)) throw bad('has no trust domain of 1..255 characters of [a-z0-9._-]');
  if (path !== '') {
    for (const segment of path.slice(1).split('/')) {
      if (segment === '') throw bad('has an empty path segment');
      if (segment === '.' || segment === '..') throw bad('has a "." or ".." path segment');
      if (!SEGMENT.test(segment)) throw bad('has a path segment outside [A-Za-z0-9._-]');
    }
  }
  return { trustDomain, path };
}
