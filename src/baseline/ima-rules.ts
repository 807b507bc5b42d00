import { createPublicKey, type KeyObject } from 'node:crypto';
import { imaKeyId } from '../eventlog/ima/digsig.js';
import { isSupportedEcKey } from '../eventlog/ima/ecdsa-digest.js';
import { imaHashByName } from '../eventlog/ima/hash-algos.js';
import { hex } from '../bytes.js';
import type { ImaEntry } from '../eventlog/ima/templates.js';
import { MAX_GLOB_PATH, PathGlob } from './ima-glob.js';
import { JsonRules, type DigestAlgorithms } from './json-rules.js';

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
 *   "allowViolations": false            (or true)
 * }
 *
 * A measured file passes when it is excluded, or its digest is allowed for its path, or it
 * carries an IMA signature (ima-sig) by one of the keys. Paths under `requiredFor` need a
 * valid signature whatever the allowlist or the exclude patterns say: a requirement is never
 * waived by a broader pattern.
 *
 * A violation (the file was open for writing, so its content is unknown) is judged by
 * allowViolations alone. Its name is not measured: the kernel logs a zero template hash and
 * extends PCR 10 with all ones, so whoever relays the list can rename it at will. Exclude
 * patterns therefore never exempt a violation, and allowViolations is all or nothing (a list
 * of patterns is refused). With allowViolations true, a violation whose recorded name falls
 * under `requiredFor` still fails, which catches honest reports but guarantees nothing: where
 * signatures are required, leave allowViolations false. Entries of other kinds (ima-buf events such as
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
  /** ToMToU / open-writers violations (content and name unmeasured) accepted, all or none. */
  readonly allowViolations: boolean;
}

const MAX_PATTERNS = 1_000;
/**
 * Every entry's path is matched against every pattern, each in steps per character of the
 * path (MAX_GLOB_PATH at most) times its wildcard part: bounded for all patterns together, or
 * a thousand long patterns would take seconds per entry of a list an agent sends.
 */
const MAX_PATTERN_COST = 2_048;
const MAX_KEYS = 100;
const MIN_RSA_BITS = 2048;

const json: JsonRules = new JsonRules('ERR_IMA_RULES_INVALID', 'IMA rules');

/** Allowlist digests: any algorithm IMA measures with. */
const IMA_ALGORITHMS: DigestAlgorithms = {
  term: 'algo',
  sizeOf: (name) => imaHashByName(name, 'IMA rules').size,
  accepted: 'an IMA hash algorithm such as sha256',
};

export function parseImaRules(value: unknown): ImaRules {
  const root = json.fields(value, 'rules', ['allow', 'exclude', 'signatures', 'allowViolations']);
  const signatures = root.signatures === undefined ? {} : json.fields(root.signatures, 'signatures', ['keys', 'requiredFor']);
  const signatureKeys = keys(signatures.keys ?? [], 'signatures.keys');
  const signatureRequired = globs(signatures.requiredFor ?? [], 'signatures.requiredFor');
  if (signatureRequired.length > 0 && signatureKeys.size === 0) json.fail('signatures.requiredFor', 'needs at least one key in signatures.keys');
  const exclude = globs(root.exclude ?? [], 'exclude');
  const cost = [...exclude, ...signatureRequired].reduce((sum, g) => sum + g.cost, 0);
  if (cost > MAX_PATTERN_COST) {
    json.fail('exclude', `and signatures.requiredFor have ${cost} characters after their literal prefixes, more than ${MAX_PATTERN_COST} in all: give longer literal prefixes or fewer patterns`);
  }
  return {
    allow: allowlist(root.allow ?? {}),
    exclude,
    signatureKeys,
    signatureRequired,
    allowViolations: violations(root.allowViolations ?? false),
  };
}

function violations(value: unknown): boolean {
  if (typeof value === 'boolean') return value;
  if (Array.isArray(value)) {
    json.fail('allowViolations', 'must be true or false: a violation\'s name is not measured (zero template hash), so patterns cannot tell violations apart');
  }
  return json.fail('allowViolations', 'must be true or false');
}

/** How an entry's digest is written in the allowlist. */
export function imaDigestText(entry: ImaEntry): string {
  return `${entry.digestAlgo.name}:${hex(entry.digest)}`;
}

export function isExcluded(rules: ImaRules, path: string): boolean {
  return rules.exclude.some((glob) => glob.matches(path));
}

export function isSignatureRequired(rules: ImaRules, path: string): boolean {
  return rules.signatureRequired.some((glob) => glob.matches(path));
}

function allowlist(value: unknown): Map<string, Set<string>> {
  const byPath = json.object(value, 'allow');
  const allow = new Map<string, Set<string>>();
  for (const [path, digests] of Object.entries(byPath)) {
    const field = `allow[${JSON.stringify(path.slice(0, 64))}]`;
    if (path.length === 0 || path.length > MAX_GLOB_PATH) json.fail(field, `path must have 1..${MAX_GLOB_PATH} characters`);
    const texts = json.nonEmptyList(digests, field, undefined, 'digests').map((d, i) => {
      const digest = json.digest(d, IMA_ALGORITHMS, `${field}[${i}]`);
      return `${digest.algorithm}:${digest.hex}`;
    });
    allow.set(path, new Set(texts));
  }
  return allow;
}

function globs(value: unknown, field: string): PathGlob[] {
  return json.list(value, field, MAX_PATTERNS, 'patterns').map((pattern, i) => {
    if (typeof pattern !== 'string') json.fail(`${field}[${i}]`, 'must be a string');
    return new PathGlob(pattern, `IMA rules: ${field}[${i}]`);
  });
}

function keys(value: unknown, field: string): Map<string, KeyObject[]> {
  const byId = new Map<string, KeyObject[]>();
  json.list(value, field, MAX_KEYS, 'keys').forEach((entry, i) => {
    const at = `${field}[${i}]`;
    const o = json.fields(entry, at, ['publicKey', 'keyId']);
    const key = publicKey(o.publicKey, `${at}.publicKey`);
    const keyId = o.keyId === undefined ? imaKeyId(key) : json.hex(o.keyId, 4, `${at}.keyId`);
    byId.set(keyId, [...(byId.get(keyId) ?? []), key]);
  });
  return byId;
}

/** A PEM public key or X.509 certificate of a kind IMA signs with: RSA >= 2048 bits, ECDSA P-256/P-384. */
function publicKey(value: unknown, field: string): KeyObject {
  if (typeof value !== 'string') json.fail(field, 'must be a PEM public key or certificate');
  // Private keys would be turned into public ones by node:crypto; refuse them outright.
  if (value.includes('PRIVATE KEY')) json.fail(field, 'is a private key; give the public key or certificate');
  let key: KeyObject;
  try {
    key = createPublicKey(value);
  } catch {
    return json.fail(field, 'is not a PEM public key or certificate');
  }
  const rsaBits = key.asymmetricKeyType === 'rsa' ? (key.asymmetricKeyDetails?.modulusLength ?? 0) : 0;
  if (rsaBits < MIN_RSA_BITS && !isSupportedEcKey(key)) json.fail(field, `must be RSA (>= ${MIN_RSA_BITS} bits) or ECDSA P-256/P-384`);
  return key;
}
