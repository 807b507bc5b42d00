import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { runAttestor } from '../src/cli/program.js';
import { readTpm2EventlogYaml } from './eventlog-yaml.js';
import { runCli } from './helpers/cli.js';
import { vectorsDir } from './vectors.js';

/*
 * `attestor eventlog ...` in-process through the attestor program itself (src/cli/program.ts),
 * output collected, with its exit statuses: 0 done, 1 input refused with its error code, 2
 * called wrongly.
 */
const run = (...args: string[]) => runCli(runAttestor, ['eventlog', ...args]);

const dir = `${vectorsDir}/eventlog`;
const tmp = mkdtempSync(join(tmpdir(), 'attestor-eventlog-cli-'));
afterAll(() => rmSync(tmp, { recursive: true, force: true }));

describe('attestor eventlog replay', () => {
  for (const name of ['event-moklisttrusted.bin', 'event-uefi-sha1-log.bin', 'event-gce-ubuntu-2104-log.bin', 'specid-vendordata.bin']) {
    it(`--json prints the pcrs tpm2_eventlog expects for ${name}`, async () => {
      const { code, out, err } = await run('replay', `${dir}/${name}`, '--json');
      expect([code, err]).toEqual([0, '']);
      const expected = readTpm2EventlogYaml(readFileSync(`${dir}/expected/${name}.yaml`, 'latin1')).pcrs;
      expect(JSON.parse(out).pcrs).toEqual(expected);
    });
  }

  it('prints PCRs as tpm2_eventlog lays them out', async () => {
    const { code, out } = await run('replay', `${dir}/event-uefivar.bin`);
    expect(code).toBe(0);
    expect(out).toBe(
      'sha1:\n  7  : 0x3a1ea200b8fafe60c290e903c5e6443cfef67f04\nsha256:\n  7  : 0xe58ada1ba75f2e4722b539824598ad5e10c55f2e4aeab2033f3b0a8ee3f3eca6\n',
    );
  });
});

describe('attestor eventlog show', () => {
  it('--json lists every event decoded, the PCRs and the facts the log claims', async () => {
    const { code, out } = await run('show', '--json', `${dir}/event-moklisttrusted.bin`);
    expect(code).toBe(0);
    const shown = JSON.parse(out);
    expect(shown.format).toBe('crypto-agile');
    expect(shown.events).toHaveLength(97);
    expect(shown.events[4]).toMatchObject({ index: 4, pcr: 7, typeName: 'EV_EFI_VARIABLE_DRIVER_CONFIG', data: { kind: 'variable', name: 'SecureBoot', data: '01' } });
    expect(shown.events[2].data).toEqual({ kind: 'firmware-blob', base: '0x820000', length: '0xe0000' });
    expect(shown.facts.secureBoot.state).toBe('enabled');
    expect(shown.facts.bootComponents.map((c: { label: string }) => c.label)).toContain('EV_EFI_BOOT_SERVICES_APPLICATION \\EFI\\redhat\\grubx64.efi');
  });

  it('prints one readable entry per event, then PCRs and facts', async () => {
    const { code, out } = await run('show', `${dir}/event-gce-ubuntu-2104-log.bin`);
    expect(code).toBe(0);
    expect(out).toContain('#3 PCR 7 EV_EFI_VARIABLE_DRIVER_CONFIG (53 bytes)\n');
    expect(out).toContain('    SecureBoot (8be4df61-93ca-11d2-aa0d-00e098032b8c) = 00\n');
    expect(out).toContain('secure boot: disabled');
    expect(out).toContain('kernel command line (grub, PCR 8, event 102): /boot/vmlinuz-5.11.0-1008-gcp');
    expect(out).toContain('kernel command line (grub-command, PCR 8, event 100): /boot/vmlinuz-5.11.0-1008-gcp');
    expect(out).toMatch(/\n {2}boot file: event 101, EV_IPL \/boot\/vmlinuz-5\.11\.0-1008-gcp, sha1:[0-9a-f]{40} sha256:[0-9a-f]{64} sha384:[0-9a-f]{96}\n/);
  });

  it('names the PCR 8 events whose digests do not prove their data', async () => {
    const tmp = mkdtempSync(join(tmpdir(), 'attestor-eventlog-'));
    try {
      const bytes = Buffer.from(readFileSync(`${dir}/event-gce-ubuntu-2104-log.bin`));
      const at = bytes.indexOf('kernel_cmdline: /boot/');
      bytes.write('kernel_cmdline: /xxxx/', at, 'latin1');
      writeFileSync(join(tmp, 'log.bin'), bytes);
      const { code, out } = await run('show', join(tmp, 'log.bin'));
      expect(code).toBe(0);
      expect(out).toContain('  unproven: PCR 8 event 102 (EV_IPL kernel_cmdline: /xxxx/vmlinuz-5.11.0-1008-gcp');
    } finally {
      rmSync(tmp, { recursive: true, force: true });
    }
  });
});

describe('errors', () => {
  it('a malformed log: status 1 and one line with the error code', async () => {
    const file = join(tmp, 'truncated.bin');
    writeFileSync(file, readFileSync(`${dir}/event-arch-linux.bin`).subarray(0, 1000));
    for (const sub of ['replay', 'show']) {
      const { code, out, err } = await run(sub, file);
      expect(code).toBe(1);
      expect(out).toBe('');
      expect(err).toMatch(/^error: ERR_EVENTLOG_TRUNCATED: event \d+ at offset \d+: .+\n$/);
    }
  });

  it('a file that cannot be read, a missing argument, an unknown option: status 2', async () => {
    const missing = await run('replay', join(tmp, 'absent.bin'));
    expect(missing.code).toBe(2);
    expect(missing.err).toBe(`error: cannot read FILE ${join(tmp, 'absent.bin')}: ENOENT\n`);
    expect((await run('replay')).code).toBe(2);
    const unknown = await run('show', `${dir}/event.bin`, '--yaml');
    expect(unknown.code).toBe(2);
    expect(unknown.err).toMatch(/unknown option '--yaml'/);
  });
});
