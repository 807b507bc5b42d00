import { createHash, randomBytes, verify, type KeyObject } from 'node:crypto';
import { setTimeout as delay } from 'node:timers/promises';
import pkcs11js from 'pkcs11js';
import type { Logger } from 'pino';
import { AttestorError, PolicyError, isAttestorError } from '../errors.js';
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
 * then C_SignInit(CKM_ECDSA) + C_Sign on the digest: on the event loop while the token signs
 * in under half a millisecond (SoftHSM: ~70 us, and twice the CPU on a worker thread), on a
 * libuv worker thread once it is slower (a network HSM), so the event loop keeps serving.
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
 *
 * A token that goes away while the verifier runs (removed, a device error) makes signing fail
 * with ERR_PKCS11_UNAVAILABLE; the next signature reconnects the same way (at most once a
 * second while it stays away) and finds each key again by its label and CKA_ID. A login
 * refused on such a reconnect is never tried again: the verifier needs a restart.
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
/**
 * CKR values after which the sessions or the key handles are no longer valid: the token went
 * away. SoftHSM, for one, answers a vanished token directory with CKR_OBJECT_HANDLE_INVALID
 * (CKR_GENERAL_ERROR for the slot list), and sees the token back only after a new C_Initialize.
 */
const TOKEN_GONE = new Set([
  'CKR_DEVICE_ERROR',
  'CKR_DEVICE_REMOVED',
  'CKR_TOKEN_NOT_PRESENT',
  'CKR_TOKEN_NOT_RECOGNIZED',
  'CKR_SESSION_HANDLE_INVALID',
  'CKR_SESSION_CLOSED',
  'CKR_USER_NOT_LOGGED_IN',
  'CKR_OBJECT_HANDLE_INVALID',
  'CKR_KEY_HANDLE_INVALID',
  'CKR_GENERAL_ERROR',
  'CKR_CRYPTOKI_NOT_INITIALIZED',
]);
const RECONNECT_INTERVAL_MS = 1000;
/** How often and how far apart signerAt looks for a key before it is not there. */
const FIND_TRIES = 5;
const FIND_INTERVAL_MS = 100;

/** A key not on a token that answers: that key's failure, not the token's. */
class KeyMissingError extends Pkcs11Error {}
const INLINE_SIGN_MS = 0.5;
const SLOW_SIGNATURES = 3;
const CHECK_INTERVAL_MS = 1000;
const PROBE_MESSAGE = new TextEncoder().encode('attestor readiness probe: signs nothing anyone verifies');

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
  // Reconnects go to the token of the first connection only: the PIN is sent to no other.
  let serial: string | undefined;
  const connect = async () => {
    const sessions = await openPool(uri, pin, poolSize, serial);
    serial ??= sessions[0]!.token.serial;
    return sessions;
  };
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
    const pool = createSessionPool(uri.token, connect, sessions);
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
      signers.set(role, await pooledSigner(uri, role, winner, 0, pool));
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
        const { sessions, generation } = await pool.current();
        const id = await generate(sessions[0]!, label);
        opts.logger?.info({ key: label }, 'generated a non-extractable EC P-256 key in the token');
        const made = (await keysLabelled(sessions[0]!, label)).find((c) => c.id.equals(id));
        // The token went away between generating and finding: the caller's rotation step is tried again.
        if (!made) throw new Pkcs11Error('ERR_PKCS11_UNAVAILABLE', `the key ${JSON.stringify(label)} just generated is not on the token`);
        const signer = pooledSigner(uri, label, made, generation, pool);
        signer.catch(() => others.delete(label));
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
          signer = pool.current().then(async ({ sessions, generation }) => {
            let [key, ...more] = await keysLabelled(sessions[0]!, label);
            // A key another replica has just generated (its row is what names it) may not be in
            // this process's view of the token yet: SoftHSM was seen to show it a moment later.
            for (let tries = 1; !key && tries < FIND_TRIES; tries++) {
              await new Promise((r) => setTimeout(r, FIND_INTERVAL_MS));
              [key, ...more] = await keysLabelled(sessions[0]!, label);
            }
            if (!key) throw new Pkcs11Error('ERR_PKCS11_KEY_NOT_FOUND', `the token has no key labelled ${JSON.stringify(label)}: wrong token?`);
            if (more.length > 0) throw new Pkcs11Error('ERR_PKCS11_AMBIGUOUS', `${more.length + 1} keys are labelled ${JSON.stringify(label)}`);
            return pooledSigner(uri, label, key, generation, pool);
          });
          // Not cached when it failed: another replica's new key may show up later.
          signer.catch(() => others.delete(label));
          others.set(label, signer);
        }
        return signer;
      },
      close() {
        closing ??= pool.close();
        return closing;
      },
    };
  } catch (e) {
    await closeAll(sessions).catch(() => undefined);
    throw e;
  }
}

/** The session that logs in (once: a wrong PIN tried again counts towards locking the token), and siblings sharing its login. */
async function openPool(uri: Pkcs11Uri, pin: string, size: number, serial: string | undefined): Promise<Pkcs11Session[]> {
  const primary = await Pkcs11Session.open({ modulePath: uri.modulePath, tokenLabel: uri.token, pin, ...(serial === undefined ? {} : { serial }) });
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

/** The pool's sessions, replaced by a reconnect once a signature found the token gone. */
interface SessionPool {
  /**
   * Where signatures are made: on the event loop while the token signs quicker than
   * INLINE_SIGN_MS (a software token: on a worker thread a signature costs twice the CPU), on
   * worker threads for good once SLOW_SIGNATURES in a row took longer (a network HSM).
   */
  readonly pace: { inline: boolean; slow: number };
  /** The live sessions and their connection's number; ERR_PKCS11_UNAVAILABLE while the token stays away. */
  current(): Promise<{ readonly sessions: readonly Pkcs11Session[]; readonly generation: number }>;
  /** What to throw for `e`, a failure on connection `generation`: a token gone marks it lost. */
  failed(generation: number, e: unknown): unknown;
  close(): Promise<void>;
}

function createSessionPool(token: string, connect: () => Promise<Pkcs11Session[]>, initial: Pkcs11Session[]): SessionPool {
  let sessions = initial;
  let generation = 0;
  let lost: AttestorError | undefined;
  let loginRefused: AttestorError | undefined;
  let lastAttempt = 0;
  let reconnecting: Promise<void> | undefined;
  const unavailable = (why: string, cause: unknown) =>
    new AttestorError('ERR_PKCS11_UNAVAILABLE', `the PKCS#11 token ${JSON.stringify(token)} is unavailable: ${why}`, { cause });
  const reconnect = async () => {
    lastAttempt = Date.now();
    // Closing the last session finalises the module, so that connect initialises it anew.
    await closeAll(sessions).catch(() => undefined);
    try {
      sessions = await connect();
      generation++;
      lost = undefined;
    } catch (e) {
      const why = e instanceof Error ? e.message : String(e);
      if (isAttestorError(e) && e.code === 'ERR_PKCS11_LOGIN') loginRefused = unavailable(`${why}; not tried again: restart the verifier`, e);
      lost = unavailable(why, e);
    }
  };
  return {
    pace: { inline: true, slow: 0 },
    async current() {
      if (lost && !loginRefused && !reconnecting && Date.now() - lastAttempt >= RECONNECT_INTERVAL_MS) {
        reconnecting = reconnect().finally(() => (reconnecting = undefined));
      }
      await reconnecting;
      if (loginRefused ?? lost) throw loginRefused ?? lost;
      return { sessions, generation };
    },
    failed(at, e) {
      // Our own ERR_PKCS11_UNAVAILABLE (another key in our key's place) counts too: a reconnect may find ours again.
      if (!(e instanceof Pkcs11Error && (e.code === 'ERR_PKCS11_UNAVAILABLE' || (e.ckr && TOKEN_GONE.has(e.ckr))))) return e;
      const error = unavailable(e.message, e);
      if (at === generation) lost ??= error;
      return error;
    },
    close: () => closeAll(sessions),
  };
}

/**
 * A Signer over `key` (labelled `label`, found on connection `foundAt`): each signature on
 * the least busy session of the pool.
 */
async function pooledSigner(uri: Pkcs11Uri, label: string, key: Candidate, foundAt: number, pool: SessionPool): Promise<Signer> {
  const { sessions: first, generation: firstGeneration } = await pool.current();
  // Its handle and the public key read here must come from one connection, the one it was found on.
  if (firstGeneration !== foundAt) {
    throw new Pkcs11Error('ERR_PKCS11_UNAVAILABLE', `the token reconnected while the key ${JSON.stringify(label)} was being opened; try again`);
  }
  const publicKeyObject = await findPublicKey(first[0]!, label, key);
  const { publicKey, spki }: { publicKey: KeyObject; spki: Uint8Array } = await first[0]!.run('C_GetAttributeValue', (p11, s) =>
    readEcP256PublicKey(p11, s, publicKeyObject, label),
  );
  const inFlight = first.map(() => 0);
  // Handles are valid on one connection only: after a reconnect the key is found again by its
  // CKA_ID, and its first signature is verified with the key it had: a token put in place of
  // ours could hold another key under the same label and CKA_ID.
  let handle = { generation: firstGeneration, value: key.handle, verified: true };
  let checkedAt = -Infinity;
  let probing: Promise<void> | undefined;
  const signer: Signer = {
    uri: formatPkcs11Uri(uri, label),
    publicKey,
    spki,
    software: false,
    async sign(data) {
      const digest = createHash('sha256').update(data).digest();
      const { sessions, generation } = await pool.current();
      let i = 0;
      for (let j = 1; j < sessions.length; j++) if (inFlight[j]! < inFlight[i]!) i = j;
      inFlight[i]!++;
      try {
        if (handle.generation !== generation) {
          const again = (await keysLabelled(sessions[0]!, label)).find((c) => c.id.equals(key.id));
          if (!again) throw new KeyMissingError('ERR_PKCS11_UNAVAILABLE', `the token came back without the key ${JSON.stringify(label)}`);
          handle = { generation, value: again.handle, verified: false };
        }
        // This signature's handle: another sign may replace `handle` while this one waits.
        const used = handle;
        const signature = await sessions[i]!.run('C_Sign', (p11, s) => {
          p11.C_SignInit(s, ECDSA, used.value);
          if (!pool.pace.inline) return p11.C_SignAsync(s, digest, Buffer.alloc(P256_SIGNATURE_BYTES));
          const started = performance.now();
          const made = p11.C_Sign(s, digest, Buffer.alloc(P256_SIGNATURE_BYTES));
          pool.pace.slow = performance.now() - started > INLINE_SIGN_MS ? pool.pace.slow + 1 : 0;
          if (pool.pace.slow >= SLOW_SIGNATURES) pool.pace.inline = false;
          return made;
        });
        if (signature.length !== P256_SIGNATURE_BYTES) {
          throw new Pkcs11Error('ERR_PKCS11', `C_Sign returned ${signature.length} bytes for a P-256 key`);
        }
        if (!used.verified) {
          if (!verify('sha256', data, { key: publicKey, dsaEncoding: 'ieee-p1363' }, signature)) {
            throw new Pkcs11Error('ERR_PKCS11_UNAVAILABLE', `the token came back with another key labelled ${JSON.stringify(label)}: not the token this verifier started with`);
          }
          used.verified = true;
        }
        return signature;
      } catch (e) {
        // One key gone from a token that answers (an operator deleted a retired key whose CRL is
        // still signed) fails that key alone: counted as the token's loss, it would stop every key.
        throw e instanceof KeyMissingError ? e : pool.failed(generation, e);
      } finally {
        inFlight[i]!--;
      }
    },
    async check() {
      // Only a signature reaches the key material: SoftHSM, for one, answers finding and reading
      // a key whose token went away from memory. The probe's message can be no certificate's or
      // token's, and its signature is dropped; at most one a second, as /readyz is public.
      // Checks arriving while a probe is in flight share it.
      if (performance.now() - checkedAt < CHECK_INTERVAL_MS) return;
      probing ??= signer.sign(PROBE_MESSAGE).then(
        () => {
          checkedAt = performance.now();
        },
      ).finally(() => (probing = undefined));
      await probing;
    },
  };
  return signer;
}

/**
 * Each role's EC private keys, smallest CKA_ID first. Another process starting at once destroys
 * its own key when it lost the race, and a key destroyed between C_FindObjects and reading its
 * attributes answers CKR_OBJECT_HANDLE_INVALID: the listing is taken again then.
 */
async function listKeys(session: Pkcs11Session): Promise<Map<KeyRole, Candidate[]>> {
  for (let attempt = 1; ; attempt++) {
    try {
      return await session.run('C_FindObjects', (p11, s) => new Map(ROLES.map((role) => [role, candidates(p11, s, role)])));
    } catch (e) {
      if (attempt >= FIND_TRIES || !(e instanceof Pkcs11Error && e.ckr === 'CKR_OBJECT_HANDLE_INVALID')) throw e;
      await delay(FIND_INTERVAL_MS);
    }
  }
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
