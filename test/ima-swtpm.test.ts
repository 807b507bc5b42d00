import { randomBytes } from 'node:crypto';
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { appraiseIma } from '../src/appraisal/appraise-ima.js';
import { verifyQuote } from '../src/appraisal/verify-quote.js';
import { parseImaRules } from '../src/baseline/ima-rules.js';
import { imaHashByName } from '../src/eventlog/ima/hash-algos.js';
import { initialImaState, type ImaState } from '../src/eventlog/ima/incremental.js';
import { parseImaLog } from '../src/eventlog/ima/parse.js';
import { replayIma } from '../src/eventlog/ima/replay.js';
import { buildImaEntry, formatImaAscii } from '../src/eventlog/ima/serialize.js';
import { parsePcrFile } from '../src/tpm/pcr-file.js';
import type { PcrValues } from '../src/tpm/pcr-selection.js';
import { parseTpm2bPublic } from '../src/tpm/public.js';
import { imaVector, referenceDigests } from './helpers/ima.js';
import { startSwtpm, tpm2, type Swtpm } from './helpers/swtpm.js';

/*
 * The IMA appraisal against a real (software) TPM: the TPM extends PCRs with the digests the
 * kernel would (computed by the test's naive reference, not by the code under test), an AK
 * quotes them, verifyQuote checks the quote, and the IMA list is appraised against the
 * PCR values the signature proves.
 */

let sw: Swtpm;
beforeAll(async () => {
  sw = await startSwtpm();
  await tpm2(sw, ['tpm2_createek', '-c', 'ek.ctx', '-G', 'rsa', '-u', 'ek.pub']);
  await tpm2(sw, ['tpm2_createak', '-C', 'ek.ctx', '-c', 'ak.ctx', '-G', 'rsa', '-g', 'sha256', '-s', 'rsassa', '-u', 'ak.pub']);
  // Without a resource manager, tpm2-tools leaves its objects loaded: free the slots.
  await tpm2(sw, ['tpm2_flushcontext', '-t']);
});
afterAll(async () => {
  await sw?.stop();
});

/** Extends the TPM as the kernel does for each line of `ascii` (from line `from` on). */
async function extendAsKernel(ascii: Buffer, from = 0, padded = false): Promise<void> {
  const specs = referenceDigests(ascii, padded)
    .slice(from)
    .map((d) => `${d.pcr}:sha1=${d.sha1.toString('hex')},sha256=${d.sha256.toString('hex')}`);
  for (let i = 0; i < specs.length; i += 64) await tpm2(sw, ['tpm2_pcrextend', ...specs.slice(i, i + 64)]);
}

/** A quote of the PCRs in both banks, verified; returns the PCR values its signature proves. */
async function quote(pcrs: number[]): Promise<PcrValues> {
  const nonce = randomBytes(20);
  const list = pcrs.join(',');
  await tpm2(sw, ['tpm2_quote', '-c', 'ak.ctx', '-l', `sha1:${list}+sha256:${list}`, '-q', nonce.toString('hex'), '-m', 'q.msg', '-s', 'q.sig', '-o', 'q.pcrs', '-g', 'sha256']);
  await tpm2(sw, ['tpm2_flushcontext', '-t']);
  const [ak, msg, sig, values] = await Promise.all(['ak.pub', 'q.msg', 'q.sig', 'q.pcrs'].map((f) => readFile(join(sw.dir, f))));
  return verifyQuote(parseTpm2bPublic(ak!), { quote: msg!, signature: sig!, pcrs: parsePcrFile(values!) }, { qualifyingData: nonce, requiredPcrs: { sha256: pcrs } }).pcrs;
}

const hex = (b: Uint8Array | undefined) => Buffer.from(b ?? []).toString('hex');

describe('IMA appraisal against quotes of a TPM', () => {
  const vector = imaVector();
  const lineEnds: number[] = [];
  for (let i = vector.indexOf(0x0a); i >= 0; i = vector.indexOf(0x0a, i + 1)) lineEnds.push(i + 1);
  const allow: Record<string, string[]> = {};
  for (const e of parseImaLog(vector)) (allow[e.path] ??= []).push(`sha1:${hex(e.digest)}`);
  const rules = parseImaRules({ allow, allowViolations: true, exclude: ['/tmp/**', 'kexec-cmdline'] });
  let state: ImaState | undefined;

  it('a list read after the quote: the quoted prefix is appraised, the rest left pending', async () => {
    const head = vector.subarray(0, lineEnds[499]);
    await extendAsKernel(head);
    const quoted = await quote([10]);
    const result = appraiseIma({ log: { format: 'ascii', bytes: vector }, quoted, rules });
    expect(result).toMatchObject({ ok: true, entries: 500, pendingBytes: vector.length - head.length });
    expect(result.newState.pcrs.sha1['10']).toBe(hex(quoted.sha1?.[10]));
    expect(result.newState.pcrs.sha256['10']).toBe(hex(quoted.sha256?.[10]));
    state = result.newState;
  });

  it('the next quote: only the new entries, sent as the tail of the list, are appraised', async () => {
    await extendAsKernel(vector, 500);
    const quoted = await quote([10]);
    const tail = vector.subarray(state!.offset);
    const result = appraiseIma({ log: { format: 'ascii', bytes: tail, offset: state!.offset }, quoted, rules, state });
    expect(result).toMatchObject({ ok: true, entries: 326, pendingBytes: 0 });
    expect(replayIma(parseImaLog(vector)).sha256['10']).toBe(hex(quoted.sha256?.[10]));
    state = result.newState;
  });

  it('violations, ima-sig, ima-buf and ima entries extend the TPM as the replay expects', async () => {
    const sha256 = imaHashByName('sha256', 'test');
    const more = formatImaAscii([
      buildImaEntry(826, 10, 'ima-ng', { digestAlgo: sha256, digest: Buffer.alloc(32), name: Buffer.from('/tmp/open-writer') }, true),
      buildImaEntry(827, 10, 'ima-sig', { digestAlgo: sha256, digest: Buffer.alloc(32, 1), name: Buffer.from('/tmp/unsigned') }),
      buildImaEntry(828, 10, 'ima-buf', { digestAlgo: sha256, digest: Buffer.alloc(32, 2), name: Buffer.from('kexec-cmdline'), buffer: Buffer.from('ro quiet') }),
      buildImaEntry(829, 10, 'ima', { digestAlgo: imaHashByName('sha1', 'test'), digest: Buffer.alloc(20, 3), name: Buffer.from('/tmp/legacy') }),
    ]);
    await extendAsKernel(more);
    const quoted = await quote([10]);
    const list = Buffer.concat([vector, more]);
    const result = appraiseIma({ log: { format: 'ascii', bytes: list }, quoted, rules, state });
    expect(result).toMatchObject({ ok: true, entries: 4 });
    expect(result.newState.pcrs.sha256['10']).toBe(hex(quoted.sha256?.[10]));

    // The same list, one entry's digest changed and its template hash recomputed: refused by the quote.
    const lines = list.toString('latin1').split('\n');
    lines[827] = formatImaAscii([buildImaEntry(827, 10, 'ima-sig', { digestAlgo: sha256, digest: Buffer.alloc(32, 9), name: Buffer.from('/tmp/unsigned') })])
      .toString('latin1')
      .slice(0, -1);
    const forged = appraiseIma({ log: { format: 'ascii', bytes: Buffer.from(lines.join('\n'), 'latin1') }, quoted, rules, state });
    expect(forged.reasons).toEqual([expect.objectContaining({ code: 'ERR_IMA_PCR_MISMATCH', pcr: 10 })]);
  });

  it('a kernel before 5.11 (padded SHA-1 in every bank) measuring into PCR 23', async () => {
    await tpm2(sw, ['tpm2_pcrreset', '23']);
    const sha256 = imaHashByName('sha256', 'test');
    const list = formatImaAscii([
      buildImaEntry(0, 23, 'ima-ng', { digestAlgo: sha256, digest: Buffer.alloc(32, 4), name: Buffer.from('/usr/bin/a') }),
      buildImaEntry(1, 23, 'ima-ng', { digestAlgo: sha256, digest: Buffer.alloc(32), name: Buffer.from('/usr/bin/b') }, true),
    ]);
    await extendAsKernel(list, 0, true);
    const quoted = await quote([10, 23]);
    const lenient = parseImaRules({ exclude: ['**'], allowViolations: true });
    const padded = appraiseIma({ log: { format: 'ascii', bytes: list }, quoted, rules: lenient, replay: { pcrs: [23], paddedSha1Banks: true } });
    expect(padded).toMatchObject({ ok: true, entries: 2 });
    expect(initialImaState('ascii', { pcrs: [23] }).pcrs.sha256).toEqual({ 23: '0'.repeat(64) });
    const perBank = appraiseIma({ log: { format: 'ascii', bytes: list }, quoted, rules: lenient, replay: { pcrs: [23] } });
    expect(perBank.reasons).toEqual([expect.objectContaining({ code: 'ERR_IMA_PCR_MISMATCH', pcr: 23 })]);
  });
});
