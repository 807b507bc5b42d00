/**
 * The verifier's PKCS#11 token goes away (its SoftHSM token directory is moved out) while
 * `attestor serve` runs: attestations that would be signed are answered 503
 * ERR_PKCS11_UNAVAILABLE and issue nothing, requests that sign nothing go on, and once the
 * token is back the verifier signs again without a restart (it reconnects and logs in once).
 */
import { X509Certificate } from 'node:crypto';
import { execFile } from 'node:child_process';
import { mkdtempSync, readdirSync, renameSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import BetterSqlite3 from 'better-sqlite3';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ChallengeResponse, TokenCreateResponse } from '../../src/wire/schemas.js';
import { refused } from '../helpers/api.js';
import { childEnv, createProcessHarness } from '../helpers/processes.js';
import { startSoftHsm, type SoftHsm } from '../helpers/softhsm.js';
import { startSwtpm, type Swtpm } from '../helpers/swtpm.js';
import { attestOnce, createVerifierProcess, enrollAndEnforce, fleetArgs, type LoadHost } from './load.js';

const execFileAsync = promisify(execFile);
/** C_SetPIN on a token from a process of its own: node -e SET_PIN <module> <label> <old PIN> <new PIN>. */
const SET_PIN = `
import pkcs11js from 'pkcs11js';
const [modulePath, label, from, to] = process.argv.slice(1);
const p11 = new pkcs11js.PKCS11();
p11.load(modulePath);
p11.C_Initialize();
const slot = p11.C_GetSlotList(true).find((s) => p11.C_GetTokenInfo(s).label.trim() === label);
const session = p11.C_OpenSession(slot, pkcs11js.CKF_SERIAL_SESSION | pkcs11js.CKF_RW_SESSION);
p11.C_Login(session, pkcs11js.CKU_USER, from);
p11.C_SetPIN(session, from, to);
p11.C_Logout(session);
p11.C_CloseSession(session);
p11.C_Finalize();
`;

describe('the PKCS#11 token gone and back', { timeout: 90_000 }, () => {
  const processes = createProcessHarness();
  let tmp: string;
  let host: Swtpm;
  let hsm: SoftHsm;
  let v: ReturnType<typeof createVerifierProcess>;
  let attesting: LoadHost;
  let agentId: string;

  const dataDir = () => join(tmp, 'data');
  const tokenDir = () => join(hsm.dir, 'tokens', readdirSync(join(hsm.dir, 'tokens'))[0]!);
  const issued = () => {
    const db = new BetterSqlite3(join(dataDir(), 'attestor.db'), { readonly: true, fileMustExist: true });
    try {
      return (db.prepare('SELECT (SELECT COUNT(*) FROM credentials) AS credentials, (SELECT COUNT(*) FROM verdicts) AS verdicts').get() as object);
    } finally {
      db.close();
    }
  };

  const attest = () => attestOnce(v.anon, attesting, agentId);


  beforeAll(async () => {
    tmp = mkdtempSync(join(tmpdir(), 'attestor-fault-pkcs11-'));
    [host, hsm] = await Promise.all([startSwtpm(), startSoftHsm({ tokenLabel: 'attestor' })]);
    attesting = { tcti: host.tcti, stateDir: join(tmp, 'attesting') };
    const pinFile = join(tmp, 'pin');
    writeFileSync(pinFile, `${hsm.userPin}\n`, { mode: 0o600 });
    const keys = `pkcs11:token=attestor?module-path=${hsm.modulePath}&pin-source=${pinFile}`;
    v = createVerifierProcess(processes, ['--data-dir', dataDir(), '--keys', keys, ...fleetArgs(tmp, [host])], childEnv({ SOFTHSM2_CONF: hsm.conf }));
    await v.start();
    agentId = await enrollAndEnforce(v.serving, v.admin, attesting);
  }, 90_000);

  afterAll(async () => {
    const exit = await v?.stop();
    processes.killAll();
    await Promise.all([host?.stop(), hsm?.stop()]);
    if (tmp) rmSync(tmp, { recursive: true, force: true });
    // A clean stop: the last checkpoint was signed with the token back.
    if (exit) expect(exit.code, exit.err).toBe(0);
  });

  it('answers 503 ERR_PKCS11_UNAVAILABLE while the token is gone, issues nothing, and signs again once it is back', async () => {
    expect((await attest()).verdict.status).toBe('affirming');
    const before = issued();
    const away = join(hsm.dir, 'away');
    const dir = tokenDir();
    renameSync(dir, away);
    try {
      // Readiness finds it before any signature does: a load balancer takes this replica out.
      const notReady = await v.anon.get('/readyz');
      expect([notReady.status, notReady.body.toString()]).toStrictEqual([503, 'the issuing keys cannot sign: their token does not answer\n']);
      for (let i = 0; i < 3; i++) {
        const e = await refused(attest(), 'ERR_PKCS11_UNAVAILABLE');
        expect(e.status).toBe(503);
        expect(e.problem.detail).toBeUndefined();
      }
      // The operator reads why in the log (never the PIN).
      expect(v.serving.err()).toMatch(/"code":"ERR_PKCS11_UNAVAILABLE","detail":"the PKCS#11 token \\"attestor\\" is unavailable: /);
      expect(v.serving.err()).not.toContain(hsm.userPin);
      // Nothing signed, nothing recorded; what needs no signature goes on.
      expect(issued()).toStrictEqual(before);
      expect((await v.admin.call('POST', '/v1/tokens', TokenCreateResponse, { role: 'auditor', label: 'token away' })).role).toBe('auditor');
      expect((await v.anon.get('/v1/ca.pem')).status).toBe(200);
    } finally {
      renameSync(away, dir);
    }
    // Back: the next signature after the reconnect interval (1 s) reconnects and succeeds.
    const deadline = Date.now() + 10_000;
    let answer: Awaited<ReturnType<typeof attest>> | undefined;
    while (!answer) {
      answer = await attest().catch((e: unknown) => {
        if ((e as { remoteCode?: string }).remoteCode !== 'ERR_PKCS11_UNAVAILABLE' || Date.now() > deadline) throw e;
        return undefined;
      });
    }
    expect(answer.verdict.status).toBe('affirming');
    expect(answer.credentials!.jwt).toBeDefined();
    expect((await v.anon.get('/readyz')).status).toBe(200);
    for (let i = 0; i < 2; i++) expect((await attest()).verdict.status).toBe('affirming');
    // The same CA key signs as before the outage.
    const ca = new X509Certificate((await v.anon.get('/v1/ca.pem')).body);
    expect(new X509Certificate(answer.credentials!.certificate).verify(ca.publicKey)).toBe(true);
  });

  /** Waits until the verifier's log, past `from`, matches `pattern`, attesting (refused) meanwhile. */
  const loggedWhileRefused = async (pattern: RegExp, from: number) => {
    const deadline = Date.now() + 10_000;
    while (!pattern.test(v.serving.err().slice(from))) {
      if (Date.now() > deadline) throw new Error(`not logged: ${pattern}\n${v.serving.err().slice(from)}`);
      await refused(attest(), 'ERR_PKCS11_UNAVAILABLE');
      await new Promise((r) => setTimeout(r, 200));
    }
  };

  it('another token under our label and PIN (another serial) is refused before the PIN is sent, and tried again; ours back, signing goes on', async () => {
    const away = join(hsm.dir, 'away');
    const dir = tokenDir();
    renameSync(dir, away);
    await execFileAsync('softhsm2-util', ['--init-token', '--free', '--label', 'attestor', '--so-pin', hsm.soPin, '--pin', hsm.userPin], { env: hsm.env });
    const impostor = tokenDir();
    await loggedWhileRefused(/the token labelled \\"attestor\\" has serial \\"\w+\\", not \\"\w+\\" as when the verifier started: another token/, v.serving.err().length);
    expect((await v.anon.get('/readyz')).status).toBe(503);
    rmSync(impostor, { recursive: true });
    renameSync(away, dir);
    const deadline = Date.now() + 10_000;
    while ((await v.anon.get('/readyz')).status !== 200) {
      if (Date.now() > deadline) throw new Error('not ready again with its own token back');
      await new Promise((r) => setTimeout(r, 300));
    }
    expect((await attest()).verdict.status).toBe('affirming');
  });

  it('a login refused when it reconnects (the PIN changed on our token) is never tried again, also once the PIN is back: a restart is needed', async () => {
    const setPin = (from: string, to: string) =>
      execFileAsync(
        process.execPath,
        ['--input-type=module', '-e', SET_PIN, hsm.modulePath, 'attestor', from, to],
        { env: { ...process.env, SOFTHSM2_CONF: hsm.conf }, cwd: process.cwd() },
      );
    await setPin(hsm.userPin, `${hsm.userPin}x`);
    // The sessions logged in before stay so until the token goes away and comes back.
    const away = join(hsm.dir, 'away');
    const dir = tokenDir();
    renameSync(dir, away);
    await refused(attest(), 'ERR_PKCS11_UNAVAILABLE');
    renameSync(away, dir);
    await loggedWhileRefused(/login to token \\"attestor\\" refused: CKR_PIN_INCORRECT; not tried again: restart the verifier/, v.serving.err().length);
    // The PIN back: a login would now succeed, yet none is tried, past the reconnect interval too.
    await setPin(`${hsm.userPin}x`, hsm.userPin);
    for (let i = 0; i < 3; i++) {
      await new Promise((r) => setTimeout(r, 600));
      await refused(attest(), 'ERR_PKCS11_UNAVAILABLE');
      expect((await v.anon.get('/readyz')).status).toBe(503);
    }

    // Restarted, the verifier logs in once and signs with the same keys.
    const exit = (await v.stop())!;
    // A clean stop all the same (the shutdown checkpoint it cannot sign is logged).
    expect([exit.code, exit.signal]).toStrictEqual([0, null]);
    await v.start();
    expect((await attest()).verdict.status).toBe('affirming');
  });
});
