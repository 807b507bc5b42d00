import { describe, expect, it, vi } from 'vitest';
import * as eventData from '../src/eventlog/event-data.js';
import { deriveEventlogFacts } from '../src/eventlog/facts.js';
import { parseTcgLog } from '../src/eventlog/tcg-log.js';
import { cat, eventlogVector, rebuildLog, specsOf, u32le, variableData } from './eventlog-fixtures.js';

/*
 * Facts hash an event's data before they decode it, and decode only what the digests prove,
 * once: event data is unsigned input of any size (a signature list can be made huge).
 */

vi.mock('../src/eventlog/event-data.js', async (original) => {
  const actual = await original<typeof import('../src/eventlog/event-data.js')>();
  return { ...actual, decodeVariable: vi.fn(actual.decodeVariable) };
});

const GCE = eventlogVector('event-gce-ubuntu-2104-log.bin');
const IMAGE_SECURITY_DATABASE = 'd719b2cb-3d3a-4596-a3bc-dad00e67656f';
const decodeVariable = vi.mocked(eventData.decodeVariable);
const allVerified = { sha1: [...Array(24).keys()], sha256: [...Array(24).keys()], sha384: [...Array(24).keys()] };

describe('facts decode only proven PCR 7 data, once each', () => {
  it('each variable PCR 7 measured before its separator is decoded once', () => {
    const log = parseTcgLog(GCE);
    decodeVariable.mockClear();
    const facts = deriveEventlogFacts(log, allVerified);
    const preSeparator = log.events.filter((e) => e.pcrIndex === 7 && e.index < 8).map((e) => e.data);
    expect(decodeVariable.mock.calls.map(([data]) => data)).toEqual(preSeparator);
    expect(facts.signatureDatabases.map((d) => d.name)).toEqual(['PK', 'KEK', 'db', 'dbx']);
    expect(facts.secureBoot).toMatchObject({ state: 'disabled', event: 3 });
  });

  it('a huge signature list written over the SecureBoot event (its digest kept) is never decoded', () => {
    const log = parseTcgLog(GCE);
    const specs = specsOf(log);
    const entries = new Uint8Array(16 * 60_000);
    const list = cat(new Uint8Array(16), u32le(28 + entries.length), u32le(0), u32le(16), entries);
    specs[2] = { ...specs[2]!, data: variableData(IMAGE_SECURITY_DATABASE, 'db', list) };
    const tampered = parseTcgLog(rebuildLog(log, GCE, specs));
    decodeVariable.mockClear();
    const facts = deriveEventlogFacts(tampered, allVerified);
    expect(decodeVariable.mock.calls.some(([data]) => data.length > entries.length)).toBe(false);
    expect(decodeVariable).toHaveBeenCalledTimes(4);
    expect(facts.secureBoot).toMatchObject({ state: 'unknown', event: 3 });
    expect(facts.signatureDatabases.map((d) => d.event)).toEqual([4, 5, 6, 7]);
  });
});
