import { createHash, createPublicKey, type KeyObject } from 'node:crypto';
import { AttestorError, ParseError, PolicyError } from '../errors.js';

/**
 * The report an agent makes about a key held in a PKCS#11 token (DESIGN flow 3): the public
 * key, the private key's security attributes as the token states them, which token holds
 * it, and the key's signature binding all of that to the verifier's nonce.
 */
export interface HsmKeyReport {
  /** SubjectPublicKeyInfo, DER. */
  publicKey: Uint8Array;
  attributes: HsmKeyAttributes;
  token: HsmTokenIdentity;
  /** ECDSA r||s (IEEE P1363, 64 bytes for P-256) over keyEvidenceMessage(nonce, evidence). */
  signature: Uint8Array;
  alg: 'ES256';
}

/** What the signature covers: the report without its signature. */
export type HsmKeyEvidence = Omit<HsmKeyReport, 'signature'>;

/** The private key's boolean attributes (PKCS#11 v2.40 §4.4, §4.9 "Private key objects") and CKA_KEY_TYPE. */
export interface HsmKeyAttributes {
  token: boolean;
  private: boolean;
  sensitive: boolean;
  extractable: boolean;
  neverExtractable: boolean;
  alwaysSensitive: boolean;
  /** The key was generated on the token (not imported). */
  local: boolean;
  /** CK_KEY_TYPE; CKK_EC for the keys Attestor accepts. */
  keyType: number;
}

/** CK_TOKEN_INFO's identifying fields (PKCS#11 v2.40 §3.2), blank padding removed. */
export interface HsmTokenIdentity {
  manufacturer: string;
  model: string;
  serial: string;
  label: string;
}

/** CKK_EC (PKCS#11 v2.40 §2.3.1); defined here so the verifier needs no PKCS#11 module. */
export const CKK_EC = 0x3;

/** Attribute names in their canonical (encoding and reporting) order. */
export const HSM_KEY_FLAGS = [
  'token',
  'private',
  'sensitive',
  'extractable',
  'neverExtractable',
  'alwaysSensitive',
  'local',
] as const satisfies readonly (keyof HsmKeyAttributes)[];

/** Upper bounds: CK_TOKEN_INFO's fixed char arrays; an SPKI far above any EC or RSA key. */
const TOKEN_FIELD_MAX = { manufacturer: 32, model: 16, serial: 16, label: 32 } as const;
const PUBLIC_KEY_MAX = 2048;
const SIGNATURE_MAX = 512;

const DOMAIN = 'attestor/hsm-key-evidence/v1';

/**
 * Canonical key evidence, version 1: the bytes the key's signature and the quote's qualifying
 * data commit to. Deterministic and injective: a fixed field order, every field prefixed by
 * its UINT32 big-endian length, so no two different evidences share an encoding.
 *
 *   field(DOMAIN "attestor/hsm-key-evidence/v1", ASCII)
 *   field(alg, ASCII)
 *   field(publicKey, SPKI DER)
 *   field(token.manufacturer) field(token.model) field(token.serial) field(token.label)  (UTF-8)
 *   field(one byte 0x00/0x01 per attribute, in HSM_KEY_FLAGS order: 7 bytes)
 *   field(attributes.keyType, UINT32 big-endian)
 *
 * The signature is not part of the evidence: it is made over it (see keyEvidenceMessage), so
 * the agent can compute the quote's qualifying data before or without signing.
 * Throws ParseError ERR_HSM_KEY_REPORT_MALFORMED for values outside the report's shape.
 */
export function canonicalKeyEvidence(evidence: HsmKeyEvidence): Uint8Array {
  const e = checkEvidence(evidence);
  const utf8 = (s: string) => Buffer.from(s, 'utf8');
  const keyType = Buffer.alloc(4);
  keyType.writeUInt32BE(e.attributes.keyType);
  const fields: Uint8Array[] = [
    utf8(DOMAIN),
    utf8(e.alg),
    e.publicKey,
    utf8(e.token.manufacturer),
    utf8(e.token.model),
    utf8(e.token.serial),
    utf8(e.token.label),
    Uint8Array.from(HSM_KEY_FLAGS.map((f) => (e.attributes[f] ? 1 : 0))),
    keyType,
  ];
  const out = Buffer.alloc(fields.reduce((n, f) => n + 4 + f.length, 0));
  let at = 0;
  for (const f of fields) {
    at = out.writeUInt32BE(f.length, at);
    out.set(f, at);
    at += f.length;
  }
  return out;
}

/**
 * The message the key signs with ES256: nonce || SHA-256(canonical evidence). The nonce comes
 * first and the hash has a fixed length, so the split is unambiguous.
 */
export function keyEvidenceMessage(nonce: Uint8Array, evidence: HsmKeyEvidence): Uint8Array {
  if (!(nonce instanceof Uint8Array) || nonce.length === 0) {
    throw new AttestorError('ERR_INPUT', 'HSM key evidence: the nonce must be non-empty bytes');
  }
  const evidenceHash = createHash('sha256').update(canonicalKeyEvidence(evidence)).digest();
  return Buffer.concat([nonce, evidenceHash]);
}

/**
 * SHA-256(nonce || SHA-256(canonical evidence)): both the digest the token signs (CKM_ECDSA
 * takes the hash) and the qualifying data of the agent's quote (DESIGN flow 3), so the quote
 * and the key's signature commit to the same evidence and nonce.
 */
export function keyEvidenceDigest(nonce: Uint8Array, evidence: HsmKeyEvidence): Uint8Array {
  return createHash('sha256').update(keyEvidenceMessage(nonce, evidence)).digest();
}

/**
 * Checks that `value` (typically decoded from JSON or CBOR) has the report's shape and
 * bounds; returns it typed. Signature and content checks are verifyHsmKey's.
 */
export function parseHsmKeyReport(value: unknown): HsmKeyReport {
  const evidence = checkEvidence(value);
  const { signature } = value as { signature?: unknown };
  if (!(signature instanceof Uint8Array) || signature.length === 0 || signature.length > SIGNATURE_MAX) {
    throw malformed(`signature must be 1..${SIGNATURE_MAX} bytes`);
  }
  return { ...evidence, signature };
}

/** Validates shape and bounds and copies exactly the evidence fields (nothing unknown rides along). */
function checkEvidence(value: unknown): HsmKeyEvidence {
  if (!isRecord(value)) throw malformed('not an object');
  const { publicKey, attributes, token, alg } = value;
  if (alg !== 'ES256') throw malformed('alg must be ES256');
  if (!(publicKey instanceof Uint8Array) || publicKey.length === 0 || publicKey.length > PUBLIC_KEY_MAX) {
    throw malformed(`publicKey must be 1..${PUBLIC_KEY_MAX} bytes of SPKI DER`);
  }
  if (!isRecord(attributes)) throw malformed('attributes must be an object');
  const flag = (f: (typeof HSM_KEY_FLAGS)[number]): boolean => {
    const v = attributes[f];
    if (typeof v !== 'boolean') throw malformed(`attributes.${f} must be a boolean`);
    return v;
  };
  const { keyType } = attributes;
  if (typeof keyType !== 'number' || !Number.isInteger(keyType) || keyType < 0 || keyType > 0xffffffff) {
    throw malformed('attributes.keyType must be a CK_KEY_TYPE (UINT32)');
  }
  if (!isRecord(token)) throw malformed('token must be an object');
  const text = (field: keyof typeof TOKEN_FIELD_MAX): string => {
    const s = token[field];
    const max = TOKEN_FIELD_MAX[field];
    // A lone surrogate would encode as U+FFFD, making two strings share one encoding.
    if (typeof s !== 'string' || /\p{Cs}/u.test(s) || Buffer.byteLength(s, 'utf8') > max) {
      throw malformed(`token.${field} must be well-formed text of at most ${max} UTF-8 bytes`);
    }
    return s;
  };
  return {
    publicKey,
    attributes: {
      token: flag('token'),
      private: flag('private'),
      sensitive: flag('sensitive'),
      extractable: flag('extractable'),
      neverExtractable: flag('neverExtractable'),
      alwaysSensitive: flag('alwaysSensitive'),
      local: flag('local'),
      keyType,
    },
    token: { manufacturer: text('manufacturer'), model: text('model'), serial: text('serial'), label: text('label') },
    alg,
  };
}

/**
 * The P-256 key of a SubjectPublicKeyInfo (DER, nothing after it): the key an HSM key report
 * carries, and the one the agent builds from its token's CKA_EC_POINT. Throws
 * ERR_HSM_KEY_REPORT_MALFORMED for bytes that are not such an SPKI (a point off the curve
 * included), ERR_KEY_UNSUPPORTED for a key of another type or curve.
 */
export function p256PublicKey(spki: Uint8Array): KeyObject {
  let key: KeyObject;
  try {
    key = createPublicKey({ key: Buffer.from(spki), format: 'der', type: 'spki' });
  } catch (e) {
    throw new ParseError('ERR_HSM_KEY_REPORT_MALFORMED', 'HSM key report: publicKey is not a valid SPKI', { cause: e });
  }
  // OpenSSL ignores bytes after the SPKI; the evidence must be exactly the key's encoding.
  if (!key.export({ type: 'spki', format: 'der' }).equals(spki)) {
    throw new ParseError('ERR_HSM_KEY_REPORT_MALFORMED', 'HSM key report: publicKey has bytes beyond its SPKI DER');
  }
  if (key.asymmetricKeyType !== 'ec' || key.asymmetricKeyDetails?.namedCurve !== 'prime256v1') {
    const details = key.asymmetricKeyDetails?.namedCurve ?? key.asymmetricKeyType ?? 'unknown';
    throw new PolicyError('ERR_KEY_UNSUPPORTED', `HSM key: ${details} key; only EC P-256 (ES256) is accepted`);
  }
  return key;
}

function isRecord(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

function malformed(what: string): ParseError {
  return new ParseError('ERR_HSM_KEY_REPORT_MALFORMED', `HSM key report: ${what}`);
}
