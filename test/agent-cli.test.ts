/**
 * The attestor-agent command line (src/cli/agent-program.ts, src/cli/commands/tpm.ts, and the
 * agent modules behind it: src/agent/tpm-info.ts, src/agent/quote-with-values.ts) against a
 * real swtpm: `tpm info` checked against tpm2-tools' view of the same TPM, `tpm quote` output
 * accepted by both tpm2_checkquote and `attestor quote verify`, and every error path.
 */
import { spawnSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { cpSync, mkdirSync, mkdtempSync, readFileSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join, relative } from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { TpmInfo } from '../src/agent/tpm-info.js';
import { hex } from '../src/bytes.js';
import { runAgent } from '../src/cli/agent-program.js';
import { defaultStateDir } from '../src/cli/commands/tpm.js';
import { runAttestor } from '../src/cli/program.js';
import { parsePcrFile } from '../src/tpm/pcr-file.js';
import { parseTpm2bPublic } from '../src/tpm/public.js';
import { runCli, type CliRun } from './helpers/cli.js';
import { hexHandle, startSwtpm, tpm2, type Swtpm } from './helpers/swtpm.js';

const ROOT = fileURLToPath(new URL('..', import.meta.url));

let sw: Swtpm;
let tmp: string;
beforeAll(async () => {
  sw = await startSwtpm();
  tmp = mkdtempSync(join(tmpdir(), 'attestor-agent-cli-'));
});
afterAll(async () => {
  await sw?.stop();
  if (tmp) rmSync(tmp, { recursive: true, force: true });
});

let seq = 0;
const freshDir = (what: string) => join(tmp, `${what}-${seq++}`);

const agent = (args: string[]) => runCli(runAgent, args);
const attestor = (args: string[]) => runCli(runAttestor, args);

/** A built bin (dist/cli/NAME.js, or the same under another package root) as a user runs it. */
function bin(name: string, args: string[], root = ROOT): CliRun {
  const r = spawnSync(process.execPath, [join(root, 'dist', 'cli', `${name}.js`), ...args], { encoding: 'utf8' });
  if (r.error) throw r.error;
  return { code: r.status ?? -1, out: r.stdout, err: r.stderr };
}

/** A directory of PEM files for --ek-roots. */
function pemDir(files: Record<string, string>): string {
  const dir = freshDir('roots');
  mkdirSync(dir);
  for (const [name, pem] of Object.entries(files)) writeFileSync(join(dir, name), pem);
  return dir;
}

const quoteArgs = (o: { tcti?: string; nonce?: string; pcrs?: string; state?: string; out?: string; akType?: string }) => [
  'tpm',
  'quote',
  '--tcti',
  o.tcti ?? sw.tcti,
  '--nonce',
  o.nonce ?? 'c0ffee',
  '--pcrs',
  o.pcrs ?? 'sha256:0,1,2,3,4,5,6,7',
  '--state',
  o.state ?? freshDir('state'),
  '--out',
  o.out ?? freshDir('out'),
  ...(o.akType ? ['--ak-type', o.akType] : []),
];

function expectRefused(r: CliRun, code: string): void {
  expect(r.code, r.err).toBe(1);
  expect(r.err).toMatch(new RegExp(`^error: ${code}: `));
}

describe('tpm info', () => {
  it('reports what tpm2-tools reports of the same TPM, and the EK certificates against the shipped vendor roots', async () => {
    const r = await agent(['tpm', 'info', '--tcti', sw.tcti, '--json']);
    expect(r.code, r.err).toBe(0);
    const info = JSON.parse(r.out) as TpmInfo;
    const getcap = (await tpm2(sw, ['tpm2_getcap', 'properties-fixed'])).stdout.toString();
    const raw = (name: string) => Number(new RegExp(`${name}:\\s+raw: (0x[0-9a-f]+|[0-9]+)\n`, 'i').exec(getcap)?.[1]);
    expect(info.manufacturer).toEqual({ id: `id:${raw('TPM2_PT_MANUFACTURER').toString(16).toUpperCase()}`, ascii: 'IBM' });
    expect(info.vendor).toBe('SW   TPM');
    const firmware = (BigInt(raw('TPM2_PT_FIRMWARE_VERSION_1')) << 32n) | BigInt(raw('TPM2_PT_FIRMWARE_VERSION_2'));
    expect(info.firmwareVersion).toBe(firmware.toString(16));
    expect(info.spec).toMatchObject({ family: '2.0', level: raw('TPM2_PT_LEVEL'), revision: raw('TPM2_PT_REVISION') });
    expect(info.pcrBanks).toEqual([
      { bank: 'sha1', pcrs: 24 },
      { bank: 'sha256', pcrs: 24 },
    ]);
    // swtpm_setup writes the RSA and P-384 certificates, the harness the P-256 one; none is from a vendor CA.
    expect(info.ekCertificates.map((c) => [c.nvIndex, c.template, c.error?.code])).toEqual([
      ['0x01c00002', 'L-1', 'ERR_EK_CERT_CHAIN'],
      ['0x01c0000a', 'L-2', 'ERR_EK_CERT_CHAIN'],
      ['0x01c00016', 'H-3', 'ERR_EK_CERT_CHAIN'],
    ]);
    for (const c of info.ekCertificates) expect(c).toMatchObject({ issuer: 'CN=swtpm-localca', tpmManufacturer: 'id:00001014', tpmModel: 'swtpm' });
  });

  it('names the store entry each certificate chains to, and checks the L-1/L-2 keys against the EKs the TPM derives', async () => {
    const roots = pemDir({ 'swtpm-issuer.pem': sw.caCertPem, 'swtpm-root.pem': sw.rootCaCertPem });
    const r = await agent(['tpm', 'info', '--tcti', sw.tcti, '--json', '--ek-roots', roots]);
    expect(r.code, r.err).toBe(0);
    const info = JSON.parse(r.out) as TpmInfo;
    expect(info.ekCertificates.map((c) => [c.nvIndex, c.anchor, c.ekKeyChecked, c.error])).toEqual([
      ['0x01c00002', 'swtpm-root.pem', true, undefined],
      ['0x01c0000a', 'swtpm-root.pem', true, undefined],
      ['0x01c00016', 'swtpm-root.pem', false, undefined],
    ]);
  });

  it('prints a readable report', async () => {
    const roots = pemDir({ 'swtpm-issuer.pem': sw.caCertPem });
    const r = await agent(['tpm', 'info', '--tcti', sw.tcti, '--ek-roots', roots]);
    expect(r.code, r.err).toBe(0);
    expect(r.out).toContain(`TPM             ${sw.tcti}\n`);
    expect(r.out).toContain('manufacturer    IBM (id:49424D00)\n');
    expect(r.out).toContain('PCR banks       sha1 (24 PCRs), sha256 (24 PCRs)\n');
    expect(r.out).toMatch(/firmware {8}0x[0-9a-f]{16} \(\d+\.\d+\.\d+\.\d+\)\n/);
    expect(r.out).toContain("  0x01c00002  RSA 2048 (template L-1)\n    subject     CN=unknown\n    issuer      CN=swtpm-localca\n");
    expect(r.out).toContain("    chains to   swtpm-issuer.pem (certifies this TPM's EK)\n");
    expect(r.out).toContain('  0x01c00016  ECC NIST P-384 (template H-3)\n');
  });

  it('lists a certificate index that does not hold a certificate, with ERR_EK_CERT_MALFORMED', async () => {
    const index = hexHandle(0x01c00012);
    const junk = join(sw.dir, 'junk.bin');
    writeFileSync(junk, randomBytes(64));
    await tpm2(sw, ['tpm2_nvdefine', index, '-C', 'o', '-s', '64', '-a', 'ownerwrite|ownerread|authread|authwrite']);
    try {
      await tpm2(sw, ['tpm2_nvwrite', index, '-C', 'o', '-i', junk]);
      const r = await agent(['tpm', 'info', '--tcti', sw.tcti, '--json']);
      expect(r.code, r.err).toBe(0);
      const entry = (JSON.parse(r.out) as TpmInfo).ekCertificates.find((c) => c.nvIndex === '0x01c00012');
      expect(entry).toMatchObject({ template: 'H-1', error: { code: 'ERR_EK_CERT_MALFORMED' } });
      expect(entry?.issuer).toBeUndefined();
    } finally {
      await tpm2(sw, ['tpm2_nvundefine', index, '-C', 'o']);
    }
  });

  it('refuses an unusable root store: ERR_EK_ROOTS_EMPTY, ERR_EK_CERT_MALFORMED, unreadable directory (exit 2)', async () => {
    expectRefused(await agent(['tpm', 'info', '--tcti', sw.tcti, '--ek-roots', pemDir({})]), 'ERR_EK_ROOTS_EMPTY');
    const notCert = pemDir({ 'key.pem': '-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----\n' });
    expectRefused(await agent(['tpm', 'info', '--tcti', sw.tcti, '--ek-roots', notCert]), 'ERR_EK_CERT_MALFORMED');
    const r = await agent(['tpm', 'info', '--tcti', sw.tcti, '--ek-roots', join(tmp, 'no-such-dir')]);
    expect(r.code).toBe(2);
    expect(r.err).toMatch(/^error: cannot read --ek-roots .*no-such-dir: ENOENT\n$/);
  });
});

describe.each(['ecc', 'rsa'])('tpm quote with an %s AK', (akType) => {
  let dir: { state: string; out: string };
  const nonce = randomBytes(20).toString('hex');
  const files = () => ({ ak: join(dir.out, 'ak.pub'), pem: join(dir.out, 'ak.pem'), msg: join(dir.out, 'quote.msg'), sig: join(dir.out, 'quote.sig'), pcrs: join(dir.out, 'quote.pcrs') });
  const checkquote = (n: string) =>
    spawnSync('tpm2_checkquote', ['-u', files().ak, '-m', files().msg, '-s', files().sig, '-f', files().pcrs, '-g', 'sha256', '-q', n], { encoding: 'utf8' });
  const verifyArgs = (n: string, ak = files().ak) => ['quote', 'verify', '--ak', ak, '--quote', files().msg, '--sig', files().sig, '--pcrs', files().pcrs, '--nonce', n];

  beforeAll(async () => {
    dir = { state: freshDir(`state-${akType}`), out: freshDir(`out-${akType}`) };
    const r = await agent(quoteArgs({ ...dir, nonce, akType }));
    expect(r.code, r.err).toBe(0);
  });

  it('writes what tpm2_checkquote accepts, and only with its nonce', () => {
    const ok = checkquote(nonce);
    expect(ok.status, ok.stderr).toBe(0);
    expect(checkquote('00'.repeat(20)).status).not.toBe(0);
  });

  it('writes what `attestor quote verify` accepts (in-process, AK as TPM2B_PUBLIC and as PEM), and only with its nonce', async () => {
    for (const ak of [files().ak, files().pem]) {
      const r = await attestor(verifyArgs(nonce, ak));
      expect(r.code, r.err).toBe(0);
      expect(r.out).toMatch(/^quote valid: sha256:0,1,2,3,4,5,6,7\n/);
    }
    expectRefused(await attestor(verifyArgs('00'.repeat(20))), 'ERR_QUOTE_NONCE_MISMATCH');
  });

  it('writes what the built `attestor` bin accepts, and only with its nonce', () => {
    const ok = bin('attestor', [...verifyArgs(nonce), '--json']);
    expect(ok.code, ok.err).toBe(0);
    expect(JSON.parse(ok.out).selection).toBe('sha256:0,1,2,3,4,5,6,7');
    expectRefused(bin('attestor', verifyArgs('00'.repeat(20))), 'ERR_QUOTE_NONCE_MISMATCH');
  });

  it('writes the AK kept in the state directory, as TPM2B_PUBLIC and PEM, with the type asked for', () => {
    const pub = readFileSync(files().ak);
    expect(hex(pub)).toBe(hex(readFileSync(join(dir.state, 'ak.pub'))));
    expect(parseTpm2bPublic(pub).type).toBe(akType);
    expect(readFileSync(files().pem, 'utf8')).toMatch(/^-----BEGIN PUBLIC KEY-----\n/);
  });

  it('keeps the AK on the next run, and refuses another --ak-type for it with ERR_TPM_STATE', async () => {
    const out = freshDir('out');
    const again = await agent(quoteArgs({ state: dir.state, out }));
    expect(again.code, again.err).toBe(0);
    expect(hex(readFileSync(join(out, 'ak.pub')))).toBe(hex(readFileSync(files().ak)));
    expectRefused(await agent(quoteArgs({ state: dir.state, akType: akType === 'ecc' ? 'rsa' : 'ecc' })), 'ERR_TPM_STATE');
  });
});

describe('tpm quote', () => {
  it('covers several banks and more than eight PCRs; the values are the TPM\'s current ones', async () => {
    const digest = randomBytes(32).toString('hex');
    await tpm2(sw, ['tpm2_pcrextend', `9:sha256=${digest}`]);
    const out = freshDir('out');
    const nonce = randomBytes(32).toString('hex');
    const r = await agent(quoteArgs({ out, nonce, pcrs: 'sha256:all+sha1:0,7' }));
    expect(r.code, r.err).toBe(0);
    const f = (name: string) => join(out, name);
    const check = spawnSync('tpm2_checkquote', ['-u', f('ak.pub'), '-m', f('quote.msg'), '-s', f('quote.sig'), '-f', f('quote.pcrs'), '-g', 'sha256', '-q', nonce]);
    expect(check.status, check.stderr?.toString()).toBe(0);
    const verified = await attestor(['quote', 'verify', '--ak', f('ak.pub'), '--quote', f('quote.msg'), '--sig', f('quote.sig'), '--pcrs', f('quote.pcrs'), '--nonce', nonce]);
    expect(verified.code, verified.err).toBe(0);
    const values = parsePcrFile(readFileSync(f('quote.pcrs')));
    expect(Object.keys(values)).toEqual(['sha256', 'sha1']);
    await tpm2(sw, ['tpm2_pcrread', 'sha256:9', '-o', f('pcr9.bin')]);
    expect(hex(values.sha256![9]!)).toBe(hex(readFileSync(f('pcr9.bin'))));
    expect(r.out).toContain(`quoted sha256:0,1,2,3,4,5,6,7,8,9,10,11,12,13,14,15,16,17,18,19,20,21,22,23+sha1:0,7 with the ecc AK 000b`);
    expect(r.out).toContain(`check: attestor quote verify --ak ${f('ak.pub')} --quote ${f('quote.msg')}`);
  });

  it('the built attestor-agent bin quotes too, and prints only its own error line when the TPM fails', async () => {
    const out = freshDir('out');
    const r = bin('attestor-agent', quoteArgs({ out }));
    expect(r.code, r.err).toBe(0);
    expect(readFileSync(join(out, 'quote.sig')).length).toBeGreaterThan(64);
    const bad = bin('attestor-agent', quoteArgs({ tcti: 'swtpm:host=127.0.0.1,port=notaport' }));
    expect(bad.code).toBe(1);
    // tpm2-tss' own log is off unless TSS2_LOG asks for it: one line says it all.
    expect(bad.err).toMatch(/^error: ERR_TSS_TCTI: [^\n]*\n$/);
  });

  it('refuses a PCR bank the TPM has not allocated with ERR_TPM_CAPABILITY', async () => {
    expectRefused(await agent(quoteArgs({ pcrs: 'sha256:0+sha384:0' })), 'ERR_TPM_CAPABILITY');
  });

  it.each([
    ['missing --out', () => quoteArgs({}).slice(0, -2)],
    ['missing --nonce', () => quoteArgs({}).filter((_, i, a) => a[i] !== '--nonce' && a[i - 1] !== '--nonce')],
    ['missing --pcrs', () => quoteArgs({}).filter((_, i, a) => a[i] !== '--pcrs' && a[i - 1] !== '--pcrs')],
    ['a nonce that is not hex', () => quoteArgs({ nonce: 'xyz' })],
    ['an odd number of hex digits', () => quoteArgs({ nonce: 'abc' })],
    ['an empty nonce', () => quoteArgs({ nonce: '' })],
    ['a nonce over 64 bytes', () => quoteArgs({ nonce: 'aa'.repeat(65) })],
    ['a PCR range (not tpm2-tools syntax)', () => quoteArgs({ pcrs: 'sha256:0-7' })],
    ['an unknown bank', () => quoteArgs({ pcrs: 'md5:0' })],
    ['a PCR index past 23', () => quoteArgs({ pcrs: 'sha256:24' })],
    ['an unknown --ak-type', () => quoteArgs({ akType: 'dsa' })],
    ['an --out that is a file', () => quoteArgs({ out: join(ROOT, 'package.json') })],
    ['an unknown subcommand', () => ['tpm', 'seal']],
  ])('exits 2 on %s, before touching the TPM', async (_name, args) => {
    const r = await agent(args());
    expect(r.code, r.err).toBe(2);
    expect(r.err).toMatch(/error/);
  });

  it('says which option is wrong', async () => {
    expect((await agent(quoteArgs({ pcrs: 'sha256:0-7' }))).err).toBe('error: --pcrs: PCR selection "sha256:0-7": "0-7" is not a PCR index 0..23\n');
    expect((await agent(quoteArgs({ nonce: 'aa'.repeat(65) }))).err).toBe('error: --nonce must be 1 to 64 bytes\n');
  });
});

describe('a TPM that cannot be used', () => {
  it.each([
    ['tpm info', (tcti: string) => ['tpm', 'info', '--tcti', tcti]],
    ['tpm quote', (tcti: string) => quoteArgs({ tcti })],
  ])('%s: ERR_TSS_TCTI for malformed or unknown TCTIs', async (_cmd, args) => {
    for (const tcti of ['swtpm:host=127.0.0.1,port=notaport', 'nosuchtcti:foo']) expectRefused(await agent(args(tcti)), 'ERR_TSS_TCTI');
  });

  it('a TPM with only a SHA-256 bank refuses a SHA-1 quote (ERR_TPM_CAPABILITY); once stopped, it is ERR_TSS_UNREACHABLE', async () => {
    const other = await startSwtpm({ pcrBanks: 'sha256' });
    try {
      const info = JSON.parse((await agent(['tpm', 'info', '--tcti', other.tcti, '--json'])).out) as TpmInfo;
      expect(info.pcrBanks).toEqual([{ bank: 'sha256', pcrs: 24 }]);
      const r = await agent(quoteArgs({ tcti: other.tcti, pcrs: 'sha1:0' }));
      expectRefused(r, 'ERR_TPM_CAPABILITY');
      expect(r.err).toContain('no sha1 PCR bank allocated (it has: sha256)');
    } finally {
      await other.stop();
    }
    expectRefused(await agent(['tpm', 'info', '--tcti', other.tcti]), 'ERR_TSS_UNREACHABLE');
    expectRefused(await agent(quoteArgs({ tcti: other.tcti })), 'ERR_TSS_UNREACHABLE');
  });
});

describe('the addon loads lazily', () => {
  it('without native/build, --help works and TPM commands say how to build the addon (ERR_TSS_UNAVAILABLE)', () => {
    const pkg = freshDir('pkg');
    mkdirSync(pkg);
    cpSync(join(ROOT, 'dist'), join(pkg, 'dist'), { recursive: true });
    cpSync(join(ROOT, 'package.json'), join(pkg, 'package.json'));
    symlinkSync(join(ROOT, 'node_modules'), join(pkg, 'node_modules'));
    const help = bin('attestor-agent', ['tpm', 'quote', '--help'], pkg);
    expect(help.code).toBe(0);
    expect(help.out).toContain('--pcrs <selection>');
    const roots = pemDir({ 'swtpm-issuer.pem': sw.caCertPem });
    for (const args of [quoteArgs({}), ['tpm', 'info', '--tcti', sw.tcti, '--ek-roots', roots]]) {
      const r = bin('attestor-agent', args, pkg);
      expectRefused(r, 'ERR_TSS_UNAVAILABLE');
      expect(r.err).toContain('apt-get install libtss2-dev pkg-config, then npm run build:native');
    }
  });

  /** Relative imports reachable from `entry` (static, dynamic and side-effect imports), as repository paths. */
  function importGraph(entry: string): Set<string> {
    const seen = new Set<string>();
    const visit = (file: string) => {
      if (seen.has(file)) return;
      seen.add(file);
      const source = readFileSync(join(ROOT, file), 'utf8');
      for (const m of source.matchAll(/(?:from|import)\s*\(?\s*'(\.[^']+)'/g)) {
        visit(relative(ROOT, join(ROOT, dirname(file), m[1]!.replace(/\.js$/, '.ts'))));
      }
    };
    visit(entry);
    return seen;
  }

  it('the verifier bin `attestor` never imports src/agent (so never the addon); `attestor-agent` does', () => {
    const verifier = [...importGraph('src/cli/attestor.ts')];
    expect(verifier).toContain('src/cli/commands/quote.ts');
    expect(verifier.filter((f) => f.startsWith('src/agent/'))).toEqual([]);
    expect([...importGraph('src/cli/attestor-agent.ts')]).toContain('src/agent/tss.ts');
  });
});

describe('the default state directory', () => {
  it('is systemd\'s StateDirectory, /var/lib for root, else under XDG_STATE_HOME or ~/.local/state', () => {
    expect(defaultStateDir({ STATE_DIRECTORY: '/var/lib/attestor-agent:/var/lib/other' }, 1000)).toBe('/var/lib/attestor-agent');
    expect(defaultStateDir({}, 0)).toBe('/var/lib/attestor-agent');
    expect(defaultStateDir({ XDG_STATE_HOME: '/home/op/.state' }, 1000)).toBe('/home/op/.state/attestor-agent');
    expect(defaultStateDir({}, 1000)).toMatch(/\/\.local\/state\/attestor-agent$/);
  });
});
