import { createRequire } from 'node:module';
import { fileURLToPath } from 'node:url';
import { AttestorError, type ErrorCode } from '../errors.js';
import { parseCapabilityData, TPM_CAP, TPM_PT } from '../tpm/capability.js';
import { parseNvPublic, type NvPublic } from '../tpm/nv-public.js';
import { DIGESTS_MAX, pcrValuesOf } from '../tpm/pcr-read.js';
import type { PcrBankSelection, PcrValues } from '../tpm/pcr-selection.js';
import { SerialQueue } from '../serial-queue.js';
import {
  canonicalPcrSelection,
  marshalDigestValues,
  marshalPcrSelection,
  marshalSigScheme,
  remainingSelection,
  type PcrSelectionSpec,
  type SigScheme,
} from './tpm-marshal.js';

/*
 * The agent's door to its TPM: the node-tss addon (native/, tpm2-tss ESAPI), loaded lazily so
 * that nothing but the agent needs libtss2 or a compiler. The verifier never imports this.
 */

/** The addon as `npm run build:native` leaves it; src/agent and dist/agent are both two levels below the package root. */
const ADDON_URL = new URL('../../native/build/Release/node_tss.node', import.meta.url);

/** How long one exchange with the TPM may take by default before the TPM counts as unreachable. */
const DEFAULT_TPM_TIMEOUT_MS = 30_000;

/** A failure reported by tpm2-tss: its return code, the decoded text and the TSS function that returned it. */
export class TssError extends AttestorError {
  constructor(
    code: ErrorCode,
    message: string,
    /** TSS2_RC: layer in bits 16-23 (0 = the TPM itself), then the layer's code. */
    readonly rc: number,
    /** Tss2_RC_Decode(rc), e.g. "tpm:handle(1):the handle is not correct for the use". */
    readonly rcText: string,
    /** The TSS function that failed, e.g. "Esys_Quote". */
    readonly command: string,
    /** The TPM did not answer within the Tpm's timeout (code ERR_TSS_UNREACHABLE). */
    readonly timedOut = false,
  ) {
    super(code, message);
  }
}

/** ESYS_TR: an object's handle inside one Tpm (one ESYS context); meaningless in another. */
export type Handle = number;

export type Hierarchy = 'owner' | 'endorsement' | 'platform' | 'null';

/** The raw addon (native/src/tpm.cc): marshalled TPM structures in and out, one call at a time. */
export interface NativeTpm {
  /** Every exchange with the TPM must complete within `timeoutMs`; after one that does not, the context only fails. */
  open(tcti: string, timeoutMs: number): Promise<object>;
  close(): void;
  getCapability(capability: number, property: number, count: number): Promise<{ moreData: number; data: Buffer }>;
  getRandom(bytesRequested: number): Promise<{ bytes: Buffer }>;
  fromTpmHandle(tpmHandle: number): Promise<{ handle: Handle }>;
  readPublic(handle: Handle): Promise<{ public: Buffer; name: Buffer }>;
  nvReadPublic(nvIndex: number): Promise<{ nvPublic: Buffer; name: Buffer }>;
  nvRead(nvIndex: number, auth: Hierarchy | 'index', size: number, offset: number): Promise<{ data: Buffer }>;
  createPrimary(hierarchy: Hierarchy, template: Uint8Array): Promise<{ handle: Handle; public: Buffer }>;
  create(parent: Handle, template: Uint8Array): Promise<{ private: Buffer; public: Buffer }>;
  load(parent: Handle, priv: Uint8Array, pub: Uint8Array): Promise<{ handle: Handle }>;
  evictControl(handle: Handle, persistentHandle: number): Promise<{ handle: Handle }>;
  flushContext(handle: Handle): Promise<object>;
  pcrRead(selection: Uint8Array): Promise<{ updateCounter: number; selection: Buffer; digests: Buffer }>;
  pcrExtend(pcr: number, digests: Uint8Array): Promise<object>;
  quote(signer: Handle, qualifyingData: Uint8Array, selection: Uint8Array, scheme: Uint8Array): Promise<Attestation>;
  certify(object: Handle, signer: Handle, qualifyingData: Uint8Array, scheme: Uint8Array): Promise<Attestation>;
  sign(key: Handle, digest: Uint8Array, scheme: Uint8Array): Promise<{ signature: Buffer }>;
  activateCredential(activate: Handle, ek: Handle, credentialBlob: Uint8Array, encryptedSecret: Uint8Array): Promise<{ secret: Buffer }>;
}

export interface NodeTss {
  NativeTpm: new () => NativeTpm;
  /**
   * flock(2) LOCK_EX|LOCK_NB on an open file (Node.js has no file locks): true once this open
   * file description holds the lock, false while another holds it. Closing the descriptor, or
   * the process ending, releases it.
   */
  lockFile(fd: number): boolean;
}

/** What TPM2_Quote and TPM2_Certify return. */
export interface Attestation {
  /** The marshalled TPMS_ATTEST the TPM signed (the inside of TPM2B_ATTEST; tpm2-tools' `-m` file). */
  readonly attest: Uint8Array;
  /** The marshalled TPMT_SIGNATURE (tpm2-tools' `-s` file). */
  readonly signature: Uint8Array;
}

let loaded: NodeTss | undefined;

/**
 * Loads the addon (once). When it is missing or cannot load (libtss2 absent), the error says
 * how to build it; `url` is only for pointing at another build.
 *
 * tpm2-tss writes its own log of every failure to stderr, which the typed error already
 * reports: unless the user set TSS2_LOG (e.g. all+debug to debug), it is turned off here, for
 * the CLI and library users alike.
 */
export function loadNodeTss(url: URL = ADDON_URL): NodeTss {
  if (url === ADDON_URL && loaded) return loaded;
  process.env.TSS2_LOG ??= 'all+none';
  const path = fileURLToPath(url);
  let mod: NodeTss;
  try {
    mod = createRequire(import.meta.url)(path) as NodeTss;
  } catch (e) {
    throw new AttestorError(
      'ERR_TSS_UNAVAILABLE',
      `the TPM addon node-tss cannot be loaded from ${path} (${(e as Error).message.split('\n')[0]}). ` +
        'Build it: apt-get install libtss2-dev pkg-config, then npm run build:native',
      { cause: e },
    );
  }
  if (url === ADDON_URL) loaded = mod;
  return mod;
}

export interface OpenTpmOptions {
  /**
   * How long each exchange with the TPM may take (default 30 s, far above any TPM command).
   * Past it the call rejects with ERR_TSS_UNREACHABLE and the Tpm is given up: later calls
   * fail at once, and the TPM has to be opened again.
   */
  readonly timeoutMs?: number;
  /** Another build of the addon (tests); default: loadNodeTss(). */
  readonly addon?: NodeTss;
}

/** Opens a TPM through a TCTI string as tpm2-tools takes it: `device:/dev/tpmrm0`, `swtpm:host=127.0.0.1,port=2321`, `mssim:...`. */
export async function openTpm(tcti: string, opts: OpenTpmOptions = {}): Promise<Tpm> {
  const native = new (opts.addon ?? loadNodeTss()).NativeTpm();
  const timeoutMs = opts.timeoutMs ?? DEFAULT_TPM_TIMEOUT_MS;
  try {
    await native.open(tcti, timeoutMs);
  } catch (e) {
    throw toTssError(e, `TPM at "${tcti}"`, timeoutMs);
  }
  return new Tpm(native, tcti, timeoutMs);
}

/** Default TPM_PT_NV_BUFFER_MAX when a TPM does not report it (PC Client TPMs have at least 1024). */
const NV_BUFFER_DEFAULT = 1024;
/** TPM2_GetRandom returns at most one digest per call. */
const RANDOM_CHUNK = 32;

/**
 * One connection to a TPM (one ESYS context). Calls are queued and run one at a time, each on
 * a worker thread; results are marshalled TPM structures for src/tpm/ to parse. close()
 * flushes the transient objects this Tpm loaded (a TPM without a resource manager, such as
 * swtpm, would keep them) and frees the context; if close() is never called, the finalizer
 * frees the context. A TPM that does not answer within the timeout gives ERR_TSS_UNREACHABLE
 * and the Tpm is given up (see OpenTpmOptions.timeoutMs).
 */
export class Tpm {
  private readonly queue = new SerialQueue();
  private closed = false;
  /** Set when the TPM missed a deadline: the connection is given up and every call fails with it. */
  private gaveUp: TssError | undefined;
  /**
   * Transient objects created or loaded here and not flushed yet. Kept up to date inside the
   * queued calls, so a close() queued behind a createPrimary() or load() flushes its object.
   */
  private readonly transients = new Set<Handle>();
  private nvBufferMax: number | undefined;

  constructor(
    private readonly native: NativeTpm,
    /** The TCTI string it was opened with, for messages. */
    readonly tcti: string,
    /** The timeout it was opened with, for messages. */
    private readonly timeoutMs = DEFAULT_TPM_TIMEOUT_MS,
  ) {}

  /**
   * Runs `call` after every call queued before it; failures become TssError. An operation of
   * several TPM commands is one `call`, so concurrent callers complete in the order they called.
   */
  private run<T>(call: (native: NativeTpm) => Promise<T> | T): Promise<T> {
    const result = this.queue.run(() => {
      if (this.closed) throw new AttestorError('ERR_TSS_CLOSED', `TPM at "${this.tcti}" is closed`);
      if (this.gaveUp) {
        const { rc, rcText, command } = this.gaveUp;
        const message = `TPM at "${this.tcti}" was given up when ${command} got no answer within ${this.timeoutMs} ms; open the TPM again`;
        throw new TssError('ERR_TSS_UNREACHABLE', message, rc, rcText, command, true);
      }
      return call(this.native);
    });
    return result.catch((e: unknown) => {
      const error = toTssError(e, `TPM at "${this.tcti}"`, this.timeoutMs);
      if (error instanceof TssError && error.timedOut) this.gaveUp ??= error;
      throw error;
    });
  }

  /** TPM2_GetCapability (Part 3 §30.2): the marshalled TPMS_CAPABILITY_DATA and whether more follows. */
  getCapability(capability: number, property: number, count: number): Promise<{ moreData: boolean; data: Uint8Array }> {
    return this.run(async (n) => {
      const r = await n.getCapability(capability, property, count);
      return { moreData: r.moreData === 1, data: r.data };
    });
  }

  /** TPM properties (TPM_PT_*) from `first` on: property -> value. */
  async getProperties(first: number, count: number): Promise<Map<number, number>> {
    const c = parseCapabilityData((await this.getCapability(TPM_CAP.TPM_PROPERTIES, first, count)).data);
    return c.capability === TPM_CAP.TPM_PROPERTIES ? c.properties : new Map();
  }

  /** The PCR banks the TPM has allocated, with the PCRs each implements (banks it knows but has not allocated are left out). */
  async getPcrBanks(): Promise<PcrBankSelection[]> {
    const c = parseCapabilityData((await this.getCapability(TPM_CAP.PCRS, 0, 1)).data);
    return c.capability === TPM_CAP.PCRS ? c.banks.filter((b) => b.pcrs.length > 0) : [];
  }

  /**
   * Handles in use of the type of `first` (NV indexes 0x01xxxxxx, persistent objects
   * 0x81xxxxxx, ...) from `first` on, asking `perCall` at a time until the TPM has no more.
   */
  async getHandles(first: number, perCall = 256): Promise<number[]> {
    const handles: number[] = [];
    for (let from = first; ; ) {
      const { moreData, data } = await this.getCapability(TPM_CAP.HANDLES, from, perCall);
      const c = parseCapabilityData(data);
      const page = c.capability === TPM_CAP.HANDLES ? c.handles : [];
      const last = page.at(-1);
      // Each page must start past the previous one, or a confused TPM would keep us looping.
      if (page.some((h, i) => h < from || (i > 0 && h <= page[i - 1]!))) {
        throw new AttestorError('ERR_TSS_COMMAND', `TPM at "${this.tcti}": TPM2_GetCapability returned handles out of order`);
      }
      handles.push(...page);
      if (!moreData || last === undefined || last === 0xffffffff) return handles;
      from = last + 1;
    }
  }

  /** `size` random bytes from the TPM's RNG (TPM2_GetRandom, several calls if needed). */
  getRandom(size: number): Promise<Uint8Array> {
    return this.run(async (n) => {
      const parts: Uint8Array[] = [];
      for (let got = 0; got < size; ) {
        const { bytes } = await n.getRandom(Math.min(RANDOM_CHUNK, size - got));
        // A TPM answers at least one byte; one that does not would loop forever.
        if (bytes.length === 0) throw new AttestorError('ERR_TSS_COMMAND', `TPM at "${this.tcti}": TPM2_GetRandom returned no bytes`);
        parts.push(bytes);
        got += bytes.length;
      }
      return Buffer.concat(parts).subarray(0, size);
    });
  }

  /** The handle of an existing persistent object or NV index (0x81xxxxxx, 0x01xxxxxx). */
  async fromTpmHandle(tpmHandle: number): Promise<Handle> {
    return (await this.run((n) => n.fromTpmHandle(tpmHandle))).handle;
  }

  /** TPM2_ReadPublic: the marshalled TPM2B_PUBLIC and the object's Name. */
  readPublic(handle: Handle): Promise<{ public: Uint8Array; name: Uint8Array }> {
    return this.run((n) => n.readPublic(handle));
  }

  /** TPM2_NV_ReadPublic: the marshalled TPM2B_NV_PUBLIC, parsed, and the index's Name. */
  async nvReadPublic(nvIndex: number): Promise<NvPublic & { bytes: Uint8Array; name: Uint8Array }> {
    const { nvPublic, name } = await this.run((n) => n.nvReadPublic(nvIndex));
    return { ...parseNvPublic(nvPublic), bytes: nvPublic, name };
  }

  /**
   * TPM2_NV_Read of a whole index (or `size` bytes from `offset`), in chunks of the TPM's
   * TPM_PT_NV_BUFFER_MAX. Authorized by the index's own (empty) authValue by default, as
   * tpm2_nvread does and EK certificate indexes allow (authread) even when the owner
   * hierarchy has a password; or by a hierarchy.
   */
  nvRead(nvIndex: number, opts: { size?: number; offset?: number; auth?: Hierarchy | 'index' } = {}): Promise<Uint8Array> {
    return this.run(async (n) => {
      const offset = opts.offset ?? 0;
      const size = opts.size ?? parseNvPublic((await n.nvReadPublic(nvIndex)).nvPublic).dataSize - offset;
      const chunk = await this.nvChunkSize(n);
      const parts: Uint8Array[] = [];
      for (let at = 0; at < size; at += chunk) {
        parts.push((await n.nvRead(nvIndex, opts.auth ?? 'index', Math.min(chunk, size - at), offset + at)).data);
      }
      return Buffer.concat(parts);
    });
  }

  private async nvChunkSize(n: NativeTpm): Promise<number> {
    if (this.nvBufferMax === undefined) {
      const c = parseCapabilityData((await n.getCapability(TPM_CAP.TPM_PROPERTIES, TPM_PT.NV_BUFFER_MAX, 1)).data);
      const reported = c.capability === TPM_CAP.TPM_PROPERTIES ? c.properties.get(TPM_PT.NV_BUFFER_MAX) : undefined;
      this.nvBufferMax = reported ?? NV_BUFFER_DEFAULT;
    }
    return this.nvBufferMax;
  }

  /** TPM2_CreatePrimary from a marshalled TPM2B_PUBLIC template (see tpm-templates.ts); empty hierarchy auth. */
  createPrimary(hierarchy: Hierarchy, template: Uint8Array): Promise<{ handle: Handle; public: Uint8Array }> {
    return this.run(async (n) => {
      const r = await n.createPrimary(hierarchy, template);
      this.transients.add(r.handle);
      return r;
    });
  }

  /** TPM2_Create under `parent`: the marshalled TPM2B_PRIVATE (wrapped by the parent) and TPM2B_PUBLIC. */
  create(parent: Handle, template: Uint8Array): Promise<{ private: Uint8Array; public: Uint8Array }> {
    return this.run((n) => n.create(parent, template));
  }

  /** TPM2_Load of what create() returned. */
  load(parent: Handle, priv: Uint8Array, pub: Uint8Array): Promise<Handle> {
    return this.run(async (n) => {
      const { handle } = await n.load(parent, priv, pub);
      this.transients.add(handle);
      return handle;
    });
  }

  /**
   * TPM2_EvictControl (owner auth): makes a persistent copy of a transient object at
   * `persistentHandle` and returns its handle; given a persistent object, evicts it.
   */
  async evictControl(handle: Handle, persistentHandle: number): Promise<Handle> {
    return (await this.run((n) => n.evictControl(handle, persistentHandle))).handle;
  }

  /** TPM2_FlushContext of a transient object or session. */
  async flushContext(handle: Handle): Promise<void> {
    await this.run(async (n) => {
      await n.flushContext(handle);
      this.transients.delete(handle);
    });
  }

  /**
   * TPM2_PCR_Read of a selection, repeated until every implemented PCR asked for is read (the
   * TPM answers at most eight a call). `values` is keyed by tpm2-tools' bank names ("sha256"
   * whether asked as "sha256" or "SHA256"); PCRs the TPM does not have are absent from it.
   * `updateCounter` is that of the last read.
   */
  pcrRead(selection: PcrSelectionSpec): Promise<{ updateCounter: number; values: PcrValues }> {
    return this.run(async (n) => {
      const wanted = canonicalPcrSelection(selection);
      const total = Object.values(wanted).reduce((sum, pcrs) => sum + pcrs.length, 0);
      // A TPM reads up to eight PCRs a call, and nothing of a bank it has not allocated, which
      // one more call finds out: more calls than that mean a TPM that does not progress.
      const maxCalls = Math.ceil(total / DIGESTS_MAX) + 1;
      const values: Record<string, Record<number, Uint8Array>> = {};
      let updateCounter = 0;
      let rest = wanted;
      for (let calls = 0; ; calls++) {
        if (calls === maxCalls) {
          throw new AttestorError('ERR_TSS_COMMAND', `TPM at "${this.tcti}": TPM2_PCR_Read still had PCRs to read after ${maxCalls} calls for ${total} PCRs`);
        }
        const r = await n.pcrRead(marshalPcrSelection(rest));
        updateCounter = r.updateCounter;
        let fresh = 0;
        for (const [bank, pcrs] of Object.entries(pcrValuesOf(r.selection, r.digests))) {
          for (const [pcr, digest] of Object.entries(pcrs)) {
            const index = Number(pcr);
            if (!rest[bank]?.includes(index)) continue;
            (values[bank] ??= {})[index] = digest;
            fresh++;
          }
        }
        rest = remainingSelection(wanted, values);
        if (fresh === 0 || Object.keys(rest).length === 0) break;
      }
      return { updateCounter, values };
    });
  }

  /** TPM2_PCR_Extend of one PCR in each bank given: { sha256: digest, sha1: digest }. */
  async pcrExtend(pcr: number, digests: { readonly [bank: string]: Uint8Array }): Promise<void> {
    await this.run((n) => n.pcrExtend(pcr, marshalDigestValues(digests)));
  }

  /** TPM2_Quote of `selection` by `signer` (the AK) over `qualifyingData` (at most 64 bytes). */
  quote(signer: Handle, qualifyingData: Uint8Array, selection: PcrSelectionSpec, scheme?: SigScheme): Promise<Attestation> {
    return this.run((n) => n.quote(signer, qualifyingData, marshalPcrSelection(selection), marshalSigScheme(scheme)));
  }

  /** TPM2_Certify: `signer` (the AK) vouches that `object` is loaded in this TPM, with its Name. */
  certify(object: Handle, signer: Handle, qualifyingData: Uint8Array, scheme?: SigScheme): Promise<Attestation> {
    return this.run((n) => n.certify(object, signer, qualifyingData, marshalSigScheme(scheme)));
  }

  /** TPM2_Sign of a digest by an unrestricted signing key: the marshalled TPMT_SIGNATURE. */
  async sign(key: Handle, digest: Uint8Array, scheme?: SigScheme): Promise<Uint8Array> {
    return (await this.run((n) => n.sign(key, digest, marshalSigScheme(scheme)))).signature;
  }

  /**
   * TPM2_ActivateCredential: recovers the secret of a MakeCredential blob (marshalled
   * TPM2B_ID_OBJECT and TPM2B_ENCRYPTED_SECRET) made for `ek` and the Name of `activate`.
   * The EK is authorized by a policy session satisfying its PolicySecret(endorsement).
   */
  async activateCredential(activate: Handle, ek: Handle, credentialBlob: Uint8Array, encryptedSecret: Uint8Array): Promise<Uint8Array> {
    return (await this.run((n) => n.activateCredential(activate, ek, credentialBlob, encryptedSecret))).secret;
  }

  /** Flushes this Tpm's transient objects (unless the TPM was given up), then frees the context. Idempotent. */
  async close(): Promise<void> {
    await this.queue.run(async () => {
      if (this.closed) return;
      this.closed = true;
      for (const handle of this.gaveUp ? [] : this.transients) {
        // Best effort: a TPM that went away has no objects left to flush.
        await this.native.flushContext(handle).catch(() => undefined);
      }
      this.transients.clear();
      this.native.close();
    });
  }
}

/** TSS2_RC layers (tss2_common.h) and base codes that classify a failure. */
const LAYER_TPM = 0;
const LAYER_ESAPI = 7;
const LAYER_TCTI = 10;
const BASE_NO_CONNECTION = 8;
const BASE_IO_ERROR = 10;
const BASE_BAD_TR = 24;
/** TPM_RC (Part 2 §6.6.3): format-one codes set bit 7, and bit 6 when a parameter (not a handle or session) is at fault. */
const TPM_RC_FMT1 = 0x080;
const TPM_RC_P = 0x040;
/** TPM_RC_HANDLE, a format-one error number, and the TPM_RC_REFERENCE_H0..H6 warnings. */
const TPM_RC_HANDLE = 0x00b;
const TPM_RC_REFERENCE_H0 = 0x910;
const TPM_RC_REFERENCE_H6 = 0x916;

/**
 * A format-one response code of the TPM itself (TSS2_RC layer 0, Part 2 §6.6.3): its error
 * number (bits 0-5, e.g. TPM_RC_INTEGRITY = 0x01f) and whether it blames a parameter;
 * undefined for warnings, format-zero codes and failures of the TSS layers.
 */
export function formatOneError(rc: number): { readonly error: number; readonly parameter: boolean } | undefined {
  if (rc >>> 16 !== LAYER_TPM || (rc & TPM_RC_FMT1) === 0) return undefined;
  return { error: rc & 0x3f, parameter: (rc & TPM_RC_P) !== 0 };
}

/** Maps what the addon threw to a typed error; anything else (a bug) passes through. */
function toTssError(e: unknown, where: string, timeoutMs: number): unknown {
  if (e instanceof AttestorError) return e;
  if (e instanceof TypeError || e instanceof RangeError) {
    return new AttestorError('ERR_TSS_INPUT', `${where}: ${e.message}`, { cause: e });
  }
  const native = e as { rc?: unknown; rcText?: unknown; command?: unknown; timedOut?: unknown };
  if (typeof native.rc !== 'number' || typeof native.command !== 'string') return e;
  const rcText = String(native.rcText);
  const hex = `0x${native.rc.toString(16).padStart(8, '0')}`;
  if (native.timedOut === true) {
    const message = `${where}: ${native.command} got no answer within ${timeoutMs} ms; the connection is given up, open the TPM again`;
    return new TssError('ERR_TSS_UNREACHABLE', message, native.rc, rcText, native.command, true);
  }
  return new TssError(classify(native.rc, native.command), `${where}: ${native.command} failed: ${rcText} (${hex})`, native.rc, rcText, native.command);
}

function classify(rc: number, command: string): ErrorCode {
  const layer = (rc >>> 16) & 0xff;
  const base = rc & 0xffff;
  if (layer === LAYER_TCTI && (base === BASE_IO_ERROR || base === BASE_NO_CONNECTION)) return 'ERR_TSS_UNREACHABLE';
  if (command === 'Tss2_TctiLdr_Initialize') return 'ERR_TSS_TCTI';
  if (command.startsWith('Tss2_MU_') && command.endsWith('_Unmarshal')) return 'ERR_TSS_INPUT';
  if (layer === LAYER_ESAPI && base === BASE_BAD_TR) return 'ERR_TSS_HANDLE';
  if (formatOneError(rc)?.error === TPM_RC_HANDLE) return 'ERR_TSS_HANDLE';
  if (layer === LAYER_TPM && base >= TPM_RC_REFERENCE_H0 && base <= TPM_RC_REFERENCE_H6) return 'ERR_TSS_HANDLE';
  return 'ERR_TSS_COMMAND';
}
