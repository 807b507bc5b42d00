import { createHash, randomBytes } from 'node:crypto';
import { setTimeout as delay } from 'node:timers/promises';
import pkcs11js from 'pkcs11js';
import type { Logger } from 'pino';
import { AttestorError, PolicyError } from '../errors.js';
import { ecP256KeyPairTemplates, readEcP256PublicKey } from '../pkcs11/ec-key.js';
import { Pkcs11Error, Pkcs11Session, attributeValues, findObjects, readUlong, type Pkcs11Handle } from '../pkcs11/module.js';
import { formatPkcs11Uri, readPkcs11Pin, type Pkcs11Uri } from '../pkcs11/uri.js';
import type { KeyManager, KeyRole, Signer } from './signer.js';

/**
 * The verifier's issuing keys in a PKCS#11 token (SERVICE.md "Keys"): each found by its
 * CKA_LABEL, the role name (`x509-ca`, `jwt`, `audit`), or generated there on first use as a
 * non-extractable EC P-256 pair. Signing goes through pkcs11js directly on a small pool of
 * sessions sharing one login: SHA-256 in Node, then C_SignInit(CKM_ECDSA) + C_Sign on the
 * digest, the C_Sign on a libuv worker thread so the event loop keeps serving.
 *
 * Two processes starting at once on an empty token (verifier replicas) both generate. PKCS#11
 * has no create-if-absent, so each then waits for the other's generation to become visible
 * (several times as long as its own took, at least SETTLE_MIN_MS), lists the keys with the
 * label again, keeps the one with the smallest CKA_ID and destroys its own if that is not it.
 * Both end with the same key unless one generation takes longer than that wait to appear
 * (a token stalled for the whole window): then each keeps its own, and the next start of
 * either converges on the smaller CKA_ID. A lookup that finds several keys with one label (a
 * race in progress, or a leftover) waits the same way and takes the smallest CKA_ID too.
 */

export interface Pkcs11KeyManagerOptions {
  /** Sessions that sign at once (default 2); each is a worker thread while it signs. */
  readonly poolSize?: number;
  /** Where ATTESTOR_PKCS11_PIN is read when the URI has no pin-source or pin-value. */
  readonly env?: NodeJS.ProcessEnv;
  readonly logger?: Pick<Logger, 'info' | 'warn'>;
}

export const PKCS11_PIN_ENV = 'ATTESTOR_PKCS11_PIN';
const DEFAULT_POOL_SIZE = 2;
const MAX_POOL_SIZE = 64;
const SETTLE_MIN_MS = 100;
const SETTLE_FACTOR = 4;
const ECDSA = { mechanism: pkcs11js.CKM_ECDSA };
const P256_SIGNATURE_BYTES = 64;

/** A private key on the token and its CKA_ID. */
interface Candidate {
  readonly handle: Pkcs11Handle;
  readonly id: Buffer;
}

export async function openPkcs11KeyManager(uri: Pkcs11Uri, opts: Pkcs11KeyManagerOptions = {}): Promise<KeyManager> {
  if (uri.object !== undefined) {
    throw new AttestorError('ERR_KEYS_URI', `the keys URI names the token only: each key is the object labelled with its role, so leave out object=${uri.object}`);
  }
  const poolSize = opts.poolSize ?? DEFAULT_POOL_SIZE;
  if (!Number.isSafeInteger(poolSize) || poolSize < 1 || poolSize > MAX_POOL_SIZE) {
    throw new AttestorError('ERR_KEYS', `the PKCS#11 session pool holds 1..${MAX_POOL_SIZE} sessions, not ${poolSize}`);
  }
  const pin = readPkcs11Pin(uri, PKCS11_PIN_ENV, opts.env);
  // One C_Login, never retried: a wrong PIN tried again counts towards locking the token.
  const primary = await Pkcs11Session.open({ modulePath: uri.modulePath, tokenLabel: uri.token, pin });
  const sessions = [primary];
  try {
    while (sessions.length < poolSize) sessions.push(await primary.openSibling());
  } catch (e) {
    await closeAll(sessions).catch(() => undefined);
    throw e;
  }
  const inFlight = sessions.map(() => 0);
  const signers = new Map<KeyRole, Promise<Signer>>();
  let closing: Promise<void> | undefined;

  /** ECDSA over `digest` on the least busy session. */
  const signDigest = async (privateKey: Pkcs11Handle, digest: Buffer): Promise<Uint8Array> => {
    let i = 0;
    for (let j = 1; j < sessions.length; j++) if (inFlight[j]! < inFlight[i]!) i = j;
    inFlight[i]!++;
    try {
      const signature = await sessions[i]!.run('C_Sign', (p11, s) => {
        p11.C_SignInit(s, ECDSA, privateKey);
        return p11.C_SignAsync(s, digest, Buffer.alloc(P256_SIGNATURE_BYTES));
      });
      if (signature.length !== P256_SIGNATURE_BYTES) {
        throw new Pkcs11Error('ERR_PKCS11', `C_Sign returned ${signature.length} bytes for a P-256 key`);
      }
      return signature;
    } finally {
      inFlight[i]!--;
    }
  };

  const openSigner = async (role: KeyRole): Promise<Signer> => {
    const key = await findOrGenerate(primary, role, opts.logger);
    const { publicKey, spki } = await primary.run('C_GetAttributeValue', (p11, s) => readEcP256PublicKey(p11, s, key.publicKeyObject, role));
    return {
      uri: formatPkcs11Uri(uri, role),
      publicKey,
      spki,
      software: false,
      sign: (data) => signDigest(key.privateKey, createHash('sha256').update(data).digest()),
    };
  };

  return {
    software: false,
    signer(role) {
      if (closing) return Promise.reject(new AttestorError('ERR_KEYS', 'the key manager is closed'));
      let signer = signers.get(role);
      if (!signer) {
        signer = openSigner(role);
        // A failure is not kept: the next call tries again (a key made meanwhile, a token back).
        signer.catch(() => signers.delete(role));
        signers.set(role, signer);
      }
      return signer;
    },
    close() {
      closing ??= closeAll(sessions);
      return closing;
    },
  };
}

/** Closes the sessions sharing the login first, then the one whose close logs out and finalises. */
async function closeAll(sessions: readonly Pkcs11Session[]): Promise<void> {
  const [primary, ...others] = sessions;
  const results = await Promise.allSettled(others.map((s) => s.close()));
  await primary?.close();
  const failed = results.find((r): r is PromiseRejectedResult => r.status === 'rejected');
  if (failed) throw failed.reason;
}

async function findOrGenerate(
  session: Pkcs11Session,
  role: KeyRole,
  logger: Pkcs11KeyManagerOptions['logger'],
): Promise<{ privateKey: Pkcs11Handle; publicKeyObject: Pkcs11Handle }> {
  const list = () => session.run('C_FindObjects', (p11, s) => candidates(p11, s, role));
  let found = await list();
  if (found.length > 1) {
    await delay(SETTLE_MIN_MS);
    found = await list();
    if (found.length > 1) logger?.warn({ key: role, count: found.length }, 'several keys carry this label; using the one with the smallest CKA_ID');
  }
  if (found[0]) return withPublicKey(session, role, found[0]);

  const id = randomBytes(16);
  const templates = ecP256KeyPairTemplates(role, id);
  const started = performance.now();
  const generated = await session.run('C_GenerateKeyPair', (p11, s) =>
    p11.C_GenerateKeyPairAsync(s, { mechanism: pkcs11js.CKM_EC_KEY_PAIR_GEN }, templates.publicKey, templates.privateKey),
  );
  await delay(Math.max(SETTLE_MIN_MS, SETTLE_FACTOR * (performance.now() - started)));
  const [winner] = await list();
  if (!winner) throw new Pkcs11Error('ERR_PKCS11_KEY_NOT_FOUND', `the key ${JSON.stringify(role)} just generated is gone from the token`);
  if (winner.id.equals(id)) {
    logger?.info({ key: role }, 'generated a non-extractable EC P-256 key in the token');
  } else {
    await session.run('C_DestroyObject', (p11, s) => {
      p11.C_DestroyObject(s, generated.privateKey);
      p11.C_DestroyObject(s, generated.publicKey);
    });
    logger?.info({ key: role }, 'another process generated this key at the same time; using theirs');
  }
  return withPublicKey(session, role, winner);
}

/** The EC private keys labelled `role`, smallest CKA_ID first. For use inside Pkcs11Session.run. */
function candidates(p11: pkcs11js.PKCS11, s: Pkcs11Handle, role: KeyRole): Candidate[] {
  const handles = findObjects(p11, s, [
    { type: pkcs11js.CKA_CLASS, value: pkcs11js.CKO_PRIVATE_KEY },
    { type: pkcs11js.CKA_LABEL, value: role },
  ]);
  return handles
    .map((handle) => {
      const [keyType, id] = attributeValues(p11, s, handle, [pkcs11js.CKA_KEY_TYPE, pkcs11js.CKA_ID]);
      if (readUlong(keyType!) !== pkcs11js.CKK_EC) {
        throw new PolicyError('ERR_KEY_UNSUPPORTED', `key ${JSON.stringify(role)} is not an EC key`);
      }
      return { handle, id: id! };
    })
    .sort((a, b) => Buffer.compare(a.id, b.id));
}

async function withPublicKey(session: Pkcs11Session, role: KeyRole, key: Candidate): Promise<{ privateKey: Pkcs11Handle; publicKeyObject: Pkcs11Handle }> {
  const [publicKeyObject, ...others] = await session.find([
    { type: pkcs11js.CKA_CLASS, value: pkcs11js.CKO_PUBLIC_KEY },
    { type: pkcs11js.CKA_ID, value: key.id },
  ]);
  if (!publicKeyObject) {
    throw new Pkcs11Error('ERR_PKCS11_KEY_NOT_FOUND', `key ${JSON.stringify(role)} has no public key object with its CKA_ID`);
  }
  if (others.length > 0) throw new Pkcs11Error('ERR_PKCS11_AMBIGUOUS', `${others.length + 1} public keys share the CKA_ID of ${JSON.stringify(role)}`);
  return { privateKey: key.handle, publicKeyObject };
}
