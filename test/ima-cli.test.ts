import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { CommanderError } from 'commander';
import { afterAll, describe, expect, it } from 'vitest';
import { imaCommand } from '../src/cli/commands/ima.js';
import { UsageError } from '../src/cli/io.js';
import { AttestorError } from '../src/errors.js';
import { imaVector, imaVectorPath, referenceBinary, referenceReplay } from './helpers/ima.js';

const tmp = mkdtempSync(join(tmpdir(), 'attestor-ima-cli-'));
afterAll(() => rmSync(tmp, { recursive: true, force: true }));
function write(name: string, bytes: Uint8Array | string): string {
  const path = join(tmp, name);
  writeFileSync(path, bytes);
  return path;
}

/**
 * Runs `ima ...` in-process as the attestor program does (exitOverride, output to the given
 * writers) and returns what it printed and what it threw: the program turns an AttestorError
 * into `error: <CODE>: <message>` and status 1, a UsageError or CommanderError into status 2.
 */
async function ima(args: string[]) {
  let out = '';
  let err = '';
  const io = { out: (t: string) => void (out += t), err: (t: string) => void (err += t) };
  const command = imaCommand(io);
  for (const c of [command, ...command.commands]) c.exitOverride().configureOutput({ writeOut: io.out, writeErr: io.err });
  let thrown: unknown;
  try {
    await command.parseAsync(args, { from: 'user' });
  } catch (e) {
    thrown = e;
  }
  return { out, err, thrown };
}

describe('attestor ima replay', () => {
  const expected = referenceReplay(imaVector());

  it('--json prints the PCRs per bank and the entry count of the ASCII vector', async () => {
    const { out, thrown } = await ima(['replay', imaVectorPath, '--json']);
    expect(thrown).toBeUndefined();
    expect(JSON.parse(out)).toEqual({ format: 'ascii', entries: 826, violations: 0, pcrs: expected });
  });

  it('detects the binary form and prints the same PCRs', async () => {
    const { out } = await ima(['replay', write('binary_runtime_measurements', referenceBinary(imaVector())), '--json']);
    expect(JSON.parse(out)).toMatchObject({ format: 'binary', entries: 826, pcrs: expected });
  });

  it('prints a readable summary without --json', async () => {
    const { out } = await ima(['replay', imaVectorPath]);
    expect(out).toContain('ascii IMA list: 826 entries, 0 violations');
    expect(out).toContain(`PCR 10 sha1   ${expected.sha1['10']}`);
    expect(out).toContain(`PCR 10 sha256 ${expected.sha256['10']}`);
  });

  it('--padded-sha1 replays as kernels before 5.11 extended', async () => {
    const { out } = await ima(['replay', imaVectorPath, '--json', '--padded-sha1']);
    expect(JSON.parse(out).pcrs).toEqual(referenceReplay(imaVector(), true));
  });

  it('a malformed list: the typed error (exit status 1)', async () => {
    const { out, thrown } = await ima(['replay', write('broken', '10 abc ima-ng\n')]);
    expect(out).toBe('');
    expect(thrown).toBeInstanceOf(AttestorError);
    expect(thrown).toMatchObject({ code: 'ERR_IMA_MALFORMED' });
  });

  it('a list whose data does not match its template hash: the typed error (exit status 1)', async () => {
    const tampered = imaVector().toString('latin1').replace('/bin/sh', '/bin/xx');
    const { thrown } = await ima(['replay', write('tampered', tampered)]);
    expect(thrown).toMatchObject({ code: 'ERR_IMA_TEMPLATE_HASH_MISMATCH' });
    expect((thrown as Error).message).toContain('entry 2 (line 3) "/bin/xx"');
  });

  it('an unreadable file or a missing argument: a usage error (exit status 2)', async () => {
    expect((await ima(['replay', join(tmp, 'does-not-exist')])).thrown).toBeInstanceOf(UsageError);
    const missing = await ima(['replay']);
    expect(missing.thrown).toBeInstanceOf(CommanderError);
    expect((missing.thrown as CommanderError).exitCode).not.toBe(0);
    expect(missing.err).toContain("missing required argument 'file'");
  });
});
