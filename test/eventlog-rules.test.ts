import { describe, expect, it } from 'vitest';
import { parseEventlogRules, rulePcrs } from '../src/baseline/eventlog-rules.js';
import { ParseError } from '../src/errors.js';

const SHA256 = 'ab'.repeat(32);
const SHA1 = 'cd'.repeat(20);

describe('event-log rules from JSON', () => {
  it('reads every rule and normalises digests and command lines', () => {
    const rules = parseEventlogRules(
      JSON.parse(`{
        "requireSecureBoot": true,
        "bootComponents": { "match": "sequence", "allowed": [["SHA256:${SHA256.toUpperCase()}"], ["sha1:${SHA1}", "sha256:${SHA256}"]] },
        "signatureDatabases": { "db": ["sha256:${SHA256}"], "dbx": ["sha1:${SHA1}"] },
        "kernels": { "allowed": ["sha256:${SHA256}"], "otherFiles": ["sha1:${SHA1}"] },
        "kernelCmdlines": ["  root=/dev/sda1 ro "],
        "pcrs": { "sha256": { "0": ["${SHA256}"], "7": ["${SHA256}"] } }
      }`),
    );
    expect(rules).toEqual({
      requireSecureBoot: true,
      bootComponents: {
        match: 'sequence',
        allowed: [[{ bank: 'sha256', digest: SHA256 }], [{ bank: 'sha1', digest: SHA1 }, { bank: 'sha256', digest: SHA256 }]],
      },
      signatureDatabases: { db: [{ bank: 'sha256', digest: SHA256 }], dbx: [{ bank: 'sha1', digest: SHA1 }] },
      kernels: { allowed: [{ bank: 'sha256', digest: SHA256 }], otherFiles: [{ bank: 'sha1', digest: SHA1 }] },
      kernelCmdlines: ['root=/dev/sda1 ro'],
      pcrs: { sha256: { 0: [SHA256], 7: [SHA256] } },
    });
    expect(rulePcrs(rules)).toEqual([0, 4, 7, 8, 9, 12]);
    expect(parseEventlogRules({ kernels: { allowed: [`sha256:${SHA256}`] } }).kernels).toEqual({ allowed: [{ bank: 'sha256', digest: SHA256 }], otherFiles: [] });
    expect(parseEventlogRules({ bootComponents: { match: 'any', allowed: [`sha256:${SHA256}`] } }).bootComponents).toEqual({
      match: 'any',
      allowed: [{ bank: 'sha256', digest: SHA256 }],
    });
    expect(rulePcrs(parseEventlogRules({}))).toEqual([]);
  });

  const bad: Array<[string, unknown, RegExp]> = [
    ['not an object', [], /rules must be an object/],
    ['an unknown field (a typo must not drop a rule)', { requireSecureboot: true }, /unknown field "requireSecureboot"/],
    ['a non-boolean secure boot flag', { requireSecureBoot: 'yes' }, /requireSecureBoot must be true or false/],
    ['an unknown match', { bootComponents: { match: 'ordered', allowed: [[`sha256:${SHA256}`]] } }, /bootComponents.match/],
    ['an empty list', { bootComponents: { match: 'any', allowed: [] } }, /bootComponents.allowed must not be empty/],
    ['a digest without its bank', { bootComponents: { match: 'any', allowed: [SHA256] } }, /allowed\[0\] must be "<bank>:<hex>"/],
    ['an unknown bank', { bootComponents: { match: 'any', allowed: [`md5:${SHA256}`] } }, /bank "md5"/],
    ['a digest of the wrong size', { bootComponents: { match: 'any', allowed: [`sha256:${SHA1}`] } }, /must be 64 hex digits/],
    ['a position that is not a list', { bootComponents: { match: 'sequence', allowed: [`sha256:${SHA256}`] } }, /allowed\[0\] must be a list/],
    ['an unknown database', { signatureDatabases: { dbt: [`sha256:${SHA256}`] } }, /unknown field "dbt"/],
    ['signature databases that name none (it would check nothing)', { signatureDatabases: {} }, /signatureDatabases must name at least one/],
    ['kernels that is not an object', { kernels: [`sha256:${SHA256}`] }, /kernels must be an object/],
    ['kernels without allowed kernels', { kernels: { otherFiles: [`sha256:${SHA256}`] } }, /kernels.allowed must be a list/],
    ['an empty list of kernels', { kernels: { allowed: [] } }, /kernels.allowed must not be empty/],
    ['an unknown kernels field', { kernels: { allowed: [`sha256:${SHA256}`], initrds: [] } }, /unknown field "initrds"/],
    ['another file digest without its bank', { kernels: { allowed: [`sha256:${SHA256}`], otherFiles: [SHA256] } }, /kernels.otherFiles\[0\] must be "<bank>:<hex>"/],
    ['a command line that is not a string', { kernelCmdlines: [1] }, /kernelCmdlines\[0\] must be a string/],
    ['a PCR index out of range', { pcrs: { sha256: { 32: [SHA256] } } }, /pcrs.sha256.32 PCR index/],
    ['a PCR index that is not a number', { pcrs: { sha256: { '07': [SHA256] } } }, /pcrs.sha256.07 PCR index/],
    ['a PCR value that is not hex', { pcrs: { sha256: { 0: ['zz'.repeat(32)] } } }, /pcrs.sha256.0\[0\] must be 64 hex digits/],
    ['a PCR bank that is unknown', { pcrs: { sm3: { 0: [SHA256] } } }, /bank "sm3"/],
    ['a list longer than the limit', { kernelCmdlines: new Array(10_001).fill('ro') }, /more than 10000 entries/],
  ];
  for (const [what, json, message] of bad) {
    it(`refuses ${what}: ERR_BASELINE_EVENTLOG_RULES`, () => {
      let thrown: unknown;
      try {
        parseEventlogRules(json);
      } catch (e) {
        thrown = e;
      }
      expect(thrown).toBeInstanceOf(ParseError);
      expect((thrown as ParseError).code).toBe('ERR_BASELINE_EVENTLOG_RULES');
      expect((thrown as ParseError).message).toMatch(message);
    });
  }
});
