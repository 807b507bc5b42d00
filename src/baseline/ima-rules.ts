import { createPublicKey, type KeyObject } from 'node:crypto';
import { ParseError } from '../errors.js';
import { imaKeyId } from '../eventlog/ima/digsig.js';
import { isSupportedEcKey } from '../eventlog/ima/ecdsa-digest.js';
import { imaHashByName } from '../eventlog/ima/hash-algos.js';
import { hex } from '../bytes.js';
import type { ImaEntry } from '../eventlog/ima/templates.js';
import { MAX_GLOB_PATH, PathGlob } from './ima-glob.js';

/*
 * Operator rules for the Linux IMA measurement list: which files a host may have run or read.
 * They arrive as JSON; parseImaRules validates every field and refuses unknown ones, so a typo
 * cannot silently drop a requirement.
 *
 * {
 *   "allow": { "/usr/bin/bash": ["sha256:<hex>", ...], "boot_aggregate": ["sha1:<hex>"] },
 *   "exclude": ["/tmp/**", "/var/log/*.log"],
 *   "signatures": {
 *     "keys": [{ "publicKey": "-----BEGIN PUBLIC KEY----- ...", "keyId": "<8 hex, optional>" }],
 *     "requiredFor": ["/usr/bin/**", "/usr/lib/**"]
 *   },
 *   "allowViolations": false            (or true, or a list of patterns: ["/var/log/**"])
 * }
 *
 * A measured file passes when it is excluded, or its digest is allowed for its path, or it
 * carries an IMA signature (ima-sig) by one of the keys. A violation (the file was open for
 * writing, so its content is unknown) passes when its path is excluded or allowViolations
 * covers it. Paths under `requiredFor` need a valid signature whatever the allowlist, the
 * exclude patterns or allowViolations say: a requirement is never waived by a broader
 * pattern, and a violation there fails. Entries of other kinds (ima-buf events such as
 * "kexec-cmdline", the "boot_aggregate") are named by their event name the same way.
 *
 * Allowlist digests may be of any algorithm IMA measures with (sha1 included: kernels
 * before 5.x, and the 'ima' template, measure files with it); signatures must be over sha256
 * or stronger (see digsig.ts).
 */

export interface ImaRules {
  /** Path -> allowed "<algo>:<lowercase hex>" digests. */
  readonly allow: ReadonlyMap<string, ReadonlySet<string>>;
  readonly exclude: readonly PathGlob[];
  /** Trusted signing keys by IMA key id (8 hex digits). */
  readonly signatureKeys: ReadonlyMap<string, readonly KeyObject[]>;
  readonly signatureRequired: readonly PathGlob[];
  /** ToMToU / open-writers violations (their file digest is unknown) accepted: all, none, or on these paths. */
  readonly allowViolations: boolean | readonly PathGlob[];
}

const MAX_PATTERNS = 1_000;
const MAX_KEYS = 100;
const MIN_RSA_BITS = 2048;

export function parseImaRules(json: unknown): ImaRules {
  const root = fields(json, 'rules', ['allow', 'exclude', 'signatures', 'allowViolations']);
  const signatures = root.signatures === undefined ? {} : fields(root.signatures, 'signatures', ['keys', 'requiredFor']);
  const signatureKeys = keys(signatures.keys ?? [], 'signatures.keys');
  const signatureRequired = globs(signatures.requiredFor ?? [], 'signatures.requiredFor');
  if (signatureRequired.length > 0 && signatureKeys.size === 0) invalid('signatures.requiredFor', 'needs at least one key in signatures.keys');
  return {
    allow: allowlist(root.allow ?? {}),
    exclude: globs(root.exclude ?? [], 'exclude'),
    signatureKeys,
    signatureRequired,
    allowViolations: violations(root.allowViolations ?? false),
  };
}

function violations(value: unknown): boolean | PathGlob[] {
  if (typeof value === 'boolean') return value;
  if (!Array.isArray(value)) invalid('allowViolations', 'must be true, false or a list of patterns');
  return globs(value, 'allowViolations');
}

/** How an entry's digest is written in the allowlist. */
export function imaDigestText(entry: ImaEntry): string {
  return `${entry.digestAlgo.name}:${hex(entry.digest)}`;
}

export function isExcluded(rules: ImaRules, path: string): boolean {
  return rules.exclude.some((glob) => glob.matches(path));
}

export function isViolationAllowed(rules: ImaRules, path: string): boolean {
  const allowed = rules.allowViolations;
  return typeof allowed === 'boolean' ? allowed : allowed.some((glob) => glob.matches(path));
}

export function isSignatureRequired(rules: ImaRules, path: string): boolean {
  return rules.signatureRequired.some((glob) => glob.matches(path));
}

function allowlist(value: unknown): Map<string, Set<string>> {
  const byPath = object(value, 'allow');
  const allow = new Map<string, Set<string>>();
  for (const [path, digests] of Object.entries(byPath)) {
    const field = `allow[${JSON.stringify(path.slice(0, 64))}]`;
    if (path.length === 0 || path.length > MAX_GLOB_PATH) invalid(field, `path must have 1..${MAX_GLOB_PATH} characters`);
    if (!Array.isArray(digests) || digests.length === 0) invalid(field, 'must be a non-empty list of "<algo>:<hex>" digests');
    allow.set(path, new Set(digests.map((d, i) => digestText(d, `${field}[${i}]`))));
  }
  return allow;
}

/** "<algo>:<hex>" with an algorithm IMA knows and a digest of its size, normalized to lowercase. */
function digestText(value: unknown, field: string): string {
  if (typeof value !== 'string') invalid(field, 'must be a string "<algo>:<hex>"');
  const colon = value.indexOf(':');
  const name = value.slice(0, Math.max(colon, 0)).toLowerCase();
  let size: number;
  try {
    size = imaHashByName(name, field).size;
  } catch {
    return invalid(field, `must be "<algo>:<hex>" with an IMA hash algorithm such as sha256, not "${name.slice(0, 32)}"`);
  }
  const digits = value.slice(colon + 1);
  if (digits.length !== size * 2 || !/^[0-9a-fA-F]*$/.test(digits)) invalid(field, `a ${name} digest is ${size * 2} hex digits`);
  return `${name}:${digits.toLowerCase()}`;
}

function globs(value: unknown, field: string): PathGlob[] {
  if (!Array.isArray(value)) invalid(field, 'must be a list of patterns');
  if (value.length > MAX_PATTERNS) invalid(field, `has more than ${MAX_PATTERNS} patterns`);
  return value.map((pattern, i) => {
    if (typeof pattern !== 'string') invalid(`${field}[${i}]`, 'must be a string');
    return new PathGlob(pattern, `IMA rules: ${field}[${i}]`);
  });
}

function keys(value: unknown, field: string): Map<string, KeyObject[]> {
  if (!Array.isArray(value)) invalid(field, 'must be a list of keys');
  if (value.length > MAX_KEYS) invalid(field, `has more than ${MAX_KEYS} keys`);
  const byId = new Map<string, KeyObject[]>();
  value.forEach((entry, i) => {
    const at = `${field}[${i}]`;
    const o = fields(entry, at, ['publicKey', 'keyId']);
    const key = publicKey(o.publicKey, `${at}.publicKey`);
    let keyId = imaKeyId(key);
    if (o.keyId !== undefined) {
      if (typeof o.keyId !== 'string' || !/^[0-9a-fA-F]{8}$/.test(o.keyId)) invalid(`${at}.keyId`, 'must be 8 hex digits');
      keyId = o.keyId.toLowerCase();
    }
    byId.set(keyId, [...(byId.get(keyId) ?? []), key]);
  });
  return byId;
}

/** A PEM public key or X.509 certificate of a kind IMA signs with: RSA >= 2048 bits, ECDSA P-256/P-384. */
function publicKey(value: unknown, field: string): KeyObject {
  if (typeof value !== 'string') invalid(field, 'must be a PEM public key or certificate');
  // Private keys would be turned into public ones by node:crypto; refuse them outright.
  if (value.includes('PRIVATE KEY')) invalid(field, 'is a private key; give the public key or certificate');
  let key: KeyObject;
  try {
    key = createPublicKey(value);
  } catch {
    return invalid(field, 'is not a PEM public key or certificate');
  }
  const rsaBits = key.asymmetricKeyType === 'rsa' ? (key.asymmetricKeyDetails?.modulusLength ?? 0) : 0;
  if (rsaBits < MIN_RSA_BITS && !isSupportedEcKey(key)) invalid(field, `must be RSA (>= ${MIN_RSA_BITS} bits) or ECDSA P-256/P-384`);
  return key;
}

function object(value: unknown, field: string): Record<string, unknown> {
  if (typeof value !== 'object' || value === null || Array.isArray(value)) invalid(field, 'must be an object');
  return value as Record<string, unknown>;
}

function fields(value: unknown, field: string, known: readonly string[]): Record<string, unknown> {
  const o = object(value, field);
  const unknown = Object.keys(o).find((k) => !known.includes(k));
  if (unknown !== undefined) invalid(field, `has an unknown field "${unknown.slice(0, 64)}" (known: ${known.join(', ')})`);
  return o;
}

function invalid(field: string, message: string): never {
  throw new ParseError('ERR_IMA_RULES_INVALID', `IMA rules: ${field} ${message}`);
}
