import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { runAttestor } from '../src/cli/program.js';
import { runCli } from './helpers/cli.js';
import { imaVector, imaVectorPath, referenceBinary, referenceReplay } from './helpers/ima.js';

const tmp = mkdtempSync(join(tmpdir(), 'attestor-ima-cli-'));
afterAll(() => rmSync(tmp, { recursive: true, force: true }));
function write(name: string, bytes: Uint8Array | string): string {
  const path = join(tmp, name);
  writeFileSync(path, bytes);
  return path;
}

/**
 * Runs `attestor ima ...` in-process through the attestor program itself (src/cli/program.ts):
 * what it printed and its exit status, 1 with `error: <CODE>: <message>` for a typed error, 2
 * for a usage error.
 */
const ima = (args: string[]) => runCli(runAttestor, ['ima', ...args]);

describe('attestor ima replay', () => {
  const expected = referenceReplay(imaVector());

  it('--json prints the PCRs per bank and the entry count of the ASCII vector', async () => {
    const { code, out, err } = await ima(['replay', imaVectorPath, '--json']);
    expect([code, err]).toEqual([0, '']);
    expect(JSON.parse(out)).toEqual({ format: 'ascii', entries: 826, violations: 0, pcrs: expected });
  });

  it('detects the binary form and prints the same PCRs', async () => {
    const { code, out } = await ima(['replay', write('binary_runtime_measurements', referenceBinary(imaVector())), '--json']);
    expect(code).toBe(0);
    expect(JSON.parse(out)).toMatchObject({ format: 'binary', entries: 826, pcrs: expected });
  });

  it('prints a readable summary without --json', async () => {
    const { code, out } = await ima(['replay', imaVectorPath]);
    expect(code).toBe(0);
    expect(out).toContain('ascii IMA list: 826 entries, 0 violations');
    expect(out).toContain(`PCR 10 sha1   ${expected.sha1['10']}`);
    expect(out).toContain(`PCR 10 sha256 ${expected.sha256['10']}`);
  });

  it('--padded-sha1 replays as kernels before 5.11 extended', async () => {
    const { code, out } = await ima(['replay', imaVectorPath, '--json', '--padded-sha1']);
    expect(code).toBe(0);
    expect(JSON.parse(out).pcrs).toEqual(referenceReplay(imaVector(), true));
  });

  it('a malformed list: the typed error (exit status 1)', async () => {
    const { code, out, err } = await ima(['replay', write('broken', '10 abc ima-ng\n')]);
    expect(code).toBe(1);
    expect(out).toBe('');
    expect(err).toMatch(/^error: ERR_IMA_MALFORMED: [^\n]+\n$/);
  });

  it('a list whose data does not match its template hash: the typed error (exit status 1)', async () => {
    const tampered = imaVector().toString('latin1').replace('/bin/sh', '/bin/xx');
    const { code, out, err } = await ima(['replay', write('tampered', tampered)]);
    expect([code, out]).toEqual([1, '']);
    expect(err).toMatch(/^error: ERR_IMA_TEMPLATE_HASH_MISMATCH: [^\n]+\n$/);
    expect(err).toContain('entry 2 (line 3) "/bin/xx"');
  });

  it('an unreadable file or a missing argument: a usage error (exit status 2)', async () => {
    const unreadable = await ima(['replay', join(tmp, 'does-not-exist')]);
    expect(unreadable.code).toBe(2);
    expect(unreadable.err).toBe(`error: cannot read FILE ${join(tmp, 'does-not-exist')}: ENOENT\n`);
    const missing = await ima(['replay']);
    expect(missing.code).toBe(2);
    expect(missing.err).toContain("missing required argument 'file'");
  });
});
