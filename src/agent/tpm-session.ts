import { EK_CERT_NV } from '../tpm/constants.js';
import { objectName } from '../tpm/name.js';
import { parseTpm2bPublic } from '../tpm/public.js';
import type { PcrValues } from '../tpm/pcr-selection.js';
import { SerialQueue } from '../serial-queue.js';
import { StateDir } from './state-dir.js';
import type { PcrSelectionSpec } from './tpm-marshal.js';
import { akTemplate, ekTemplate, identityKeyTemplate, srkTemplate, type KeyType } from './tpm-templates.js';
import { TssError, formatOneError, loadNodeTss, openTpm, type Attestation, type Handle, type Hierarchy, type NodeTss, type Tpm } from './tss.js';

/** The EK certificate index of each EK type the session re-derives (templates L-1 and L-2). */
export const EK_CERT_INDEX: Readonly<Record<KeyType, number>> = { rsa: EK_CERT_NV.rsa2048, ecc: EK_CERT_NV.eccP256 };

/**
 * TPM_RC format-one errors (Part 2 §6.6.3) that TPM2_Load returns for blobs that are not this
 * TPM's (another TPM or a cleared one: the SRK differs) or that were damaged: TPM_RC_VALUE,
 * TPM_RC_SIZE, TPM_RC_INTEGRITY, TPM_RC_BINDING on one of its parameters. Anything else (a
 * warning such as TPM_RC_OBJECT_MEMORY, a failure) says nothing about the blobs.
 */
const FOREIGN_BLOB_ERRORS: ReadonlySet<number> = new Set([0x004, 0x015, 0x01f, 0x025]);

export interface TpmSessionOptions {
  /** TCTI string: `device:/dev/tpmrm0`, `swtpm:host=127.0.0.1,port=2321`, ... */
  readonly tcti: string;
  /**
   * The agent's state directory: the AK and identity key blobs live here (created 0700 if
   * missing; one the group or others may write is refused). Keys are created in it under an
   * exclusive lock, so concurrent agents share one AK.
   */
  readonly stateDir: string;
  /** Which EK to use; 'auto' (default) takes RSA if its certificate is present, else ECC if its certificate is, else RSA. */
  readonly ekType?: KeyType | 'auto';
  /** Type of the AK when it is first created (default ECC P-256); an existing AK is kept as it is. */
  readonly akType?: KeyType;
  /** How long each exchange with the TPM may take (default: openTpm's). */
  readonly timeoutMs?: number;
  /** Another build of the addon (tests); default: loadNodeTss(). */
  readonly addon?: NodeTss;
}

export interface EndorsementKey {
  readonly type: KeyType;
  /** Marshalled TPM2B_PUBLIC. */
  readonly public: Uint8Array;
  /** DER X.509 EK certificate from its TCG NV index, null when the TPM has none. */
  readonly certificate: Uint8Array | null;
}

export interface TpmKey {
  /** Marshalled TPM2B_PUBLIC (tpm2-tools' `-u` file format). */
  readonly public: Uint8Array;
  /** The object's Name (nameAlg || H(TPMT_PUBLIC)). */
  readonly name: Uint8Array;
}

/**
 * The agent's TPM: the EK (and its certificate) identifies the TPM, the AK quotes and
 * certifies, the identity key is what credentials are issued to.
 *
 * Key hierarchy: the AK and the identity key are children of the SRK (owner hierarchy, TCG
 * Provisioning Guidance template, ECC P-256), not of the EK. The SRK is re-derived with
 * TPM2_CreatePrimary whenever a child is loaded, so nothing needs to be persisted in the
 * TPM, and loading needs no policy session; the EK is only used (and only needs its
 * PolicySecret session) for TPM2_ActivateCredential. Only the AK stays loaded, plus the
 * identity key once used, so a TPM without a resource manager (three object slots) suffices.
 *
 * The AK is created once and kept as blobs (ak.pub / ak.priv) in the state directory
 * (state-dir.ts: created under its lock, never replaced): the verifier enrolls it, and it must
 * never change for this TPM. If the blobs are not this TPM's (it was cleared, or the directory
 * comes from another host), open() fails with ERR_TPM_STATE rather than making a new AK.
 */
export class TpmSession {
  private readonly queue = new SerialQueue();
  private identity: Promise<{ handle: Handle; key: TpmKey }> | undefined;

  private constructor(
    /** The underlying TPM connection, for operations the session does not wrap. */
    readonly tpm: Tpm,
    private readonly stateDir: StateDir,
    readonly ek: EndorsementKey,
    readonly ak: TpmKey,
    private readonly akHandle: Handle,
  ) {}

  static async open(opts: TpmSessionOptions): Promise<TpmSession> {
    const addon = opts.addon ?? loadNodeTss();
    const stateDir = await StateDir.open(opts.stateDir, addon);
    const tpm = await openTpm(opts.tcti, { addon, timeoutMs: opts.timeoutMs });
    try {
      const ek = await readEndorsementKey(tpm, opts.ekType ?? 'auto');
      const akType = opts.akType ?? 'ecc';
      const { handle, key } = await loadOrCreate(tpm, stateDir, 'ak', akTemplate(akType));
      return new TpmSession(tpm, stateDir, ek, key, handle);
    } catch (e) {
      await tpm.close();
      throw e;
    }
  }

  /** TPM2_Quote of `selection` by the AK; its qualifying data is `qualifyingData` (at most 64 bytes). */
  quote(selection: PcrSelectionSpec, qualifyingData: Uint8Array): Promise<Attestation> {
    return this.tpm.quote(this.akHandle, qualifyingData, selection);
  }

  /** The current values of `selection` (unsigned: a quote is what proves them). */
  async pcrRead(selection: PcrSelectionSpec): Promise<PcrValues> {
    return (await this.tpm.pcrRead(selection)).values;
  }

  /** The identity key (ECC P-256, fixedTPM, under the SRK): created on first use and kept in the state directory. */
  async identityKey(): Promise<TpmKey> {
    return (await this.loadIdentity()).key;
  }

  /** TPM2_Certify of the identity key by the AK over `qualifyingData`. */
  async certifyIdentityKey(qualifyingData: Uint8Array): Promise<Attestation> {
    const { handle } = await this.loadIdentity();
    return this.tpm.certify(handle, this.akHandle, qualifyingData);
  }

  /** TPM2_Certify by the AK of another object loaded in this TPM (`handle`), over `qualifyingData`. */
  certifyObject(handle: Handle, qualifyingData: Uint8Array): Promise<Attestation> {
    return this.tpm.certify(handle, this.akHandle, qualifyingData);
  }

  /** Signs a SHA-256 digest with the identity key: the marshalled TPMT_SIGNATURE (ECDSA). */
  async signWithIdentityKey(digest: Uint8Array): Promise<Uint8Array> {
    const { handle } = await this.loadIdentity();
    return this.tpm.sign(handle, digest);
  }

  /**
   * TPM2_ActivateCredential of a MakeCredential made by the verifier for this EK and the AK's
   * Name (marshalled TPM2B_ID_OBJECT and TPM2B_ENCRYPTED_SECRET): the recovered secret.
   */
  activate(credentialBlob: Uint8Array, encryptedSecret: Uint8Array): Promise<Uint8Array> {
    return this.queue.run(() =>
      withPrimary(this.tpm, 'endorsement', ekTemplate(this.ek.type), (ek) =>
        this.tpm.activateCredential(this.akHandle, ek, credentialBlob, encryptedSecret),
      ),
    );
  }

  /** Flushes the loaded keys and closes the TPM connection. */
  async close(): Promise<void> {
    await this.queue.run(() => this.tpm.close());
  }

  private loadIdentity(): Promise<{ handle: Handle; key: TpmKey }> {
    if (!this.identity) {
      const loading = this.queue.run(() => loadOrCreate(this.tpm, this.stateDir, 'identity', identityKeyTemplate()));
      // A failed attempt is not kept: the next call tries again.
      loading.catch(() => {
        if (this.identity === loading) this.identity = undefined;
      });
      this.identity = loading;
    }
    return this.identity;
  }
}

/** The EK of the requested type, re-derived from its template, and its certificate if the TPM has one. */
async function readEndorsementKey(tpm: Tpm, wanted: KeyType | 'auto'): Promise<EndorsementKey> {
  let type: KeyType = wanted === 'auto' ? 'rsa' : wanted;
  let certificate = await readEkCertificate(tpm, type);
  if (wanted === 'auto' && certificate === null) {
    const ecc = await readEkCertificate(tpm, 'ecc');
    if (ecc !== null) [type, certificate] = ['ecc', ecc];
  }
  return { type, public: await deriveEk(tpm, type), certificate };
}

/**
 * The EK this TPM derives from the default template of `type` (L-1 or L-2), as a marshalled
 * TPM2B_PUBLIC: the same key every time, so it is re-created rather than kept. Flushed again.
 */
export function deriveEk(tpm: Tpm, type: KeyType): Promise<Uint8Array> {
  return withPrimary(tpm, 'endorsement', ekTemplate(type), async (_, pub) => pub);
}

async function readEkCertificate(tpm: Tpm, type: KeyType): Promise<Uint8Array | null> {
  try {
    return await tpm.nvRead(EK_CERT_INDEX[type]);
  } catch (e) {
    // No such index: this TPM has no certificate for that EK.
    if (e instanceof TssError && e.code === 'ERR_TSS_HANDLE') return null;
    throw e;
  }
}

/**
 * Runs `use` with a primary key created for it, then flushes the key. When `use` fails, that
 * failure is the one reported, whatever the flush does.
 */
async function withPrimary<T>(
  tpm: Tpm,
  hierarchy: Hierarchy,
  template: Uint8Array,
  use: (handle: Handle, pub: Uint8Array) => Promise<T>,
): Promise<T> {
  const key = await tpm.createPrimary(hierarchy, template);
  let result: T;
  try {
    result = await use(key.handle, key.public);
  } catch (e) {
    await tpm.flushContext(key.handle).catch(() => undefined);
    throw e;
  }
  await tpm.flushContext(key.handle);
  return result;
}

/**
 * Loads the key `name` from the state directory under the SRK, creating and saving it first
 * if it is not there, all under the directory's lock: blobs are read once the lock is held, so
 * of two agents starting at once the second loads the key the first created. The SRK is
 * flushed again: only the key stays loaded.
 */
function loadOrCreate(tpm: Tpm, stateDir: StateDir, name: string, template: Uint8Array): Promise<{ handle: Handle; key: TpmKey }> {
  return stateDir.withLock(() =>
    withPrimary(tpm, 'owner', srkTemplate('ecc'), async (srk) => {
      let blobs = await stateDir.readKey(name);
      if (blobs === null) {
        blobs = await tpm.create(srk, template);
        await stateDir.createKey(name, blobs);
      }
      const key = keyOf(stateDir, name, blobs.public);
      try {
        return { handle: await tpm.load(srk, blobs.private, blobs.public), key };
      } catch (e) {
        if (!isForeignBlob(e)) throw e;
        throw stateDir.keyError(name, `does not load in this TPM (${e.rcText}); was the TPM cleared or the directory copied from another host?`, e);
      }
    }),
  );
}

/** A TPM2_Load failure that means the blobs are not this TPM's (see FOREIGN_BLOB_ERRORS). */
function isForeignBlob(e: unknown): e is TssError {
  if (!(e instanceof TssError)) return false;
  const rc = formatOneError(e.rc);
  return rc !== undefined && rc.parameter && FOREIGN_BLOB_ERRORS.has(rc.error);
}

function keyOf(stateDir: StateDir, name: string, pub: Uint8Array): TpmKey {
  try {
    return { public: pub, name: objectName(parseTpm2bPublic(pub)) };
  } catch (e) {
    throw stateDir.keyError(name, `has a ${name}.pub that is not a TPM2B_PUBLIC`, e);
  }
}
