/**
 * The TPM replies the agent reads, parsed in src/tpm/: TPMS_CAPABILITY_DATA (capability.ts),
 * TPM2B_NV_PUBLIC (nv-public.ts) and the reply of TPM2_PCR_Read (pcr-read.ts). Real replies
 * from swtpm are checked in test/native.test.ts; here every refusal has its code.
 */
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { marshalPcrSelection } from '../src/agent/tpm-marshal.js';
import { hex } from '../src/bytes.js';
import { ParseError } from '../src/errors.js';
import { parseCapabilityData, TPM_CAP } from '../src/tpm/capability.js';
import { TPM_ALG } from '../src/tpm/constants.js';
import { parseNvPublic } from '../src/tpm/nv-public.js';
import { DIGESTS_MAX, parseDigestList, pcrValuesOf } from '../src/tpm/pcr-read.js';
import { TpmWriter } from '../src/tpm/writer.js';
import { codeOf, parsesOrTypedError } from './helpers/code-of.js';

const bytes = (h: string) => Buffer.from(h.replace(/\s/g, ''), 'hex');

describe('TPM2_PCR_Read replies', () => {
  const selection = marshalPcrSelection({ sha1: [3], sha256: [0, 1] });
  const d1 = new Uint8Array(20).fill(0xa1);
  const d2 = new Uint8Array(32).fill(0xb2);
  const d3 = new Uint8Array(32).fill(0xc3);
  const list = (...ds: Uint8Array[]) => ds.reduce((w, d) => w.tpm2b(d), new TpmWriter().u32(ds.length)).finish();

  it('maps the digests to the reported selection, bank by bank, index ascending', () => {
    const values = pcrValuesOf(selection, list(d1, d2, d3));
    expect(Object.keys(values)).toEqual(['sha1', 'sha256']);
    expect(hex(values.sha1![3]!)).toBe(hex(d1));
    expect(hex(values.sha256![0]!)).toBe(hex(d2));
    expect(hex(values.sha256![1]!)).toBe(hex(d3));
  });

  it('refuses fewer digests than selected PCRs, or a digest of the wrong size (ERR_TPM_SIZE_MISMATCH)', () => {
    expect(codeOf(() => pcrValuesOf(selection, list(d1, d2)))).toBe('ERR_TPM_SIZE_MISMATCH');
    expect(codeOf(() => pcrValuesOf(selection, list(d2, d2, d3)))).toBe('ERR_TPM_SIZE_MISMATCH');
  });

  it('refuses more digests than selected PCRs (ERR_TPM_TRAILING_BYTES)', () => {
    expect(codeOf(() => pcrValuesOf(selection, list(d1, d2, d3, d3)))).toBe('ERR_TPM_TRAILING_BYTES');
  });

  it('refuses a selection with trailing bytes (ERR_TPM_TRAILING_BYTES)', () => {
    expect(codeOf(() => pcrValuesOf(Buffer.concat([selection, Uint8Array.of(0)]), list(d1, d2, d3)))).toBe('ERR_TPM_TRAILING_BYTES');
  });

  it(`refuses a TPML_DIGEST over ${DIGESTS_MAX} entries, truncated or with trailing bytes`, () => {
    expect(parseDigestList(list(...Array.from({ length: DIGESTS_MAX }, () => d1)))).toHaveLength(DIGESTS_MAX);
    expect(codeOf(() => parseDigestList(list(...Array.from({ length: DIGESTS_MAX + 1 }, () => d1))))).toBe('ERR_TPM_BAD_VALUE');
    expect(codeOf(() => parseDigestList(list(d1).subarray(0, 10)))).toBe('ERR_TPM_TRUNCATED');
    expect(codeOf(() => parseDigestList(Buffer.concat([list(d1), Uint8Array.of(0)])))).toBe('ERR_TPM_TRAILING_BYTES');
  });

  it('random replies only produce typed errors', () => {
    fc.assert(
      fc.property(fc.uint8Array({ maxLength: 64 }), fc.uint8Array({ maxLength: 256 }), (s, d) => parsesOrTypedError((x) => pcrValuesOf(s, x), d)),
      { numRuns: 2000 },
    );
  });
});

describe('TPM2B_NV_PUBLIC', () => {
  // An EK certificate index: nvIndex 0x01c00002, sha256, PPWRITE|WRITEDEFINE|PPREAD|OWNERREAD|AUTHREAD|NO_DA|WRITTEN|PLATFORMCREATE, 1016 bytes.
  const nv = bytes('000e 01c00002 000b 420f0062 0000 03f8');

  it('parses index, nameAlg, attributes and size', () => {
    const { authPolicy, ...rest } = parseNvPublic(nv);
    expect(rest).toEqual({ nvIndex: 0x01c00002, nameAlg: TPM_ALG.SHA256, attributes: 0x420f0062, dataSize: 1016 });
    expect(authPolicy.length).toBe(0);
  });

  it('refuses an unknown nameAlg, a truncated or an oversized structure', () => {
    expect(codeOf(() => parseNvPublic(bytes('000e 01c00002 0099 420f0062 0000 03f8')))).toBe('ERR_TPM_UNSUPPORTED_ALG');
    expect(codeOf(() => parseNvPublic(nv.subarray(0, 10)))).toBe('ERR_TPM_TRUNCATED');
    expect(codeOf(() => parseNvPublic(bytes('000f 01c00002 000b 420f0062 0000 03f8 00')))).toBe('ERR_TPM_TRAILING_BYTES');
    expect(codeOf(() => parseNvPublic(Buffer.concat([nv, Uint8Array.of(0)])))).toBe('ERR_TPM_TRAILING_BYTES');
  });

  it('refuses an authPolicy over 64 bytes (ERR_TPM_BAD_VALUE)', () => {
    const policy = new Uint8Array(65);
    const inner = new TpmWriter().u32(0x01c00002).u16(TPM_ALG.SHA256).u32(0x420f0062).tpm2b(policy).u16(1016).finish();
    expect(codeOf(() => parseNvPublic(new TpmWriter().tpm2b(inner).finish()))).toBe('ERR_TPM_BAD_VALUE');
  });

  it('every truncation is a typed error', () => {
    for (let len = 0; len < nv.length; len++) expect(() => parseNvPublic(nv.subarray(0, len))).toThrow(ParseError);
  });
});

describe('TPMS_CAPABILITY_DATA', () => {
  it('parses handles and tagged properties', () => {
    const handles = parseCapabilityData(bytes('00000001 00000002 01c00002 81000001'));
    expect(handles).toEqual({ capability: TPM_CAP.HANDLES, handles: [0x01c00002, 0x81000001] });
    const props = parseCapabilityData(bytes('00000006 00000001 00000105 49424d00'));
    expect(props.capability === TPM_CAP.TPM_PROPERTIES && [...props.properties]).toEqual([[0x105, 0x49424d00]]);
  });

  it('parses the PCR banks as a TPML_PCR_SELECTION', () => {
    const pcrs = parseCapabilityData(Buffer.concat([bytes('00000005'), marshalPcrSelection({ sha1: [0, 23], sha256: [] })]));
    expect(pcrs.capability === TPM_CAP.PCRS && pcrs.banks.map((b) => [b.hash.name, b.pcrs])).toEqual([
      ['sha1', [0, 23]],
      ['sha256', []],
    ]);
  });

  it('refuses capabilities it does not parse and absurd counts (ERR_TPM_BAD_VALUE)', () => {
    expect(codeOf(() => parseCapabilityData(bytes('00000000 00000000')))).toBe('ERR_TPM_BAD_VALUE');
    expect(codeOf(() => parseCapabilityData(bytes('00000001 00100000')))).toBe('ERR_TPM_BAD_VALUE');
  });

  it('refuses a truncated list or trailing bytes', () => {
    expect(codeOf(() => parseCapabilityData(bytes('00000001 00000002 01c00002')))).toBe('ERR_TPM_TRUNCATED');
    expect(codeOf(() => parseCapabilityData(bytes('00000006 00000001 00000105 49424d00 00')))).toBe('ERR_TPM_TRAILING_BYTES');
  });

  it('random replies only produce typed errors', () => {
    fc.assert(fc.property(fc.uint8Array({ maxLength: 256 }), (b) => parsesOrTypedError(parseCapabilityData, b)), { numRuns: 2000 });
    const sel = fc.constantFrom(0x00000001, 0x00000005, 0x00000006);
    fc.assert(
      fc.property(sel, fc.uint8Array({ maxLength: 256 }), (c, rest) =>
        parsesOrTypedError(parseCapabilityData, Buffer.concat([new TpmWriter().u32(c).finish(), rest])),
      ),
      { numRuns: 2000 },
    );
  });
});
