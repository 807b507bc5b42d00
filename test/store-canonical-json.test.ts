import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { canonicalJson } from '../src/store/canonical-json.js';
import type { Json } from '../src/store/store.js';
import { codeOf } from './helpers/code-of.js';

/** The same value with the keys of every object in another order. */
function reordered(value: Json, pick: (n: number) => number): Json {
  if (Array.isArray(value)) return value.map((v) => reordered(v, pick));
  if (value === null || typeof value !== 'object') return value;
  const keys = Object.keys(value);
  const shuffled: string[] = [];
  while (keys.length > 0) shuffled.push(keys.splice(pick(keys.length), 1)[0]!);
  return Object.fromEntries(shuffled.map((k) => [k, reordered(value[k]!, pick)]));
}

describe('canonicalJson', () => {
  it('sorts keys recursively, without whitespace', () => {
    expect(canonicalJson({ b: 1, a: [true, null, { d: 'x', c: 2 }], ' ': {} })).toBe('{" ":{},"a":[true,null,{"c":2,"d":"x"}],"b":1}');
    expect(canonicalJson([])).toBe('[]');
    expect(canonicalJson('a"\\\n\u0001é')).toBe('"a\\"\\\\\\n\\u0001é"');
    expect(canonicalJson({ '10': 1, '9': 2, '1': 3 })).toBe('{"1":3,"10":1,"9":2}');
  });

  it('sorts keys by UTF-16 code units and writes numbers as ECMAScript does (RFC 8785)', () => {
    // The sorting example of RFC 8785 section 3.2.3 (its values are the keys' names there).
    const keys = ['\u20ac', '\r', '\ufb33', '1', '\ud83d\ude00', '\u0080', '\u00f6'];
    const sorted = ['\r', '1', '\u0080', '\u00f6', '\u20ac', '\ud83d\ude00', '\ufb33'];
    expect(canonicalJson(Object.fromEntries(keys.map((k) => [k, 0])))).toBe(`{${sorted.map((k) => `${JSON.stringify(k)}:0`).join(',')}}`);
    expect(canonicalJson([1e21, 1e-7, 0.1, -0, 333333333.33333329, 4.5e-324])).toBe('[1e+21,1e-7,0.1,0,333333333.3333333,5e-324]');
  });

  it('leaves out undefined members and refuses what has no JSON form (ERR_INPUT)', () => {
    expect(canonicalJson({ a: 1, b: undefined } as unknown as Json)).toBe('{"a":1}');
    for (const bad of [Number.NaN, Number.POSITIVE_INFINITY, [undefined], new Array(2), { d: new Date(0) }, { u: new Uint8Array(1) }, { n: 1n }, { f: () => 1 }]) {
      expect(codeOf(() => canonicalJson(bad as unknown as Json))).toBe('ERR_INPUT');
    }
  });

  it('names where the value without a JSON form is', () => {
    expect(() => canonicalJson({ a: [1, { b: Number.NaN }] } as unknown as Json)).toThrow('$.a[1].b is NaN, which has no JSON form');
    expect(() => canonicalJson({ z: 1, a: { d: new Date(0) } } as unknown as Json)).toThrow('$.a.d is an instance of a class');
    expect(() => canonicalJson([0, [undefined]] as unknown as Json)).toThrow('$[1][0] is undefined');
    expect(() => canonicalJson(1n as unknown as Json)).toThrow('$ is a bigint');
  });

  it('names a bad value as deep as a good one can be written, without running out of stack for the name', () => {
    const nested = (depth: number, leaf: unknown): unknown => {
      let value = leaf;
      for (let i = 0; i < depth; i++) value = { d: value };
      return value;
    };
    // The deepest value that can be written here, to the nearest 100 levels.
    let deepest = 100;
    while (deepest < 100_000) {
      try {
        canonicalJson(nested(deepest + 100, 1) as Json);
        deepest += 100;
      } catch {
        break;
      }
    }
    const bad = nested(deepest - 100, Number.NaN) as Json;
    expect(codeOf(() => canonicalJson(bad))).toBe('ERR_INPUT');
  });

  it('parses back to the value, and is the same text whatever the key order', () => {
    fc.assert(
      fc.property(fc.jsonValue(), fc.infiniteStream(fc.nat()), (value, picks) => {
        const text = canonicalJson(value as Json);
        // As JSON itself, canonical JSON has no -0: it parses back as 0.
        expect(JSON.parse(text)).toStrictEqual(JSON.parse(JSON.stringify(value)));
        const it = picks[Symbol.iterator]();
        expect(canonicalJson(reordered(value as Json, (n) => it.next().value! % n))).toBe(text);
        expect(canonicalJson(JSON.parse(text) as Json)).toBe(text);
      }),
      { numRuns: 500 },
    );
  });

  it('has no whitespace outside strings', () => {
    fc.assert(
      fc.property(fc.jsonValue(), (value) => {
        const outside = canonicalJson(value as Json).replace(/"(?:[^"\\]|\\.)*"/g, '""');
        expect(outside).not.toMatch(/\s/);
      }),
    );
  });
});
