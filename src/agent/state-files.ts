import { readFile, rename, unlink } from 'node:fs/promises';
import { join } from 'node:path';
import { z } from 'zod';
import { AttestorError } from '../errors.js';
import { syncDirectory, writeDurably } from './durable-file.js';
import { AGENT_ID } from '../wire/schemas.js';

/*
 * What enroll and attest keep in the agent's state directory, beside the TPM key blobs of
 * state-dir.ts: the enrollment (agent.json), the pinned root CA (ca.pem) and the credentials of
 * the last attestation. Every file is private to the agent (0600) and replaced atomically, so a
 * service reading cert.pem or token.jwt sees the old file or the new one, never a mix.
 */

export const STATE_FILES = {
  agent: 'agent.json',
  ca: 'ca.pem',
  certificate: 'cert.pem',
  bundle: 'bundle.pem',
  token: 'token.jwt',
  tpmKey: 'key.pem',
  pkcs11Key: 'key.uri',
} as const;

/** agent.json: who this host is to which verifier. */
export interface AgentState {
  readonly agentId: string;
  readonly spiffeId: string;
  readonly server: string;
  /** SHA-256 (lowercase hex) of the pinned root CA's DER. */
  readonly caFingerprint: string;
}

const AgentStateFile = z.object({
  agentId: AGENT_ID,
  spiffeId: z.string().min(1),
  server: z.string().min(1),
  caFingerprint: z.string().regex(/^[0-9a-f]{64}$/),
});

/**
 * Writes `content` to `name` in `dir`: a temporary file (0600) is written and fsynced, renamed
 * over `name`, then the directory is fsynced, so after a crash the file is the old one or the
 * new one, whole. Returns the path written.
 */
export async function writeStateFile(dir: string, name: string, content: string | Uint8Array): Promise<string> {
  const path = join(dir, name);
  await writeDurably(dir, name, content, (temp) => rename(temp, path));
  return path;
}

/** Removes `name` from `dir` if it is there (a credential the last attestation did not renew). */
export async function removeStateFile(dir: string, name: string): Promise<void> {
  try {
    await unlink(join(dir, name));
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'ENOENT') return;
    throw e;
  }
  await syncDirectory(dir);
}

/** The content of `name` in `dir`, or null when there is none. */
export async function readStateFile(dir: string, name: string): Promise<Buffer | null> {
  try {
    return await readFile(join(dir, name));
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'ENOENT') return null;
    throw e;
  }
}

export async function writeAgentState(dir: string, state: AgentState): Promise<string> {
  return writeStateFile(dir, STATE_FILES.agent, `${JSON.stringify(state, null, 2)}\n`);
}

/**
 * agent.json of `dir`: ERR_AGENT_NOT_ENROLLED when there is none (the host was never enrolled
 * with this state directory), ERR_AGENT_STATE when it is not what enroll writes.
 */
export async function readAgentState(dir: string): Promise<AgentState> {
  const path = join(dir, STATE_FILES.agent);
  const bytes = await readStateFile(dir, STATE_FILES.agent);
  if (bytes === null) {
    throw new AttestorError('ERR_AGENT_NOT_ENROLLED', `this host is not enrolled: no ${path}; run attestor-agent enroll first`);
  }
  let value: unknown;
  try {
    value = JSON.parse(bytes.toString('utf8'));
  } catch {
    throw new AttestorError('ERR_AGENT_STATE', `${path} is not JSON; enroll again to rewrite it`);
  }
  const parsed = AgentStateFile.safeParse(value);
  if (!parsed.success) {
    const issue = parsed.error.issues[0];
    throw new AttestorError('ERR_AGENT_STATE', `${path}: ${issue?.path.join('.') || 'value'} ${issue?.message ?? 'is invalid'}; enroll again to rewrite it`);
  }
  return parsed.data;
}
