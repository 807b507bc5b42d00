import { randomBytes, type KeyObject } from 'node:crypto';
import pkcs11js from 'pkcs11js';
import { AttestorError, PolicyError } from '../errors.js';
import {
  keyEvidenceDigest,
  type HsmKeyAttributes,
  type HsmKeyEvidence,
  type HsmKeyReport,
} from '../appraisal/hsm-key-report.js';
import {
  Pkcs11Error,
  attributeValues,
  findObjects,
  readUlong,
  type Pkcs11Handle,
  type Pkcs11Session,
} from '../pkcs11/module.js';
import { ecP256KeyPairTemplates, readEcP256PublicKey } from '../pkcs11/ec-key.js';

/**
 * The agent's identity key in a PKCS#11 token: an EC P-256 key pair generated on the token,
 * private half sensitive and non-extractable, found again by its CKA_LABEL. It makes the
 * HSM key report of DESIGN flow 3 (src/appraisal/hsm-key-report.ts).
 */

/** Private key attributes read for the report, in HsmKeyAttributes order. */
const REPORTED_ATTRIBUTES = [
  pkcs11js.CKA_TOKEN,
  pkcs11js.CKA_PRIVATE,
  pkcs11js.CKA_SENSITIVE,
  pkcs11js.CKA_EXTRACTABLE,
  pkcs11js.CKA_NEVER_EXTRACTABLE,
  pkcs11js.CKA_ALWAYS_SENSITIVE,
  pkcs11js.CKA_LOCAL,
  pkcs11js.CKA_KEY_TYPE,
] as const;

export interface Pkcs11Key {
  readonly label: string;
  /** CKA_ID shared by the private and public objects (the PKCS#11 convention linking a pair). */
  readonly id: Uint8Array;
  readonly privateKey: Pkcs11Handle;
  readonly publicKeyObject: Pkcs11Handle;
  /** SubjectPublicKeyInfo DER of the public key. */
  readonly spki: Uint8Array;
  readonly publicKey: KeyObject;
}

/** Generates a new key pair labelled `label` on the token. */
export function generateKey(session: Pkcs11Session, label: string): Promise<Pkcs11Key> {
  return session.run('C_GenerateKeyPair', (p11, s) => generateOn(p11, s, label));
}

/** The key pair whose private key is labelled `label`, or undefined if there is none. */
export function lookupKey(session: Pkcs11Session, label: string): Promise<Pkcs11Key | undefined> {
  return session.run('C_FindObjects/C_GetAttributeValue', (p11, s) => lookupOn(p11, s, label));
}

export async function findKey(session: Pkcs11Session, label: string): Promise<Pkcs11Key> {
  const key = await lookupKey(session, label);
  if (!key) throw new Pkcs11Error('ERR_PKCS11_KEY_NOT_FOUND', `no private key labelled ${JSON.stringify(label)}`);
  return key;
}

/**
 * The agent's key: the one labelled `label`, generated on first use. The lookup and the
 * generation are one operation on the session, so concurrent callers get the same single key.
 */
export function findOrGenerateKey(session: Pkcs11Session, label: string): Promise<Pkcs11Key> {
  return session.run('C_FindObjects/C_GenerateKeyPair', async (p11, s) => lookupOn(p11, s, label) ?? (await generateOn(p11, s, label)));
}

/** The private key's security attributes as the token reports them. */
export async function readKeyAttributes(session: Pkcs11Session, key: Pkcs11Key): Promise<HsmKeyAttributes> {
  const values = await session.attributes(key.privateKey, REPORTED_ATTRIBUTES);
  const [token, priv, sensitive, extractable, neverExtractable, alwaysSensitive, local] = values
    .slice(0, 7)
    .map((v) => v.length > 0 && v[0] !== 0);
  return {
    token: token!,
    private: priv!,
    sensitive: sensitive!,
    extractable: extractable!,
    neverExtractable: neverExtractable!,
    alwaysSensitive: alwaysSensitive!,
    local: local!,
    keyType: readUlong(values[7]!),
  };
}

/** ECDSA (CKM_ECDSA) over a SHA-256 digest the caller computed; r||s, 64 bytes. */
export async function signDigest(session: Pkcs11Session, key: Pkcs11Key, digest: Uint8Array): Promise<Uint8Array> {
  // CKM_ECDSA signs whatever it is given (truncated to the order's size): insist on a digest.
  if (digest.length !== 32) {
    throw new AttestorError('ERR_INPUT', `signDigest: expected a SHA-256 digest, got ${digest.length} bytes`);
  }
  return session.run('C_Sign', (p11, s) => {
    p11.C_SignInit(s, { mechanism: pkcs11js.CKM_ECDSA }, key.privateKey);
    return p11.C_SignAsync(s, Buffer.from(digest), Buffer.alloc(64));
  });
}

/**
 * The HSM key report for `nonce`: the key signs keyEvidenceDigest(nonce, evidence), which is
 * also the qualifying data the agent's quote must carry.
 */
export async function makeKeyReport(session: Pkcs11Session, key: Pkcs11Key, nonce: Uint8Array): Promise<HsmKeyReport> {
  const { manufacturer, model, serial, label } = session.token;
  const evidence: HsmKeyEvidence = {
    publicKey: key.spki,
    attributes: await readKeyAttributes(session, key),
    token: { manufacturer, model, serial, label },
    alg: 'ES256',
  };
  return { ...evidence, signature: await signDigest(session, key, keyEvidenceDigest(nonce, evidence)) };
}

/*
 * The steps below run inside one Pkcs11Session.run (`p11`, `s`): an operation of several
 * Cryptoki calls that no other call on the session interleaves with.
 */

async function generateOn(p11: pkcs11js.PKCS11, s: Pkcs11Handle, label: string): Promise<Pkcs11Key> {
  const id = randomBytes(16);
  const templates = ecP256KeyPairTemplates(label, id);
  const pair = await p11.C_GenerateKeyPairAsync(
    s,
    { mechanism: pkcs11js.CKM_EC_KEY_PAIR_GEN },
    templates.publicKey,
    templates.privateKey,
  );
  return keyOf(p11, s, label, id, pair.privateKey, pair.publicKey);
}

function lookupOn(p11: pkcs11js.PKCS11, s: Pkcs11Handle, label: string): Pkcs11Key | undefined {
  const privateKey = only(
    findObjects(p11, s, [
      { type: pkcs11js.CKA_CLASS, value: pkcs11js.CKO_PRIVATE_KEY },
      { type: pkcs11js.CKA_LABEL, value: label },
    ]),
    `private keys labelled ${JSON.stringify(label)}`,
  );
  if (!privateKey) return undefined;
  const [keyType, id] = attributeValues(p11, s, privateKey, [pkcs11js.CKA_KEY_TYPE, pkcs11js.CKA_ID]);
  if (readUlong(keyType!) !== pkcs11js.CKK_EC) {
    throw new PolicyError('ERR_KEY_UNSUPPORTED', `key ${JSON.stringify(label)} is not an EC key`);
  }
  const publicKey = only(
    findObjects(p11, s, [
      { type: pkcs11js.CKA_CLASS, value: pkcs11js.CKO_PUBLIC_KEY },
      { type: pkcs11js.CKA_ID, value: id! },
    ]),
    `public keys with the CKA_ID of ${JSON.stringify(label)}`,
  );
  if (!publicKey) {
    throw new Pkcs11Error(
      'ERR_PKCS11_KEY_NOT_FOUND',
      `key ${JSON.stringify(label)} has no public key object with its CKA_ID`,
    );
  }
  return keyOf(p11, s, label, id!, privateKey, publicKey);
}

function keyOf(
  p11: pkcs11js.PKCS11,
  s: Pkcs11Handle,
  label: string,
  id: Uint8Array,
  privateKey: Pkcs11Handle,
  publicKeyObject: Pkcs11Handle,
): Pkcs11Key {
  return { label, id, privateKey, publicKeyObject, ...readEcP256PublicKey(p11, s, publicKeyObject, label) };
}

/** The single handle of `handles`, undefined for none; ERR_PKCS11_AMBIGUOUS for several. */
function only(handles: Pkcs11Handle[], what: string): Pkcs11Handle | undefined {
  if (handles.length > 1) throw new Pkcs11Error('ERR_PKCS11_AMBIGUOUS', `${handles.length} ${what}`);
  return handles[0];
}
