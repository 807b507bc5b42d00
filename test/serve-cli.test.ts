/**
 * `attestor serve` and `attestor token create` as a user runs them: the built bin
 * (dist/cli/attestor.js, `npm run build`) spawned with a temp data dir and --listen
 * 127.0.0.1:0, talked to over HTTPS; software keys and a SoftHSM token; SQLite and a private
 * PostgreSQL schema; the start-up failures an operator meets (wrong PIN, unreachable database,
 * a config file with a typo), each with its code and without the secret.
 */
import { randomBytes, X509Certificate } from 'node:crypto';
import { existsSync, mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ApiError } from '../src/client/api-client.js';
import { AgentBody, BaselineBody, pageOf } from '../src/wire/schemas.js';
import { ADMIN_TOKEN, caPemOf, childEnv, createProcessHarness, lastLine, pinnedClient } from './helpers/processes.js';
import { startSoftHsm, type SoftHsm } from './helpers/softhsm.js';
import { createTestSchema, dropTestSchema, TEST_PG_URL } from './store-pg.js';

let tmp: string;
const processes = createProcessHarness();
const { start, run, serve } = processes;

beforeAll(() => {
  tmp = mkdtempSync(join(tmpdir(), 'attestor-serve-cli-'));
});

afterAll(() => {
  processes.killAll();
  if (tmp) rmSync(tmp, { recursive: true, force: true });
});

let seq = 0;
function freshDir(what: string): string {
  const dir = join(tmp, `${what}-${seq++}`);
  mkdirSync(dir);
  return dir;
}

describe('software keys, SQLite', () => {
  let dataDir: string;
  let fingerprint: string;

  it('first start: the URL, the root CA fingerprint (SHA-256 of /v1/ca.pem), the warning and a working admin token; SIGTERM exits 0', { timeout: 120_000 }, async () => {
    dataDir = freshDir('data');
    const s = await serve(['--data-dir', dataDir]);
    const [, token] = await s.waitFor(ADMIN_TOKEN);
    expect(s.url).toMatch(/^https:\/\/127\.0\.0\.1:\d+$/);
    expect(s.out()).toContain('WARNING: software issuing keys (file:): for development only\n');
    const client = await pinnedClient(s, token);
    try {
      expect(await client.call('GET', '/v1/agents', pageOf(AgentBody))).toEqual({ items: [], next: null });
    } finally {
      client.close();
    }
    fingerprint = s.fingerprint;
    const exit = await s.stop();
    expect([exit.code, exit.signal]).toEqual([0, null]);
    expect(exit.out.endsWith('stopping\n')).toBe(true);
    // The token is shown once, on stdout: never in the log.
    expect(exit.err).not.toContain(token);
    expect(exit.err).toContain('SOFTWARE ISSUING KEYS');
  });

  it('a second start on the same data dir: the same root, and no new token', { timeout: 120_000 }, async () => {
    const s = await serve(['--data-dir', dataDir]);
    expect(s.fingerprint).toBe(fingerprint);
    (await pinnedClient(s)).close();
    const exit = await s.stop();
    expect(exit.code).toBe(0);
    expect(exit.out).not.toMatch(/token/i);
  });

  it('token create prints the token on its last line; it authenticates against the running verifier; an auditor token cannot write', { timeout: 120_000 }, async () => {
    const s = await serve(['--data-dir', dataDir]);
    try {
      const operator = await run(['token', 'create', '--role', 'operator', '--label', 'ci', '--data-dir', dataDir]);
      expect(operator.code, operator.err).toBe(0);
      const auditor = await run(['token', 'create', '--role', 'auditor', '--data-dir', dataDir]);
      expect(auditor.code, auditor.err).toBe(0);
      const [operatorToken, auditorToken] = [lastLine(operator.out), lastLine(auditor.out)];
      expect(operatorToken).toMatch(/^[A-Za-z0-9_-]{43}$/);
      expect(operator.out).toMatch(/^token [0-9a-f-]{36} \(role operator\) created; it is shown once:\n/);

      const asOperator = await pinnedClient(s, operatorToken);
      const asAuditor = await pinnedClient(s, auditorToken);
      try {
        expect((await asOperator.call('GET', '/v1/agents', pageOf(AgentBody))).items).toEqual([]);
        expect((await asAuditor.call('GET', '/v1/agents', pageOf(AgentBody))).items).toEqual([]);
        const refused = await asAuditor.call('POST', '/v1/baselines', BaselineBody, { name: 'x', document: { version: 1 } }).catch((e: unknown) => e);
        expect(refused).toBeInstanceOf(ApiError);
        expect((refused as ApiError).remoteCode).toBe('ERR_FORBIDDEN');
        expect((refused as ApiError).status).toBe(403);
      } finally {
        asOperator.close();
        asAuditor.close();
      }
    } finally {
      expect((await s.stop()).code).toBe(0);
    }
  });
});

describe('PostgreSQL', () => {
  let schema: string | undefined;
  afterAll(async () => {
    if (schema) await dropTestSchema(schema);
  });

  it('serve and token create on one private schema: the token created offline works', { timeout: 120_000 }, async () => {
    schema = await createTestSchema();
    const database = `${TEST_PG_URL}?schema=${schema}`;
    const s = await serve(['--data-dir', freshDir('pg-data'), '--database', database]);
    try {
      expect(s.out()).toMatch(/\(postgres\)\n/);
      // Another data dir: the token goes into the database, not into a directory.
      const created = await run(['token', 'create', '--role', 'operator', '--data-dir', freshDir('pg-token'), '--database', database]);
      expect(created.code, created.err).toBe(0);
      const client = await pinnedClient(s, lastLine(created.out));
      try {
        expect((await client.call('GET', '/v1/agents', pageOf(AgentBody))).items).toEqual([]);
      } finally {
        client.close();
      }
    } finally {
      expect((await s.stop()).code).toBe(0);
    }
  });
});

describe('PKCS#11 keys (SoftHSM)', () => {
  let hsm: SoftHsm;
  beforeAll(async () => {
    hsm = await startSoftHsm({ tokenLabel: 'attestor' });
  });
  afterAll(async () => {
    await hsm?.stop();
  });

  const keysUri = (pinFile: string) => `pkcs11:token=attestor?module-path=${hsm.modulePath}&pin-source=${pinFile}`;
  const pinFile = (pin: string) => {
    const path = join(freshDir('pin'), 'pin');
    writeFileSync(path, `${pin}\n`, { mode: 0o600 });
    return path;
  };
  const hsmEnv = () => childEnv({ SOFTHSM2_CONF: hsm.conf });

  it('a wrong PIN stops the start with ERR_PKCS11_LOGIN, exit 1, and the PIN is nowhere in the output', { timeout: 120_000 }, async () => {
    const wrong = randomBytes(8).toString('hex');
    const exit = await run(['serve', '--listen', '127.0.0.1:0', '--data-dir', freshDir('hsm-data'), '--keys', keysUri(pinFile(wrong))], hsmEnv());
    expect(exit.code).toBe(1);
    expect(exit.err).toMatch(/^error: ERR_PKCS11_LOGIN: /m);
    expect(exit.out + exit.err).not.toContain(wrong);
    expect(exit.out + exit.err).not.toContain(hsm.userPin);
  });

  it('with the right PIN it serves, without the software-key warning, and the admin token works', { timeout: 120_000 }, async () => {
    const s = await serve(['--data-dir', freshDir('hsm-data'), '--keys', keysUri(pinFile(hsm.userPin))], hsmEnv());
    try {
      const [, token] = await s.waitFor(ADMIN_TOKEN);
      const client = await pinnedClient(s, token);
      try {
        expect((await client.call('GET', '/v1/agents', pageOf(AgentBody))).items).toEqual([]);
      } finally {
        client.close();
      }
    } finally {
      const exit = await s.stop();
      expect(exit.code).toBe(0);
      expect(exit.out).not.toContain('WARNING');
      expect(exit.out + exit.err).not.toContain(hsm.userPin);
    }
  });
});

describe('start-up failures an operator meets', () => {
  it('an unreachable database: exit 1 with ERR_STORE_UNAVAILABLE, and the password is not shown', { timeout: 60_000 }, async () => {
    const password = `pw-${randomBytes(8).toString('hex')}`;
    const exit = await run(['serve', '--listen', '127.0.0.1:0', '--data-dir', freshDir('data'), '--database', `postgres://postgres:${password}@127.0.0.1:1/x`]);
    expect(exit.code).toBe(1);
    expect(exit.err).toMatch(/^error: ERR_STORE_UNAVAILABLE: /m);
    expect(exit.out + exit.err).not.toContain(password);
  });

  it.each([
    ['an unknown key', { listenAddress: '127.0.0.1:0' }, /^error: ERR_CONFIG: configuration key "\(top level\)": .*listenAddress/m],
    ['an unknown nested key', { limits: { bodyByte: 1 } }, /^error: ERR_CONFIG: configuration key "limits": .*bodyByte/m],
    ['a wrong type', { limits: { bodyBytes: 'large' } }, /^error: ERR_CONFIG: configuration key "limits\.bodyBytes": /m],
  ])('a config file with %s: exit 1 with ERR_CONFIG naming the key', { timeout: 60_000 }, async (_what, content, expected) => {
    const dir = freshDir('config');
    const file = join(dir, 'attestor.json');
    writeFileSync(file, JSON.stringify({ dataDir: join(dir, 'data'), ...content }));
    const exit = await run(['serve', '--config', file, '--listen', '127.0.0.1:0']);
    expect(exit.code).toBe(1);
    expect(exit.err).toMatch(expected);
    expect(existsSync(join(dir, 'data'))).toBe(false);
  });

  it('ATTESTOR_* variables override the file, and flags override both', { timeout: 120_000 }, async () => {
    const dir = freshDir('config');
    const file = join(dir, 'attestor.json');
    // Neither the file's listen address (a name that does not resolve) nor its trust domain is used.
    writeFileSync(file, JSON.stringify({ dataDir: join(dir, 'data'), listen: 'unresolvable.invalid:8443', trustDomain: 'from-file.example', logLevel: 'warn' }));
    const env = childEnv({ ATTESTOR_TRUST_DOMAIN: 'from-env.example', ATTESTOR_LISTEN: 'unresolvable.invalid:9443' });
    const s = start(['serve', '--config', file, '--listen', '127.0.0.1:0', '--public-url', 'https://attestor.example.test'], env);
    // Where it listens, and apart the URL clients are given.
    const [, url] = await s.waitFor(/listening on (https:\/\/127\.0\.0\.1:\d+) \(sqlite\)\nPublic URL: https:\/\/attestor\.example\.test\n/);
    const ca = new X509Certificate(await caPemOf(url!));
    expect(ca.subjectAltName).toBe('URI:spiffe://from-env.example');
    s.child.kill('SIGTERM');
    expect((await s.exited).code).toBe(0);
  });
});
