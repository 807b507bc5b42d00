import { execFile } from 'node:child_process';
import { createHash, generateKeyPairSync, verify, X509Certificate } from 'node:crypto';
import { cpSync, mkdtempSync, readdirSync, renameSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { createRequire } from 'node:module';
import { join, resolve } from 'node:path';
import { promisify } from 'node:util';
import { createLocalJWKSet, jwtVerify } from 'jose';
import pkcs11js from 'pkcs11js';
import ts from 'typescript';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createCaCertificate } from '../src/issuer/ca-certificate.js';
import { jwtJwks, kidOf } from '../src/issuer/jwks.js';
import { createJwtSvidIssuer } from '../src/issuer/jwt-svid.js';
import { openKeyManager } from '../src/issuer/open-keys.js';
import { openPkcs11KeyManager, type Pkcs11KeyManagerOptions } from '../src/issuer/pkcs11-keys.js';
import type { KeyRole } from '../src/issuer/signer.js';
import { createX509SvidIssuer } from '../src/issuer/x509-svid.js';
import { ecP256KeyPairTemplates } from '../src/pkcs11/ec-key.js';
import { Pkcs11Session, readUlong, type Pkcs11Error } from '../src/pkcs11/module.js';
import { formatPkcs11Uri, parsePkcs11Uri, type Pkcs11Uri } from '../src/pkcs11/uri.js';
import { rejection } from './helpers/rejection.js';
import { startSoftHsm, type SoftHsm } from './helpers/softhsm.js';

const execFileAsync = promisify(execFile);
const TOKEN = 'attestor';
/** Tokens of their own for the tests that need an empty one; SoftHSM lists tokens at C_Initialize, so all are made first. */
const RACE_TOKENS = ['race-1', 'race-2', 'race-3', 'race-4', 'race-5', 'race-6'];
const DUPLICATES_TOKEN = 'duplicates';
const VANISH_TOKEN = 'vanish';
const RECONNECT_TOKEN = 'reconnect';

let hsm: SoftHsm;
let reconnectTokenDir: string;
let pinFile: string;
let uri: Pkcs11Uri;
const uriOf = (token: string) => parsePkcs11Uri(`pkcs11:token=${token}?module-path=${hsm.modulePath}&pin-source=${pinFile}`);

beforeAll(async () => {
  hsm = await startSoftHsm({ tokenLabel: TOKEN });
  for (const token of [...RACE_TOKENS, DUPLICATES_TOKEN, VANISH_TOKEN]) await hsm.initToken(token);
  const before = new Set(readdirSync(join(hsm.dir, 'tokens')));
  await hsm.initToken(RECONNECT_TOKEN);
  reconnectTokenDir = join(hsm.dir, 'tokens', readdirSync(join(hsm.dir, 'tokens')).find((d) => !before.has(d))!);
  pinFile = join(hsm.dir, 'pin');
  writeFileSync(pinFile, `${hsm.userPin}\n`, { mode: 0o600 });
  uri = uriOf(TOKEN);
});
afterAll(async () => {
  await hsm?.stop();
});

/** A logger that keeps what it is told. */
function recordingLogger() {
  const lines: string[] = [];
  const logger: NonNullable<Pkcs11KeyManagerOptions['logger']> = {
    info: (...args: unknown[]) => void lines.push(`info ${args.map((a) => (typeof a === 'string' ? a : JSON.stringify(a))).join(' ')}`),
    warn: (...args: unknown[]) => void lines.push(`warn ${args.map((a) => (typeof a === 'string' ? a : JSON.stringify(a))).join(' ')}`),
  };
  return { lines, logger };
}

/** Runs `f` with a direct session on `token` (no key manager may be open meanwhile: the login is per process). */
async function withSession<T>(token: string, f: (session: Pkcs11Session) => Promise<T>): Promise<T> {
  const session = await Pkcs11Session.open({ modulePath: hsm.modulePath, tokenLabel: token, pin: hsm.userPin });
  try {
    return await f(session);
  } finally {
    await session.close();
  }
}

const privateKeysLabelled = (session: Pkcs11Session, label: string) =>
  session.find([
    { type: pkcs11js.CKA_CLASS, value: pkcs11js.CKO_PRIVATE_KEY },
    { type: pkcs11js.CKA_LABEL, value: label },
  ]);

describe('PKCS#11 key manager', () => {
  it('generates each role as a non-extractable P-256 pair in the token and signs r||s on the session pool', async () => {
    const { lines, logger } = recordingLogger();
    const manager = await openPkcs11KeyManager(uri, { logger, poolSize: 3 });
    let spki: Uint8Array;
    try {
      expect(manager.software).toBe(false);
      const signer = await manager.signer('x509-ca');
      spki = signer.spki;
      expect(signer.software).toBe(false);
      expect(signer.uri).toBe(formatPkcs11Uri(uri, 'x509-ca'));
      expect(signer.uri).toContain(';object=x509-ca?');
      expect(signer.uri).not.toContain(hsm.userPin);
      expect(signer.publicKey.asymmetricKeyDetails).toEqual({ namedCurve: 'prime256v1' });
      // All three roles are resolved, here generated, when the manager opens.
      expect(lines).toEqual(['x509-ca', 'jwt', 'audit'].map((role) => `info {"key":"${role}"} generated a non-extractable EC P-256 key in the token`));
      // More signatures at once than sessions: all are made, all verify.
      const messages = Array.from({ length: 300 }, (_, i) => Buffer.from(`message ${i}`));
      const signatures = await Promise.all(messages.map((m) => signer.sign(m)));
      for (const [i, signature] of signatures.entries()) {
        expect(signature.length).toBe(64);
        expect(verify('sha256', messages[i]!, { key: signer.publicKey, dsaEncoding: 'ieee-p1363' }, signature)).toBe(true);
      }
      expect(await manager.signer('x509-ca')).toBe(signer);
    } finally {
      await manager.close();
    }

    await withSession(TOKEN, async (session) => {
      const [privateKey, ...more] = await privateKeysLabelled(session, 'x509-ca');
      expect(more).toHaveLength(0);
      const { CKA_TOKEN, CKA_PRIVATE, CKA_SENSITIVE, CKA_EXTRACTABLE, CKA_NEVER_EXTRACTABLE, CKA_LOCAL, CKA_SIGN } = pkcs11js;
      const flags = [CKA_TOKEN, CKA_PRIVATE, CKA_SENSITIVE, CKA_EXTRACTABLE, CKA_NEVER_EXTRACTABLE, CKA_LOCAL, CKA_SIGN];
      const values = await session.attributes(privateKey!, [...flags, pkcs11js.CKA_KEY_TYPE]);
      expect(values.slice(0, flags.length).map((v) => v[0] === 1)).toEqual([true, true, true, false, true, true, true]);
      expect(readUlong(values[flags.length]!)).toBe(pkcs11js.CKK_EC);
      await expect(session.attributes(privateKey!, [pkcs11js.CKA_VALUE])).rejects.toMatchObject({ ckr: 'CKR_ATTRIBUTE_SENSITIVE' });
      const [publicKey] = await session.find([
        { type: pkcs11js.CKA_CLASS, value: pkcs11js.CKO_PUBLIC_KEY },
        { type: pkcs11js.CKA_LABEL, value: 'x509-ca' },
      ]);
      const [canVerify] = await session.attributes(publicKey!, [pkcs11js.CKA_VERIFY]);
      expect(canVerify![0]).toBe(1);
    });

    // Found again, not generated again, with the PIN from the environment this time.
    const { lines: again, logger: quiet } = recordingLogger();
    const reopened = await openPkcs11KeyManager({ ...uri, pinSource: undefined }, {
      env: { ATTESTOR_PKCS11_PIN: hsm.userPin },
      logger: quiet,
    });
    try {
      expect(Buffer.from((await reopened.signer('x509-ca')).spki).equals(spki!)).toBe(true);
      expect(again).toEqual([]);
    } finally {
      await reopened.close();
    }
  });

  it('opens sibling sessions that share the login and leave it when they close', async () => {
    await withSession(TOKEN, async (session) => {
      const sibling = await session.openSibling();
      const state = (s: Pkcs11Session) => s.run('C_GetSessionInfo', (p11, h) => p11.C_GetSessionInfo(h).state);
      const CKS_RW_USER_FUNCTIONS = 3;
      expect(await state(sibling)).toBe(CKS_RW_USER_FUNCTIONS);
      await sibling.close();
      expect(await state(session)).toBe(CKS_RW_USER_FUNCTIONS);
      await rejection(sibling.openSibling(), 'ERR_PKCS11');
    });
  });

  it('generates a rotation key under a label of its own and finds it again by its URI, also after a restart', async () => {
    const { lines, logger } = recordingLogger();
    const manager = await openPkcs11KeyManager(uri, { logger });
    let generated: { uri: string; spki: Uint8Array };
    try {
      const first = await manager.signer('jwt');
      const next = await manager.generate('jwt');
      expect(next.uri).toMatch(/^pkcs11:token=attestor;object=jwt\.[0-9a-f]{16}\?module-path=/);
      expect(next.uri).not.toContain(hsm.userPin);
      expect(Buffer.from(next.spki).equals(Buffer.from(first.spki))).toBe(false);
      expect(lines.join('\n')).toContain('generated a non-extractable EC P-256 key in the token');
      // The role's own label still names the first key alone.
      expect(await manager.signer('jwt')).toBe(first);
      expect(await manager.signerAt(first.uri, 'jwt')).toBe(first);
      expect(await manager.signerAt(next.uri, 'jwt')).toBe(next);
      const data = Buffer.from('signed by the rotated key');
      expect(verify('sha256', data, { key: next.publicKey, dsaEncoding: 'ieee-p1363' }, await next.sign(data))).toBe(true);
      generated = { uri: next.uri, spki: next.spki };
    } finally {
      await manager.close();
    }
    const reopened = await openPkcs11KeyManager(uri);
    try {
      expect(Buffer.from((await reopened.signerAt(generated.uri, 'jwt')).spki).equals(Buffer.from(generated.spki))).toBe(true);
      // Another token's key, a label no rotation gives, a key that is not there: ERR_KEYS or not found.
      await rejection(reopened.signerAt(generated.uri.replace('token=attestor', 'token=race-1'), 'jwt'), 'ERR_KEYS');
      await rejection(reopened.signerAt(formatPkcs11Uri(uri, 'some-other-object'), 'jwt'), 'ERR_KEYS');
      await rejection(reopened.signerAt(formatPkcs11Uri(uri, 'jwt.0123456789abcdef'), 'jwt'), 'ERR_PKCS11_KEY_NOT_FOUND');
      // A key of one role is no other role's key, whatever a keys table row claims.
      await rejection(reopened.signerAt(generated.uri, 'x509-ca'), 'ERR_KEYS');
    } finally {
      await reopened.close();
    }
  });

  it("a retired key deleted from the token while the verifier runs fails alone: the active keys go on signing", async () => {
    const manager = await openPkcs11KeyManager(uri);
    try {
      const active = await manager.signer('x509-ca');
      const retired = await manager.generate('x509-ca');
      const message = Buffer.from('a CRL of the retired key');
      await retired.sign(message);
      const label = new URL(retired.uri.replace(/^pkcs11:/, 'pkcs11://x/')).pathname.split(';').find((a) => a.startsWith('object='))!.slice('object='.length);
      await deleteKeyElsewhere(TOKEN, label);
      // Each of these once asked the whole pool to reconnect: 58 of 59 active signatures failed.
      const activeSigned: boolean[] = [];
      for (let i = 0; i < 20; i++) {
        await rejection(retired.sign(message), 'ERR_PKCS11_UNAVAILABLE');
        activeSigned.push(await active.sign(message).then(() => true, () => false));
      }
      // The deletion's first failure reconnects the pool once (a handle gone looks like a token gone).
      expect(activeSigned.slice(1)).toStrictEqual(Array(19).fill(true));
      expect((await rejection(retired.sign(message), 'ERR_PKCS11_UNAVAILABLE')).message).toMatch(/the token came back without the key "x509-ca\.[0-9a-f]{16}"/);
    } finally {
      await manager.close();
    }
  });

  it('close() logs out and finalises: the signer stops, the token opens again', async () => {
    const manager = await openPkcs11KeyManager(uri);
    const signer = await manager.signer('audit');
    await manager.close();
    await manager.close();
    await rejection(signer.sign(Buffer.from('late')), 'ERR_PKCS11');
    await rejection(manager.signer('jwt'), 'ERR_KEYS');
    // Had the login outlived close(), this C_Login would meet CKR_USER_ALREADY_LOGGED_IN.
    await withSession(TOKEN, async (session) => {
      expect((await session.run('C_GetSessionInfo', (p11, s) => p11.C_GetSessionInfo(s))).state).toBe(3);
    });
  });

  it('refuses a wrong PIN with ERR_PKCS11_LOGIN after one single C_Login, the PIN in no message', async () => {
    const wrongPin = `${hsm.userPin}9`;
    const proto = pkcs11js.PKCS11.prototype;
    const login = proto.C_Login;
    let logins = 0;
    proto.C_Login = function (this: pkcs11js.PKCS11, ...args: Parameters<typeof login>) {
      logins++;
      return login.apply(this, args);
    };
    try {
      const e = (await rejection(openPkcs11KeyManager({ ...uri, pinSource: undefined, pinValue: wrongPin }), 'ERR_PKCS11_LOGIN')) as Pkcs11Error;
      expect(e.ckr).toBe('CKR_PIN_INCORRECT');
      expect(logins).toBe(1);
      for (const secret of [wrongPin, hsm.userPin, hsm.soPin]) expect(e.message).not.toContain(secret);
    } finally {
      proto.C_Login = login;
    }
    await (await openPkcs11KeyManager(uri)).close();
  });

  it('refuses an unknown token, a URI naming an object, a missing PIN and a bad pool size', async () => {
    const e = await rejection(openPkcs11KeyManager(uriOf('no-such-token')), 'ERR_PKCS11_TOKEN_NOT_FOUND');
    expect(e.message).not.toContain(hsm.userPin);
    await rejection(openPkcs11KeyManager({ ...uri, object: 'x509-ca' }), 'ERR_KEYS_URI');
    await rejection(openPkcs11KeyManager({ ...uri, pinSource: undefined }, { env: {} }), 'ERR_KEYS_URI');
    await rejection(openPkcs11KeyManager({ ...uri, pinSource: join(hsm.dir, 'missing-pin') }), 'ERR_KEYS_URI');
    for (const poolSize of [0, 1.5, 65]) await rejection(openPkcs11KeyManager(uri, { poolSize }), 'ERR_KEYS');
  });

  it('takes the key with the smallest CKA_ID when several carry the label, and says so', async () => {
    const ids = ['ff', '01', '80'].map((b) => Buffer.alloc(16, Number.parseInt(b, 16)));
    const spkis = await withSession(DUPLICATES_TOKEN, (session) =>
      Promise.all(
        ids.map((id) => {
          const t = ecP256KeyPairTemplates('jwt', id);
          return session.run('C_GenerateKeyPair', async (p11, s) => {
            const pair = await p11.C_GenerateKeyPairAsync(s, { mechanism: pkcs11js.CKM_EC_KEY_PAIR_GEN }, t.publicKey, t.privateKey);
            const [point] = p11.C_GetAttributeValue(s, pair.publicKey, [{ type: pkcs11js.CKA_EC_POINT }]);
            return point!.value!.subarray(-65).toString('hex');
          });
        }),
      ),
    );
    const { lines, logger } = recordingLogger();
    const manager = await openPkcs11KeyManager(uriOf(DUPLICATES_TOKEN), { logger });
    try {
      const signer = await manager.signer('jwt');
      expect(Buffer.from(signer.spki).subarray(-65).toString('hex')).toBe(spkis[1]);
      expect(lines).toEqual([
        'info {"key":"x509-ca"} generated a non-extractable EC P-256 key in the token',
        'warn {"key":"jwt","count":3} several keys carry this label; using the one with the smallest CKA_ID',
        'info {"key":"audit"} generated a non-extractable EC P-256 key in the token',
      ]);
    } finally {
      await manager.close();
    }
  });

  it('gives two processes starting at once on an empty token the same keys, and leaves one key per role', async () => {
    const children = await compileChild();
    try {
      const env = { ...process.env, SOFTHSM2_CONF: hsm.conf, ATTESTOR_PKCS11_PIN: hsm.userPin };
      const run = (token: string, startAt: number) =>
        execFileAsync(process.execPath, [children.script, formatPkcs11Uri(uriOf(token)), String(startAt)], { env, encoding: 'utf8' }).then(
          (o) => JSON.parse(o.stdout) as { spkis: Record<KeyRole, string>; log: string[] },
          (e: { stderr?: string }) => ({ failed: e.stderr ?? String(e) }),
        );
      /*
       * SoftHSM itself sometimes fails one of two processes that log in at the same instant
       * (token.object is rewritten at login and read torn: CKR_GENERAL_ERROR, or the token's
       * label reads empty). Such a round proves nothing either way, so it is run again on a
       * fresh token; two complete rounds are required, and in each the keys must agree.
       */
      let complete = 0;
      const startupFailures: string[] = [];
      for (const token of RACE_TOKENS) {
        const startAt = Date.now() + 700;
        const [a, b] = await Promise.all([run(token, startAt), run(token, startAt)]);
        if ('failed' in a || 'failed' in b) {
          for (const r of [a, b]) if ('failed' in r) startupFailures.push(r.failed);
          continue;
        }
        expect(a.spkis).toEqual(b.spkis);
        await withSession(token, async (session) => {
          for (const role of ['x509-ca', 'jwt', 'audit']) expect(await privateKeysLabelled(session, role), role).toHaveLength(1);
        });
        if (++complete === 2) break;
      }
      for (const failure of startupFailures) expect(failure).toMatch(/CKR_GENERAL_ERROR|no token labelled "race-\d" \(present: .*""/);
      expect(complete).toBe(2);
    } finally {
      children.remove();
    }
  });

  it('starts when a key the other process destroys vanishes while the keys are listed, first or once settled', async () => {
    // The other process's destroy falls between C_FindObjects and reading the key, which then
    // answers CKR_OBJECT_HANDLE_INVALID: made to happen once, in the child: after its reconnect
    // on the empty token, then at its first listing once the token holds the keys.
    const children = await compileChild();
    try {
      let first: Record<KeyRole, string> | undefined;
      for (const after of ['2', '1']) {
        const env = { ...process.env, SOFTHSM2_CONF: hsm.conf, ATTESTOR_PKCS11_PIN: hsm.userPin, VANISH_ONCE_AFTER_INITIALIZE: after };
        const { stdout } = await execFileAsync(process.execPath, [children.script, formatPkcs11Uri(uriOf(VANISH_TOKEN)), String(Date.now())], { env, encoding: 'utf8' });
        const result = JSON.parse(stdout) as { spkis: Record<KeyRole, string>; log: string[]; vanished: number };
        expect(result.vanished, after).toBe(1);
        expect(Object.keys(result.spkis)).toEqual(['x509-ca', 'jwt', 'audit']);
        // The second start finds the first one's keys.
        if (first) expect(result.spkis).toEqual(first);
        first = result.spkis;
        await withSession(VANISH_TOKEN, async (session) => {
          for (const role of ['x509-ca', 'jwt', 'audit']) expect(await privateKeysLabelled(session, role), role).toHaveLength(1);
        });
      }
    } finally {
      children.remove();
    }
  });
});

describe('a token put in the place of ours while the verifier runs', () => {
  const RECONNECT_INTERVAL_MS = 1_100;
  const later = () => new Promise((r) => setTimeout(r, RECONNECT_INTERVAL_MS));

  it('check() (readiness) signs at most one probe at a time and one a second, however many ask at once', async () => {
    const manager = await openPkcs11KeyManager(uriOf(RECONNECT_TOKEN), { env: { ATTESTOR_PKCS11_PIN: hsm.userPin } });
    try {
      const ca = await manager.signer('x509-ca');
      const sign = ca.sign.bind(ca);
      let probes = 0;
      Object.assign(ca, { sign: (data: Uint8Array) => (probes++, sign(data)) });
      await Promise.all(Array.from({ length: 50 }, () => ca.check()));
      await Promise.all(Array.from({ length: 50 }, () => ca.check()));
      expect(probes).toBe(1);
      await later();
      await Promise.all(Array.from({ length: 50 }, () => ca.check()));
      expect(probes).toBe(2);
    } finally {
      await manager.close();
    }
  });

  it('is refused: another serial before the PIN is sent, the same serial with other keys at the first signature; ours back, signing goes on', async () => {
    const manager = await openPkcs11KeyManager(uriOf(RECONNECT_TOKEN), { env: { ATTESTOR_PKCS11_PIN: hsm.userPin } });
    const away = join(hsm.dir, 'reconnect-away');
    try {
      const ca = await manager.signer('x509-ca');
      const message = Buffer.from('to be signed');
      const verifies = (signature: Uint8Array) => verify('sha256', message, { key: ca.publicKey, dsaEncoding: 'ieee-p1363' }, signature);
      expect(verifies(await ca.sign(message))).toBe(true);

      // Another token under the same label, with the same PIN: its serial differs.
      renameSync(reconnectTokenDir, away);
      await rejection(ca.sign(message), 'ERR_PKCS11_UNAVAILABLE');
      const tokens = new Set(readdirSync(join(hsm.dir, 'tokens')));
      await hsm.initToken(RECONNECT_TOKEN);
      const impostor = join(hsm.dir, 'tokens', readdirSync(join(hsm.dir, 'tokens')).find((d) => !tokens.has(d))!);
      await later();
      const otherSerial = await rejection(ca.sign(message), 'ERR_PKCS11_UNAVAILABLE');
      expect(otherSerial.message).toMatch(/the token labelled "reconnect" has serial "\w+", not "\w+" as when the verifier started: another token/);
      rmSync(impostor, { recursive: true });

      // A copy of ours (its serial) whose CA key was replaced under the same label and CKA_ID.
      cpSync(away, reconnectTokenDir, { recursive: true });
      await withSession(RECONNECT_TOKEN, async (session) => {
        const [privateKey] = await privateKeysLabelled(session, 'x509-ca');
        const [id] = await session.attributes(privateKey!, [pkcs11js.CKA_ID]);
        const [publicKey] = await session.find([{ type: pkcs11js.CKA_CLASS, value: pkcs11js.CKO_PUBLIC_KEY }, { type: pkcs11js.CKA_ID, value: id! }]);
        const t = ecP256KeyPairTemplates('x509-ca', id!);
        await session.run('C_GenerateKeyPair', (p11, s) => {
          p11.C_DestroyObject(s, privateKey!);
          p11.C_DestroyObject(s, publicKey!);
          p11.C_GenerateKeyPair(s, { mechanism: pkcs11js.CKM_EC_KEY_PAIR_GEN }, t.publicKey, t.privateKey);
        });
      });
      await later();
      for (let i = 0; i < 2; i++) {
        const otherKey = await rejection(ca.sign(message), 'ERR_PKCS11_UNAVAILABLE');
        expect(otherKey.message).toMatch(/the token came back with another key labelled "x509-ca": not the token this verifier started with/);
        await later();
      }

      // Ours back: the next signature after the interval reconnects, is verified once, and is returned.
      rmSync(reconnectTokenDir, { recursive: true });
      renameSync(away, reconnectTokenDir);
      await later();
      expect(verifies(await ca.sign(message))).toBe(true);
      expect(verifies(await ca.sign(message))).toBe(true);
    } finally {
      await manager.close().catch(() => undefined);
    }
  });
});

describe('issuing with keys in the token', () => {
  it('issues an X509-SVID that openssl verifies and a JWT-SVID that jose verifies', async () => {
    const manager = await openKeyManager(formatPkcs11Uri(uri), { env: { ATTESTOR_PKCS11_PIN: hsm.userPin } });
    const dir = mkdtempSync(join(tmpdir(), 'attestor-pkcs11-issue-'));
    try {
      expect(manager.software).toBe(false);
      const [caSigner, jwtSigner] = await Promise.all([manager.signer('x509-ca'), manager.signer('jwt')]);
      const now = new Date();
      const ca = await createCaCertificate({ signer: caSigner, trustDomain: 'example.org', now, lifetimeSeconds: 86400 });
      const leafKey = generateKeyPairSync('rsa', { modulusLength: 2048 }).publicKey;
      const x509 = createX509SvidIssuer({ caCertificate: ca, signer: caSigner, crlUrl: 'https://attestor.example.org/v1/crl' });
      const leaf = await x509.issue({
        subjectSpki: leafKey.export({ type: 'spki', format: 'der' }),
        spiffeId: 'spiffe://example.org/agent/tpm/01',
        notBefore: new Date(now.getTime() - 10_000),
        notAfter: new Date(now.getTime() + 3600_000),
      });
      writeFileSync(join(dir, 'ca.pem'), new X509Certificate(ca).toString());
      writeFileSync(join(dir, 'leaf.pem'), new X509Certificate(leaf.der).toString());
      const { stdout } = await execFileAsync('openssl', ['verify', '-x509_strict', '-CAfile', 'ca.pem', 'leaf.pem'], { cwd: dir });
      expect(stdout).toBe('leaf.pem: OK\n');

      const kid = await kidOf(jwtSigner.publicKey);
      const iat = Math.floor(now.getTime() / 1000);
      const token = await createJwtSvidIssuer({ signer: jwtSigner, kid, issuer: 'https://attestor.example.org' }).sign({
        sub: 'spiffe://example.org/agent/tpm/01',
        aud: 'relying-party',
        iat,
        exp: iat + 300,
        jti: 'j1',
        cnf: { 'x5t#S256': createHash('sha256').update(leaf.der).digest('base64url') },
        attestation: { baseline: { id: 'b1', version: 1 }, verdict: 'warning', pcrDigest: '00', evidenceHash: 'ff', keyResidence: 'pkcs11' },
      });
      const jwks = createLocalJWKSet(jwtJwks([{ publicKey: jwtSigner.publicKey, kid }]) as Parameters<typeof createLocalJWKSet>[0]);
      const { payload } = await jwtVerify(token, jwks, { audience: 'relying-party', issuer: 'https://attestor.example.org' });
      expect(payload.sub).toBe('spiffe://example.org/agent/tpm/01');
    } finally {
      await manager.close();
      rmSync(dir, { recursive: true, force: true });
    }
  });
});

/** Deletes the private key labelled `label` from another process, as an operator's tool would. */
async function deleteKeyElsewhere(token: string, label: string): Promise<void> {
  const script = `
    const pkcs11js = require(${JSON.stringify(createRequire(import.meta.url).resolve('pkcs11js'))});
    const p11 = new pkcs11js.PKCS11();
    p11.load(${JSON.stringify(hsm.modulePath)});
    p11.C_Initialize();
    const slot = p11.C_GetSlotList(true).find((s) => p11.C_GetTokenInfo(s).label.trim() === ${JSON.stringify(token)});
    const session = p11.C_OpenSession(slot, pkcs11js.CKF_SERIAL_SESSION | pkcs11js.CKF_RW_SESSION);
    p11.C_Login(session, pkcs11js.CKU_USER, ${JSON.stringify(hsm.userPin)});
    p11.C_FindObjectsInit(session, [{ type: pkcs11js.CKA_CLASS, value: pkcs11js.CKO_PRIVATE_KEY }, { type: pkcs11js.CKA_LABEL, value: ${JSON.stringify(label)} }]);
    const [key] = p11.C_FindObjects(session, 2);
    p11.C_FindObjectsFinal(session);
    p11.C_DestroyObject(session, key);
    p11.C_Logout(session);
    p11.C_Finalize();`;
  await execFileAsync(process.execPath, ['-e', script], { env: hsm.env });
}

/**
 * A child process that opens the key manager on a token at a given instant and prints the
 * three public keys and what it logged. The key manager is compiled from src/ with the
 * TypeScript compiler into a temp dir that sees the project's node_modules.
 */
async function compileChild(): Promise<{ script: string; remove: () => void }> {
  const root = resolve(import.meta.dirname, '..');
  const out = mkdtempSync(join(tmpdir(), 'attestor-pkcs11-child-'));
  const remove = () => rmSync(out, { recursive: true, force: true });
  try {
    symlinkSync(join(root, 'node_modules'), join(out, 'node_modules'));
    writeFileSync(join(out, 'package.json'), '{"type":"module"}');
    const program = ts.createProgram([join(root, 'src/issuer/pkcs11-keys.ts'), join(root, 'src/pkcs11/uri.ts')], {
      module: ts.ModuleKind.NodeNext,
      moduleResolution: ts.ModuleResolutionKind.NodeNext,
      target: ts.ScriptTarget.ES2022,
      // Emit only: no type check, no lib to load.
      types: [],
      noLib: true,
      rootDir: root,
      outDir: out,
      skipLibCheck: true,
      noCheck: true,
    });
    if (program.emit().emitSkipped) throw new Error('could not compile the key manager for the child processes');
    const script = join(out, 'child.mjs');
    writeFileSync(
      script,
      `import pkcs11js from 'pkcs11js';
import { openPkcs11KeyManager } from './src/issuer/pkcs11-keys.js';
import { parsePkcs11Uri } from './src/pkcs11/uri.js';
const [uri, startAt] = process.argv.slice(2);
let vanished = 0;
// VANISH_ONCE_AFTER_INITIALIZE=n: the first key read once C_Initialize ran n times (1: the
// first listing; 2: the listing after the reconnect that follows a generation) has vanished.
const vanishAfter = Number(process.env.VANISH_ONCE_AFTER_INITIALIZE ?? 0);
if (vanishAfter > 0) {
  const proto = pkcs11js.PKCS11.prototype;
  const { C_Initialize, C_GetAttributeValue } = proto;
  let initialized = 0;
  proto.C_Initialize = function (...args) {
    initialized++;
    return C_Initialize.apply(this, args);
  };
  proto.C_GetAttributeValue = function (...args) {
    if (initialized >= vanishAfter && vanished === 0) {
      vanished++;
      // As the native module words it: pkcs11js makes a Pkcs11Error of it.
      throw new Error('CKR_OBJECT_HANDLE_INVALID:130');
    }
    return C_GetAttributeValue.apply(this, args);
  };
}
const log = [];
const logger = { info: (o, m) => log.push(m), warn: (o, m) => log.push(m) };
await new Promise((r) => setTimeout(r, Math.max(0, Number(startAt) - Date.now())));
const manager = await openPkcs11KeyManager(parsePkcs11Uri(uri), { logger });
const roles = ['x509-ca', 'jwt', 'audit'];
const signers = await Promise.all(roles.map((role) => manager.signer(role)));
await manager.close();
process.stdout.write(JSON.stringify({ spkis: Object.fromEntries(roles.map((r, i) => [r, Buffer.from(signers[i].spki).toString('hex')])), log, vanished }));
`,
    );
    return { script, remove };
  } catch (e) {
    remove();
    throw e;
  }
}
