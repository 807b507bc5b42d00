import { createHash, createPublicKey, X509Certificate } from 'node:crypto';
import type { Logger } from 'pino';
import { equalBytes } from '../bytes.js';
import { AttestorError } from '../errors.js';
import { createCaCertificate } from '../issuer/ca-certificate.js';
import { createCrl } from '../issuer/crl.js';
import { issuingCa } from '../issuer/issuing-ca.js';
import { jwtJwks, kidOf, spiffeBundle, type Jwks, type SpiffeBundle } from '../issuer/jwks.js';
import { createJwtSvidIssuer, type JwtSvidIssuer } from '../issuer/jwt-svid.js';
import type { KeyManager, KeyRole, Signer } from '../issuer/signer.js';
import { createX509SvidIssuer, type X509SvidIssuer } from '../issuer/x509-svid.js';
import type { IssuingKey, KeyRing as StoredKeyRing, Store, StoredCrl } from '../store/store.js';
import type { CredentialAuthority } from './credential-authority.js';
import { pem } from './pem.js';

/*
 * The verifier's keys as the keys table has them (SERVICE.md "Keys"). At first start each of
 * x509-ca, jwt and audit is found in (or generated into) the key manager and recorded active.
 * From then on the table is the truth, shared by every replica and restart: the ring reads it
 * again whenever its sequence moved (a rotation by this or another replica), signs with the
 * active key of each role, and publishes every key still in the table, prepared and old ones
 * too, so relying parties know a key before it signs and until what it signed has expired.
 * A key manager that does not hold a recorded key (another token, a wiped directory) is
 * refused rather than silently starting a new trust domain root.
 */

export interface IssuingKeysDeps {
  readonly store: Store;
  readonly keys: KeyManager;
  readonly trustDomain: string;
  readonly publicUrl: string;
  readonly caLifetimeDays: number;
  readonly now: () => number;
  readonly logger: Logger;
}

/** How often relying parties are told to refetch the bundle (SPIFFE bundle `spiffe_refresh_hint`). */
export const REFRESH_HINT_SECONDS = 300;

/** How long a CRL is valid, and when a fresh one is made: RFC 5280 nextUpdate, renewed at half. */
const CRL_VALIDITY_MS = 24 * 3600_000;

/** An active key with what signs with it. */
export interface ActiveKey {
  readonly key: IssuingKey;
  readonly signer: Signer;
}

/** The credential authority over the keys table, and what key rotation needs of it. */
export interface KeyRing extends CredentialAuthority {
  /** The keys as last read, every name and state. */
  keys(): readonly IssuingKey[];
  /** The active key of `role` and its Signer. */
  active(role: KeyRole): ActiveKey;
  /** Reads the keys table again if its sequence moved, and switches to what it holds. */
  refresh(): Promise<void>;
}

/** What one reading of the keys table makes: the signing side and the published side. */
interface Snapshot {
  readonly ring: StoredKeyRing;
  readonly active: ReadonlyMap<KeyRole, ActiveKey>;
  readonly x509: X509SvidIssuer;
  readonly jwt: JwtSvidIssuer;
  /** Published CA keys (active first) and JWT keys. */
  readonly cas: readonly IssuingKey[];
  readonly bundlePem: string;
  readonly roots: ReadonlyMap<string, string>;
  readonly jwks: Jwks;
  readonly spiffeBundle: SpiffeBundle;
}

const ROLES: readonly KeyRole[] = ['x509-ca', 'jwt', 'audit'];
/** Active first, then prepared, then old: the order keys are published in. */
const STATE_ORDER = { active: 0, prepared: 1, old: 2 } as const;

export async function openKeyRing(deps: IssuingKeysDeps): Promise<KeyRing> {
  for (const role of ROLES) await recordFirstKey(deps, role);
  const signers = new Map<string, Promise<Signer>>();
  /** The Signer of a recorded key, checked to hold that key. */
  const signerOf = (key: IssuingKey): Promise<Signer> => {
    let signer = signers.get(key.kid);
    if (!signer) {
      signer = deps.keys.signerAt(key.uri, key.name).then((s) => {
        if (!equalBytes(s.spki, key.publicKeySpki)) {
          throw new AttestorError('ERR_KEYS', `the ${key.name} key at ${key.uri} is not the one this verifier's database records: wrong token or key directory?`);
        }
        return s;
      });
      signer.catch(() => signers.delete(key.kid));
      signers.set(key.kid, signer);
    }
    return signer;
  };

  const build = async (ring: StoredKeyRing): Promise<Snapshot> => {
    const active = new Map<KeyRole, ActiveKey>();
    for (const role of ROLES) {
      const key = ring.keys.find((k) => k.name === role && k.state === 'active');
      if (!key) throw new AttestorError('ERR_KEYS', `the keys table has no active ${role} key`);
      active.set(role, { key, signer: await signerOf(key) });
    }
    // A published key is one the key manager holds, under its role, and a CA's certificate is
    // the self-signed root of that key: a row written into the table by someone without the
    // HSM (a database compromise) publishes nothing.
    const published = async (name: KeyRole) => {
      const kept: IssuingKey[] = [];
      for (const k of ring.keys.filter((r) => r.name === name).sort((a, b) => STATE_ORDER[a.state] - STATE_ORDER[b.state])) {
        try {
          await signerOf(k);
          if (name === 'x509-ca') checkCaCertificate(k);
          kept.push(k);
        } catch (e) {
          if (k.state === 'active') throw e;
          deps.logger.error({ key: name, kid: k.kid, state: k.state, err: e }, 'a key of the keys table is not published: the key manager does not hold it as recorded');
        }
      }
      return kept;
    };
    const cas = await published('x509-ca');
    const ca = active.get('x509-ca')!;
    const jwtKey = active.get('jwt')!;
    const jwtKeys = (await published('jwt')).map((k) => ({ kid: k.kid, publicKey: createPublicKey({ key: Buffer.from(k.publicKeySpki), format: 'der', type: 'spki' }) }));
    const certificates = cas.map((k) => k.certificate!);
    return {
      ring,
      active,
      // Each CA names its own CRL: a relying party checks a leaf against the CRL of the CA that signed it.
      x509: createX509SvidIssuer({ caCertificate: ca.key.certificate!, signer: ca.signer, crlUrl: `${deps.publicUrl}/v1/crl/${ca.key.kid}` }),
      jwt: createJwtSvidIssuer({ signer: jwtKey.signer, kid: jwtKey.key.kid, issuer: deps.publicUrl }),
      cas,
      bundlePem: certificates.map((der) => pem('CERTIFICATE', der)).join(''),
      roots: new Map(certificates.map((der) => [fingerprintOf(der), pem('CERTIFICATE', der)])),
      jwks: jwtJwks(jwtKeys),
      spiffeBundle: spiffeBundle({ caCertificates: certificates, jwtKeys, sequence: ring.sequence, refreshHintSeconds: REFRESH_HINT_SECONDS }),
    };
  };

  let current = await build(await deps.store.keys.ring());
  /** Set while the table names active keys this replica cannot load: it issues nothing then. */
  let unusable: AttestorError | undefined;
  let reading: Promise<void> | undefined;
  const refresh = async () => {
    if (unusable === undefined && (await deps.store.keys.sequence()) === current.ring.sequence) return;
    // One reading at a time; callers during it wait for it.
    reading ??= (async () => {
      const ring = await deps.store.keys.ring();
      try {
        current = await build(ring);
        unusable = undefined;
      } catch (e) {
        // Signing on with a key the table retired would put credentials outside what every
        // other replica publishes (and, once pruned, outside every CRL): fail closed instead.
        const moved = ROLES.some((role) => ring.keys.find((k) => k.name === role && k.state === 'active')?.kid !== current.active.get(role)!.key.kid);
        if (moved) unusable = new AttestorError('ERR_KEYS_UNAVAILABLE', `this verifier cannot load the active issuing keys: ${e instanceof Error ? e.message : String(e)}`);
        throw e;
      }
    })().finally(() => (reading = undefined));
    await reading;
  };
  const usable = () => {
    if (unusable) throw unusable;
    return current;
  };
  const crls = createCrls(deps.store, (key) => signerOf(key));

  return {
    keys: () => current.ring.keys,
    active: (role) => current.active.get(role)!,
    refresh,
    get bundlePem() {
      return current.bundlePem;
    },
    get caFingerprint() {
      return fingerprintOf(current.active.get('x509-ca')!.key.certificate!);
    },
    get caNotAfter() {
      return current.active.get('x509-ca')!.key.notAfter!;
    },
    unavailable: () => unusable?.message ?? null,
    async checkKeys() {
      for (const { signer } of usable().active.values()) await signer.check();
    },
    async issueX509Svid(req) {
      const { x509, active } = usable();
      return { ...(await x509.issue(req)), issuerKid: active.get('x509-ca')!.key.kid };
    },
    async issueJwtSvid(claims) {
      const { jwt, active } = usable();
      return { token: await jwt.sign(claims), kid: active.get('jwt')!.key.kid };
    },
    async crl(now, caKid) {
      // A prepared CA has signed nothing yet: it has no CRL to sign.
      const key = caKid === undefined ? current.active.get('x509-ca')!.key : current.cas.find((k) => k.kid === caKid && k.state !== 'prepared');
      return key ? crls(key, now) : null;
    },
    root: (fingerprint) => current.roots.get(fingerprint),
    get jwks() {
      return current.jwks;
    },
    get spiffeBundle() {
      return current.spiffeBundle;
    },
  };
}

/**
 * The CRL of each CA, as the store keeps it for every replica: served as stored while the
 * revoked serials are the same and half its validity has not passed; otherwise a new one is
 * made with the next CRL Number and stored, unless another replica stored one first (then
 * theirs is served). The number never goes back, across restarts and replicas. A CRL served
 * lists every revocation committed before the request: one made from an older reading (shared
 * with an earlier request, or another replica's that won the store) is made again.
 */
function createCrls(store: Store, signerOf: (key: IssuingKey) => Promise<Signer>) {
  const making = new Map<string, Promise<StoredCrl>>();
  const revokedSet = async (key: IssuingKey, now: number) => {
    const revoked = await store.attestations.revokedCertificates(now, key.kid);
    return { revoked, serialsSha256: createHash('sha256').update(revoked.map((r) => r.serial).join(',')).digest('hex') };
  };
  const make = async (key: IssuingKey, now: number): Promise<StoredCrl> => {
    const { revoked, serialsSha256 } = await revokedSet(key, now);
    const stored = await store.keys.crl(key.kid);
    if (stored && stored.serialsSha256 === serialsSha256 && now < stored.renewAt) return stored;
    // A CA's first stored CRL is numbered with the time in seconds, as CRLs were numbered
    // before the number was stored: no relying party sees it go back across the upgrade.
    const number = stored ? stored.number + 1 : Math.floor(now / 1000);
    const der = await createCrl({
      ca: issuingCa(key.certificate!, await signerOf(key)),
      number,
      thisUpdate: new Date(now - 10_000),
      nextUpdate: new Date(now + CRL_VALIDITY_MS),
      revoked: revoked.map((r) => ({ serial: r.serial, at: new Date(r.revokedAt) })),
    });
    return store.keys.saveCrl({ caKid: key.kid, number, der, serialsSha256, renewAt: now + CRL_VALIDITY_MS / 2 }, stored?.number ?? null);
  };
  const shared = (key: IssuingKey, now: number): Promise<StoredCrl> => {
    // Requests arriving while this process makes a CRL of the CA share it.
    let crl = making.get(key.kid);
    if (!crl) {
      crl = make(key, now).finally(() => making.delete(key.kid));
      making.set(key.kid, crl);
    }
    return crl;
  };
  return async (key: IssuingKey, now: number): Promise<Uint8Array> => {
    for (let attempt = 1; ; attempt++) {
      const crl = await shared(key, now);
      // Bounded: under a storm of revocations, the latest CRL after three tries.
      if (attempt === 3 || crl.serialsSha256 === (await revokedSet(key, now)).serialsSha256) return crl.der;
    }
  };
}

/**
 * Records the role's first key as active unless the table has an active key of the role: of
 * replicas starting at once, all end up with the one recorded first. The CA's comes with its
 * self-signed certificate.
 */
async function recordFirstKey(deps: IssuingKeysDeps, role: KeyRole): Promise<void> {
  if ((await deps.store.keys.list(role)).some((k) => k.state === 'active')) return;
  const signer = await deps.keys.signer(role);
  const certificate = role === 'x509-ca' ? await caCertificateFor(deps, signer) : null;
  const now = deps.now();
  await deps.store.keys.insertIfNoActive(
    { ...recordOf(role, signer, certificate, await kidOf(signer.publicKey), now), activatedAt: now },
    { actor: 'system', action: 'key.create', subject: role, details: { uri: signer.uri, software: signer.software } },
  );
}

/** The self-signed root of the trust domain over `signer`'s key, valid `caLifetimeDays` from now. */
export function caCertificateFor(deps: Pick<IssuingKeysDeps, 'trustDomain' | 'caLifetimeDays' | 'now'>, signer: Signer): Promise<Uint8Array> {
  return createCaCertificate({ signer, trustDomain: deps.trustDomain, now: new Date(deps.now()), lifetimeSeconds: deps.caLifetimeDays * 86400 });
}

/** The keys table row of a key `signer` holds, not yet active. */
export function recordOf(role: KeyRole, signer: Signer, certificate: Uint8Array | null, kid: string, now: number): IssuingKey {
  return {
    name: role,
    kid,
    uri: signer.uri,
    state: 'prepared',
    publicKeySpki: signer.spki,
    certificate,
    createdAt: now,
    notAfter: certificate ? Date.parse(new X509Certificate(certificate).validTo) : null,
    activatedAt: null,
    retiredAt: null,
  };
}

/** ERR_KEYS unless the CA key's certificate is a self-signed CA certificate of that very key. */
function checkCaCertificate(key: IssuingKey): void {
  const refuse = (why: string) => new AttestorError('ERR_KEYS', `the x509-ca key ${key.kid} in the keys table ${why}: not published`);
  if (!key.certificate) throw refuse('has no certificate');
  let cert: X509Certificate;
  try {
    cert = new X509Certificate(key.certificate);
  } catch {
    throw refuse('has a certificate that does not parse');
  }
  const spki = cert.publicKey.export({ type: 'spki', format: 'der' });
  if (!equalBytes(spki, key.publicKeySpki) || !cert.ca || !cert.checkIssued(cert) || !cert.verify(cert.publicKey)) {
    throw refuse('has a certificate that is not the self-signed root of its key');
  }
}

/** SHA-256 of a certificate's DER, lowercase hex: what agents pin. */
export function fingerprintOf(der: Uint8Array): string {
  return createHash('sha256').update(der).digest('hex');
}
