import { spawnSync } from 'node:child_process';
import { generateKeyPairSync, sign } from 'node:crypto';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { runAttestor } from '../src/cli/program.js';
import { encodePcrFile, parsePcrFile } from '../src/tpm/pcr-file.js';
import { fixturePath, manifest } from './fixtures.js';
import { runCli } from './helpers/cli.js';
import { buildQuote } from './helpers/tpm-builders.js';
import { vectorsDir } from './vectors.js';
import { hex } from '../src/bytes.js';

interface QuoteFiles {
  ak: string;
  quote: string;
  sig: string;
  pcrs: string;
  nonce: string;
}

const attestor = (args: string[]) => runCli(runAttestor, args);

const verifyArgs = (f: QuoteFiles, extra: string[] = []) =>
  ['quote', 'verify', '--ak', f.ak, '--quote', f.quote, '--sig', f.sig, '--pcrs', f.pcrs, '--nonce', f.nonce, ...extra];

/** The reference tool on the same files: 0 when it accepts the quote. */
function checkquote(f: QuoteFiles): number {
  const r = spawnSync('tpm2_checkquote', ['-u', f.ak, '-m', f.quote, '-s', f.sig, '-f', f.pcrs, '-g', 'sha256', '-q', f.nonce], {
    encoding: 'utf8',
  });
  if (r.error) throw r.error;
  return r.status ?? -1;
}

const tmp = mkdtempSync(join(tmpdir(), 'attestor-cli-'));
afterAll(() => rmSync(tmp, { recursive: true, force: true }));
let n = 0;
function write(bytes: Uint8Array | string): string {
  const path = join(tmp, `f${n++}`);
  writeFileSync(path, bytes);
  return path;
}

const keylimeDir = `${vectorsDir}/quote-bundles/keylime-tpm2-tools`;
const bundles: Record<string, QuoteFiles> = {
  'tpm2-tools vector': {
    ak: `${keylimeDir}/ak.pub`,
    quote: `${keylimeDir}/quote.out`,
    sig: `${keylimeDir}/quotesig.out`,
    pcrs: `${keylimeDir}/quotepcr.out`,
    nonce: 'db1db298db6d60e6385b7231743e9c3056a18003',
  },
  ...Object.fromEntries(
    ['rsa', 'ecc'].map((d) => {
      const q = manifest.dirs[d]!.quote;
      const files: QuoteFiles = {
        ak: fixturePath(manifest.dirs[d]!.ak.pub),
        quote: fixturePath(q.msg),
        sig: fixturePath(q.sig),
        pcrs: fixturePath(q.pcrs),
        nonce: q.nonce,
      };
      return [`swtpm ${d}`, files];
    }),
  ),
};

function flipped(path: string, at: (len: number) => number): string {
  const b = new Uint8Array(readFileSync(path));
  b[at(b.length)]! ^= 0x01;
  return write(b);
}

describe.each(Object.entries(bundles))('attestor quote verify decides like tpm2_checkquote: %s', (_name, files) => {
  const cases: Record<string, QuoteFiles> = {
    valid: files,
    'other nonce': { ...files, nonce: 'aa'.repeat(20) },
    'flipped quote byte': { ...files, quote: flipped(files.quote, (l) => l - 40) },
    'flipped signature byte': { ...files, sig: flipped(files.sig, (l) => l - 1) },
    'changed PCR value': { ...files, pcrs: flipped(files.pcrs, () => 0x8c + 2 + 5) },
  };
  it.each(Object.entries(cases))('%s', async (caseName, f) => {
    const ref = checkquote(f);
    const ours = await attestor(verifyArgs(f));
    expect(ours.code === 0, `ours: ${ours.err}`).toBe(ref === 0);
    expect(ours.code).toBe(caseName === 'valid' ? 0 : 1);
    if (ours.code === 1) expect(ours.err).toMatch(/^error: ERR_[A-Z0-9_]+: /);
  });

  it('--json prints the verified PCR values, with the AK as TPM2B_PUBLIC or as PEM', async () => {
    const pem = files.ak.replace(/ak\.pub$/, files.ak.includes('keylime') ? 'akpub.pem' : 'ak.pem');
    for (const ak of [files.ak, pem]) {
      const r = await attestor(verifyArgs({ ...files, ak }, ['--json']));
      expect(r.code, r.err).toBe(0);
      const json = JSON.parse(r.out);
      expect(json.valid).toBe(true);
      const fromFile = parsePcrFile(new Uint8Array(readFileSync(files.pcrs)));
      for (const [bank, byIndex] of Object.entries(fromFile)) {
        for (const [i, v] of Object.entries(byIndex)) expect(json.pcrs[bank][i]).toBe(hex(v));
      }
    }
  });
});

describe('stricter than tpm2_checkquote where it has a CVE', () => {
  it('CVE-2024-29039: a PCR file whose own selection relabels the signed values is refused', async () => {
    const f = bundles['tpm2-tools vector']!;
    const signed = parsePcrFile(new Uint8Array(readFileSync(f.pcrs))).sha256!;
    // The signed values of PCR 15, 16, 22 presented as PCR 0, 1, 2: same digest, other meaning.
    const relabelled = encodePcrFile({ sha256: { 0: signed[15]!, 1: signed[16]!, 2: signed[22]! } });
    const evil = { ...f, pcrs: write(relabelled) };
    const r = await attestor(verifyArgs(evil));
    expect(r.code).toBe(1);
    expect(r.err).toMatch(/^error: ERR_QUOTE_PCR_MISSING: /);
  });

  it('CVE-2024-29038: a signed structure without TPM_GENERATED_VALUE is refused even with a PEM key', async () => {
    const { publicKey, privateKey } = generateKeyPairSync('ec', { namedCurve: 'P-256' });
    const nonce = Buffer.alloc(20, 3);
    const values = new Map([[16, new Uint8Array(32).fill(1)]]);
    const quote = buildQuote({ magic: 0x41414141, extraData: nonce, pcrs: [{ bank: 'sha256', values }] });
    const raw = sign('sha256', quote, { key: privateKey, dsaEncoding: 'ieee-p1363' });
    const sig = Buffer.concat([Buffer.from([0x00, 0x18, 0x00, 0x0b, 0x00, 0x20]), raw.subarray(0, 32), Buffer.from([0x00, 0x20]), raw.subarray(32)]);
    const f: QuoteFiles = {
      ak: write(publicKey.export({ format: 'pem', type: 'spki' }) as string),
      quote: write(quote),
      sig: write(sig),
      pcrs: write(encodePcrFile({ sha256: { 16: values.get(16)! } })),
      nonce: nonce.toString('hex'),
    };
    const r = await attestor(verifyArgs(f));
    expect(r.code).toBe(1);
    expect(r.err).toMatch(/^error: ERR_QUOTE_MAGIC: /);
  });
});

describe('usage errors exit 2', () => {
  const f = bundles['tpm2-tools vector']!;
  it.each([
    ['missing option', ['quote', 'verify', '--ak', f.ak]],
    ['bad hex nonce', verifyArgs({ ...f, nonce: 'xyz' })],
    ['odd number of hex digits', verifyArgs({ ...f, nonce: 'abc' })],
    ['unreadable file', verifyArgs({ ...f, quote: join(tmp, 'does-not-exist') })],
    ['unknown command', ['quote', 'sign']],
  ])('%s', async (_n, args) => {
    const r = await attestor(args);
    expect(r.code).toBe(2);
    expect(r.err).toMatch(/error/);
  });

  it('ERR_KEY_UNSUPPORTED: a PEM key that cannot be an AK (secp256k1, RSA-1024)', async () => {
    for (const key of [
      generateKeyPairSync('ec', { namedCurve: 'secp256k1' }).publicKey,
      generateKeyPairSync('rsa', { modulusLength: 1024 }).publicKey,
    ]) {
      const r = await attestor(verifyArgs({ ...f, ak: write(key.export({ format: 'pem', type: 'spki' }) as string) }));
      expect(r.code).toBe(1);
      expect(r.err).toMatch(/^error: ERR_KEY_UNSUPPORTED: /);
    }
  });

  it('malformed input files exit 1 with a code', async () => {
    const r = await attestor(verifyArgs({ ...f, pcrs: write(new Uint8Array(10)) }));
    expect(r.code).toBe(1);
    expect(r.err).toMatch(/^error: ERR_PCR_FILE_MALFORMED: /);
    const r2 = await attestor(verifyArgs({ ...f, ak: write('-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----\n') }));
    expect(r2.code).toBe(1);
    expect(r2.err).toMatch(/^error: ERR_KEY_UNSUPPORTED: /);
  });
});

it('the built bin runs as a user would call it', () => {
  const f = bundles['tpm2-tools vector']!;
  const r = spawnSync(process.execPath, ['dist/cli/attestor.js', ...verifyArgs(f, ['--json'])], { encoding: 'utf8' });
  expect(r.status, r.stderr).toBe(0);
  expect(JSON.parse(r.stdout).selection).toBe('sha256:15,16,22');
});
