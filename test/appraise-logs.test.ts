/**
 * appraise() with real measurement logs: UEFI event logs of real machines (shared vectors) and
 * a real IMA list (826 entries), quoted by a software AK with the PCR values a TPM that ran
 * that boot holds. IMA is incremental: the caller keeps the progress between appraisals.
 */
import { describe, expect, it } from 'vitest';
import { appraise, type AppraisalInput, type AppraisedBaseline, type ImaProgress } from '../src/appraisal/appraise.js';
import { parseBaselineDocument } from '../src/baseline/document.js';
import { hex } from '../src/bytes.js';
import { parseImaLog } from '../src/eventlog/ima/parse.js';
import { parseTcgLog } from '../src/eventlog/tcg-log.js';
import { TPM_ALG } from '../src/tpm/constants.js';
import { attestation, testAgent, type EvidenceSpec } from './helpers/appraise-evidence.js';
import { imaVector, referencePcr10Prefixes } from './helpers/ima.js';
import { eventlogVector, rebuildLog, replayedPcrs, specsOf } from './eventlog-fixtures.js';

const agent = testAgent();
const NONCE = new Uint8Array(32).fill(0x11);
const codes = (reasons: readonly { code: string }[]) => reasons.map((r) => r.code);
const baselineOf = (document: unknown, id = 'logs-1'): AppraisedBaseline => ({ id, version: 1, document: parseBaselineDocument(document) });

function appraiseWith(baseline: AppraisedBaseline | undefined, evidence: EvidenceSpec, over: Partial<AppraisalInput> = {}) {
  return appraise({ akPublic: agent.akPublic, nonce: NONCE, evidence: attestation(agent, evidence), ...(baseline && { baseline }), ...over });
}

describe('UEFI event logs of real machines', () => {
  const MOK = eventlogVector('event-moklisttrusted.bin'); // sha256 only, secure boot enabled
  const GCE = eventlogVector('event-gce-ubuntu-2104-log.bin'); // sha1, sha256, sha384, secure boot disabled
  /** sha256 PCRs 0..15 as a TPM that booted this log holds them: replayed, or at reset when the log never extends them. */
  const bootPcrs = (log: Uint8Array) => {
    const replayed = replayedPcrs(log).sha256!;
    return { sha256: Object.fromEntries([...Array(16).keys()].map((i) => [i, replayed[i] ?? new Uint8Array(32)])) };
  };
  const SECURE_BOOT = { version: 1, eventlog: { requireSecureBoot: true } };

  it('secure boot proven: affirming, and the claim says so', () => {
    const a = appraiseWith(baselineOf(SECURE_BOOT), { nonce: NONCE, pcrs: bootPcrs(MOK), eventLog: MOK });
    expect(a.reasons).toEqual([]);
    expect(a.status).toBe('affirming');
    expect(a.claims.secureBoot).toBe(true);
    expect(a.evidence?.secureBoot).toBe(true);
    expect(Object.keys(a.evidence!.pcrs.sha256!)).toHaveLength(16);
  });

  it('secure boot disabled (GCE): SECURE_BOOT_DISABLED under a rule that needs it, a false claim under one that does not', () => {
    const refused = appraiseWith(baselineOf(SECURE_BOOT), { nonce: NONCE, pcrs: bootPcrs(GCE), eventLog: GCE });
    expect(refused.status).toBe('contraindicated');
    expect(refused.reasons).toEqual([expect.objectContaining({ code: 'SECURE_BOOT_DISABLED', pcr: 7 })]);

    const pcr0 = hex(bootPcrs(GCE).sha256[0]!);
    const pinned = baselineOf({ version: 1, eventlog: { pcrs: { sha256: { 0: [pcr0] } } } });
    const a = appraiseWith(pinned, { nonce: NONCE, pcrs: bootPcrs(GCE), eventLog: GCE });
    expect(a.status).toBe('affirming');
    expect(a.claims.secureBoot).toBe(false);
  });

  it('a log tampered with after the quote: EVENTLOG_PCR_MISMATCH names bank and PCR, and secure boot is no longer proven', () => {
    const log = parseTcgLog(MOK);
    const events = specsOf(log);
    const at = events.findIndex((e) => e.pcr === 7);
    const digest = new Uint8Array(events[at]!.digests![0]![1]);
    digest[0]! ^= 1;
    events[at] = { ...events[at]!, digests: [[TPM_ALG.SHA256, digest]] };
    const tampered = rebuildLog(log, MOK, events);
    const a = appraiseWith(baselineOf(SECURE_BOOT), { nonce: NONCE, pcrs: bootPcrs(MOK), eventLog: tampered });
    expect(a.status).toBe('contraindicated');
    expect(a.reasons[0]).toMatchObject({ code: 'EVENTLOG_PCR_MISMATCH', bank: 'sha256', pcr: 7 });
    expect(codes(a.reasons)).toEqual(['EVENTLOG_PCR_MISMATCH', 'SECURE_BOOT_UNPROVEN']);
    expect(a.claims.secureBoot).toBeUndefined();
  });

  it('a log that does not parse is a reason with its parse code (it is unsigned data, the quote is still the agent\'s)', () => {
    const a = appraiseWith(baselineOf(SECURE_BOOT), { nonce: NONCE, pcrs: bootPcrs(MOK), eventLog: MOK.subarray(0, 200) });
    expect(a.status).toBe('contraindicated');
    expect(codes(a.reasons)).toEqual(['ERR_EVENTLOG_TRUNCATED']);
  });

  it('no baseline: the log is not appraised, nothing is claimed from it', () => {
    const a = appraiseWith(undefined, { nonce: NONCE, pcrs: bootPcrs(MOK), eventLog: MOK.subarray(0, 200) });
    expect(codes(a.reasons)).toEqual(['NO_BASELINE']);
    expect(a.claims.secureBoot).toBeUndefined();
  });

  it('a staged baseline with event-log rules is judged on the same log', () => {
    const pcr0 = hex(bootPcrs(GCE).sha256[0]!);
    const a = appraiseWith(baselineOf({ version: 1, pcrs: { sha256: { 0: [pcr0] } } }), { nonce: NONCE, pcrs: bootPcrs(GCE), eventLog: GCE }, {
      staged: [baselineOf(SECURE_BOOT, 'staged-secure-boot')],
    });
    expect(a.status).toBe('warning');
    expect(a.staged).toEqual([{ id: 'staged-secure-boot', version: 1, status: 'contraindicated', reasons: [expect.objectContaining({ code: 'SECURE_BOOT_DISABLED' })] }]);
    // Claims come from the enforced baseline's appraisal only: it has no event-log rules.
    expect(a.claims.secureBoot).toBeUndefined();
  });
});

describe('the real IMA list, incrementally', () => {
  const ascii = imaVector();
  const entries = parseImaLog(ascii);
  const total = entries.length;
  const prefixes = referencePcr10Prefixes(ascii);
  /** Byte offset in the list after n entries. */
  const ends = [0];
  for (let i = ascii.indexOf(0x0a); i >= 0; i = ascii.indexOf(0x0a, i + 1)) ends.push(i + 1);
  const allowAll: Record<string, string[]> = {};
  for (const e of entries) (allowAll[e.path] ??= []).push(`sha1:${hex(e.digest)}`);
  const IMA = baselineOf({ version: 1, ima: { allow: allowAll } }, 'ima-1');

  /** The list as read `readUpTo` entries in, quoted after `quoted` of them. */
  const evidence = (quoted: number, readUpTo = quoted, resetCount = 4, list = ascii): EvidenceSpec => ({
    nonce: NONCE,
    pcrs: { sha256: { 10: prefixes[quoted]!.sha256 } },
    imaLog: list.subarray(0, ends[readUpTo]),
    resetCount,
  });
  /** Stored and read back as the service does. */
  const stored = (p: ImaProgress | undefined): ImaProgress => JSON.parse(JSON.stringify(p)) as ImaProgress;
  /** The list with its first `n` entries' bytes overwritten: unparsable, should anything read them again. */
  const garbledBefore = (n: number) => {
    const list = Buffer.from(ascii);
    list.fill(0x7e, 0, ends[n]);
    return list;
  };

  it('has the vector', () => {
    expect(total).toBe(826);
    expect(ends).toHaveLength(827);
  });

  it('first appraisal: entries up to the quote are judged, later ones left for next time; the progress names the baseline', () => {
    const a = appraiseWith(IMA, evidence(300, 400));
    expect(a.status).toBe('affirming');
    expect(a.ima).toMatchObject({ resetCount: 4, state: { baselineId: 'ima-1', list: { format: 'ascii', entries: 300, offset: ends[300] } } });
  });

  it('second appraisal judges only the new entries: the bytes before the progress are never read again', () => {
    const first = appraiseWith(IMA, evidence(300, 400));
    const garbled = garbledBefore(300);
    // Without the progress, the garbled list does not even parse ...
    expect(codes(appraiseWith(IMA, evidence(total, total, 4, garbled)).reasons)).toEqual(['ERR_IMA_MALFORMED']);
    // ... with it, only entries 300.. are read.
    const second = appraiseWith(IMA, evidence(total, total, 4, garbled), { ima: stored(first.ima) });
    expect(second.status).toBe('affirming');
    expect(second.ima?.state.list).toMatchObject({ entries: total, offset: ascii.length });
    // Nothing new since: the progress did not move, nothing to store.
    const third = appraiseWith(IMA, evidence(total), { ima: stored(second.ima) });
    expect(third.status).toBe('affirming');
    expect(third.ima).toBeUndefined();
  });

  it('a changed resetCount (the host restarted) starts the new list from its first entry', () => {
    const before = appraiseWith(IMA, evidence(total));
    const after = appraiseWith(IMA, evidence(100, 120, 5), { ima: stored(before.ima) });
    expect(after.status).toBe('affirming');
    expect(after.ima).toMatchObject({ resetCount: 5, state: { list: { entries: 100 } } });
    // The same shorter list without a restart is refused, not taken for one.
    const shrunk = appraiseWith(IMA, evidence(100, 120, 4), { ima: stored(before.ima) });
    expect(codes(shrunk.reasons)).toEqual(['ERR_IMA_LOG_SHRUNK']);
  });

  it('another enforced baseline starts from the first entry: its rules never judged the earlier ones', () => {
    const first = appraiseWith(IMA, evidence(300));
    const same = baselineOf({ version: 1, ima: { allow: allowAll } }, 'ima-2');
    const garbled = garbledBefore(300);
    expect(appraiseWith(IMA, evidence(total, total, 4, garbled), { ima: stored(first.ima) }).status).toBe('affirming');
    const restarted = appraiseWith(same, evidence(total, total, 4, garbled), { ima: stored(first.ima) });
    expect(codes(restarted.reasons)).toEqual(['ERR_IMA_MALFORMED']);
    expect(appraiseWith(same, evidence(total), { ima: stored(first.ima) }).ima?.state).toMatchObject({ baselineId: 'ima-2', list: { entries: total } });
  });

  it('ERR_IMA_FILE_NOT_ALLOWED names the entry and its path; the progress does not move past it', () => {
    const { [entries[7]!.path]: _dropped, ...allow } = allowAll;
    const a = appraiseWith(baselineOf({ version: 1, ima: { allow } }), evidence(total));
    expect(a.status).toBe('contraindicated');
    expect(a.reasons[0]).toMatchObject({ code: 'ERR_IMA_FILE_NOT_ALLOWED', event: 7, path: entries[7]!.path });
    expect(a.ima?.state.list.entries).toBe(0);
  });

  it('ERR_IMA_PCR_MISMATCH: no prefix of the list gives the quoted PCR 10', () => {
    const a = appraiseWith(IMA, { ...evidence(300), pcrs: { sha256: { 10: new Uint8Array(32).fill(3) } } });
    expect(a.reasons).toEqual([expect.objectContaining({ code: 'ERR_IMA_PCR_MISMATCH', pcr: 10 })]);
  });

  it('a verdict keeps at most 32 reasons, the last saying how many more there were', () => {
    const a = appraiseWith(baselineOf({ version: 1, ima: { allow: {} } }), evidence(total));
    expect(a.reasons).toHaveLength(32);
    expect(a.reasons.slice(0, 31).every((r) => r.code === 'ERR_IMA_FILE_NOT_ALLOWED')).toBe(true);
    expect(a.reasons[31]).toEqual({ code: 'MORE_REASONS', message: `and ${total - 31} more` });
  });

  it('event log and IMA list in one attestation, a staged IMA baseline judged but not moving the progress', () => {
    const MOK = eventlogVector('event-moklisttrusted.bin');
    const pcrs = { sha256: { 7: replayedPcrs(MOK).sha256![7]!, 10: prefixes[total]!.sha256 } };
    const both = baselineOf({ version: 1, eventlog: { requireSecureBoot: true }, ima: { allow: allowAll } }, 'both');
    const a = appraiseWith(both, { ...evidence(total), pcrs, eventLog: MOK }, { staged: [baselineOf({ version: 1, ima: { allow: {} } }, 'strict-ima')] });
    expect(a.status).toBe('warning');
    expect(a.claims.secureBoot).toBe(true);
    expect(a.ima?.state).toMatchObject({ baselineId: 'both', list: { entries: total } });
    expect(a.staged[0]!.reasons).toHaveLength(32);
  });
});
