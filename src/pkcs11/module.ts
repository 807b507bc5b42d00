import { endianness } from 'node:os';
import pkcs11js from 'pkcs11js';
import { AttestorError, type ErrorCode } from '../errors.js';
import { SerialQueue } from '../serial-queue.js';

/**
 * A logged-in session on one PKCS#11 token (Cryptoki v2.40, pkcs11js), for the agent's key and
 * the verifier's issuing keys. Every call goes through run(): one at a time per session (a
 * Cryptoki session is single-threaded and async calls run on worker threads), and every
 * failure becomes a typed Pkcs11Error naming the Cryptoki function and its CKR_ return value.
 * The user PIN is used for C_Login and never kept.
 */

/** A Cryptoki handle (CK_SLOT_ID, CK_SESSION_HANDLE, CK_OBJECT_HANDLE) as pkcs11js passes it. */
export type Pkcs11Handle = Buffer;
export type Template = pkcs11js.Template;

/** A failed PKCS#11 operation; `ckr` is the Cryptoki return value's name when the module gave one. */
export class Pkcs11Error extends AttestorError {
  constructor(
    code: ErrorCode,
    message: string,
    readonly ckr?: string,
  ) {
    super(code, ckr ? `${message}: ${ckr}` : message);
  }
}

export interface Pkcs11TokenInfo {
  label: string;
  manufacturer: string;
  model: string;
  serial: string;
  /** CK_TOKEN_INFO.flags (CKF_TOKEN_INITIALIZED, CKF_LOGIN_REQUIRED, ...). */
  flags: number;
}

export interface OpenTokenOptions {
  /** Path of the vendor's PKCS#11 shared library. */
  modulePath: string;
  tokenLabel: string;
  /** User PIN; only passed to C_Login. */
  pin: string;
  /**
   * The token's serial number, when it must be the token an earlier session opened: a token
   * put in its place under the same label is refused before the PIN is sent to it.
   */
  serial?: string;
}

/**
 * Loaded modules by path. Cryptoki is initialised once per process, so sessions on the same
 * module share one load, and the last close finalises it if this code initialised it: when
 * something else in the process initialised the library first (another pkcs11js instance, the
 * same library loaded by another path), C_Initialize answered CKR_CRYPTOKI_ALREADY_INITIALIZED
 * and C_Finalize is for that code to call.
 */
const modules = new Map<string, { p11: pkcs11js.PKCS11; refs: number; finalize: boolean }>();

function acquireModule(path: string): pkcs11js.PKCS11 {
  const loaded = modules.get(path);
  if (loaded) {
    loaded.refs++;
    return loaded.p11;
  }
  const p11 = new pkcs11js.PKCS11();
  try {
    p11.load(path);
  } catch (e) {
    throw new Pkcs11Error('ERR_PKCS11_MODULE', `cannot load PKCS#11 module ${path}: ${(e as Error).message}`);
  }
  let finalize = true;
  try {
    // Async calls run on libuv worker threads: the module must lock with OS primitives.
    p11.C_Initialize({ flags: pkcs11js.CKF_OS_LOCKING_OK });
  } catch (e) {
    if (ckrOf(e) === 'CKR_CRYPTOKI_ALREADY_INITIALIZED') {
      finalize = false;
    } else {
      p11.close();
      throw translate(e, 'C_Initialize', 'ERR_PKCS11_MODULE');
    }
  }
  modules.set(path, { p11, refs: 1, finalize });
  return p11;
}

function releaseModule(path: string): void {
  const loaded = modules.get(path);
  if (!loaded || --loaded.refs > 0) return;
  modules.delete(path);
  try {
    if (loaded.finalize) loaded.p11.C_Finalize();
  } finally {
    loaded.p11.close();
  }
}

/** The CKR_ name of a pkcs11js failure, undefined for anything else. */
function ckrOf(e: unknown): string | undefined {
  return e instanceof pkcs11js.Pkcs11Error ? e.message : undefined;
}

/** Runs a clean-up step whose failure must not hide the failure being reported. */
function bestEffort(step: () => void): void {
  try {
    step();
  } catch {
    // The error already on its way says what went wrong.
  }
}

/** pkcs11js errors -> Pkcs11Error with the CKR name; our own errors pass through. */
function translate(e: unknown, fn: string, code: ErrorCode = 'ERR_PKCS11'): AttestorError {
  if (e instanceof AttestorError) return e;
  const ckr = ckrOf(e);
  if (ckr) return new Pkcs11Error(code, `${fn} failed`, ckr);
  return new Pkcs11Error(code, `${fn} failed: ${e instanceof Error ? e.message : String(e)}`);
}

const LOGIN_FAILURES = new Set([
  'CKR_PIN_INCORRECT',
  'CKR_PIN_INVALID',
  'CKR_PIN_LEN_RANGE',
  'CKR_PIN_EXPIRED',
  'CKR_PIN_LOCKED',
  'CKR_USER_PIN_NOT_INITIALIZED',
  'CKR_USER_TYPE_INVALID',
]);

/**
 * A CK_UTF8CHAR array without its padding: blanks (PKCS#11 v2.40 §3.2), and the NULs some
 * modules pad with instead. A loop, not a regex: /[ \0]+$/ backtracks quadratically on a run.
 */
function unpad(s: string): string {
  let end = s.length;
  while (end > 0 && (s[end - 1] === ' ' || s[end - 1] === '\0')) end--;
  return s.slice(0, end);
}

/** A CK_ULONG attribute value: native width and byte order. */
export function readUlong(value: Buffer): number {
  const le = endianness() === 'LE';
  if (value.length === 8) return Number(le ? value.readBigUInt64LE() : value.readBigUInt64BE());
  if (value.length === 4) return le ? value.readUInt32LE() : value.readUInt32BE();
  throw new Pkcs11Error('ERR_PKCS11', `CK_ULONG attribute of ${value.length} bytes`);
}

export class Pkcs11Session {
  private readonly queue = new SerialQueue();
  private closed?: Promise<void>;

  private constructor(
    private readonly p11: pkcs11js.PKCS11,
    private readonly modulePath: string,
    private readonly slot: Pkcs11Handle,
    private readonly handle: Pkcs11Handle,
    readonly token: Pkcs11TokenInfo,
    /** True for the session that called C_Login: closing it logs the application out. */
    private readonly ownsLogin: boolean,
  ) {}

  /** Loads the module, finds the token by label, opens a read-write session and logs in as user. */
  static async open(opts: OpenTokenOptions): Promise<Pkcs11Session> {
    const p11 = acquireModule(opts.modulePath);
    let handle: Pkcs11Handle | undefined;
    try {
      const { slot, token } = findToken(p11, opts.tokenLabel);
      if (opts.serial !== undefined && token.serial !== opts.serial) {
        throw new Pkcs11Error(
          'ERR_PKCS11_TOKEN_NOT_FOUND',
          `the token labelled ${JSON.stringify(opts.tokenLabel)} has serial ${JSON.stringify(token.serial)}, not ${JSON.stringify(opts.serial)} as when the verifier started: another token`,
        );
      }
      try {
        handle = p11.C_OpenSession(slot, pkcs11js.CKF_SERIAL_SESSION | pkcs11js.CKF_RW_SESSION);
      } catch (e) {
        throw translate(e, 'C_OpenSession');
      }
      login(p11, handle, opts.pin, opts.tokenLabel);
      return new Pkcs11Session(p11, opts.modulePath, slot, handle, token, true);
    } catch (e) {
      if (handle) bestEffort(() => p11.C_CloseSession(handle!));
      bestEffort(() => releaseModule(opts.modulePath));
      throw e;
    }
  }

  /**
   * Another session on the same token, sharing this session's login (the login state belongs
   * to the application and token, not to a session: PKCS#11 v2.40 §5.6), so that several
   * operations can run at once. Closing it does not log out; closing this session does, for
   * every session of the token: close the others first.
   */
  async openSibling(): Promise<Pkcs11Session> {
    if (this.closed) throw new Pkcs11Error('ERR_PKCS11', 'C_OpenSession: the session is closed');
    const p11 = acquireModule(this.modulePath);
    try {
      const handle = p11.C_OpenSession(this.slot, pkcs11js.CKF_SERIAL_SESSION | pkcs11js.CKF_RW_SESSION);
      return new Pkcs11Session(p11, this.modulePath, this.slot, handle, this.token, false);
    } catch (e) {
      bestEffort(() => releaseModule(this.modulePath));
      throw translate(e, 'C_OpenSession');
    }
  }

  /**
   * Runs `op` on this session after every earlier call finished; pkcs11js failures inside it
   * become Pkcs11Error naming `fn`.
   */
  run<T>(fn: string, op: (p11: pkcs11js.PKCS11, session: Pkcs11Handle) => T | Promise<T>): Promise<T> {
    if (this.closed) return Promise.reject(new Pkcs11Error('ERR_PKCS11', `${fn}: the session is closed`));
    return this.queue.run(async () => {
      try {
        return await op(this.p11, this.handle);
      } catch (e) {
        throw translate(e, fn);
      }
    });
  }

  /** Handles of the objects matching `template` (C_FindObjectsInit/C_FindObjects/C_FindObjectsFinal). */
  find(template: Template): Promise<Pkcs11Handle[]> {
    return this.run('C_FindObjects', (p11, session) => findObjects(p11, session, template));
  }

  /** The values of `types` on `object`, in that order (C_GetAttributeValue). */
  attributes(object: Pkcs11Handle, types: readonly number[]): Promise<Buffer[]> {
    return this.run('C_GetAttributeValue', (p11, session) => attributeValues(p11, session, object, types));
  }

  /**
   * Logs out (the session that logged in), closes the session and, with the last session on
   * the module, finalises it; every step is tried, and the first failure is reported. Idempotent.
   */
  close(): Promise<void> {
    this.closed ??= this.queue.run(() => {
      const failures: Pkcs11Error[] = [];
      const step = (fn: string, call: () => void) => {
        try {
          call();
        } catch (e) {
          failures.push(translate(e, fn));
        }
      };
      if (this.ownsLogin) step('C_Logout', () => this.p11.C_Logout(this.handle));
      step('C_CloseSession', () => this.p11.C_CloseSession(this.handle));
      step('C_Finalize', () => releaseModule(this.modulePath));
      if (failures[0]) throw failures[0];
    });
    return this.closed;
  }
}

/**
 * Handles of the objects matching `template` (C_FindObjectsInit/C_FindObjects/C_FindObjectsFinal),
 * for use inside Pkcs11Session.run, where one operation may need several Cryptoki calls.
 */
export function findObjects(p11: pkcs11js.PKCS11, session: Pkcs11Handle, template: Template): Pkcs11Handle[] {
  p11.C_FindObjectsInit(session, template);
  try {
    const found: Pkcs11Handle[] = [];
    for (let batch = p11.C_FindObjects(session, 16); batch.length > 0; batch = p11.C_FindObjects(session, 16)) {
      found.push(...batch);
    }
    return found;
  } finally {
    p11.C_FindObjectsFinal(session);
  }
}

/** The values of `types` on `object`, in that order (C_GetAttributeValue), for use inside Pkcs11Session.run. */
export function attributeValues(p11: pkcs11js.PKCS11, session: Pkcs11Handle, object: Pkcs11Handle, types: readonly number[]): Buffer[] {
  return p11.C_GetAttributeValue(session, object, types.map((type) => ({ type }))).map((a) => a.value);
}

function findToken(p11: pkcs11js.PKCS11, label: string): { slot: Pkcs11Handle; token: Pkcs11TokenInfo } {
  let matches: { slot: Pkcs11Handle; token: Pkcs11TokenInfo }[];
  const present: string[] = [];
  try {
    matches = p11.C_GetSlotList(true).flatMap((slot) => {
      const info = p11.C_GetTokenInfo(slot);
      const token = {
        label: unpad(info.label),
        manufacturer: unpad(info.manufacturerID),
        model: unpad(info.model),
        serial: unpad(info.serialNumber),
        flags: info.flags,
      };
      present.push(token.label);
      return token.label === label ? [{ slot, token }] : [];
    });
  } catch (e) {
    throw translate(e, 'C_GetTokenInfo');
  }
  const [match, ...others] = matches;
  if (!match) {
    throw new Pkcs11Error(
      'ERR_PKCS11_TOKEN_NOT_FOUND',
      `no token labelled ${JSON.stringify(label)} (present: ${JSON.stringify(present)})`,
    );
  }
  if (others.length > 0) {
    throw new Pkcs11Error('ERR_PKCS11_AMBIGUOUS', `${matches.length} tokens are labelled ${JSON.stringify(label)}`);
  }
  return match;
}

function login(p11: pkcs11js.PKCS11, session: Pkcs11Handle, pin: string, label: string): void {
  try {
    p11.C_Login(session, pkcs11js.CKU_USER, pin);
  } catch (e) {
    const ckr = ckrOf(e);
    if (ckr === 'CKR_USER_ALREADY_LOGGED_IN') {
      // Login state is per application and token: a second session would share (and, on
      // close, log out) the first one's login, and its PIN would go unchecked.
      throw new Pkcs11Error(
        'ERR_PKCS11_LOGIN',
        `token ${JSON.stringify(label)} already has a logged-in session in this process`,
        ckr,
      );
    }
    if (ckr && LOGIN_FAILURES.has(ckr)) {
      throw new Pkcs11Error('ERR_PKCS11_LOGIN', `login to token ${JSON.stringify(label)} refused`, ckr);
    }
    throw translate(e, 'C_Login');
  }
}
