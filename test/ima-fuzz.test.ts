import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { appraiseIma } from '../src/appraisal/appraise-ima.js';
import { parseImaRules } from '../src/baseline/ima-rules.js';
import { AttestorError, ParseError } from '../src/errors.js';
import { advanceIma, initialImaState, type ImaQuotedPcrs } from '../src/eventlog/ima/incremental.js';
import { parseImaLog, type ImaFormat } from '../src/eventlog/ima/parse.js';
import { replayIma } from '../src/eventlog/ima/replay.js';
import { imaVector, referenceBinary, referenceReplay } from './helpers/ima.js';

const full = imaVector();
/** The first 30 entries keep each run fast; mutations land anywhere in them. */
const ascii = full.subarray(0, full.toString('latin1').split('\n').slice(0, 30).join('\n').length + 1);
const forms: Record<ImaFormat, Buffer> = { ascii, binary: referenceBinary(ascii) };
const original = parseImaLog(ascii);
const values = referenceReplay(ascii);
const quoted: ImaQuotedPcrs = { sha1: { 10: Buffer.from(values.sha1['10']!, 'hex') }, sha256: { 10: Buffer.from(values.sha256['10']!, 'hex') } };
const rules = parseImaRules({ exclude: ['**'] });

type Mutation = { at: number; kind: 'flip' | 'insert' | 'delete' | 'truncate'; byte: number };

function mutate(bytes: Buffer, mutations: Mutation[]): Buffer {
  let out = Buffer.from(bytes);
  for (const m of mutations) {
    const at = m.at % (out.length + 1);
    if (m.kind === 'flip' && at < out.length) out[at] = (out[at] as number) ^ (m.byte || 1);
    if (m.kind === 'insert') out = Buffer.concat([out.subarray(0, at), Buffer.from([m.byte]), out.subarray(at)]);
    if (m.kind === 'delete') out = Buffer.concat([out.subarray(0, at), out.subarray(at + 1)]);
    if (m.kind === 'truncate') out = out.subarray(0, at);
  }
  return out;
}

const mutation = fc.record({
  at: fc.nat(),
  kind: fc.constantFrom('flip', 'insert', 'delete', 'truncate') as fc.Arbitrary<Mutation['kind']>,
  byte: fc.integer({ min: 0, max: 255 }),
});

/** Runs `f`; anything thrown must be one of Attestor's typed errors. */
function typedOnly(f: () => void, allowed: (e: AttestorError) => boolean = () => true): void {
  try {
    f();
  } catch (e) {
    expect(e).toBeInstanceOf(AttestorError);
    expect(allowed(e as AttestorError)).toBe(true);
  }
}

describe('fuzzing the IMA parsers', () => {
  it.each(['ascii', 'binary'] as const)('random bytes as a %s list: entries or a typed ParseError, never a crash', (format) => {
    fc.assert(
      fc.property(fc.uint8Array({ maxLength: 300 }), (bytes) => typedOnly(() => parseImaLog(bytes, format), (e) => e instanceof ParseError)),
      { numRuns: 2000 },
    );
  });

  it('random lines built from IMA tokens: entries or a typed ParseError', () => {
    const token = fc.oneof(
      fc.constantFrom('10', ' 9', '24', 'ima', 'ima-ng', 'ima-sig', 'ima-buf', 'boot_aggregate', '/bin/sh', 'sha1:', 'sha256:', ':', '\n', ' ', ''),
      fc.stringMatching(/^[0-9a-f]{0,70}$/),
    );
    fc.assert(
      fc.property(fc.array(token, { maxLength: 30 }), (tokens) =>
        typedOnly(() => replayIma(parseImaLog(Buffer.from(tokens.join(' ')), 'ascii'))),
      ),
      { numRuns: 2000 },
    );
  });

  it.each(['ascii', 'binary'] as const)(
    'a mutated %s list: parse, replay and appraisal fail closed, and what is accepted is what was measured',
    (format) => {
      fc.assert(
        fc.property(fc.array(mutation, { minLength: 1, maxLength: 4 }), (mutations) => {
          const bytes = mutate(forms[format], mutations);
          typedOnly(() => replayIma(parseImaLog(bytes, format)));
          let accepted;
          try {
            accepted = advanceIma(initialImaState(format), { format, bytes }, quoted).entries;
          } catch (e) {
            expect(e).toBeInstanceOf(AttestorError);
          }
          // Whatever a mutation left acceptable must hash exactly as the measured entries did.
          if (accepted) {
            expect(accepted).toHaveLength(original.length);
            accepted.forEach((e, i) => {
              expect(e.pcr).toBe(original[i]!.pcr);
              expect(Buffer.from(e.hashInput).equals(original[i]!.hashInput)).toBe(true);
            });
          }
          const verdict = appraiseIma({ log: { format, bytes }, quoted, rules });
          expect(verdict.ok).toBe(accepted !== undefined);
        }),
        { numRuns: 400 },
      );
    },
  );
});
