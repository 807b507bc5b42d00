import { spawnSync } from 'node:child_process';
import { readdirSync, readFileSync, rmSync, writeFileSync, mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { parseTcgLog } from '../../dist/eventlog/tcg-log.js';
import { replayTcgLog } from '../../dist/eventlog/replay.js';
import { fmt, median, timeOnce } from './measure.mjs';

/** Process time of one tpm2_eventlog run on the same file (includes its start-up), median of 7. */
function tpm2EventlogMs(path) {
  const times = [];
  for (let i = 0; i < 7; i++) {
    const t = process.hrtime.bigint();
    const r = spawnSync('tpm2_eventlog', [path], { stdio: ['ignore', 'ignore', 'ignore'] });
    times.push(Number(process.hrtime.bigint() - t) / 1e6);
    if (r.status !== 0) return undefined;
  }
  return median(times);
}

/**
 * A ~50 KB log from real events: the GCE log with its events after the Spec ID event repeated,
 * which is what a long boot (many boot entries, options, drivers) looks like to the parser.
 */
function fiftyKbLog(vectors) {
  const gce = new Uint8Array(readFileSync(`${vectors}/eventlog/event-gce-ubuntu-2104-log.bin`));
  const body = gce.subarray(parseTcgLog(gce).events[1].offset);
  const parts = [gce];
  let size = gce.length;
  while (size < 50_000) {
    parts.push(body);
    size += body.length;
  }
  return new Uint8Array(Buffer.concat(parts));
}

export function benchEventlog(root) {
  const vectors = resolve(process.env.ATTESTOR_VECTORS ?? `${root}../shared/vectors`);
  const tmp = mkdtempSync(join(tmpdir(), 'attestor-bench-'));
  const rows = [];
  try {
    const logs = readdirSync(`${vectors}/eventlog`)
      .filter((f) => !f.endsWith('.yaml') && f !== 'expected')
      .map((f) => ({ name: f, path: `${vectors}/eventlog/${f}`, bytes: new Uint8Array(readFileSync(`${vectors}/eventlog/${f}`)) }));
    const big = fiftyKbLog(vectors);
    const bigPath = join(tmp, 'gce-repeated.bin');
    writeFileSync(bigPath, big);
    logs.push({ name: 'gce events repeated, >= 50 KB', path: bigPath, bytes: big, target: 1 });
    for (const log of logs.sort((a, b) => a.bytes.length - b.bytes.length)) {
      const ours = timeOnce(() => replayTcgLog(parseTcgLog(log.bytes)), 200);
      const ref = tpm2EventlogMs(log.path);
      const vs = ref === undefined ? 'tpm2_eventlog refused it' : `tpm2_eventlog process ${fmt(ref, 2).padStart(6)} ms, ratio ${fmt(ref / ours, 0)}x`;
      rows.push({
        name: `UEFI log parse + replay: ${log.name}`,
        value: ours,
        unit: 'ms',
        ...(ref === undefined ? {} : { baseline: { name: 'tpm2_eventlog process', value: ref, unit: 'ms' } }),
        // The target is absolute (<= 1 ms for 50 KB); expressed as a ratio to it.
        ...(log.target ? { ratio: log.target / ours, target: 1 } : {}),
        line: `${log.name.padEnd(46)} ${fmt(log.bytes.length / 1024, 1).padStart(5)} KB  parse+replay ${fmt(ours, 3)} ms  ${vs}${log.target ? '  (target <= 1 ms)' : ''}`,
      });
    }
  } finally {
    rmSync(tmp, { recursive: true, force: true });
  }
  return rows;
}
