import { randomUUID } from 'node:crypto';
import { mkdir, readFile, rename, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { AttestorError } from '../errors.js';
import { objectName } from '../tpm/name.js';
import { parseTpm2bPublic } from '../tpm/public.js';
import type { PcrValues } from '../tpm/pcr-selection.js';
import type { PcrSelectionSpec } from './tpm-marshal.js';
import { akTemplate, ekTemplate, identityKeyTemplate, srkTemplate, type KeyType } from './tpm-templates.js';
import { SerialQueue, TssError, openTpm, type Attestation, type Handle, type NodeTss, type Tpm } from './tss.js';

/** NV indexes of the EK certificates (TCG EK Credential Profile 2.0 §2.2.1.5). */
export const EK_CERT_INDEX: Readonly<Record<KeyType, number>> = { rsa: 0x01c00002, ecc: 0x01c0000a };

export interface TpmSessionOptions {
  /** TCTI string: `device:/dev/tpmrm0`, `swtpm:host=127.0.0.1,port=2321`, ... */
  readonly tcti: string;
  /** The agent's state directory: the AK and identity key blobs live here (created if missing). */
  readonly stateDir: string;
  /** Which EK to use; 'auto' (default) takes RSA if its certificate is present, else ECC if its certificate is, else RSA. */
  readonly ekType?: KeyType | 'auto';
  /** Type of the AK when it is first created (default ECC P-256); an existing AK is kept as it is. */
  readonly akType?: KeyType;
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

/** A key kept in the state directory as tpm2-tools would (`tpm2_load -u NAME.pub -r NAME.priv`). */
interface KeyBlobs {
  readonly private: Uint8Array;
  readonly public: Uint8Array;
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
 * The AK is created once and kept as blobs (ak.pub / ak.priv) in the state directory: the
 * verifier enrolls it, and it must never change for this TPM. If the blobs no longer load
 * (the TPM was cleared), open() fails with ERR_TPM_STATE rather than making a new AK.
 */
export class TpmSession {
  private readonly queue = new SerialQueue();
  private identity: Promise<{ handle: Handle; key: TpmKey }> | undefined;

  private constructor(
    /** The underlying TPM connection, for operations the session does not wrap. */
    readonly tpm: Tpm,
    private readonly stateDir: string,
    readonly ek: EndorsementKey,
    readonly ak: TpmKey,
    private readonly akHandle: Handle,
  ) {}

  static async open(opts: TpmSessionOptions): Promise<TpmSession> {
    const tpm = await openTpm(opts.tcti, opts.addon);
    try {
      await mkdir(opts.stateDir, { recursive: true, mode: 0o700 });
      const ek = await readEndorsementKey(tpm, opts.ekType ?? 'auto');
      const akType = opts.akType ?? 'ecc';
      const { handle, key } = await loadOrCreate(tpm, opts.stateDir, 'ak', akTemplate(akType));
      return new TpmSession(tpm, opts.stateDir, ek, key, handle);
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
    return this.queue.run(async () => {
      const ek = await this.tpm.createPrimary('endorsement', ekTemplate(this.ek.type));
      try {
        return await this.tpm.activateCredential(this.akHandle, ek.handle, credentialBlob, encryptedSecret);
      } finally {
        await this.tpm.flushContext(ek.handle);
      }
    });
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
  const ek = await tpm.createPrimary('endorsement', ekTemplate(type));
  await tpm.flushContext(ek.handle);
  return { type, public: ek.public, certificate };
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
 * Loads the key `name` from the state directory under the SRK, creating and saving it first
 * if it is not there. The SRK is flushed again: only the key stays loaded.
 */
async function loadOrCreate(tpm: Tpm, stateDir: string, name: string, template: Uint8Array): Promise<{ handle: Handle; key: TpmKey }> {
  const srk = await tpm.createPrimary('owner', srkTemplate('ecc'));
  try {
    let blobs = await readBlobs(stateDir, name);
    if (blobs === null) {
      blobs = await tpm.create(srk.handle, template);
      await saveBlobs(stateDir, name, blobs);
    }
    const key = keyOf(stateDir, name, blobs.public);
    let handle: Handle;
    try {
      handle = await tpm.load(srk.handle, blobs.private, blobs.public);
    } catch (e) {
      if (!(e instanceof TssError) || e.code !== 'ERR_TSS_COMMAND') throw e;
      throw stateError(stateDir, name, `does not load in this TPM (${e.rcText}); was the TPM cleared or the directory copied from another host?`, e);
    }
    return { handle, key };
  } finally {
    await tpm.flushContext(srk.handle);
  }
}

function keyOf(stateDir: string, name: string, pub: Uint8Array): TpmKey {
  try {
    return { public: pub, name: objectName(parseTpm2bPublic(pub)) };
  } catch (e) {
    throw stateError(stateDir, name, `has a ${name}.pub that is not a TPM2B_PUBLIC`, e);
  }
}

async function readBlobs(stateDir: string, name: string): Promise<KeyBlobs | null> {
  const [priv, pub] = await Promise.all([readIfExists(join(stateDir, `${name}.priv`)), readIfExists(join(stateDir, `${name}.pub`))]);
  if (priv === null && pub === null) return null;
  if (priv === null || pub === null) throw stateError(stateDir, name, `has only one of ${name}.priv and ${name}.pub`);
  return { private: priv, public: pub };
}

/** Writes both blobs (private first, so a reader never sees a public without its private), each atomically. */
async function saveBlobs(stateDir: string, name: string, blobs: KeyBlobs): Promise<void> {
  for (const [file, bytes] of [
    [`${name}.priv`, blobs.private],
    [`${name}.pub`, blobs.public],
  ] as const) {
    const tmp = join(stateDir, `.${file}.${randomUUID()}`);
    await writeFile(tmp, bytes, { mode: 0o600 });
    await rename(tmp, join(stateDir, file));
  }
}

async function readIfExists(path: string): Promise<Uint8Array | null> {
  try {
    return await readFile(path);
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'ENOENT') return null;
    throw e;
  }
}

function stateError(stateDir: string, name: string, problem: string, cause?: unknown): AttestorError {
  return new AttestorError('ERR_TPM_STATE', `TPM key "${name}" in ${stateDir} ${problem}`, cause === undefined ? undefined : { cause });
}
