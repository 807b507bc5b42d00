/**
 * Properties over the fuzz targets of src/dev/fuzz-targets.ts (the ones `npm run fuzz` runs for
 * longer): random bytes and mutated seeds give a value or a typed refusal, quickly; and no
 * target's running time grows faster than its input. Parsers with properties of their own
 * elsewhere are left to them here; the running-time check covers every target that grows.
 */
import { fileURLToPath } from 'node:url';
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { corpusFiles, createRng, FUZZ_TARGETS, growthPerByte, mutate, outcomeOf, seedsOf, type FuzzTarget } from '../src/dev/fuzz-targets.js';
import { vectorsDir } from './vectors.js';

const files = [...corpusFiles(vectorsDir), ...corpusFiles(fileURLToPath(new URL('../fixtures/', import.meta.url)))];

/** Targets whose parsers have properties in another file, and the file. */
const COVERED_ELSEWHERE: Readonly<Record<string, string>> = {
  'tpm-public': 'tpm-parsers',
  'tpm-attest': 'tpm-parsers',
  'tpm-signature': 'tpm-parsers',
  'tpm-pcr-file': 'tpm-parsers',
  'tpm-credential-file': 'make-credential',
  'tpm-capability': 'tpm-replies',
  'tpm-nv-public': 'tpm-replies',
  'tpm-digest-list': 'tpm-replies',
  'ek-certificate': 'ek-certificate',
  'tcg-log': 'eventlog-parser',
  // The EFI readers run inside decodeEventData, whose property feeds random data to every event type.
  'efi-signature-lists': 'eventlog-parser',
  'efi-device-path': 'eventlog-parser',
  'efi-load-option': 'eventlog-parser',
  'efi-boot-order': 'eventlog-parser',
  'ima-log': 'ima-fuzz',
  'body-json': 'server-edge',
  'body-cbor': 'server-edge',
  'baseline-document': 'appraise-document',
  'hsm-key-report': 'verify-hsm-key',
  'spiffe-id': 'issuer-x509-svid',
};

/** The longest one input may take: a parser this slow on a small input is a finding. */
const SLOW_MS = 250;
/** Per-byte slowdown over a sixteenfold growth that counts as super-linear (quadratic gives 16). */
const SUPER_LINEAR = 6;

function valueOrTypedRefusal(target: FuzzTarget, input: Uint8Array): void {
  const started = performance.now();
  const outcome = outcomeOf(target, input);
  expect(outcome.kind === 'crash' ? outcome.error : 'no crash').toBe('no crash');
  expect(performance.now() - started).toBeLessThan(SLOW_MS);
}

const gaps = FUZZ_TARGETS.filter((t) => COVERED_ELSEWHERE[t.name] === undefined);

describe.each(gaps.map((t) => [t.name, t] as const))('fuzz target %s', (_name, target) => {
  const seeds = seedsOf(target, files);

  it('random bytes: a value or a typed refusal, quickly', () => {
    fc.assert(fc.property(fc.uint8Array({ maxLength: 512 }), (input) => valueOrTypedRefusal(target, input)), { numRuns: 1000 });
  });

  it.runIf(seeds.length > 0)('mutated seeds (flips, truncation, splices, length fields): a value or a typed refusal, quickly', () => {
    const mutant = fc
      .tuple(fc.integer(), fc.nat(), fc.nat())
      .map(([seed, i, j]) => mutate(createRng(seed), seeds[i % seeds.length]!, seeds[j % seeds.length]!));
    fc.assert(fc.property(mutant, (input) => valueOrTypedRefusal(target, input)), { numRuns: 2000 });
  });
});

describe('running time', () => {
  it('every target the corpus names has seeds', () => {
    for (const t of FUZZ_TARGETS.filter((x) => x.seeds)) expect(seedsOf(t, files).length, t.name).toBeGreaterThan(0);
  });

  it.each(FUZZ_TARGETS.filter((t) => t.grow).map((t) => [t.name, t] as const))('%s grows linearly with its input', (_name, target) => {
    const seed = seedsOf(target, files)[0]!;
    // A GC pause can double one timing: only a slowdown seen twice counts. A measurement whose
    // timings were too short to compare (undefined) is taken again, up to three times.
    const growth = growthPerByte(target, seed);
    if (growth === undefined || growth <= SUPER_LINEAR) return;
    let again: number | undefined;
    for (let i = 0; i < 3 && again === undefined; i++) again = growthPerByte(target, seed);
    expect(again ?? growth).toBeLessThanOrEqual(SUPER_LINEAR);
  });

  it('the check finds a quadratic parser', () => {
    const quadratic: FuzzTarget = {
      name: 'quadratic',
      run: (b) => {
        let n = 0;
        for (let i = 0; i < b.length; i += 8) for (let j = 0; j < i; j += 8) n += b[j]!;
        return n;
      },
      grow: (_seed, factor) => new Uint8Array(factor * 64),
    };
    expect(growthPerByte(quadratic, new Uint8Array(64), 4096)).toBeGreaterThan(SUPER_LINEAR);
  });
});
