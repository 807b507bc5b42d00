import { createHash, generateKeyPairSync, sign, webcrypto, type KeyObject } from 'node:crypto';
import '../src/reflect-metadata.js';
import * as x509 from '@peculiar/x509';
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { appraiseIma, appraiseImaEntries, type ImaAppraisalInput } from '../src/appraisal/appraise-ima.js';
import { parseImaRules, type ImaRules } from '../src/baseline/ima-rules.js';
import { PathGlob } from '../src/baseline/ima-glob.js';
import { imaKeyId } from '../src/eventlog/ima/digsig.js';
import { imaHashByName } from '../src/eventlog/ima/hash-algos.js';
import { initialImaState, type ImaQuotedPcrs } from '../src/eventlog/ima/incremental.js';
import { parseImaLog } from '../src/eventlog/ima/parse.js';
import { replayIma } from '../src/eventlog/ima/replay.js';
import { buildImaEntry, formatImaAscii, formatImaBinary } from '../src/eventlog/ima/serialize.js';
import type { ImaEntry } from '../src/eventlog/ima/templates.js';
import { imaSignatureHeader, imaVector, referenceReplay } from './helpers/ima.js';
import { codeOf } from './helpers/code-of.js';

const sha256 = imaHashByName('sha256', 'test');
const sha1 = imaHashByName('sha1', 'test');
const rsa = generateKeyPairSync('rsa', { modulusLength: 2048 });
const ec = generateKeyPairSync('ec', { namedCurve: 'P-384' });
const stranger = generateKeyPairSync('rsa', { modulusLength: 2048 });
const pem = (key: KeyObject) => key.export({ type: 'spki', format: 'pem' }) as string;

/** The PCR values a TPM would hold after the whole ASCII list, as a quote carries them. */
function quoteOf(ascii: Buffer): ImaQuotedPcrs {
  const values = referenceReplay(ascii);
  return { sha1: { 10: Buffer.from(values.sha1['10']!, 'hex') }, sha256: { 10: Buffer.from(values.sha256['10']!, 'hex') } };
}

function appraise(ascii: Buffer, rules: ImaRules, extra: Partial<ImaAppraisalInput> = {}) {
  return appraiseIma({ log: { format: 'ascii', bytes: ascii }, quoted: quoteOf(ascii), rules, ...extra });
}

describe('IMA appraisal of the vector against an allowlist', () => {
  const ascii = imaVector();
  const entries = parseImaLog(ascii);
  // Some files were measured more than once, with different contents.
  const allowAll: Record<string, string[]> = {};
  for (const e of entries) (allowAll[e.path] ??= []).push(`sha1:${Buffer.from(e.digest).toString('hex')}`);

  it('passes when every path is allowed with its digest, and advances the state to the end', () => {
    const result = appraise(ascii, parseImaRules({ allow: allowAll }));
    expect(result).toMatchObject({ ok: true, reasons: [], entries: 826, pendingBytes: 0 });
    expect(result.newState).toMatchObject({ entries: 826, offset: ascii.length, pcrs: referenceReplay(ascii) });
  });

  it('names the path missing from the allowlist, and does not advance the state', () => {
    const { [entries[7]!.path]: _dropped, ...allow } = allowAll;
    const result = appraise(ascii, parseImaRules({ allow }));
    expect(result.ok).toBe(false);
    expect(result.reasons.map((r) => r.code)).toEqual(entries.filter((e) => e.path === entries[7]!.path).map(() => 'ERR_IMA_FILE_NOT_ALLOWED'));
    expect(result.reasons[0]).toMatchObject({ index: 7, path: entries[7]!.path });
    expect(result.reasons[0]!.message).toContain(JSON.stringify(entries[7]!.path));
    expect(result.newState).toEqual(initialImaState('ascii'));
  });

  it('names a path whose digest is not the allowed one', () => {
    const once = entries.find((e) => e.index > 2 && allowAll[e.path]!.length === 1)!;
    const result = appraise(ascii, parseImaRules({ allow: { ...allowAll, [once.path]: [`sha1:${'ab'.repeat(20)}`, `sha256:${'cd'.repeat(32)}`] } }));
    expect(result.reasons).toEqual([expect.objectContaining({ code: 'ERR_IMA_DIGEST_NOT_ALLOWED', index: once.index, path: once.path })]);
  });

  it('skips excluded paths', () => {
    const excluded = (p: string) => p.startsWith('/usr/lib/') || p.startsWith('/lib/');
    const allow = Object.fromEntries(Object.entries(allowAll).filter(([p]) => !excluded(p)));
    expect(Object.keys(allow).length).toBeLessThan(Object.keys(allowAll).length);
    expect(appraise(ascii, parseImaRules({ allow })).ok).toBe(false);
    expect(appraise(ascii, parseImaRules({ allow, exclude: ['/usr/lib/**', '/lib/**'] })).ok).toBe(true);
  });

  it('appraises only the new entries on the next quote, and all of them again after a reset', () => {
    const rules = parseImaRules({ allow: allowAll });
    const ends: number[] = [];
    for (let i = ascii.indexOf(0x0a); i >= 0; i = ascii.indexOf(0x0a, i + 1)) ends.push(i + 1);
    const first = appraiseIma({ log: { format: 'ascii', bytes: ascii.subarray(0, ends[599]) }, quoted: quoteOf(ascii.subarray(0, ends[499])), rules });
    expect(first).toMatchObject({ ok: true, entries: 500, pendingBytes: ends[599]! - ends[499]! });
    const tail = ascii.subarray(first.newState.offset);
    const second = appraiseIma({ log: { format: 'ascii', bytes: tail, offset: first.newState.offset }, quoted: quoteOf(ascii), rules, state: first.newState });
    expect(second).toMatchObject({ ok: true, entries: 326, pendingBytes: 0 });
    expect(second.newState.pcrs).toEqual(referenceReplay(ascii));
    // After a reboot the list starts over: without the reset signal its shrinking is refused.
    const rebooted = ascii.subarray(0, ends[99]);
    const refused = appraiseIma({ log: { format: 'ascii', bytes: rebooted }, quoted: quoteOf(rebooted), rules, state: second.newState });
    expect(refused.reasons).toEqual([expect.objectContaining({ code: 'ERR_IMA_LOG_SHRUNK' })]);
    expect(refused.newState).toBe(second.newState);
    const reset = appraiseIma({ log: { format: 'ascii', bytes: rebooted }, quoted: quoteOf(rebooted), rules, state: second.newState, reset: true });
    expect(reset).toMatchObject({ ok: true, entries: 100 });
  });
});

describe('tampered IMA lists are refused with the right reason', () => {
  const ascii = imaVector();
  const lines = ascii.toString('latin1').split('\n');
  const entries = parseImaLog(ascii);
  const rules = parseImaRules({ exclude: ['**'] });
  const quoted = quoteOf(ascii);
  const withLines = (l: string[]) => Buffer.from(l.join('\n'), 'latin1');
  const run = (bytes: Buffer) => appraiseIma({ log: { format: 'ascii', bytes }, quoted, rules });

  it('the untampered list passes', () => {
    expect(run(ascii).ok).toBe(true);
  });

  it('a changed file digest with the old template hash: ERR_IMA_TEMPLATE_HASH_MISMATCH naming the entry', () => {
    const l = [...lines];
    l[200] = l[200]!.replace(/sha1:[0-9a-f]{40}/, `sha1:${'5'.repeat(40)}`);
    const result = run(withLines(l));
    expect(result.reasons).toEqual([expect.objectContaining({ code: 'ERR_IMA_TEMPLATE_HASH_MISMATCH', index: 200, path: entries[200]!.path })]);
    expect(result.entries).toBe(0);
  });

  it('a changed file digest with a recomputed template hash: ERR_IMA_PCR_MISMATCH naming PCR 10', () => {
    const forged = buildImaEntry(200, 10, 'ima-ng', { digestAlgo: sha1, digest: Buffer.alloc(20, 0x55), name: entries[200]!.nameBytes });
    const l = [...lines];
    l[200] = formatImaAscii([forged]).toString('latin1').trimEnd();
    const result = run(withLines(l));
    expect(result.reasons).toEqual([expect.objectContaining({ code: 'ERR_IMA_PCR_MISMATCH', pcr: 10 })]);
    expect(result.reasons[0]!.message).toMatch(/^PCR 10 /);
  });

  it('a dropped entry or an inserted one: ERR_IMA_PCR_MISMATCH', () => {
    const dropped = [...lines];
    dropped.splice(300, 1);
    expect(run(withLines(dropped)).reasons[0]).toMatchObject({ code: 'ERR_IMA_PCR_MISMATCH', pcr: 10 });
    const inserted = [...lines];
    inserted.splice(300, 0, lines[10]!);
    expect(run(withLines(inserted)).reasons[0]).toMatchObject({ code: 'ERR_IMA_PCR_MISMATCH', pcr: 10 });
  });

  it('an entry appended after the quote is left pending, not accepted', () => {
    const extra = buildImaEntry(826, 10, 'ima-ng', { digestAlgo: sha1, digest: Buffer.alloc(20, 1), name: Buffer.from('/tmp/evil') });
    const appended = Buffer.concat([ascii, formatImaAscii([extra])]);
    const result = appraiseIma({ log: { format: 'ascii', bytes: appended }, quoted, rules: parseImaRules({}) });
    // Nothing is allowed by these rules; only the entries the quote covers are judged.
    expect(result.reasons).toHaveLength(826);
    expect(result.reasons.some((r) => r.path === '/tmp/evil')).toBe(false);
    expect(result.pendingBytes).toBe(appended.length - ascii.length);
  });

  it('a file name with a line break (any local user can make one): the ASCII list is appraised as the binary one, and the state advances', () => {
    const entry = (index: number, path: string) => buildImaEntry(index, 10, 'ima-ng', { digestAlgo: sha1, digest: Buffer.alloc(20, index), name: Buffer.from(path) });
    const list = [entry(0, 'boot_aggregate'), entry(1, '/tmp/evil\nname'), entry(2, '/usr/bin/ls')];
    const bytes = formatImaAscii(list);
    const pcrs = replayIma(list);
    const quoted = { sha1: { 10: Buffer.from(pcrs.sha1['10']!, 'hex') }, sha256: { 10: Buffer.from(pcrs.sha256['10']!, 'hex') } };
    const binary = appraiseIma({ log: { format: 'binary', bytes: formatImaBinary(list) }, quoted, rules });
    expect(binary).toMatchObject({ ok: true, entries: 3 });
    const result = appraiseIma({ log: { format: 'ascii', bytes }, quoted, rules });
    expect(result).toMatchObject({ ok: true, reasons: [], entries: 3, pendingBytes: 0 });
    expect(result.newState).toMatchObject({ entries: 3, offset: bytes.length });
    const judged = appraiseIma({ log: { format: 'ascii', bytes }, quoted, rules: parseImaRules({ exclude: ['/usr/**', 'boot_aggregate'] }) });
    expect(judged.reasons).toEqual([expect.objectContaining({ code: 'ERR_IMA_FILE_NOT_ALLOWED', index: 1, path: '/tmp/evil\nname' })]);
  });

  it('a malformed line: the parse error code', () => {
    const l = [...lines];
    l[5] = 'not an entry';
    expect(run(withLines(l)).reasons).toEqual([expect.objectContaining({ code: 'ERR_IMA_MALFORMED' })]);
  });
});

describe('IMA signatures (ima-sig) and violations', () => {
  const files: Record<string, string> = { '/usr/bin/bash': 'bash', '/usr/bin/ls': 'ls', '/opt/tool': 'tool', '/etc/motd': 'motd' };
  const digestOf = (path: string) => createHash('sha256').update(files[path]!).digest();
  const sigBy = (pair: { privateKey: KeyObject; publicKey: KeyObject }, path: string, algo = 'sha256') =>
    imaSignatureHeader(algo, imaKeyId(pair.publicKey), sign(algo, Buffer.from(files[path]!), pair.privateKey));
  const sigEntry = (index: number, path: string, signature?: Uint8Array) =>
    buildImaEntry(index, 10, 'ima-sig', { digestAlgo: sha256, digest: digestOf(path), name: Buffer.from(path), ...(signature ? { signature } : {}) });
  const rulesWith = (extra: object = {}) =>
    parseImaRules({ signatures: { keys: [{ publicKey: pem(rsa.publicKey) }, { publicKey: pem(ec.publicKey) }], requiredFor: ['/usr/bin/*'] }, ...extra });
  const judge = (list: ImaEntry[], rules: ImaRules) => appraiseImaEntries(parseImaLog(formatImaAscii(list)), rules);

  it('files signed by a trusted RSA or ECDSA key pass, required or not, allowlisted or not', () => {
    const list = [sigEntry(0, '/usr/bin/bash', sigBy(rsa, '/usr/bin/bash')), sigEntry(1, '/usr/bin/ls', sigBy(ec, '/usr/bin/ls')), sigEntry(2, '/opt/tool', sigBy(ec, '/opt/tool'))];
    expect(judge(list, rulesWith())).toEqual([]);
  });

  it('a required signature that is missing fails even for an allowlisted file; elsewhere the allowlist suffices', () => {
    const rules = rulesWith({ allow: { '/usr/bin/bash': [`sha256:${digestOf('/usr/bin/bash').toString('hex')}`], '/etc/motd': [`sha256:${digestOf('/etc/motd').toString('hex')}`] } });
    const reasons = judge([sigEntry(0, '/usr/bin/bash'), sigEntry(1, '/etc/motd')], rules);
    expect(reasons).toEqual([expect.objectContaining({ code: 'ERR_IMA_SIGNATURE_MISSING', index: 0, path: '/usr/bin/bash' })]);
    const ngEntry = buildImaEntry(0, 10, 'ima-ng', { digestAlgo: sha256, digest: digestOf('/usr/bin/ls'), name: Buffer.from('/usr/bin/ls') });
    expect(judge([ngEntry], rules)[0]).toMatchObject({ code: 'ERR_IMA_SIGNATURE_MISSING', path: '/usr/bin/ls' });
  });

  it('a signature by an untrusted key, by the wrong key under a trusted id, or over another file fails', () => {
    const rules = rulesWith({ signatures: { keys: [{ publicKey: pem(rsa.publicKey) }, { publicKey: pem(ec.publicKey), keyId: imaKeyId(stranger.publicKey) }], requiredFor: ['/usr/**'] } });
    const reasons = judge(
      [
        sigEntry(0, '/usr/bin/bash', imaSignatureHeader('sha256', 'deadbeef', sign('sha256', Buffer.from('bash'), stranger.privateKey))),
        sigEntry(1, '/usr/bin/ls', sigBy(stranger, '/usr/bin/ls')),
        sigEntry(2, '/usr/bin/bash', sigBy(rsa, '/usr/bin/ls')),
      ],
      rules,
    );
    expect(reasons.map((r) => [r.code, r.index])).toEqual([
      ['ERR_IMA_SIGNATURE_UNKNOWN_KEY', 0],
      ['ERR_IMA_SIGNATURE_INVALID', 1],
      ['ERR_IMA_SIGNATURE_INVALID', 2],
    ]);
    expect(reasons[0]!.message).toContain('key id deadbeef');
  });

  it('a signature over a digest of another algorithm than the measurement fails', () => {
    const reasons = judge([sigEntry(0, '/usr/bin/bash', sigBy(rsa, '/usr/bin/bash', 'sha384'))], rulesWith());
    expect(reasons[0]).toMatchObject({ code: 'ERR_IMA_SIGNATURE_INVALID', path: '/usr/bin/bash' });
    expect(reasons[0]!.message).toContain('sha384 digest');
  });

  it('a signature over a weak hash (sha1) fails even when it verifies: ERR_IMA_SIGNATURE_WEAK_HASH', () => {
    const sha1Entry = buildImaEntry(0, 10, 'ima-sig', {
      digestAlgo: sha1,
      digest: createHash('sha1').update('bash').digest(),
      name: Buffer.from('/usr/bin/bash'),
      signature: sigBy(rsa, '/usr/bin/bash', 'sha1'),
    });
    const reasons = judge([sha1Entry], rulesWith());
    expect(reasons).toEqual([expect.objectContaining({ code: 'ERR_IMA_SIGNATURE_WEAK_HASH', index: 0, path: '/usr/bin/bash' })]);
    expect(reasons[0]!.message).toContain('sha256 or stronger');
  });

  it('a malformed or unsupported signature header fails with its code', () => {
    const good = sigBy(rsa, '/usr/bin/bash');
    const reasons = judge(
      [sigEntry(0, '/usr/bin/bash', good.subarray(0, 20)), sigEntry(1, '/usr/bin/bash', Buffer.concat([Buffer.from([0x06]), good.subarray(1)]))],
      rulesWith(),
    );
    expect(reasons.map((r) => r.code)).toEqual(['ERR_IMA_SIGNATURE_MALFORMED', 'ERR_IMA_SIGNATURE_UNSUPPORTED']);
  });

  it('an unsigned file outside the allowlist fails naming both problems', () => {
    const [reason] = judge([sigEntry(0, '/opt/tool')], rulesWith());
    expect(reason).toMatchObject({ code: 'ERR_IMA_FILE_NOT_ALLOWED', path: '/opt/tool' });
    expect(reason!.message).toContain('no IMA signature');
  });

  it('violations fail unless allowViolations is true, naming the file; exclude patterns never exempt one', () => {
    const violation = buildImaEntry(0, 10, 'ima-ng', { digestAlgo: sha256, digest: Buffer.alloc(32), name: Buffer.from('/var/lib/db') }, true);
    const list = formatImaAscii([violation]);
    const quoted = quoteOf(list);
    const run = (rules: unknown) => appraiseIma({ log: { format: 'ascii', bytes: list }, quoted, rules: parseImaRules(rules) });
    expect(run({}).reasons).toEqual([expect.objectContaining({ code: 'ERR_IMA_VIOLATION', index: 0, path: '/var/lib/db' })]);
    expect(run({ exclude: ['/var/**'] }).reasons.map((r) => r.code)).toEqual(['ERR_IMA_VIOLATION']);
    expect(run({ allowViolations: true }).ok).toBe(true);
  });

  it('a violation renamed into an excluded path still fails: its name is not measured', () => {
    // A violation's template hash is zero and PCR 10 is extended with all ones, so a violation
    // on /usr/bin/sudo relabeled /var/log/x.log replays to the same quoted PCR.
    const onSudo = buildImaEntry(0, 10, 'ima-ng', { digestAlgo: sha256, digest: Buffer.alloc(32), name: Buffer.from('/usr/bin/sudo') }, true);
    const relabeled = buildImaEntry(0, 10, 'ima-ng', { digestAlgo: sha256, digest: Buffer.alloc(32), name: Buffer.from('/var/log/x.log') }, true);
    const real = formatImaAscii([onSudo]);
    const forged = formatImaAscii([relabeled]);
    const quoted = quoteOf(real);
    expect(quoteOf(forged)).toEqual(quoted);
    const rules = rulesWith({ exclude: ['/var/log/**'], signatures: { keys: [{ publicKey: pem(rsa.publicKey) }], requiredFor: ['/usr/bin/**'] } });
    const appraisal = appraiseIma({ log: { format: 'ascii', bytes: forged }, quoted, rules });
    expect(appraisal.ok).toBe(false);
    expect(appraisal.reasons).toEqual([expect.objectContaining({ code: 'ERR_IMA_VIOLATION', index: 0, path: '/var/log/x.log' })]);
  });

  it('requiredFor wins over exclude patterns and allowed violations: a signature requirement is never dropped', () => {
    const rules = rulesWith({ exclude: ['/usr/**'], allowViolations: true });
    const violation = buildImaEntry(1, 10, 'ima-sig', { digestAlgo: sha256, digest: Buffer.alloc(32), name: Buffer.from('/usr/bin/ls') }, true);
    const excluded = buildImaEntry(2, 10, 'ima-sig', { digestAlgo: sha256, digest: Buffer.alloc(32, 7), name: Buffer.from('/usr/lib/libc.so') });
    const reasons = judge([sigEntry(0, '/usr/bin/bash'), violation, excluded], rules);
    expect(reasons.map((r) => [r.code, r.path])).toEqual([
      ['ERR_IMA_SIGNATURE_MISSING', '/usr/bin/bash'],
      ['ERR_IMA_VIOLATION', '/usr/bin/ls'],
    ]);
    expect(reasons[1]!.message).toContain('a signature is required');
  });
});

describe('IMA rules validation', () => {
  const code = (json: unknown) => codeOf(() => parseImaRules(json));
  const key = { publicKey: pem(rsa.publicKey) };
  const hex64 = 'a'.repeat(64);

  it('accepts the documented form, normalizing digests to lowercase', () => {
    const rules = parseImaRules({
      allow: { '/usr/bin/bash': [`SHA256:${'A'.repeat(64)}`] },
      exclude: ['/tmp/**'],
      signatures: { keys: [key, { publicKey: pem(ec.publicKey), keyId: 'A1B2C3D4' }], requiredFor: ['/usr/**'] },
      allowViolations: false,
    });
    expect([...rules.allow.get('/usr/bin/bash')!]).toEqual([`sha256:${'a'.repeat(64)}`]);
    expect([...rules.signatureKeys.keys()]).toEqual([imaKeyId(rsa.publicKey), 'a1b2c3d4']);
    expect(parseImaRules({}).allowViolations).toBe(false);
  });

  it('takes a signing certificate as the key', async () => {
    const alg = { name: 'ECDSA', namedCurve: 'P-256', hash: 'SHA-256' };
    const keys = (await webcrypto.subtle.generateKey(alg, true, ['sign', 'verify'])) as webcrypto.CryptoKeyPair;
    const cert = await x509.X509CertificateGenerator.createSelfSigned({ name: 'CN=IMA signing', keys, signingAlgorithm: alg, serialNumber: '01' });
    const rules = parseImaRules({ signatures: { keys: [{ publicKey: cert.toString('pem') }] } });
    expect(rules.signatureKeys.size).toBe(1);
  });

  it.each([
    ['a root that is not an object', []],
    ['an unknown top-level field', { alow: {} }],
    ['allow that is not an object', { allow: [] }],
    ['an empty path', { allow: { '': [`sha256:${hex64}`] } }],
    ['a path over 4096 characters', { allow: { [`/${'a'.repeat(4096)}`]: [`sha256:${hex64}`] } }],
    ['an empty digest list', { allow: { '/a': [] } }],
    ['a digest that is not a string', { allow: { '/a': [42] } }],
    ['a digest without algorithm', { allow: { '/a': [hex64] } }],
    ['an unknown algorithm', { allow: { '/a': [`sha999:${hex64}`] } }],
    ['a digest of the wrong length', { allow: { '/a': [`sha256:${'a'.repeat(40)}`] } }],
    ['a digest that is not hex', { allow: { '/a': [`sha256:${'g'.repeat(64)}`] } }],
    ['exclude that is not a list', { exclude: '/tmp/**' }],
    ['a pattern that is not a string', { exclude: [1] }],
    ['an empty pattern', { exclude: [''] }],
    ['a pattern over 256 characters', { exclude: [`/${'a'.repeat(256)}`] }],
    ['a pattern ending in an escape', { exclude: ['/tmp/\\'] }],
    ['more than 1000 patterns', { exclude: Array.from({ length: 1001 }, (_v, i) => `/p${i}`) }],
    ['signatures that is not an object', { signatures: [] }],
    ['an unknown signatures field', { signatures: { key: [] } }],
    ['keys that is not a list', { signatures: { keys: key } }],
    ['more than 100 keys', { signatures: { keys: Array.from({ length: 101 }, () => key) } }],
    ['an unknown key field', { signatures: { keys: [{ ...key, pin: '1234' }] } }],
    ['a key that is not a string', { signatures: { keys: [{ publicKey: 1 }] } }],
    ['a private key', { signatures: { keys: [{ publicKey: rsa.privateKey.export({ type: 'pkcs8', format: 'pem' }) }] } }],
    ['a key that is not PEM', { signatures: { keys: [{ publicKey: 'hello' }] } }],
    ['an RSA key under 2048 bits', { signatures: { keys: [{ publicKey: pem(generateKeyPairSync('rsa', { modulusLength: 1024 }).publicKey) }] } }],
    ['a key on another curve', { signatures: { keys: [{ publicKey: pem(generateKeyPairSync('ec', { namedCurve: 'secp256k1' }).publicKey) }] } }],
    ['an Ed25519 key', { signatures: { keys: [{ publicKey: pem(generateKeyPairSync('ed25519').publicKey) }] } }],
    ['a key id that is not 8 hex digits', { signatures: { keys: [{ ...key, keyId: 'abc' }] } }],
    ['requiredFor without keys', { signatures: { requiredFor: ['/usr/**'] } }],
    ['allowViolations that is not a boolean', { allowViolations: 'yes' }],
    ['allowViolations that is a list', { allowViolations: [1] }],
  ])('refuses %s: ERR_IMA_RULES_INVALID', (_what, json) => {
    expect(code(json)).toBe('ERR_IMA_RULES_INVALID');
  });

  it('refuses allowViolations patterns, saying that violation names are not measured', () => {
    expect(() => parseImaRules({ allowViolations: ['/var/log/**'] })).toThrow(
      expect.objectContaining({ code: 'ERR_IMA_RULES_INVALID', message: expect.stringContaining('name is not measured') }),
    );
  });

  it('never echoes a private key into its message', () => {
    const secret = rsa.privateKey.export({ type: 'pkcs8', format: 'pem' }) as string;
    let message = '';
    try {
      parseImaRules({ signatures: { keys: [{ publicKey: secret }] } });
    } catch (e) {
      message = (e as Error).message;
    }
    expect(message).toContain('private key');
    expect(message).not.toContain(secret.slice(40, 80));
  });
});

describe('IMA path globs', () => {
  it.each([
    ['/usr/bin/*', '/usr/bin/ls', true],
    ['/usr/bin/*', '/usr/bin/x/ls', false],
    ['/usr/**', '/usr/bin/x/ls', true],
    ['/usr/**', '/usr', false],
    ['/var/log/*.log', '/var/log/syslog.log', true],
    ['/var/log/*.log', '/var/log/syslog', false],
    ['/dev/tty?', '/dev/tty1', true],
    ['/dev/tty?', '/dev/tty/', false],
    ['/a\\*b', '/a*b', true],
    ['/a\\*b', '/axb', false],
    ['boot_aggregate', 'boot_aggregate', true],
    ['boot_aggregate', 'boot_aggregate2', false],
    ['**', '', true],
    ['*/x', 'a/x', true],
  ])('%s matches %s: %s', (pattern, path, expected) => {
    expect(new PathGlob(pattern, 'test').matches(path)).toBe(expected);
  });

  /** The same language as a (backtracking, test-only) RegExp, for small inputs. */
  function reference(pattern: string): RegExp {
    let source = '';
    for (let i = 0; i < pattern.length; i++) {
      const c = pattern[i]!;
      if (c === '\\') source += (pattern[++i] ?? '').replace(/[.*+?^${}()|[\]\\/]/g, '\\$&');
      else if (c === '*' && pattern[i + 1] === '*') {
        source += '[\\s\\S]*';
        i++;
      } else if (c === '*') source += '[^/]*';
      else if (c === '?') source += '[^/]';
      else source += c.replace(/[.*+?^${}()|[\]\\/]/g, '\\$&');
    }
    return new RegExp(`^${source}$`);
  }

  it('agrees with a regular-expression reference on random patterns and paths', () => {
    const alphabet = fc.constantFrom('a', 'b', '/', '.');
    const patternChar = fc.constantFrom('a', 'b', '/', '.', '*', '**', '?', '\\*');
    fc.assert(
      fc.property(fc.array(patternChar, { minLength: 1, maxLength: 10 }), fc.array(alphabet, { maxLength: 14 }), (parts, chars) => {
        const pattern = parts.join('');
        const path = chars.join('');
        expect(new PathGlob(pattern, 'test').matches(path)).toBe(reference(pattern).test(path));
      }),
      { numRuns: 2000 },
    );
  });

  it('stays linear on a pattern made to backtrack, and ignores paths over PATH_MAX', () => {
    const glob = new PathGlob(`${'*a'.repeat(127)}b`, 'test');
    const t = performance.now();
    expect(glob.matches('a'.repeat(4096))).toBe(false);
    expect(performance.now() - t).toBeLessThan(2000);
    expect(new PathGlob('**', 'test').matches(`/${'a'.repeat(4096)}`)).toBe(false);
  });
});
