/**
 * loadConfig (src/config/config.ts): a JSON file, then ATTESTOR_* variables, then flags; one
 * strict schema, every refusal ERR_CONFIG naming the key; the defaults and the values derived
 * from other keys (keys URI, listen address, public URL).
 */
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { keysUri, listenAddress, loadConfig, publicUrl, type Config, type ConfigSources } from '../src/config/config.js';
import { AttestorError } from '../src/errors.js';

let tmp: string;
beforeAll(() => {
  tmp = mkdtempSync(join(tmpdir(), 'attestor-config-'));
});
afterAll(() => {
  if (tmp) rmSync(tmp, { recursive: true, force: true });
});

let seq = 0;
/** A config file holding `content` (an object is written as JSON). */
function configFile(content: unknown): string {
  const path = join(tmp, `config-${seq++}.json`);
  writeFileSync(path, typeof content === 'string' ? content : JSON.stringify(content));
  return path;
}

/** The ERR_CONFIG message loadConfig refuses `sources` with. */
function refusal(sources: ConfigSources): string {
  try {
    loadConfig(sources);
  } catch (e) {
    expect(e).toBeInstanceOf(AttestorError);
    expect((e as AttestorError).code).toBe('ERR_CONFIG');
    return (e as AttestorError).message;
  }
  return expect.unreachable('the configuration was accepted');
}

const base = { dataDir: '/srv/attestor' };

describe('sources and precedence', () => {
  it('a file alone is a whole configuration', () => {
    const c = loadConfig({ file: configFile({ ...base, trustDomain: 'file.example', limits: { bodyBytes: 1024 } }) });
    expect(c).toMatchObject({ dataDir: '/srv/attestor', trustDomain: 'file.example', limits: { bodyBytes: 1024 } });
  });

  it('file < ATTESTOR_* environment < flags, key by key', () => {
    const file = configFile({ ...base, trustDomain: 'file.example', listen: '127.0.0.1:1111', logLevel: 'warn', keys: 'file:/from/file' });
    const env = { ATTESTOR_TRUST_DOMAIN: 'env.example', ATTESTOR_LISTEN: '127.0.0.1:2222', ATTESTOR_DATA_DIR: '/from/env' };
    const flags = { listen: '127.0.0.1:3333' };
    const c = loadConfig({ file, env, flags });
    expect(c.logLevel).toBe('warn'); // file only
    expect(c.keys).toBe('file:/from/file'); // file only
    expect(c.trustDomain).toBe('env.example'); // env over file
    expect(c.dataDir).toBe('/from/env'); // env over file
    expect(c.listen).toBe('127.0.0.1:3333'); // flag over env over file
  });

  it('every documented ATTESTOR_* variable sets its key', () => {
    const env = {
      ATTESTOR_DATA_DIR: '/d',
      ATTESTOR_DATABASE: 'postgres://attestor@db.example/attestor',
      ATTESTOR_LISTEN: '[::1]:9443',
      ATTESTOR_PUBLIC_URL: 'https://verifier.example',
      ATTESTOR_TRUST_DOMAIN: 'fleet.example',
      ATTESTOR_EK_ROOTS: '/etc/attestor/ek-roots',
      ATTESTOR_KEYS: 'pkcs11:token=attestor',
      ATTESTOR_LOG_LEVEL: 'debug',
    };
    expect(loadConfig({ env })).toMatchObject({
      dataDir: '/d',
      database: 'postgres://attestor@db.example/attestor',
      listen: '[::1]:9443',
      publicUrl: 'https://verifier.example',
      trustDomain: 'fleet.example',
      ekRoots: '/etc/attestor/ek-roots',
      keys: 'pkcs11:token=attestor',
      logLevel: 'debug',
    });
  });

  it('an empty variable and a flag that was not given (undefined) override nothing', () => {
    const file = configFile({ ...base, trustDomain: 'file.example', listen: '127.0.0.1:1111' });
    const c = loadConfig({ file, env: { ATTESTOR_TRUST_DOMAIN: '' }, flags: { listen: undefined, trustDomain: undefined } });
    expect(c.trustDomain).toBe('file.example');
    expect(c.listen).toBe('127.0.0.1:1111');
  });

  it('variables outside ATTESTOR_* are not read, even when they look like keys', () => {
    const c = loadConfig({ flags: base, env: { TRUST_DOMAIN: 'x.example', trustDomain: 'y.example', ATTESTOR_TRUSTDOMAIN: 'z.example' } });
    expect(c.trustDomain).toBe('attestor.internal');
  });
});

describe('refusals name the key', () => {
  it('an unknown top-level key in the file', () => {
    const msg = refusal({ file: configFile({ ...base, listenAddress: '127.0.0.1:1' }) });
    expect(msg).toContain('listenAddress');
  });

  it('an unknown key inside a section names the section and the key', () => {
    const msg = refusal({ file: configFile({ ...base, limits: { bodyByte: 10 } }) });
    expect(msg).toContain('configuration key "limits"');
    expect(msg).toContain('bodyByte');
    expect(refusal({ file: configFile({ ...base, attestation: { nonceTTL: 10 } }) })).toContain('nonceTTL');
    // A CA due for rotation as soon as it is active would rotate forever.
    expect(refusal({ file: configFile({ ...base, ca: { lifetimeDays: 365, rotateBeforeDays: 200 } }) })).toMatch(/ca\.rotateBeforeDays.*at most half of ca\.lifetimeDays/);
    expect(loadConfig({ file: configFile({ ...base, ca: { lifetimeDays: 365, rotateBeforeDays: 182 } }) }).ca.rotateBeforeDays).toBe(182);
    expect(refusal({ file: configFile({ ...base, tls: { cert: '/c', key: '/k', ca: '/x' } }) })).toContain('"ca"');
  });

  it('an unknown key given as a flag is refused too', () => {
    expect(refusal({ flags: { ...base, listne: '127.0.0.1:1' } as never })).toContain('listne');
  });

  it.each([
    ['a number as a string', { limits: { bodyBytes: '1024' } }, 'limits.bodyBytes'],
    ['a fraction', { limits: { headersTimeoutMs: 1.5 } }, 'limits.headersTimeoutMs'],
    ['zero', { attestation: { nonceTtlSeconds: 0 } }, 'attestation.nonceTtlSeconds'],
    ['over the maximum', { attestation: { jwtTtlSeconds: 86401 } }, 'attestation.jwtTtlSeconds'],
    ['a string as a boolean', { attestation: { allowSha1: 'yes' } }, 'attestation.allowSha1'],
    ['an unknown log level', { logLevel: 'verbose' }, 'logLevel'],
    ['an uppercase trust domain', { trustDomain: 'Attestor.Internal' }, 'trustDomain'],
    ['a trust domain with a path', { trustDomain: 'example.org/x' }, 'trustDomain'],
    ['a listen address without a port', { listen: 'localhost' }, 'listen'],
    ['an http public URL', { publicUrl: 'http://verifier.example' }, 'publicUrl'],
    ['a public URL that is no URL', { publicUrl: 'verifier.example' }, 'publicUrl'],
    ['an EK hash in uppercase', { registeredEkHashes: ['AB'.repeat(32)] }, 'registeredEkHashes.0'],
    ['a section that is not an object', { limits: 5 }, 'limits'],
    ['an empty data dir', { dataDir: '' }, 'dataDir'],
  ])('wrong type or value: %s', (_what, values, key) => {
    expect(refusal({ file: configFile({ ...base, ...values }) })).toMatch(new RegExp(`^configuration key "${key.replace(/\./g, '\\.')}": `));
  });

  it('a missing data dir names dataDir', () => {
    expect(refusal({ env: {} })).toMatch(/^configuration key "dataDir": /);
  });

  it('a wrong value from a variable or a flag names its key', () => {
    expect(refusal({ flags: base, env: { ATTESTOR_LOG_LEVEL: 'loud' } })).toMatch(/^configuration key "logLevel": /);
    expect(refusal({ flags: { ...base, listen: '127.0.0.1' } })).toMatch(/^configuration key "listen": /);
  });

  it('a headers deadline longer than the request deadline is refused (the listener could not start)', () => {
    const msg = refusal({ flags: { ...base, limits: { headersTimeoutMs: 60_000, requestTimeoutMs: 30_000 } } });
    expect(msg).toMatch(/^configuration key "limits\.headersTimeoutMs": /);
    expect(loadConfig({ flags: { ...base, limits: { headersTimeoutMs: 30_000, requestTimeoutMs: 30_000 } } }).limits.headersTimeoutMs).toBe(30_000);
  });

  it("body bytes in flight per address below a route's body limit, or above those in all, are refused (a body could never be admitted)", () => {
    const mib = 1024 * 1024;
    expect(refusal({ flags: { ...base, limits: { bodyBytesInFlightPerAddress: 8 * mib } } })).toMatch(/^configuration key "limits\.bodyBytesInFlightPerAddress": must be at least/);
    expect(refusal({ flags: { ...base, limits: { bodyBytesInFlight: 16 * mib } } })).toMatch(/^configuration key "limits\.bodyBytesInFlightPerAddress": must not exceed/);
    const c = loadConfig({ flags: { ...base, limits: { attestationBodyBytes: 8 * mib, bodyBytesInFlightPerAddress: 8 * mib, bodyBytesInFlight: 16 * mib } } });
    expect(c.limits).toMatchObject({ bodyBytesInFlightPerAddress: 8 * mib, bodyBytesInFlight: 16 * mib });
  });

  it('a file that cannot be read, is not JSON, or is not an object', () => {
    expect(refusal({ file: join(tmp, 'absent.json') })).toContain('ENOENT');
    expect(refusal({ file: configFile('{"dataDir": "/d",') })).toContain('is not valid JSON');
    for (const text of ['[]', 'null', '"x"', '42']) expect(refusal({ file: configFile(text) })).toContain('must hold a JSON object');
  });
});

describe('defaults', () => {
  it('one key (the data dir) is enough; every other key has its documented default', () => {
    const c: Config = loadConfig({ flags: base });
    expect(c).toEqual({
      dataDir: '/srv/attestor',
      listen: '127.0.0.1:8443',
      trustDomain: 'attestor.internal',
      registeredEkHashes: [],
      serverNames: [],
      attestation: { freshnessSeconds: 3600, nonceTtlSeconds: 60, enrollmentTtlSeconds: 300, x509TtlSeconds: 3600, jwtTtlSeconds: 300, allowSha1: false, quarantineOnFailure: true, watchdogSeconds: 30 },
      ca: { lifetimeDays: 1825 },
      keyRotation: { activationDelaySeconds: 3600 },
      limits: {
        attestationBodyBytes: 12 * 1024 * 1024,
        bodyBytes: 256 * 1024,
        bodyBytesInFlight: 128 * 1024 * 1024,
        bodyBytesInFlightPerAddress: 32 * 1024 * 1024,
        headersTimeoutMs: 10_000,
        requestTimeoutMs: 30_000,
        keepAliveTimeoutMs: 5_000,
        enrollmentsPerMinute: 60,
        challengesPerMinute: 600,
        agentRequestsPerMinute: 60,
        connectionsPerAddress: 256,
        maxConnections: 10_000,
      },
      audit: { checkpointEvery: 1000, checkpointSeconds: 300 },
      logLevel: 'info',
    });
    expect(c.database).toBeUndefined();
    expect(c.keys).toBeUndefined();
    expect(c.publicUrl).toBeUndefined();
  });

  it('a partly given section keeps the defaults of its other keys', () => {
    const c = loadConfig({ file: configFile({ ...base, limits: { bodyBytes: 1000 }, attestation: { allowSha1: true } }) });
    expect(c.limits).toMatchObject({ bodyBytes: 1000, attestationBodyBytes: 12 * 1024 * 1024, enrollmentsPerMinute: 60 });
    expect(c.attestation).toMatchObject({ allowSha1: true, nonceTtlSeconds: 60 });
  });

  it('the keys default to development key files in the data dir', () => {
    expect(keysUri(loadConfig({ flags: base }))).toBe('file:/srv/attestor/keys');
    expect(keysUri(loadConfig({ flags: { ...base, keys: 'pkcs11:token=attestor' } }))).toBe('pkcs11:token=attestor');
  });
});

describe('listen address and public URL', () => {
  const with_ = (values: Record<string, unknown>) => loadConfig({ flags: { ...base, ...values } });

  it.each([
    ['127.0.0.1:8443', '127.0.0.1', 8443, 'https://127.0.0.1:8443'],
    ['localhost:443', 'localhost', 443, 'https://localhost:443'],
    ['verifier.example:9000', 'verifier.example', 9000, 'https://verifier.example:9000'],
    ['[::1]:8443', '::1', 8443, 'https://[::1]:8443'],
    ['0.0.0.0:8443', '0.0.0.0', 8443, 'https://localhost:8443'],
    ['[::]:8443', '::', 8443, 'https://localhost:8443'],
  ])('%s listens on %s port %i and is reached at %s', (listen, host, port, url) => {
    const c = with_({ listen });
    expect(listenAddress(c)).toEqual({ host, port });
    expect(publicUrl(c)).toBe(url);
  });

  it('with port 0 the public URL carries the port actually bound', () => {
    const c = with_({ listen: '127.0.0.1:0' });
    expect(listenAddress(c)).toEqual({ host: '127.0.0.1', port: 0 });
    expect(publicUrl(c, 43123)).toBe('https://127.0.0.1:43123');
  });

  it('a configured public URL wins over the listen address and the bound port, without trailing slashes', () => {
    const c = with_({ listen: '0.0.0.0:0', publicUrl: 'https://verifier.example:8443/' });
    expect(publicUrl(c, 43123)).toBe('https://verifier.example:8443');
    expect(publicUrl(with_({ publicUrl: 'https://verifier.example/attestor//' }))).toBe('https://verifier.example/attestor');
  });

  it('a port above 65535 is refused naming listen', () => {
    const c = with_({ listen: '127.0.0.1:70000' });
    try {
      listenAddress(c);
      expect.unreachable('accepted');
    } catch (e) {
      expect((e as AttestorError).code).toBe('ERR_CONFIG');
      expect((e as AttestorError).message).toMatch(/^configuration key "listen": /);
    }
    expect(() => publicUrl(c)).toThrow(/configuration key "listen"/);
  });
});
