import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { imaHashByName } from '../src/eventlog/ima/hash-algos.js';
import { advanceIma, initialImaState, type ImaQuotedPcrs, type ImaState } from '../src/eventlog/ima/incremental.js';
import { parseImaLog } from '../src/eventlog/ima/parse.js';
import { replayIma } from '../src/eventlog/ima/replay.js';
import { buildImaEntry, formatImaAscii, formatImaBinary } from '../src/eventlog/ima/serialize.js';
import { imaVector, referenceBinary, referencePcr10Prefixes, referenceReplay } from './helpers/ima.js';
import { codeOf } from './helpers/code-of.js';

const ascii = imaVector();
const binary = referenceBinary(ascii);
const prefixes = referencePcr10Prefixes(ascii);
const total = prefixes.length - 1;
/** Byte offset after n entries, in each form. */
const asciiEnds = [0];
for (let i = ascii.indexOf(0x0a); i >= 0; i = ascii.indexOf(0x0a, i + 1)) asciiEnds.push(i + 1);
const binaryEnds = [0];
for (const entry of parseImaLog(ascii)) binaryEnds.push(binaryEnds[binaryEnds.length - 1]! + formatImaBinary([entry]).length);

const quoteAfter = (n: number): ImaQuotedPcrs => ({ sha1: { 10: prefixes[n]!.sha1 }, sha256: { 10: prefixes[n]!.sha256 } });

describe('incremental IMA appraisal equals a full replay', () => {
  it('has the vector and its reference prefixes', () => {
    expect(total).toBe(826);
    expect(asciiEnds).toHaveLength(827);
    expect(asciiEnds[826]).toBe(ascii.length);
    expect(binaryEnds[826]).toBe(binary.length);
  });

  it('whole list in one step: same PCRs as the full replay, nothing pending', () => {
    const step = advanceIma(initialImaState('ascii'), { format: 'ascii', bytes: ascii }, quoteAfter(total));
    expect(step.entries).toHaveLength(826);
    expect(step.pendingBytes).toBe(0);
    expect(step.state).toMatchObject({ format: 'ascii', entries: 826, offset: ascii.length, pcrs: referenceReplay(ascii) });
  });

  // Quotes at random points; each step gets the list as it was read some time after its quote
  // (so with trailing entries), either whole or only from the verified offset on.
  it.each(['ascii', 'binary'] as const)('random quote points and read delays, %s list', (format) => {
    const bytes = format === 'ascii' ? ascii : binary;
    const ends = format === 'ascii' ? asciiEnds : binaryEnds;
    fc.assert(
      fc.property(
        fc.uniqueArray(fc.integer({ min: 0, max: total }), { minLength: 1, maxLength: 8 }),
        fc.array(fc.integer({ min: 0, max: 40 }), { minLength: 8, maxLength: 8 }),
        fc.array(fc.boolean(), { minLength: 8, maxLength: 8 }),
        (points, delays, tailOnly) => {
          const quotes = [...points.sort((a, b) => a - b), total];
          let state: ImaState = initialImaState(format);
          quotes.forEach((quoted, i) => {
            const readUpTo = Math.min(total, quoted + (delays[i] ?? 0));
            const from = tailOnly[i] ? state.offset : 0;
            const step = advanceIma(state, { format, bytes: bytes.subarray(from, ends[readUpTo]), offset: from }, quoteAfter(quoted));
            expect(step.entries.map((e) => e.index)).toEqual(Array.from({ length: quoted - state.entries }, (_v, k) => state.entries + k));
            expect(step.pendingBytes).toBe(ends[readUpTo]! - ends[quoted]!);
            state = JSON.parse(JSON.stringify(step.state)) as ImaState;
            expect(state.entries).toBe(quoted);
            expect(state.offset).toBe(ends[quoted]);
          });
          expect(state.pcrs).toEqual(referenceReplay(ascii));
        },
      ),
      { numRuns: 25 },
    );
  });

  it('a quote of only one bank is enough', () => {
    const sha256Only = advanceIma(initialImaState('ascii'), { format: 'ascii', bytes: ascii }, { sha256: { 10: prefixes[300]!.sha256 } });
    expect(sha256Only.state.entries).toBe(300);
    const sha1Only = advanceIma(initialImaState('ascii'), { format: 'ascii', bytes: ascii }, { sha1: { 10: prefixes[300]!.sha1 } });
    expect(sha1Only.state).toEqual(sha256Only.state);
  });

  it('a quote taken before any new entry accepts none and keeps them all for later', () => {
    const first = advanceIma(initialImaState('ascii'), { format: 'ascii', bytes: ascii }, quoteAfter(100));
    const again = advanceIma(first.state, { format: 'ascii', bytes: ascii }, quoteAfter(100));
    expect(again.entries).toHaveLength(0);
    expect(again.state).toEqual(first.state);
    expect(again.pendingBytes).toBe(ascii.length - asciiEnds[100]!);
  });
});

describe('incremental IMA refusals', () => {
  const start = advanceIma(initialImaState('ascii'), { format: 'ascii', bytes: ascii }, quoteAfter(500)).state;

  it('a quote the list never reaches: ERR_IMA_PCR_MISMATCH naming PCR 10', () => {
    let error: unknown;
    try {
      advanceIma(start, { format: 'ascii', bytes: ascii }, { sha256: { 10: Buffer.alloc(32, 7) } });
    } catch (e) {
      error = e;
    }
    expect(error).toMatchObject({ code: 'ERR_IMA_PCR_MISMATCH', pcr: 10 });
    expect((error as Error).message).toMatch(/^PCR 10 \(sha256\)/);
  });

  it('a quote that includes neither bank of PCR 10: ERR_IMA_PCR_NOT_QUOTED', () => {
    expect(codeOf(() => advanceIma(start, { format: 'ascii', bytes: ascii }, { sha256: { 11: prefixes[826]!.sha256 } }))).toBe(
      'ERR_IMA_PCR_NOT_QUOTED',
    );
  });

  describe('a policy that also measures into PCR 11', () => {
    const sha256 = imaHashByName('sha256', 'test');
    const list = formatImaAscii([
      buildImaEntry(0, 10, 'ima-ng', { digestAlgo: sha256, digest: Buffer.alloc(32, 1), name: Buffer.from('/a') }),
      buildImaEntry(1, 11, 'ima-ng', { digestAlgo: sha256, digest: Buffer.alloc(32, 2), name: Buffer.from('/b') }),
      buildImaEntry(2, 10, 'ima-ng', { digestAlgo: sha256, digest: Buffer.alloc(32, 3), name: Buffer.from('/c') }),
    ]);
    const all = replayIma(parseImaLog(list));
    const value = (i: string) => Buffer.from(all.sha256[i]!, 'hex');

    it('is appraised when the state covers PCR 11 and the quote has both', () => {
      const state = initialImaState('ascii', { pcrs: [10, 11] });
      const step = advanceIma(state, { format: 'ascii', bytes: list }, { sha256: { 10: value('10'), 11: value('11') } });
      expect(step.entries).toHaveLength(3);
      expect(step.state.pcrs).toEqual(all);
    });

    it('an entry extending a PCR the appraisal does not cover: ERR_IMA_PCR_NOT_QUOTED naming it', () => {
      let error: unknown;
      try {
        advanceIma(initialImaState('ascii'), { format: 'ascii', bytes: list }, { sha256: { 10: value('10') } });
      } catch (e) {
        error = e;
      }
      expect(error).toMatchObject({ code: 'ERR_IMA_PCR_NOT_QUOTED', pcr: 11 });
      expect((error as Error).message).toContain('entry 1 (line 2) "/b" extends PCR 11');
    });

    it('a covered PCR missing from the quote: ERR_IMA_PCR_NOT_QUOTED naming it', () => {
      let error: unknown;
      try {
        advanceIma(initialImaState('ascii', { pcrs: [10, 11] }), { format: 'ascii', bytes: list }, { sha256: { 10: value('10') } });
      } catch (e) {
        error = e;
      }
      expect(error).toMatchObject({ code: 'ERR_IMA_PCR_NOT_QUOTED', pcr: 11 });
    });
  });

  it('a list shorter than what was verified: ERR_IMA_LOG_SHRUNK (a reboot must be signalled)', () => {
    expect(codeOf(() => advanceIma(start, { format: 'ascii', bytes: ascii.subarray(0, asciiEnds[400]) }, quoteAfter(826)))).toBe('ERR_IMA_LOG_SHRUNK');
  });

  it('a tail that starts after the verified offset, or a list of the other form: ERR_IMA_STATE_INVALID', () => {
    const gap = asciiEnds[510]!;
    expect(codeOf(() => advanceIma(start, { format: 'ascii', bytes: ascii.subarray(gap), offset: gap }, quoteAfter(826)))).toBe('ERR_IMA_STATE_INVALID');
    expect(codeOf(() => advanceIma(start, { format: 'binary', bytes: binary }, quoteAfter(826)))).toBe('ERR_IMA_STATE_INVALID');
  });

  it.each([
    ['an unknown format', { format: 'xml' }],
    ['a negative offset', { offset: -1 }],
    ['a fractional entry count', { entries: 1.5 }],
    ['no PCR values', { pcrs: { sha1: {}, sha256: {} } }],
    ['banks with different PCRs', { pcrs: { sha1: { 10: '0'.repeat(40) }, sha256: { 11: '0'.repeat(64) } } }],
    ['a digest of the wrong size', { pcrs: { sha1: { 10: '0'.repeat(40) }, sha256: { 10: '0'.repeat(40) } } }],
    ['a PCR index that is not one', { pcrs: { sha1: { '-1': '0'.repeat(40) }, sha256: { '-1': '0'.repeat(64) } } }],
    ['a PCR index above 23', { pcrs: { sha1: { 24: '0'.repeat(40) }, sha256: { 24: '0'.repeat(64) } } }],
  ])('a stored state with %s: ERR_IMA_STATE_INVALID', (_what, change) => {
    const corrupt = { ...start, ...change } as unknown as ImaState;
    expect(codeOf(() => advanceIma(corrupt, { format: 'ascii', bytes: ascii }, quoteAfter(826)))).toBe('ERR_IMA_STATE_INVALID');
  });

  it('a chunk with a negative offset: ERR_IMA_STATE_INVALID', () => {
    expect(codeOf(() => advanceIma(initialImaState('ascii'), { format: 'ascii', bytes: ascii, offset: -5 }, quoteAfter(826)))).toBe('ERR_IMA_STATE_INVALID');
  });

  it('parses no more than it needs: a malformed entry after the quoted prefix is left for later', () => {
    const broken = Buffer.concat([ascii.subarray(0, asciiEnds[600]), Buffer.from('garbage\n')]);
    expect(advanceIma(start, { format: 'ascii', bytes: broken }, quoteAfter(600)).state.entries).toBe(600);
    expect(codeOf(() => advanceIma(start, { format: 'ascii', bytes: broken }, quoteAfter(826)))).toBe('ERR_IMA_MALFORMED');
  });
});
