import { createHash, randomBytes, type KeyObject } from 'node:crypto';
import { setTimeout as delay } from 'node:timers/promises';
import pkcs11js from 'pkcs11js';
import type { Logger } from 'pino';
import { AttestorError, PolicyError } from '../errors.js';
import { ecP256KeyPairTemplates, readEcP256PublicKey } from '../pkcs11/ec-key.js';
import { Pkcs11Error, Pkcs11Session, attributeValues, findObjects, readUlong, type Pkcs11Handle } from '../pkcs11/module.js';
import { formatPkcs11Uri, parsePkcs11Uri, readPkcs11Pin, type Pkcs11Uri } from '../pkcs11/uri.js';
import type { KeyManager, KeyRole, Signer } from './signer.js';

/**
 * The verifier's issuing keys in a PKCS#11 token (SERVICE.md "Keys"): each found by its
 * CKA_LABEL, the role name (`x509-ca`, `jwt`, `audit`), or generated there when absent as a
 * non-extractable EC P-256 pair. All three are resolved when the manager opens. A key
 * generated later for rotation is labelled `<role>.<random hex>` with a random CKA_ID, and is
 * found again by that label (the `object` of its URI in the keys table). Signing goes
 * through pkcs11js directly on a small pool of sessions sharing one login: SHA-256 in Node,
 * then C_SignInit(CKM_ECDSA) + C_Sign on the digest, the C_Sign on a libuv worker thread so
 * the event loop keeps serving.
 *
 * Two processes starting at once on a token without the keys (verifier replicas) both
 * generate: PKCS#11 has no create-if-absent. So after generating, a process waits for a
 * concurrent generation to land (several times as long as its own took, at least
 * SETTLE_MIN_MS), reconnects (a fresh C_Initialize: SoftHSM, for one, may never show a
 * process the objects another process created while both were writing), lists each role's
 * keys again, keeps the one with the smallest CKA_ID and destroys its own if that is not it.
 * Both processes end with the same keys unless one's generation lands after the other's
 * reconnect, i.e. takes longer than that wait; then each keeps its own until the next start,
 * which takes the smaller CKA_ID. Starting with several keys under one label (a race in
 * progress, or one such leftover) waits and reconnects the same way, then takes the smallest
 * CKA_ID and says so. The reconnect refreshes the view only when no other code in the
 * process holds the module (Cryptoki is initialised once per process).
 */

export interface Pkcs11KeyManagerOptions {
  /** Sessions that sign at once (default 2); each is a worker thread while it signs. */
  readonly poolSize?: number;
  /** Where ATTESTOR_PKCS11_PIN is read when the URI has no pin-source or pin-value. */
  readonly env?: NodeJS.ProcessEnv;
  readonly logger?: Pick<Logger, 'info' | 'warn'>;
}

export const PKCS11_PIN_ENV = 'ATTESTOR_PKCS11_PIN';
const ROLES: readonly KeyRole[] = ['x509-ca', 'jwt', 'audit'];
const DEFAULT_POOL_SIZE = 2;
const MAX_POOL_SIZE = 64;
const SETTLE_MIN_MS = 250;
const SETTLE_FACTOR = 4;
const ECDSA = { mechanism: pkcs11js.CKM_ECDSA };
const P256_SIGNATURE_BYTES = 64;
/** A role's first key is labelled with the role; a key generated for rotation adds a random suffix. */
const KEY_LABEL = /^(x509-ca|jwt|audit)(\.[0-9a-f]{16})?$/;

/** A private key on the token and its CKA_ID. */
interface Candidate {
  readonly handle: Pkcs11Handle;
  readonly id: Buffer;
}

export async function openPkcs11KeyManager(uri: Pkcs11Uri, opts: Pkcs11KeyManagerOptions = {}): Promise<KeyManager> {
  if (uri.object !== undefined) {
    throw new AttestorError(
      'ERR_KEYS_URI',
      `the keys URI names the token only: each key is the object labelled with its role, so leave out object=${uri.object}`,
    );
  }
  const poolSize = opts.poolSize ?? DEFAULT_POOL_SIZE;
  if (!Number.isSafeInteger(poolSize) || poolSize < 1 || poolSize > MAX_POOL_SIZE) {
    throw new AttestorError('ERR_KEYS', `the PKCS#11 session pool holds 1..${MAX_POOL_SIZE} sessions, not ${poolSize}`);
  }
  const pin = readPkcs11Pin(uri, PKCS11_PIN_ENV, opts.env);
  const connect = () => openPool(uri, pin, poolSize);
  let sessions = await connect();
  let closing: Promise<void> | undefined;
  try {
    let found = await listKeys(sessions[0]!);
    const generated = new Map<KeyRole, Buffer>();
    const started = performance.now();
    for (const role of ROLES) if (found.get(role)!.length === 0) generated.set(role, await generate(sessions[0]!, role));
    const raced = ROLES.some((role) => found.get(role)!.length > 1);
    if (generated.size > 0 || raced) {
      await closeAll(sessions);
      await delay(Math.max(SETTLE_MIN_MS, SETTLE_FACTOR * (performance.now() - started)));
      sessions = await connect();
      found = await listKeys(sessions[0]!);
    }
    const signers = new Map<KeyRole, Signer>();
    for (const role of ROLES) {
      const [winner, ...others] = found.get(role)!;
      if (!winner) throw new Pkcs11Error('ERR_PKCS11_KEY_NOT_FOUND', `the key ${JSON.stringify(role)} is gone from the token`);
      const mine = generated.get(role);
      if (mine && !winner.id.equals(mine)) {
        const own = others.find((c) => c.id.equals(mine));
        if (own) await destroy(sessions[0]!, role, own);
        opts.logger?.info({ key: role }, 'another process generated this key at the same time; using theirs');
      } else if (mine) {
        opts.logger?.info({ key: role }, 'generated a non-extractable EC P-256 key in the token');
      } else if (others.length > 0) {
        opts.logger?.warn({ key: role, count: others.length + 1 }, 'several keys carry this label; using the one with the smallest CKA_ID');
      }
      signers.set(role, await pooledSigner(uri, role, winner, sessions));
    }
    // Keys generated for rotation, and those found again by their URI, by label.
    const others = new Map<string, Promise<Signer>>();
    const open = () => {
      if (closing) throw new AttestorError('ERR_KEYS', 'the key manager is closed');
    };
    return {
      software: false,
      async signer(role) {
        open();
        const signer = signers.get(role);
        if (!signer) throw new AttestorError('ERR_KEYS', `no issuing key has the role ${JSON.stringify(role)}`);
        return signer;
      },
      async generate(role) {
        open();
        // A label of its own: the role's label keeps naming the role's first key alone.
        const label = `${role}.${randomBytes(8).toString('hex')}`;
        const id = await generate(sessions[0]!, label);
        opts.logger?.info({ key: label }, 'generated a non-extractable EC P-256 key in the token');
        const signer = pooledSigner(uri, label, { handle: (await keysLabelled(sessions[0]!, label)).find((c) => c.id.equals(id))!.handle, id }, sessions);
        others.set(label, signer);
        return signer;
      },
      async signerAt(keyUri, keyRole) {
        open();
        const wanted = parsePkcs11Uri(keyUri, 'key URI');
        const label = wanted.object;
        if (wanted.token !== uri.token || label === undefined || KEY_LABEL.exec(label)?.[1] !== keyRole) {
          throw new AttestorError('ERR_KEYS', `${keyUri} is not a ${keyRole} key of the token ${JSON.stringify(uri.token)}: wrong token?`);
        }
        const role = signers.get(label as KeyRole);
        if (role) return role;
        let signer = others.get(label);
        if (!signer) {
          signer = keysLabelled(sessions[0]!, label).then(([key, ...more]) => {
            if (!key) throw new Pkcs11Error('ERR_PKCS11_KEY_NOT_FOUND', `the token has no key labelled ${JSON.stringify(label)}: wrong token?`);
            if (more.length > 0) throw new Pkcs11Error('ERR_PKCS11_AMBIGUOUS', `${more.length + 1} keys are labelled ${JSON.stringify(label)}`);
            return pooledSigner(uri, label, key, sessions);
          });
          // Not cached when it failed: another replica's new key may show up later.
          signer.catch(() => others.delete(label));
          others.set(label, signer);
        }
        return signer;
      },
      close() {
        closing ??= closeAll(sessions);
        return closing;
      },
    };
  } catch (e) {
    await closeAll(sessions).catch(() => undefined);
    throw e;
  }
}

/** The session that logs in (once: a wrong PIN tried again counts towards locking the token), and siblings sharing its login. */
async function openPool(uri: Pkcs11Uri, pin: string, size: number): Promise<Pkcs11Session[]> {
  const primary = await Pkcs11Session.open({ modulePath: uri.modulePath, tokenLabel: uri.token, pin });
  const sessions = [primary];
  try {
    while (sessions.length < size) sessions.push(await primary.openSibling());
  } catch (e) {
    await closeAll(sessions).catch(() => undefined);
    throw e;
  }
  return sessions;
}

/** Closes the sessions sharing the login first, then the one whose close logs out and finalises. */
async function closeAll(sessions: readonly Pkcs11Session[]): Promise<void> {
  const [primary, ...others] = sessions;
  const results = await Promise.allSettled(others.map((s) => s.close()));
  await primary?.close();
  const failed = results.find((r): r is PromiseRejectedResult => r.status === 'rejected');
  if (failed) throw failed.reason;
}

/** A Signer over `key` (labelled `label`): each signature on the least busy session of the pool. */
async function pooledSigner(uri: Pkcs11Uri, label: string, key: Candidate, sessions: readonly Pkcs11Session[]): Promise<Signer> {
  const publicKeyObject = await findPublicKey(sessions[0]!, label, key);
  const { publicKey, spki }: { publicKey: KeyObject; spki: Uint8Array } = await sessions[0]!.run('C_GetAttributeValue', (p11, s) =>
    readEcP256PublicKey(p11, s, publicKeyObject, label),
  );
  const inFlight = sessions.map(() => 0);
  return {
    uri: formatPkcs11Uri(uri, label),
    publicKey,
    spki,
    software: false,
    async sign(data) {
      const digest = createHash('sha256').update(data).digest();
      let i = 0;
      for (let j = 1; j < sessions.length; j++) if (inFlight[j]! < inFlight[i]!) i = j;
      inFlight[i]!++;
      try {
        const signature = await sessions[i]!.run('C_Sign', (p11, s) => {
          p11.C_SignInit(s, ECDSA, key.handle);
          return p11.C_SignAsync(s, digest, Buffer.alloc(P256_SIGNATURE_BYTES));
        });
        if (signature.length !== P256_SIGNATURE_BYTES) {
          throw new Pkcs11Error('ERR_PKCS11', `C_Sign returned ${signature.length} bytes for a P-256 key`);
        }
        return signature;
      } finally {
        inFlight[i]!--;
      }
    },
  };
}

/** Each role's EC private keys, smallest CKA_ID first. */
function listKeys(session: Pkcs11Session): Promise<Map<KeyRole, Candidate[]>> {
  return session.run('C_FindObjects', (p11, s) => new Map(ROLES.map((role) => [role, candidates(p11, s, role)])));
}

/** The EC private keys labelled `label`, smallest CKA_ID first. */
function keysLabelled(session: Pkcs11Session, label: string): Promise<Candidate[]> {
  return session.run('C_FindObjects', (p11, s) => candidates(p11, s, label));
}

function candidates(p11: pkcs11js.PKCS11, s: Pkcs11Handle, label: string): Candidate[] {
  const handles = findObjects(p11, s, [
    { type: pkcs11js.CKA_CLASS, value: pkcs11js.CKO_PRIVATE_KEY },
    { type: pkcs11js.CKA_LABEL, value: label },
  ]);
  return handles
    .map((handle) => {
      const [keyType, id] = attributeValues(p11, s, handle, [pkcs11js.CKA_KEY_TYPE, pkcs11js.CKA_ID]);
      if (readUlong(keyType!) !== pkcs11js.CKK_EC) {
        throw new PolicyError('ERR_KEY_UNSUPPORTED', `key ${JSON.stringify(label)} is not an EC key`);
      }
      return { handle, id: id! };
    })
    .sort((a, b) => Buffer.compare(a.id, b.id));
}

/** Generates a pair labelled `label` with a random CKA_ID; resolves with that id. */
async function generate(session: Pkcs11Session, label: string): Promise<Buffer> {
  const id = randomBytes(16);
  const templates = ecP256KeyPairTemplates(label, id);
  await session.run('C_GenerateKeyPair', (p11, s) =>
    p11.C_GenerateKeyPairAsync(s, { mechanism: pkcs11js.CKM_EC_KEY_PAIR_GEN }, templates.publicKey, templates.privateKey),
  );
  return id;
}

async function findPublicKey(session: Pkcs11Session, label: string, key: Candidate): Promise<Pkcs11Handle> {
  const [publicKeyObject, ...others] = await session.find([
    { type: pkcs11js.CKA_CLASS, value: pkcs11js.CKO_PUBLIC_KEY },
    { type: pkcs11js.CKA_ID, value: key.id },
  ]);
  if (!publicKeyObject) {
    throw new Pkcs11Error('ERR_PKCS11_KEY_NOT_FOUND', `key ${JSON.stringify(label)} has no public key object with its CKA_ID`);
  }
  if (others.length > 0) throw new Pkcs11Error('ERR_PKCS11_AMBIGUOUS', `${others.length + 1} public keys share the CKA_ID of ${JSON.stringify(label)}`);
  return publicKeyObject;
}

/** Destroys a pair this process generated and lost. */
async function destroy(session: Pkcs11Session, role: KeyRole, key: Candidate): Promise<void> {
  const publicKeyObject = await findPublicKey(session, role, key);
  await session.run('C_DestroyObject', (p11, s) => {
    p11.C_DestroyObject(s, key.handle);
    p11.C_DestroyObject(s, publicKeyObject);
  });
}
