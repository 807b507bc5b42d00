import { spawn } from 'node:child_process';
import { readdirSync, readFileSync } from 'node:fs';
import { describe, expect, it } from 'vitest';
import { runAttestor } from '../src/cli/program.js';
import { parseImaLog } from '../src/eventlog/ima/parse.js';
import { replayIma } from '../src/eventlog/ima/replay.js';
import { readTpm2EventlogYaml } from './eventlog-yaml.js';
import { runCli } from './helpers/cli.js';
import { vectorsDir } from './vectors.js';

const attestor = (args: string[]) => runCli(runAttestor, args);

/** The `attestor` bin as documented in the README, end to end through the command parser. */
describe('attestor eventlog replay --json equals tpm2_eventlog for every vector', () => {
  const expected = `${vectorsDir}/eventlog/expected`;
  it.each(readdirSync(expected).map((f) => f.replace(/\.yaml$/, '')))('%s', async (log) => {
    const r = await attestor(['eventlog', 'replay', `${vectorsDir}/eventlog/${log}`, '--json']);
    expect(r.code, r.err).toBe(0);
    const want = readTpm2EventlogYaml(readFileSync(`${expected}/${log}.yaml`, 'utf8')).pcrs;
    const got = JSON.parse(r.out).pcrs as Record<string, Record<string, string>>;
    let compared = 0;
    for (const [bank, byIndex] of Object.entries(want)) {
      for (const [index, value] of Object.entries(byIndex)) {
        expect(got[bank]?.[index]).toBe(value.replace(/^0x/, '').toLowerCase());
        compared++;
      }
    }
    // Only the Spec-ID-only log extends nothing.
    expect(compared > 0).toBe(log !== 'specid-vendordata.bin');
  });
});

describe('attestor CLI error handling', () => {
  it('a malformed event log or IMA list exits 1 with its code; a missing file exits 2', async () => {
    const junk = `${vectorsDir}/ima/ascii_runtime_measurements`;
    const bad = await attestor(['eventlog', 'replay', junk]);
    expect(bad.code).toBe(1);
    expect(bad.err).toMatch(/^error: ERR_EVENTLOG_[A-Z_]+: /);
    const badIma = await attestor(['ima', 'replay', `${vectorsDir}/eventlog/event.bin`]);
    expect(badIma.code).toBe(1);
    expect(badIma.err).toMatch(/^error: ERR_IMA_[A-Z_]+: /);
    expect((await attestor(['eventlog', 'show', '/nonexistent/log'])).code).toBe(2);
    expect((await attestor(['ima', 'replay'])).code).toBe(2);
    const empty = await attestor(['ima', 'replay', '/dev/null']);
    expect(empty.code).toBe(1);
    expect(empty.err).toMatch(/^error: ERR_IMA_MALFORMED: /);
  });

  it('attestor ima replay --json prints PCR 10 per bank for the vector', async () => {
    const file = `${vectorsDir}/ima/ascii_runtime_measurements`;
    const r = await attestor(['ima', 'replay', file, '--json']);
    expect(r.code, r.err).toBe(0);
    const json = JSON.parse(r.out);
    expect(json.entries).toBe(826);
    const replay = replayIma(parseImaLog(new Uint8Array(readFileSync(file))));
    expect(json.pcrs).toEqual(replay);
  });
});

it('a reader that closes the pipe early ends the command quietly (no EPIPE stack trace)', async () => {
  const child = spawn(process.execPath, ['dist/cli/attestor.js', 'eventlog', 'show', `${vectorsDir}/eventlog/event-gce-ubuntu-2104-log.bin`, '--json']);
  let stderr = '';
  child.stderr.on('data', (d) => (stderr += d));
  await new Promise((resolve) => child.stdout.once('data', resolve));
  child.stdout.destroy();
  const code = await new Promise((resolve) => child.on('close', resolve));
  expect(code).toBe(0);
  expect(stderr).toBe('');
});
