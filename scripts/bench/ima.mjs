import { imaHashByName } from '../../dist/eventlog/ima/hash-algos.js';
import { advanceIma, initialImaState } from '../../dist/eventlog/ima/incremental.js';
import { ImaReplay } from '../../dist/eventlog/ima/replay.js';
import { buildImaEntry, formatImaAscii } from '../../dist/eventlog/ima/serialize.js';
import { isExcluded, parseImaRules } from '../../dist/baseline/ima-rules.js';
import { fmt, median, timeOnce } from './measure.mjs';

/** What one entry may cost at worst: a list of thousands must still appraise in seconds. */
const WORST_GLOB_TARGET_MS = 100;

/** A synthetic ima-ng list: a boot aggregate, then `count - 1` SHA-256 file measurements. */
function syntheticEntries(count) {
  const sha1 = imaHashByName('sha1', 'bench');
  const sha256 = imaHashByName('sha256', 'bench');
  const entries = [buildImaEntry(0, 10, 'ima-ng', { digestAlgo: sha1, digest: new Uint8Array(20), name: Buffer.from('boot_aggregate') })];
  for (let i = 1; i < count; i++) {
    const digest = Buffer.alloc(32);
    digest.writeUInt32BE(i);
    entries.push(buildImaEntry(i, 10, 'ima-ng', { digestAlgo: sha256, digest, name: Buffer.from(`/usr/lib/x86_64-linux-gnu/lib-${i}.so.1`) }));
  }
  return entries;
}

function quoteAfter(entries) {
  const replay = new ImaReplay();
  for (const entry of entries) replay.extend(entry);
  return { sha1: { 10: replay.value('sha1', 10) }, sha256: { 10: replay.value('sha256', 10) } };
}

/**
 * A full appraisal replay (parse, template-hash checks, SHA-1 + SHA-256 replay, match against
 * the quoted PCR 10) of a long list, and one incremental step of `step` new entries resumed
 * from the saved state: the step must cost the same whatever the list's length.
 */
function measure(entries, step, rounds = 5) {
  const all = syntheticEntries(entries + step);
  const head = formatImaAscii(all.slice(0, entries));
  const whole = formatImaAscii(all);
  const headQuote = quoteAfter(all.slice(0, entries));
  const wholeQuote = quoteAfter(all);
  const full = [];
  const incremental = [];
  for (let round = 0; round < rounds; round++) {
    let t = performance.now();
    const { state } = advanceIma(initialImaState('ascii'), { format: 'ascii', bytes: head }, headQuote);
    full.push(performance.now() - t);
    t = performance.now();
    advanceIma(state, { format: 'ascii', bytes: whole }, wholeQuote);
    incremental.push(performance.now() - t);
  }
  return { fullMs: median(full), stepMs: median(incremental) };
}

export function benchIma() {
  const rows = [];
  const base = measure(1_000, 100);
  for (const entries of [1_000, 10_000, 100_000]) {
    const r = entries === 1_000 ? base : measure(entries, 100, entries === 100_000 ? 3 : 5);
    // Proportional to new entries: the step on a long list costs no more than on a short one.
    const ratio = base.stepMs / r.stepMs;
    rows.push({
      name: `IMA +100 entries appraised incrementally on a list of ${entries}`,
      value: r.stepMs,
      unit: 'ms',
      ...(entries > 1_000 ? { baseline: { name: 'the same step on a 1,000-entry list', value: base.stepMs, unit: 'ms' }, ratio, target: 0.5 } : {}),
      line:
        `IMA list of ${fmt(entries).padStart(7)} entries: full replay ${fmt(r.fullMs, 1).padStart(7)} ms ` +
        `(${fmt((r.fullMs * 1000) / entries, 2)} us/entry); +100 entries incremental ${fmt(r.stepMs, 2)} ms` +
        (entries > 1_000 ? `  step vs 1,000-entry list: ratio ${fmt(ratio, 2)} (target >= 0.5)` : ''),
    });
  }
  rows.push(worstGlobs());
  return rows;
}

/**
 * The costliest IMA exclusions a baseline may hold (its glob cost at the parser's bound)
 * matched against the longest path an entry may have: the time one entry costs at worst.
 */
function worstGlobs() {
  const worst = `/${'*a'.repeat(127)}`;
  const rules = parseImaRules({ exclude: [...Array.from({ length: 8 }, (_, i) => `${worst}${String.fromCharCode(98 + i)}`), '/x/*a*a*a*a'] });
  const path = `/${'a'.repeat(4094)}`;
  const ms = timeOnce(() => isExcluded(rules, path), 5);
  return {
    name: 'IMA entry against the costliest globs a baseline may hold, longest path',
    value: ms,
    unit: 'ms',
    ratio: WORST_GLOB_TARGET_MS / ms,
    target: 1,
    line: `${'IMA entry vs the costliest globs allowed, 4 KB path'.padEnd(52)} ${fmt(ms, 1)} ms (target <= ${WORST_GLOB_TARGET_MS} ms per entry)`,
  };
}
