/**
 * The files enroll and attest keep in the state directory (src/agent/state-files.ts): written
 * atomically (temporary file, fsync, rename) with mode 0600 whatever was there before, nothing
 * left behind when a write fails; agent.json read back or refused with a typed error.
 */
import { chmodSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import fc from 'fast-check';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { readAgentState, readStateFile, removeStateFile, writeAgentState, writeStateFile, type AgentState } from '../src/agent/state-files.js';
import { AttestorError } from '../src/errors.js';
import { rejection } from './helpers/rejection.js';

let tmp: string;
beforeAll(() => {
  tmp = mkdtempSync(join(tmpdir(), 'attestor-agent-state-'));
});
afterAll(() => {
  if (tmp) rmSync(tmp, { recursive: true, force: true });
});

let seq = 0;
function freshDir(): string {
  const dir = join(tmp, `dir-${seq++}`);
  mkdirSync(dir, { mode: 0o700 });
  return dir;
}

const mode = (path: string) => statSync(path).mode & 0o777;

const STATE: AgentState = {
  agentId: 'ab'.repeat(32),
  spiffeId: `spiffe://example.org/agent/tpm/${'ab'.repeat(32)}`,
  server: 'https://verifier.example.org:8443',
  caFingerprint: 'cd'.repeat(32),
};

describe('writeStateFile', () => {
  it('writes a new file 0600 and returns its path; nothing else is left in the directory', async () => {
    const dir = freshDir();
    expect(await writeStateFile(dir, 'cert.pem', 'certificate\n')).toBe(join(dir, 'cert.pem'));
    expect(readFileSync(join(dir, 'cert.pem'), 'utf8')).toBe('certificate\n');
    expect(mode(join(dir, 'cert.pem'))).toBe(0o600);
    expect(readdirSync(dir)).toEqual(['cert.pem']);
  });

  it('replaces a file by renaming a new one over it (a reader holding the old file keeps it whole), 0600 even if it was not', async () => {
    const dir = freshDir();
    const path = join(dir, 'token.jwt');
    writeFileSync(path, 'old token', { mode: 0o644 });
    chmodSync(path, 0o644);
    const before = statSync(path).ino;
    await writeStateFile(dir, 'token.jwt', Buffer.from('new token'));
    expect(readFileSync(path, 'utf8')).toBe('new token');
    expect(statSync(path).ino).not.toBe(before);
    expect(mode(path)).toBe(0o600);
    expect(readdirSync(dir)).toEqual(['token.jwt']);
  });

  it('leaves no temporary file and the old content in place when the rename fails', async () => {
    const dir = freshDir();
    // A non-empty directory in the file's place: rename(2) cannot replace it.
    mkdirSync(join(dir, 'cert.pem'));
    writeFileSync(join(dir, 'cert.pem', 'inside'), 'kept');
    await expect(writeStateFile(dir, 'cert.pem', 'new')).rejects.toMatchObject({ code: 'EISDIR' });
    expect(readdirSync(dir)).toEqual(['cert.pem']);
    expect(readFileSync(join(dir, 'cert.pem', 'inside'), 'utf8')).toBe('kept');
  });
});

describe('removeStateFile and readStateFile', () => {
  it('remove a file if it is there, and read null for a file that is not', async () => {
    const dir = freshDir();
    await writeStateFile(dir, 'token.jwt', 't');
    expect((await readStateFile(dir, 'token.jwt'))?.toString()).toBe('t');
    await removeStateFile(dir, 'token.jwt');
    await removeStateFile(dir, 'token.jwt');
    expect(await readStateFile(dir, 'token.jwt')).toBeNull();
    expect(readdirSync(dir)).toEqual([]);
  });
});

describe('agent.json', () => {
  it('reads back what was written (0600)', async () => {
    const dir = freshDir();
    await writeAgentState(dir, STATE);
    expect(await readAgentState(dir)).toEqual(STATE);
    expect(mode(join(dir, 'agent.json'))).toBe(0o600);
  });

  it('is ERR_AGENT_NOT_ENROLLED when absent', async () => {
    const dir = freshDir();
    const e = await rejection(readAgentState(dir), 'ERR_AGENT_NOT_ENROLLED');
    expect(e.message).toBe(`this host is not enrolled: no ${join(dir, 'agent.json')}; run attestor-agent enroll first`);
  });

  it.each([
    ['not JSON', '{"agentId":', `${'agent.json'} is not JSON`],
    ['an agent id that is not 64 hex digits', JSON.stringify({ ...STATE, agentId: 'AB'.repeat(32) }), 'agentId must be 64 lowercase hex digits'],
    ['no server', JSON.stringify({ ...STATE, server: undefined }), 'server '],
    ['a CA fingerprint with colons', JSON.stringify({ ...STATE, caFingerprint: 'cd:'.repeat(31) + 'cd' }), 'caFingerprint '],
  ])('is ERR_AGENT_STATE with %s', async (_name, content, message) => {
    const dir = freshDir();
    writeFileSync(join(dir, 'agent.json'), content);
    const e = await rejection(readAgentState(dir), 'ERR_AGENT_STATE');
    expect(e.message).toContain(message);
  });

  it('reads any content as an AgentState or refuses it with ERR_AGENT_STATE, nothing else', async () => {
    const dir = freshDir();
    const content = fc.oneof(
      fc.uint8Array({ maxLength: 200 }).map((b) => Buffer.from(b)),
      fc.json().map((j) => Buffer.from(j)),
      fc
        .record({ agentId: fc.oneof(fc.string(), fc.constant(STATE.agentId)), spiffeId: fc.string(), server: fc.string(), caFingerprint: fc.oneof(fc.string(), fc.constant(STATE.caFingerprint)) }, { requiredKeys: [] })
        .map((o) => Buffer.from(JSON.stringify(o))),
    );
    await fc.assert(
      fc.asyncProperty(content, async (bytes) => {
        writeFileSync(join(dir, 'agent.json'), bytes);
        try {
          const state = await readAgentState(dir);
          expect(state.agentId).toMatch(/^[0-9a-f]{64}$/);
          expect(state.caFingerprint).toMatch(/^[0-9a-f]{64}$/);
        } catch (e) {
          expect(e).toBeInstanceOf(AttestorError);
          expect((e as AttestorError).code).toBe('ERR_AGENT_STATE');
        }
      }),
      { numRuns: 300 },
    );
  });
});
