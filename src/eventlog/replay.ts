import { hash as oneShotHash } from 'node:crypto';
import type { HashInfo } from '../tpm/constants.js';
import type { PcrValues } from '../tpm/pcr-selection.js';
import { EV } from './event-types.js';
import type { TcgEvent, TcgLog } from './tcg-log.js';

/*
 * Replay: what the PCRs hold if the TPM was extended with exactly the log's digests.
 * TPM 2.0 Part 1 §17.7: PCR_new = H(PCR_old || digest), per bank. PCRs reset to zeros,
 * except PCR 0 which starts at 0...0<locality> when TPM2_Startup ran at locality 3 or the
 * H-CRTM (4) ran (Part 1 §34.3, PFP §10.4.5.3). EV_NO_ACTION events are never extended.
 */

/** The PCR value after a reset: zeros, with PCR 0's last byte the startup locality. */
export function initialPcrValue(hash: HashInfo, index: number, startupLocality: number): Uint8Array {
  const value = new Uint8Array(hash.size);
  if (index === 0) value[hash.size - 1] = startupLocality;
  return value;
}

/**
 * PCR_new = H(PCR_old || digest). One-shot hashing of a reused buffer runs about twice the
 * rate of createHash; both inputs are hash.size bytes (the parser checks digest sizes).
 */
export function extendPcr(hash: HashInfo, old: Uint8Array, digest: Uint8Array): Uint8Array {
  const input = scratch.subarray(0, old.length + digest.length);
  input.set(old, 0);
  input.set(digest, old.length);
  return oneShotHash(hash.name, input, 'buffer');
}

/** Twice the largest digest (SHA-512). */
const scratch = new Uint8Array(128);

/** Whether the event extends a PCR (every type but EV_NO_ACTION, PFP §10.4.1). */
export function isExtended(event: TcgEvent): boolean {
  return event.eventType !== EV.NO_ACTION;
}

/**
 * Replays every bank the log carries and Attestor can hash, or of those only `only` (an
 * appraisal needs the banks its quote covers: each bank is a hash per event). A (bank, PCR)
 * appears in the result only when at least one event extended it, as tpm2_eventlog reports.
 */
export function replayTcgLog(log: TcgLog, only?: ReadonlySet<string>): PcrValues {
  const banks: Record<string, Record<number, Uint8Array>> = {};
  for (const alg of log.algorithms) if (alg.hash && (!only || only.has(alg.hash.name))) banks[alg.hash.name] = {};
  for (const event of log.events) {
    if (!isExtended(event)) continue;
    for (const { hash, digest } of event.digests) {
      if (!hash) continue;
      const bank = banks[hash.name];
      if (!bank) continue;
      const old = bank[event.pcrIndex] ?? initialPcrValue(hash, event.pcrIndex, log.startupLocality);
      bank[event.pcrIndex] = extendPcr(hash, old, digest);
    }
  }
  for (const name of Object.keys(banks)) if (Object.keys(banks[name]!).length === 0) delete banks[name];
  return banks;
}

/**
 * The value of one PCR after each event that extended it, in log order: lets an appraisal
 * say at which event a replay stops agreeing with a quote.
 */
export function replayPcrHistory(log: TcgLog, hash: HashInfo, index: number): Array<{ event: number; value: Uint8Array }> {
  let value = initialPcrValue(hash, index, log.startupLocality);
  const history: Array<{ event: number; value: Uint8Array }> = [];
  for (const event of log.events) {
    if (event.pcrIndex !== index || !isExtended(event)) continue;
    const digest = event.digests.find((d) => d.algorithmId === hash.alg)?.digest;
    if (!digest) continue;
    value = extendPcr(hash, value, digest);
    history.push({ event: event.index, value });
  }
  return history;
}

/** Per bank name, per PCR index: the first event extending that PCR without a digest in that bank. */
export type BankGaps = { readonly [bank: string]: { readonly [pcr: number]: number } };

/**
 * Where a bank's replay of a PCR skips an event (PFP §10.2.2 lets an event carry fewer
 * digests than the log has banks). Such a bank replays a different sequence than the other
 * banks, so its digests cannot be paired with theirs event by event: a bank with a gap in
 * a PCR vouches for none of that PCR's events.
 */
export function bankGaps(log: TcgLog): BankGaps {
  const gaps: Record<string, Record<number, number>> = {};
  for (const alg of log.algorithms) {
    if (!alg.hash) continue;
    const byPcr: Record<number, number> = {};
    for (const event of log.events) {
      if (!isExtended(event) || byPcr[event.pcrIndex] !== undefined) continue;
      if (!event.digests.some((d) => d.algorithmId === alg.algorithmId)) byPcr[event.pcrIndex] = event.index;
    }
    gaps[alg.hash.name] = byPcr;
  }
  return gaps;
}
