import { createHash } from 'node:crypto';
import { existsSync } from 'node:fs';
import { endianness } from 'node:os';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import pkcs11js from 'pkcs11js';
import { Pkcs11Session, readUlong, type OpenTokenOptions, type Pkcs11Error } from '../src/pkcs11/module.js';
import { rejection } from './helpers/rejection.js';
import { startSoftHsm, type SoftHsm } from './helpers/softhsm.js';

// Each test opens and closes its own sessions, so the module is finalised between tests and
// the C_Initialize failure below runs on an unloaded module.
let hsm: SoftHsm;
let opts: OpenTokenOptions;
const OTHER = 'second-token';
const TWIN = 'twin';

beforeAll(async () => {
  hsm = await startSoftHsm();
  // SoftHSM lists the tokens present at C_Initialize: make them all before any session.
  await hsm.initToken(OTHER);
  await hsm.initToken(TWIN);
  await hsm.initToken(TWIN);
  opts = { modulePath: hsm.modulePath, tokenLabel: hsm.tokenLabel, pin: hsm.userPin };
});
afterAll(async () => {
  await hsm?.stop();
});

/**
 * Runs `f` with pkcs11js' `method` failing with CKR_DEVICE_ERROR in the modules loaded
 * meanwhile (pkcs11js copies its methods onto each instance when it is made); resolves with
 * the number of failures injected.
 */
async function withFault(method: 'C_CloseSession' | 'C_Logout', f: () => Promise<void>): Promise<number> {
  const proto = pkcs11js.PKCS11.prototype;
  const original = proto[method];
  let failures = 0;
  proto[method] = () => {
    failures++;
    // As the native layer throws it: pkcs11js turns "CKR_NAME:value" into a Pkcs11Error.
    throw new Error('CKR_DEVICE_ERROR:48');
  };
  try {
    await f();
  } finally {
    proto[method] = original;
  }
  return failures;
}

/** The Pkcs11Error `p` rejects with, which must have `code`. */
const pkcs11Rejection = async (p: Promise<unknown>, code: string) => (await rejection(p, code)) as Pkcs11Error;

describe('Pkcs11Session', () => {
  it('opens the token by label, logged in, and reports its identity', async () => {
    const session = await Pkcs11Session.open(opts);
    try {
      expect(session.token).toMatchObject({ label: hsm.tokenLabel, manufacturer: 'SoftHSM project', model: 'SoftHSM v2' });
      expect(session.token.serial).toMatch(/^[0-9a-f]{16}$/);
      const { flags } = session.token;
      for (const f of [pkcs11js.CKF_TOKEN_INITIALIZED, pkcs11js.CKF_LOGIN_REQUIRED, pkcs11js.CKF_USER_PIN_INITIALIZED]) {
        expect(flags & f).toBe(f);
      }
      const info = await session.run('C_GetSessionInfo', (p11, s) => p11.C_GetSessionInfo(s));
      const CKS_RW_USER_FUNCTIONS = 3; // PKCS#11 v2.40 §3.6 (pkcs11js does not export session states)
      expect(info.state).toBe(CKS_RW_USER_FUNCTIONS);
    } finally {
      await session.close();
    }
  });

  it('refuses a wrong PIN with ERR_PKCS11_LOGIN and keeps both PINs out of the message', async () => {
    const wrongPin = `${hsm.userPin}0`;
    const e = await pkcs11Rejection(Pkcs11Session.open({ ...opts, pin: wrongPin }), 'ERR_PKCS11_LOGIN');
    expect(e.ckr).toBe('CKR_PIN_INCORRECT');
    expect(e.message).not.toContain(wrongPin);
    expect(e.message).not.toContain(hsm.userPin);
    expect(e.message).not.toContain(hsm.soPin);
    // The failed attempt left nothing open: the right PIN still logs in.
    await (await Pkcs11Session.open(opts)).close();
  });

  it('refuses a second logged-in session on the same token, and the first keeps working', async () => {
    const first = await Pkcs11Session.open(opts);
    try {
      const e = await pkcs11Rejection(Pkcs11Session.open(opts), 'ERR_PKCS11_LOGIN');
      expect(e.ckr).toBe('CKR_USER_ALREADY_LOGGED_IN');
      // Another token of the same module is independent.
      const other = await Pkcs11Session.open({ ...opts, tokenLabel: OTHER });
      expect(other.token.label).toBe(OTHER);
      await other.close();
      await expect(first.find([{ type: pkcs11js.CKA_CLASS, value: pkcs11js.CKO_PRIVATE_KEY }])).resolves.toEqual([]);
    } finally {
      await first.close();
    }
  });

  it('names an unknown token label with ERR_PKCS11_TOKEN_NOT_FOUND', async () => {
    const e = await pkcs11Rejection(Pkcs11Session.open({ ...opts, tokenLabel: 'no-such-token' }), 'ERR_PKCS11_TOKEN_NOT_FOUND');
    expect(e.message).toContain('no-such-token');
    expect(e.message).toContain(OTHER);
  });

  it('refuses a label two tokens share with ERR_PKCS11_AMBIGUOUS', async () => {
    await pkcs11Rejection(Pkcs11Session.open({ ...opts, tokenLabel: TWIN }), 'ERR_PKCS11_AMBIGUOUS');
  });

  it('gives ERR_PKCS11_MODULE for a module path that does not exist', async () => {
    const e = await pkcs11Rejection(Pkcs11Session.open({ ...opts, modulePath: `${hsm.dir}/missing/libpkcs11.so` }), 'ERR_PKCS11_MODULE');
    expect(e.message).toContain('missing/libpkcs11.so');
  });

  it('gives ERR_PKCS11_MODULE for a shared library that is not a PKCS#11 module', async () => {
    const libc = ['/lib/x86_64-linux-gnu/libc.so.6', '/lib/aarch64-linux-gnu/libc.so.6'].find((p) => existsSync(p));
    expect(libc).toBeDefined();
    const e = await pkcs11Rejection(Pkcs11Session.open({ ...opts, modulePath: libc! }), 'ERR_PKCS11_MODULE');
    expect(e.message).toContain('C_GetFunctionList');
  });

  it('gives ERR_PKCS11_MODULE with the CKR name when C_Initialize fails', async () => {
    const saved = process.env.SOFTHSM2_CONF;
    process.env.SOFTHSM2_CONF = `${hsm.dir}/missing.conf`;
    try {
      const e = await pkcs11Rejection(Pkcs11Session.open(opts), 'ERR_PKCS11_MODULE');
      expect(e.ckr).toBe('CKR_GENERAL_ERROR');
    } finally {
      process.env.SOFTHSM2_CONF = saved;
    }
    // The failed load was released: the next open initialises the module afresh.
    await (await Pkcs11Session.open(opts)).close();
  });

  it('shares a module another part of the process initialised, and leaves C_Finalize to it', async () => {
    const other = new pkcs11js.PKCS11();
    other.load(hsm.modulePath);
    other.C_Initialize({ flags: pkcs11js.CKF_OS_LOCKING_OK });
    try {
      const session = await Pkcs11Session.open(opts);
      expect(session.token.label).toBe(hsm.tokenLabel);
      await session.close();
      // Still initialised for the other user: C_Finalize would have made this CKR_CRYPTOKI_NOT_INITIALIZED.
      expect(other.C_GetSlotList(true).length).toBeGreaterThan(0);
    } finally {
      other.C_Finalize();
      other.close();
    }
  });

  it('reports the login failure even when closing the failed session fails too', async () => {
    const failures = await withFault('C_CloseSession', async () => {
      const e = await pkcs11Rejection(Pkcs11Session.open({ ...opts, pin: `${hsm.userPin}0` }), 'ERR_PKCS11_LOGIN');
      expect(e.ckr).toBe('CKR_PIN_INCORRECT');
    });
    expect(failures).toBe(1);
    // The module was released all the same (its C_Finalize closed the session): a new login works.
    await (await Pkcs11Session.open(opts)).close();
  });

  it('close() tries every step and reports the first failure', async () => {
    const failures = await withFault('C_Logout', async () => {
      const session = await Pkcs11Session.open(opts);
      const e = await pkcs11Rejection(session.close(), 'ERR_PKCS11');
      expect(e.message).toContain('C_Logout failed');
      expect(e.ckr).toBe('CKR_DEVICE_ERROR');
    });
    expect(failures).toBe(1);
    // The session was closed and the module finalised anyway: the user is not left logged in.
    await (await Pkcs11Session.open(opts)).close();
  });

  it('serialises concurrent calls on one session', async () => {
    // Overlapping C_DigestInit on one session would fail with CKR_OPERATION_ACTIVE.
    const session = await Pkcs11Session.open(opts);
    try {
      const inputs = [0, 1, 2, 3].map((i) => Buffer.from(`message ${i}`));
      const digests = await Promise.all(
        inputs.map((data) =>
          session.run('C_Digest', (p11, s) => {
            p11.C_DigestInit(s, { mechanism: pkcs11js.CKM_SHA256 });
            return p11.C_DigestAsync(s, data, Buffer.alloc(32));
          }),
        ),
      );
      expect(digests.map((d) => d.toString('hex'))).toEqual(
        inputs.map((d) => createHash('sha256').update(d).digest('hex')),
      );
    } finally {
      await session.close();
    }
  });

  it('turns a failing call into ERR_PKCS11 with the CKR name, and the session stays usable', async () => {
    const session = await Pkcs11Session.open(opts);
    try {
      const bogus = Buffer.alloc(8, 0xff);
      const e = await pkcs11Rejection(session.attributes(bogus, [pkcs11js.CKA_LABEL]), 'ERR_PKCS11');
      expect(e.ckr).toBe('CKR_OBJECT_HANDLE_INVALID');
      expect(e.message).toContain('C_GetAttributeValue');
      await expect(session.find([{ type: pkcs11js.CKA_LABEL, value: 'x' }])).resolves.toEqual([]);
    } finally {
      await session.close();
    }
  });

  it('refuses calls after close with ERR_PKCS11; close is idempotent', async () => {
    const session = await Pkcs11Session.open(opts);
    await Promise.all([session.close(), session.close()]);
    const e = await pkcs11Rejection(session.find([]), 'ERR_PKCS11');
    expect(e.message).toContain('closed');
    // Closing logged out: a new session can log in.
    await (await Pkcs11Session.open(opts)).close();
  });
});

describe('readUlong', () => {
  it('reads native-endian CK_ULONG of 8 and 4 bytes', () => {
    const le = endianness() === 'LE';
    const eight = Buffer.alloc(8);
    if (le) eight.writeBigUInt64LE(0x80000003n);
    else eight.writeBigUInt64BE(0x80000003n);
    const four = Buffer.alloc(4);
    if (le) four.writeUInt32LE(3);
    else four.writeUInt32BE(3);
    expect(readUlong(eight)).toBe(0x80000003);
    expect(readUlong(four)).toBe(3);
  });

  it('refuses other widths with ERR_PKCS11', () => {
    expect(() => readUlong(Buffer.alloc(2))).toThrow(expect.objectContaining({ code: 'ERR_PKCS11' }));
  });
});
