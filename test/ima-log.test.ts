import { createHash } from 'node:crypto';
import { describe, expect, it } from 'vitest';
import { imaHashByName } from '../src/eventlog/ima/hash-algos.js';
import { detectImaFormat, parseImaLog } from '../src/eventlog/ima/parse.js';
import { replayIma } from '../src/eventlog/ima/replay.js';
import { buildImaEntry, formatImaAscii, formatImaBinary } from '../src/eventlog/ima/serialize.js';
import type { ImaEntry } from '../src/eventlog/ima/templates.js';
import { imaVector, referenceBinary, referenceReplay } from './helpers/ima.js';
import { codeOf } from './helpers/code-of.js';

const sha256 = imaHashByName('sha256', 'test');
const sha1 = imaHashByName('sha1', 'test');
const fileDigest = (text: string, algo = 'sha256') => createHash(algo).update(text).digest();
const name = (text: string) => Buffer.from(text);

/** The fields that define an entry, for comparing entries read from different forms. */
function essence(e: ImaEntry) {
  return {
    index: e.index,
    pcr: e.pcr,
    template: e.template,
    templateHash: Buffer.from(e.templateHash).toString('hex'),
    violation: e.violation,
    hashInput: Buffer.from(e.hashInput).toString('hex'),
    digestAlgo: e.digestAlgo.name,
    digest: Buffer.from(e.digest).toString('hex'),
    path: e.path,
    signature: e.signature && Buffer.from(e.signature).toString('hex'),
    buffer: e.buffer && Buffer.from(e.buffer).toString('hex'),
  };
}

/** One entry of every template, a violation and a PCR below 10 (printed "%2d"). */
function mixedEntries(): ImaEntry[] {
  return [
    buildImaEntry(0, 10, 'ima-ng', { digestAlgo: sha1, digest: Buffer.alloc(20), name: name('boot_aggregate') }),
    buildImaEntry(1, 10, 'ima', { digestAlgo: sha1, digest: fileDigest('init', 'sha1'), name: name('/init') }),
    buildImaEntry(2, 10, 'ima-sig', { digestAlgo: sha256, digest: fileDigest('sh'), name: name('/bin/sh'), signature: Buffer.from('030204aabbccdd0002abcd', 'hex') }),
    buildImaEntry(3, 10, 'ima-sig', { digestAlgo: sha256, digest: fileDigest('ls'), name: name('/bin/ls') }),
    buildImaEntry(4, 10, 'ima-buf', { digestAlgo: sha256, digest: fileDigest('root=/dev/sda1'), name: name('kexec-cmdline'), buffer: Buffer.from('root=/dev/sda1') }),
    buildImaEntry(5, 10, 'ima-ng', { digestAlgo: sha256, digest: Buffer.alloc(32), name: name('/var/log/open-writers') }, true),
    buildImaEntry(6, 9, 'ima-ng', { digestAlgo: sha256, digest: fileDigest('key'), name: name('.ima') }),
    buildImaEntry(7, 10, 'ima-buf', { digestAlgo: sha256, digest: fileDigest(''), name: name('empty-buffer'), buffer: Buffer.alloc(0) }),
  ];
}

describe('IMA vector (826 ima-ng entries from a real machine)', () => {
  const ascii = imaVector();
  const entries = parseImaLog(ascii);

  it('parses every entry with its fields', () => {
    expect(detectImaFormat(ascii)).toBe('ascii');
    expect(entries).toHaveLength(826);
    expect(new Set(entries.map((e) => e.template))).toEqual(new Set(['ima-ng']));
    expect(entries.every((e) => e.pcr === 10 && !e.violation && e.digestAlgo.name === 'sha1')).toBe(true);
    expect(entries[0]?.path).toBe('boot_aggregate');
    expect(Buffer.from(entries[1]?.digest ?? []).toString('hex')).toBe('19f13b42c2745066347e76454788c0fe083643f3');
    expect(entries[1]?.path).toBe('/init');
    expect(entries[825]?.path).toBe('/bin/cp');
  });

  it('replays PCR 10 in both banks as the naive reference does, checking every template hash', () => {
    const reference = referenceReplay(ascii);
    expect(replayIma(entries)).toEqual(reference);
    expect(reference.sha1['10']).toMatch(/^[0-9a-f]{40}$/);
  });

  it('reads the binary form of the same list into identical entries and PCRs', () => {
    const binary = referenceBinary(ascii);
    expect(detectImaFormat(binary)).toBe('binary');
    const fromBinary = parseImaLog(binary);
    expect(fromBinary.map(essence)).toEqual(entries.map(essence));
    expect(replayIma(fromBinary)).toEqual(replayIma(entries));
  });

  it('writes both forms back byte for byte', () => {
    expect(formatImaAscii(entries).equals(ascii)).toBe(true);
    expect(formatImaBinary(entries).equals(referenceBinary(ascii))).toBe(true);
  });

  it('replays the padded-SHA-1 banks of kernels before 5.11 when asked', () => {
    expect(replayIma(entries, { paddedSha1Banks: true })).toEqual(referenceReplay(ascii, true));
    expect(replayIma(entries, { paddedSha1Banks: true }).sha256['10']).not.toBe(replayIma(entries).sha256['10']);
  });
});

describe('IMA templates ima, ima-ng, ima-sig, ima-buf and violations', () => {
  const built = mixedEntries();
  const ascii = formatImaAscii(built);
  const binary = formatImaBinary(built);

  it('prints as the kernel does: "%2d" PCR, empty fields as empty tokens, zero hash for violations', () => {
    const lines = ascii.toString('latin1').split('\n');
    expect(lines[1]).toMatch(/^10 [0-9a-f]{40} ima [0-9a-f]{40} \/init$/);
    expect(lines[3]).toMatch(/ ima-sig sha256:[0-9a-f]{64} \/bin\/ls $/);
    expect(lines[5]).toMatch(/^10 0{40} ima-ng sha256:0{64} \/var\/log\/open-writers$/);
    expect(lines[6]).toMatch(/^ 9 /);
    expect(ascii.equals(referenceBinary(ascii))).toBe(false);
    expect(binary.equals(referenceBinary(ascii))).toBe(true);
  });

  it('parses both forms into the same entries and fields', () => {
    const fromAscii = parseImaLog(ascii);
    const fromBinary = parseImaLog(binary);
    expect(fromAscii.map(essence)).toEqual(built.map(essence));
    expect(fromBinary.map(essence)).toEqual(built.map(essence));
    expect(fromAscii[2]?.signature && Buffer.from(fromAscii[2].signature).toString('hex')).toBe('030204aabbccdd0002abcd');
    expect(fromAscii[3]?.signature).toBeUndefined();
    expect(fromAscii[4]?.buffer && Buffer.from(fromAscii[4].buffer).toString()).toBe('root=/dev/sda1');
    expect(fromAscii[5]?.violation).toBe(true);
    expect(fromAscii[1]?.hashInput.length).toBe(20 + 256);
  });

  it('replays violations as all ones and other PCRs separately, as the reference does', () => {
    const replayed = replayIma(parseImaLog(binary));
    expect(replayed).toEqual(referenceReplay(ascii));
    expect(Object.keys(replayed.sha256).sort()).toEqual(['10', '9']);
    expect(replayIma(parseImaLog(ascii), { paddedSha1Banks: true })).toEqual(referenceReplay(ascii, true));
  });

  it('parses an empty list as no entries, PCR 10 still at reset', () => {
    expect(parseImaLog(new Uint8Array(0))).toEqual([]);
    expect(replayIma([]).sha256['10']).toBe('0'.repeat(64));
  });
});

describe('IMA template-hash check', () => {
  it('names the entry whose data does not match its logged template hash', () => {
    const lines = imaVector().toString('latin1').split('\n');
    // A file digest changed, the template hash left as it was.
    lines[41] = (lines[41] as string).replace(/sha1:([0-9a-f])/, (_m, c: string) => `sha1:${c === '0' ? '1' : '0'}`);
    const entries = parseImaLog(Buffer.from(lines.join('\n'), 'latin1'));
    let error: unknown;
    try {
      replayIma(entries);
    } catch (e) {
      error = e;
    }
    expect(error).toMatchObject({ code: 'ERR_IMA_TEMPLATE_HASH_MISMATCH' });
    expect((error as Error).message).toContain('entry 41 (line 42)');
    expect((error as Error).message).toContain(entries[41]?.path);
  });
});

describe('IMA file names with line breaks (the kernel prints them as they are)', () => {
  const ng = (index: number, path: string) => buildImaEntry(index, 10, 'ima-ng', { digestAlgo: sha256, digest: fileDigest(path), name: Buffer.from(path, 'latin1') });
  const both = (entries: ImaEntry[]) => ({ ascii: formatImaAscii(entries), binary: formatImaBinary(entries) });

  it('an entry whose name holds line breaks is one entry: its template hash says where it ends', () => {
    const entries = [ng(0, 'boot_aggregate'), ng(1, '/tmp/evil\nname'), ng(2, `/tmp/${'\n'.repeat(100)}x`), ng(3, '/usr/bin/ls')];
    const { ascii, binary } = both(entries);
    expect(ascii.toString('latin1').split('\n').length).toBe(4 + 1 + 100 + 1);
    expect(parseImaLog(ascii).map(essence)).toEqual(entries.map(essence));
    expect(parseImaLog(binary).map(essence)).toEqual(entries.map(essence));
    expect(replayIma(parseImaLog(ascii))).toEqual(replayIma(entries));
  });

  it('ima-sig: the first line of such an entry lacks its signature field, the joined lines have it (up to PATH_MAX of them)', () => {
    const sig = (index: number, path: string) =>
      buildImaEntry(index, 10, 'ima-sig', { digestAlgo: sha256, digest: fileDigest(path), name: Buffer.from(path), signature: Buffer.from('030204aabbccdd0002abcd', 'hex') });
    const entries = [sig(0, '/opt/a\nb'), sig(1, `/opt/${'\n'.repeat(4000)}c`), ng(2, '/a')];
    expect(parseImaLog(formatImaAscii(entries)).map(essence)).toEqual(entries.map(essence));
  });

  it('a name that continues with an entry line (its spaces made "_" by the kernel) is one name', () => {
    const fake = formatImaAscii([ng(2, '/usr/bin/fake')]).toString('latin1').trimEnd().replace(/ /g, '_');
    const entries = [ng(0, 'boot_aggregate'), ng(1, `/tmp/x\n${fake}`), ng(2, '/usr/bin/ls')];
    expect(parseImaLog(formatImaAscii(entries)).map((e) => e.path)).toEqual(['boot_aggregate', `/tmp/x\n${fake}`, '/usr/bin/ls']);
  });

  it('a violation on such a name takes the following lines that do not read as an entry', () => {
    const violation = buildImaEntry(1, 10, 'ima-ng', { digestAlgo: sha256, digest: Buffer.alloc(32), name: Buffer.from('/var/log/a\nb\nc') }, true);
    const entries = [ng(0, 'boot_aggregate'), violation, ng(2, '/usr/bin/ls')];
    expect(parseImaLog(formatImaAscii(entries)).map(essence)).toEqual(entries.map(essence));
  });

  it('a name running on past PATH_MAX is not joined: the first line stays a template hash mismatch, the rest malformed', () => {
    const long = formatImaAscii([ng(0, `/a\n${'b'.repeat(5000)}`)]);
    expect(codeOf(() => parseImaLog(long))).toBe('ERR_IMA_MALFORMED');
    const [cut] = parseImaLog(long.subarray(0, long.indexOf(0x0a) + 1));
    expect(codeOf(() => replayIma([cut!]))).toBe('ERR_IMA_TEMPLATE_HASH_MISMATCH');
  });
});

describe('IMA ASCII names: PATH_MAX and bounded joining', () => {
  const ng = (index: number, path: string) => buildImaEntry(index, 10, 'ima-ng', { digestAlgo: sha256, digest: fileDigest(path), name: Buffer.from(path, 'latin1') });
  const error = (list: Buffer) => {
    try {
      parseImaLog(list, 'ascii');
    } catch (e) {
      return e as { code: string; message: string };
    }
    throw new Error('parsed');
  };

  it('a name of PATH_MAX bytes with line breaks is joined; one byte more is not, and a single line that long is malformed', () => {
    const atMax = ng(0, `/${'a'.repeat(2000)}\n${'b'.repeat(2094)}`);
    expect(atMax.nameBytes.length).toBe(4096);
    expect(parseImaLog(formatImaAscii([atMax])).map(essence)).toEqual([essence(atMax)]);
    const over = formatImaAscii([ng(0, `/${'a'.repeat(2000)}\n${'b'.repeat(2095)}`)]);
    expect(error(over).code).toBe('ERR_IMA_MALFORMED');
    const oneLine = error(formatImaAscii([ng(0, `/${'a'.repeat(4096)}`)]));
    expect(oneLine).toMatchObject({ code: 'ERR_IMA_MALFORMED', message: expect.stringContaining('line 1: name longer than PATH_MAX') });
  });

  it('a name of a 1 MiB first line and 4000 line breaks is malformed at once, naming line 1', () => {
    const list = formatImaAscii([ng(0, `/${'a'.repeat(1 << 20)}${'\n'.repeat(4000)}`)]);
    expect(error(list)).toMatchObject({ code: 'ERR_IMA_MALFORMED', message: expect.stringContaining('line 1: name longer than PATH_MAX') });
  });

  it('1 MiB of names holding 4000 line breaks each exhausts the join work (linear in the list) and is malformed', () => {
    const entries = Array.from({ length: 256 }, (_v, i) => ng(i, `/${'\n'.repeat(4000)}${i}`));
    const ascii = formatImaAscii(entries);
    expect(ascii.length).toBeGreaterThan(1 << 20);
    expect(parseImaLog(formatImaBinary(entries))).toHaveLength(256);
    expect(error(ascii)).toMatchObject({ code: 'ERR_IMA_MALFORMED', message: expect.stringContaining('send binary_runtime_measurements') });
  });
});

describe('IMA parse errors are typed', () => {
  const good = formatImaAscii(mixedEntries()).toString('latin1').split('\n');
  const line = (i: number) => good[i] as string;
  const ascii = (text: string) => codeOf(() => parseImaLog(Buffer.from(text, 'latin1'), 'ascii'));
  const hash40 = 'a'.repeat(40);

  it.each([
    ['a line without its newline', line(0), 'ERR_IMA_TRUNCATED'],
    ['too few tokens', `10 ${hash40}\n`, 'ERR_IMA_MALFORMED'],
    ['a PCR that is not a number', `1x ${hash40} ima-ng sha1:${'0'.repeat(40)} /a\n`, 'ERR_IMA_MALFORMED'],
    ['a PCR above 23', `24 ${hash40} ima-ng sha1:${'0'.repeat(40)} /a\n`, 'ERR_IMA_MALFORMED'],
    ['a template hash with a bad hex digit', `10 ${'g'.repeat(40)} ima-ng sha1:${'0'.repeat(40)} /a\n`, 'ERR_IMA_MALFORMED'],
    ['a template hash of odd length', `10 ${'a'.repeat(39)} ima-ng sha1:${'0'.repeat(40)} /a\n`, 'ERR_IMA_MALFORMED'],
    ['a short template hash', `10 ${'a'.repeat(38)} ima-ng sha1:${'0'.repeat(40)} /a\n`, 'ERR_IMA_MALFORMED'],
    ['an unknown template', `10 ${hash40} ima-modsig sha1:${'0'.repeat(40)} /a\n`, 'ERR_IMA_TEMPLATE_UNSUPPORTED'],
    ['a missing field', `10 ${hash40} ima-sig sha1:${'0'.repeat(40)} /a\n`, 'ERR_IMA_MALFORMED'],
    ['an extra field', `10 ${hash40} ima-ng sha1:${'0'.repeat(40)} /a b\n`, 'ERR_IMA_MALFORMED'],
    ['a d-ng without algorithm', `10 ${hash40} ima-ng ${'0'.repeat(40)} /a\n`, 'ERR_IMA_MALFORMED'],
    ['an unknown digest algorithm', `10 ${hash40} ima-ng sha999:${'0'.repeat(40)} /a\n`, 'ERR_IMA_DIGEST_ALG_UNSUPPORTED'],
    ['a digest of the wrong size', `10 ${hash40} ima-ng sha256:${'0'.repeat(40)} /a\n`, 'ERR_IMA_MALFORMED'],
    ['an ima digest of the wrong size', `10 ${hash40} ima ${'0'.repeat(64)} /a\n`, 'ERR_IMA_MALFORMED'],
    ['an ima name over 255 bytes', `10 ${hash40} ima ${'0'.repeat(40)} /${'a'.repeat(255)}\n`, 'ERR_IMA_MALFORMED'],
    ['a sig field that is not hex', `10 ${hash40} ima-sig sha1:${'0'.repeat(40)} /a xyz\n`, 'ERR_IMA_MALFORMED'],
  ])('ASCII: %s', (_what, text, code) => {
    expect(ascii(text)).toBe(code);
  });

  it('accepts a 255-byte ima name', () => {
    expect(parseImaLog(Buffer.from(`10 ${hash40} ima ${'0'.repeat(40)} /${'a'.repeat(254)}\n`), 'ascii')[0]?.nameBytes.length).toBe(255);
  });

  const bin = formatImaBinary(mixedEntries());
  const binary = (bytes: Uint8Array) => codeOf(() => parseImaLog(bytes, 'binary'));
  /** The first entry's binary record with its u32 at `at` replaced. */
  const patched = (at: number, value: number) => {
    const b = Buffer.from(bin);
    b.writeUInt32LE(value, at);
    return b;
  };
  // Offsets in the first record (ima-ng): pcr 0, hash 4, name length 24, name 28, data length 34, data 38.
  const ngData = bin.readUInt32LE(34);

  it.each([
    ['a record cut short', () => bin.subarray(0, 30), 'ERR_IMA_TRUNCATED'],
    ['a record cut inside its template data', () => bin.subarray(0, 38 + ngData - 1), 'ERR_IMA_TRUNCATED'],
    ['a PCR above 23', () => patched(0, 24), 'ERR_IMA_MALFORMED'],
    ['a zero-length template name', () => patched(24, 0), 'ERR_IMA_MALFORMED'],
    ['a template name over 15 bytes', () => patched(24, 16), 'ERR_IMA_MALFORMED'],
    ['a template data length past the end', () => patched(34, 0xffffffff), 'ERR_IMA_TRUNCATED'],
    ['a field length past the template data', () => patched(38, 0xffff), 'ERR_IMA_MALFORMED'],
    ['bytes after the template fields', () => {
      const b = Buffer.from(bin.subarray(0, 38 + ngData));
      b.writeUInt32LE(ngData + 1, 34);
      return Buffer.concat([b, Buffer.from([0])]);
    }, 'ERR_IMA_MALFORMED'],
    ['a name without its NUL', () => {
      const b = Buffer.from(bin.subarray(0, 38 + ngData));
      b[b.length - 1] = 0x41;
      return b;
    }, 'ERR_IMA_MALFORMED'],
    ['a d-ng without ":\\0"', () => {
      const b = Buffer.from(bin.subarray(0, 38 + ngData));
      b[42 + 'sha1:'.length] = 0x41;
      return b;
    }, 'ERR_IMA_MALFORMED'],
  ])('binary: %s', (_what, bytes, code) => {
    expect(binary(bytes())).toBe(code);
  });

  it('binary: an unknown template name', () => {
    const b = Buffer.from(bin);
    b.write('imx-ng', 28, 'latin1');
    expect(binary(b)).toBe('ERR_IMA_TEMPLATE_UNSUPPORTED');
  });
});
