/**
 * Baseline documents: validation (every refusal is ERR_BASELINE_INVALID naming the path),
 * normalization, the JSON round trip, the PCR selection a challenge asks for, selectors.
 */
import { generateKeyPairSync } from 'node:crypto';
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { DEFAULT_PCR_SELECTION, parseBaselineDocument, pcrSelectionOf, selectorMatches } from '../src/baseline/document.js';
import { AttestorError } from '../src/errors.js';

const hexOf = (size: number, byte = 'ab') => byte.repeat(size);
const MINIMAL = { version: 1, pcrs: { sha256: { 0: [hexOf(32)] } } };
const IMA_KEY = generateKeyPairSync('ec', { namedCurve: 'P-256' }).publicKey.export({ type: 'spki', format: 'pem' }) as string;

const FULL = {
  version: 1,
  selector: { labels: { role: 'gpu', 'topology.kubernetes.io/zone': 'eu-west-1' } },
  pcrs: { sha256: { 7: [hexOf(32, 'cd')], 0: [hexOf(32, 'AB'), hexOf(32, 'ab')] }, sha384: { 4: [hexOf(48, 'ef')] } },
  eventlog: { requireSecureBoot: true, kernels: { allowed: [`sha256:${hexOf(32, '01')}`] } },
  ima: { allow: { '/usr/bin/bash': [`sha256:${hexOf(32, '02')}`] }, exclude: ['/tmp/**'], signatures: { keys: [{ publicKey: IMA_KEY }], requiredFor: ['/usr/sbin/**'] } },
  key: { residence: ['pkcs11', 'tpm'], allowedTokens: [{ manufacturer: 'SoftHSM project', serial: '8d2f6c0a1b3e' }] },
  audiences: ['spiffe://example.org/service', 'https://api.example', 'https://api.example'],
  credentials: { x509TtlSeconds: 3600, jwtTtlSeconds: 300 },
  allowSha1: false,
};

/** The message of the ERR_BASELINE_INVALID that `value` is refused with. */
function refusal(value: unknown): string {
  try {
    parseBaselineDocument(value);
  } catch (e) {
    if (e instanceof AttestorError && e.code === 'ERR_BASELINE_INVALID') return e.message;
    throw e;
  }
  throw new Error('the document was accepted');
}

describe('a valid document', () => {
  it('is normalized: hex lowercased, repeats dropped, defaults written out; rules compiled beside the JSON', () => {
    const doc = parseBaselineDocument(FULL);
    expect(JSON.parse(JSON.stringify(doc))).toEqual({
      ...FULL,
      pcrs: { sha256: { 0: [hexOf(32)], 7: [hexOf(32, 'cd')] }, sha384: { 4: [hexOf(48, 'ef')] } },
      key: { residence: ['pkcs11', 'tpm'], allowedTokens: FULL.key.allowedTokens },
      audiences: ['spiffe://example.org/service', 'https://api.example'],
    });
    expect(doc.rules.eventlog).toMatchObject({ requireSecureBoot: true, kernels: { allowed: [{ bank: 'sha256', digest: hexOf(32, '01') }] } });
    expect(doc.rules.ima?.allow.get('/usr/bin/bash')?.has(`sha256:${hexOf(32, '02')}`)).toBe(true);
    expect(Object.isFrozen(doc) && Object.isFrozen(doc.pcrs!.sha256!['0']) && Object.isFrozen(doc.eventlog)).toBe(true);
  });

  it('defaults: TPM keys only, no audience, no SHA-1, every agent', () => {
    const doc = parseBaselineDocument(MINIMAL);
    expect(JSON.parse(JSON.stringify(doc))).toEqual({ ...MINIMAL, key: { residence: ['tpm'] }, audiences: [], allowSha1: false });
    expect(doc.rules).toEqual({});
    expect(selectorMatches(doc, {})).toBe(true);
    expect(parseBaselineDocument({ ...MINIMAL, key: { residence: ['tpm', 'tpm'] } }).key).toEqual({ residence: ['tpm'] });
  });

  it('is its own JSON: parsing what was stored gives an equal document', () => {
    const doc = parseBaselineDocument(FULL);
    const again = parseBaselineDocument(JSON.parse(JSON.stringify(doc)));
    expect(again).toEqual(doc);
    expect(JSON.stringify(again)).toBe(JSON.stringify(doc));
    expect(pcrSelectionOf(again)).toEqual(pcrSelectionOf(doc));
  });

  it('SHA-1 PCR values only with allowSha1', () => {
    const sha1 = { version: 1, pcrs: { sha1: { 0: [hexOf(20)] } } };
    expect(refusal(sha1)).toContain('pcrs.sha1: SHA-1 PCR values are legacy');
    expect(parseBaselineDocument({ ...sha1, allowSha1: true }).pcrs).toEqual({ sha1: { 0: [hexOf(20)] } });
    const eventlogSha1 = { version: 1, eventlog: { pcrs: { sha1: { 0: [hexOf(20)] } } } };
    expect(refusal(eventlogSha1)).toContain('eventlog: SHA-1 digests and PCR values are legacy');
    expect(() => parseBaselineDocument({ ...eventlogSha1, allowSha1: true })).not.toThrow();
  });

  it('SHA-1 digests of boot components, kernels and signature databases only with allowSha1: no decision rests on SHA-1 otherwise', () => {
    const sha1 = `sha1:${hexOf(20)}`;
    for (const eventlog of [
      { bootComponents: { match: 'any', allowed: [sha1] } },
      { bootComponents: { match: 'sequence', allowed: [[`sha256:${hexOf(32)}`], [sha1]] } },
      { kernels: { allowed: [`sha256:${hexOf(32)}`], otherFiles: [sha1] } },
      { signatureDatabases: { db: [sha1] } },
    ]) {
      expect(refusal({ version: 1, eventlog }), JSON.stringify(eventlog)).toContain('SHA-1 digests and PCR values are legacy');
      // Accepted, such a baseline makes its verdicts warn LEGACY_SHA1_ACCEPTED.
      expect(parseBaselineDocument({ version: 1, eventlog, allowSha1: true }).reliesOnSha1).toBe(true);
    }
    expect(parseBaselineDocument({ version: 1, eventlog: { kernels: { allowed: [`sha256:${hexOf(32)}`] } }, allowSha1: true }).reliesOnSha1).toBe(false);
  });
});

describe('refusals name the path (ERR_BASELINE_INVALID)', () => {
  const cases: Array<[string, unknown, string]> = [
    ['not an object', [MINIMAL], 'baseline document: document: Invalid input'],
    ['no version', { pcrs: MINIMAL.pcrs }, 'version: must be 1'],
    ['another version', { ...MINIMAL, version: 2 }, 'version: must be 1'],
    ['an unknown field', { ...MINIMAL, polices: {} }, 'document: unknown field "polices"'],
    ['an odd field name, quoted', { version: 1, pcrs: { sha256: { ' 1': [hexOf(32)] } } }, 'pcrs.sha256." 1": a PCR index'],
    ['an unknown bank', { version: 1, pcrs: { md5: { 0: [hexOf(16)] } } }, 'pcrs: unknown field "md5"'],
    ['PCR 24', { version: 1, pcrs: { sha256: { 24: [hexOf(32)] } } }, 'pcrs.sha256.24: a PCR index is 0..23 in decimal'],
    ['PCR "07"', { version: 1, pcrs: { sha256: { '07': [hexOf(32)] } } }, 'pcrs.sha256.07: a PCR index is 0..23'],
    ['a SHA-1 digest in the sha256 bank', { version: 1, pcrs: { sha256: { 0: [hexOf(20)] } } }, 'pcrs.sha256.0[0]: must be 64 hex digits (a sha256 digest)'],
    ['a value that is not hex', { version: 1, pcrs: { sha256: { 0: [hexOf(32), 'zz'.repeat(32)] } } }, 'pcrs.sha256.0[1]: must be hex digits'],
    ['no value for a PCR', { version: 1, pcrs: { sha256: { 0: [] } } }, 'pcrs.sha256.0:'],
    ['65 values for a PCR', { version: 1, pcrs: { sha256: { 0: Array.from({ length: 65 }, () => hexOf(32)) } } }, 'pcrs.sha256.0:'],
    ['no bank', { version: 1, pcrs: {} }, 'pcrs: lists no bank'],
    ['a bank without PCRs', { version: 1, pcrs: { sha256: {} } }, 'pcrs.sha256: lists no PCR'],
    ['nothing to check', { version: 1, audiences: ['a'] }, 'a baseline that checks nothing'],
    ['invalid event-log rules', { version: 1, eventlog: { requireSecureBoot: 'yes' } }, 'eventlog: event-log rules: requireSecureBoot must be true or false'],
    ['event-log rules that rule nothing', { version: 1, eventlog: {} }, 'eventlog: has no rule'],
    ['invalid IMA rules', { version: 1, ima: { allow: [] } }, 'ima: IMA rules: allow must be an object'],
    ['an IMA key that is no key', { version: 1, ima: { signatures: { keys: [{ publicKey: 'nope' }] } } }, 'ima: IMA rules: signatures.keys[0].publicKey'],
    ['no key residence', { ...MINIMAL, key: { residence: [] } }, 'key.residence:'],
    ['an unknown key residence', { ...MINIMAL, key: { residence: ['hsm'] } }, 'key.residence[0]:'],
    ['tokens for TPM keys only', { ...MINIMAL, key: { residence: ['tpm'], allowedTokens: [{ serial: 'x' }] } }, 'key.allowedTokens: is for PKCS#11 keys'],
    ['a token entry that names nothing', { ...MINIMAL, key: { allowedTokens: [{}] } }, 'key.allowedTokens[0]: an entry names at least one'],
    ['a token label longer than CK_TOKEN_INFO holds', { ...MINIMAL, key: { allowedTokens: [{ label: 'é'.repeat(17) }] } }, 'key.allowedTokens[0].label: at most 32 UTF-8 bytes'],
    ['an unknown token field', { ...MINIMAL, key: { allowedTokens: [{ slot: 1 }] } }, 'key.allowedTokens[0]: unknown field "slot"'],
    ['33 audiences', { ...MINIMAL, audiences: Array.from({ length: 33 }, (_, i) => `aud-${i}`) }, 'audiences:'],
    ['an audience with a space', { ...MINIMAL, audiences: ['https://a.example b'] }, 'audiences[0]: an audience has no whitespace'],
    ['a zero TTL', { ...MINIMAL, credentials: { x509TtlSeconds: 0 } }, 'credentials.x509TtlSeconds:'],
    ['a fractional TTL', { ...MINIMAL, credentials: { jwtTtlSeconds: 1.5 } }, 'credentials.jwtTtlSeconds:'],
    ['a TTL over a week', { ...MINIMAL, credentials: { x509TtlSeconds: 604801 } }, 'credentials.x509TtlSeconds:'],
    ['an uppercase label name', { ...MINIMAL, selector: { labels: { Role: 'gpu' } } }, 'selector.labels.Role: label names are lowercase'],
    ['33 labels', { ...MINIMAL, selector: { labels: Object.fromEntries(Array.from({ length: 33 }, (_, i) => [`l${i}`, 'x'])) } }, 'selector.labels: at most 32 labels'],
    ['allowSha1 as text', { ...MINIMAL, allowSha1: 'false' }, 'allowSha1:'],
  ];
  it.each(cases)('%s', (_what, value, message) => {
    expect(refusal(value)).toContain(message);
  });

  it('names at most three problems, and counts the rest', () => {
    const message = refusal({ version: 2, pcrs: 1, key: 2, audiences: 3, allowSha1: 4 });
    expect(message.split('; ')).toHaveLength(3);
    expect(message).toMatch(/\(and 2 more\)$/);
  });
});

describe('fast-check', () => {
  /** Anything, near a document or not: parsing returns a document or throws ERR_BASELINE_INVALID, nothing else. */
  const field = <T>(valid: fc.Arbitrary<T>) => fc.oneof(valid, fc.jsonValue({ maxDepth: 3 }));
  const nearDocument = fc.record(
    {
      version: field(fc.constant(1)),
      selector: field(fc.record({ labels: fc.dictionary(fc.string({ maxLength: 8 }), fc.string({ maxLength: 8 }), { maxKeys: 3 }) })),
      pcrs: field(fc.dictionary(fc.constantFrom('sha1', 'sha256', 'sha384', 'md5', ''), fc.dictionary(fc.string({ maxLength: 3 }), fc.array(fc.string({ maxLength: 96 }), { maxLength: 3 })))),
      eventlog: fc.jsonValue({ maxDepth: 3 }),
      ima: fc.jsonValue({ maxDepth: 3 }),
      key: field(fc.record({ residence: fc.array(fc.constantFrom('tpm', 'pkcs11', 'x')) }, { requiredKeys: [] })),
      audiences: field(fc.array(fc.string({ maxLength: 12 }), { maxLength: 3 })),
      credentials: field(fc.record({ x509TtlSeconds: fc.double(), jwtTtlSeconds: fc.integer() }, { requiredKeys: [] })),
      allowSha1: field(fc.boolean()),
    },
    { requiredKeys: [] },
  );

  it('random JSON and near-documents never throw anything but ERR_BASELINE_INVALID', () => {
    fc.assert(
      fc.property(fc.oneof(fc.jsonValue(), fc.anything(), nearDocument), (value) => {
        try {
          parseBaselineDocument(value);
        } catch (e) {
          if (!(e instanceof AttestorError) || e.code !== 'ERR_BASELINE_INVALID') throw e;
        }
      }),
      { numRuns: 2000 },
    );
  });

  const hex = (size: number) => fc.uint8Array({ minLength: size, maxLength: size }).chain((b) => fc.constantFrom(Buffer.from(b).toString('hex'), Buffer.from(b).toString('hex').toUpperCase()));
  const pcrMap = (size: number) => fc.dictionary(fc.integer({ min: 0, max: 23 }).map(String), fc.array(hex(size), { minLength: 1, maxLength: 4 }), { minKeys: 1, maxKeys: 6 });
  const validDocument = fc
    .record(
      {
        version: fc.constant(1),
        selector: fc.record({ labels: fc.dictionary(fc.stringMatching(/^[a-z0-9]{1,12}$/), fc.string({ maxLength: 20 }), { maxKeys: 4 }) }),
        pcrs: fc.record({ sha256: pcrMap(32), sha384: pcrMap(48) }, { requiredKeys: ['sha256'] }),
        eventlog: fc.constantFrom({ requireSecureBoot: true }, { kernelCmdlines: [' ro quiet '], bootComponents: { match: 'any', allowed: [`sha256:${hexOf(32, 'BB')}`] } }, { kernels: { allowed: [`SHA256:${hexOf(32, 'AA')}`] } }),
        ima: fc.constantFrom({ allow: {} }, { exclude: ['/tmp/**'], allowViolations: true }),
        key: fc.record({ residence: fc.subarray(['tpm', 'pkcs11'], { minLength: 1 }) }, { requiredKeys: [] }),
        audiences: fc.array(fc.stringMatching(/^[a-z]{1,8}:\/\/[a-z.]{1,16}$/), { maxLength: 5 }),
        credentials: fc.record({ x509TtlSeconds: fc.integer({ min: 1, max: 604800 }), jwtTtlSeconds: fc.integer({ min: 1, max: 604800 }) }, { requiredKeys: [] }),
        allowSha1: fc.boolean(),
      },
      { requiredKeys: ['version'] },
    )
    .filter((d) => d.pcrs !== undefined || d.eventlog !== undefined || d.ima !== undefined);

  it('valid documents parse, and round-trip through JSON to an equal document', () => {
    fc.assert(
      fc.property(validDocument, (value) => {
        const doc = parseBaselineDocument(value);
        const stored = JSON.stringify(doc);
        const again = parseBaselineDocument(JSON.parse(stored));
        expect(again).toEqual(doc);
        expect(JSON.stringify(again)).toBe(stored);
        expect(pcrSelectionOf(again)).toEqual(pcrSelectionOf(doc));
      }),
      { numRuns: 300 },
    );
  });
});

describe('pcrSelectionOf', () => {
  it('the PCRs of `pcrs`, those event-log rules depend on (sha256, and their own banks), PCR 10 for IMA', () => {
    const doc = parseBaselineDocument({
      version: 1,
      pcrs: { sha256: { 7: [hexOf(32)], 0: [hexOf(32)] }, sha384: { 4: [hexOf(48)] } },
      eventlog: { requireSecureBoot: true, kernels: { allowed: [`sha256:${hexOf(32)}`] }, pcrs: { sha384: { 11: [hexOf(48)] } } },
      ima: { allow: {} },
    });
    expect(pcrSelectionOf(doc)).toEqual({ sha256: [0, 7, 9, 10, 11], sha384: [4, 11] });
    expect(pcrSelectionOf(parseBaselineDocument(MINIMAL))).toEqual({ sha256: [0] });
    expect(pcrSelectionOf(parseBaselineDocument({ version: 1, ima: {} }))).toEqual({ sha256: [10] });
  });

  it('DEFAULT_PCR_SELECTION: sha256 PCRs 0..15, frozen', () => {
    expect(DEFAULT_PCR_SELECTION).toEqual({ sha256: [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15] });
    expect(Object.isFrozen(DEFAULT_PCR_SELECTION) && Object.isFrozen(DEFAULT_PCR_SELECTION.sha256)).toBe(true);
  });
});

describe('selectorMatches', () => {
  it('every selector label must have the same value on the agent; no selector matches every agent', () => {
    const gpu = parseBaselineDocument({ ...MINIMAL, selector: { labels: { role: 'gpu', zone: 'a' } } });
    expect(selectorMatches(gpu, { role: 'gpu', zone: 'a', extra: 'x' })).toBe(true);
    expect(selectorMatches(gpu, { role: 'gpu' })).toBe(false);
    expect(selectorMatches(gpu, { role: 'cpu', zone: 'a' })).toBe(false);
    expect(selectorMatches(parseBaselineDocument(MINIMAL), { role: 'anything' })).toBe(true);
    expect(selectorMatches(parseBaselineDocument({ ...MINIMAL, selector: { labels: {} } }), {})).toBe(true);
  });

  it('inherited properties are not labels', () => {
    const doc = parseBaselineDocument({ ...MINIMAL, selector: { labels: { constructor: 'function Object() { [native code] }' } } });
    expect(selectorMatches(doc, {})).toBe(false);
  });
});
