import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { isPcrComposite, pcrCompositeBytes, selectedPcrValues } from '../src/tpm/pcr-composite.js';
import { parsePcrSelectionSpec } from '../src/tpm/pcr-selection.js';

const selection = parsePcrSelectionSpec('sha1:0,7+sha256:0,1,2,3,7');
const values = {
  sha1: { 0: new Uint8Array(20).fill(1), 7: new Uint8Array(20).fill(2) },
  sha256: Object.fromEntries([0, 1, 2, 3, 7].map((i) => [i, new Uint8Array(32).fill(10 + i)])),
};

describe('PCR composite', () => {
  it('concatenates the selected values in the selection order, PCRs ascending', () => {
    const selected = selectedPcrValues(selection, values);
    const bytes = pcrCompositeBytes(selection, selected);
    expect(bytes.length).toBe(2 * 20 + 5 * 32);
    expect([bytes[0], bytes[20], bytes[40], bytes[40 + 4 * 32]]).toEqual([1, 2, 10, 17]);
    expect(isPcrComposite(selection, selected, bytes)).toBe(true);
  });

  it('isPcrComposite is false for any other bytes: one changed, one missing or one more', () => {
    const selected = selectedPcrValues(selection, values);
    const bytes = pcrCompositeBytes(selection, selected);
    fc.assert(
      fc.property(fc.nat(bytes.length - 1), fc.integer({ min: 1, max: 255 }), (at, flip) => {
        const changed = Uint8Array.from(bytes);
        changed[at]! ^= flip;
        expect(isPcrComposite(selection, selected, changed)).toBe(false);
      }),
    );
    expect(isPcrComposite(selection, selected, bytes.subarray(0, bytes.length - 1))).toBe(false);
    expect(isPcrComposite(selection, selected, Buffer.concat([bytes, Buffer.of(0)]))).toBe(false);
    expect(isPcrComposite(selection, selected, new Uint8Array(0))).toBe(false);
  });
});
