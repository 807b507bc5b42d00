import { z } from 'zod';
import { VerdictBody } from '../wire/schemas.js';
import { readStateFile, writeStateFile } from './state-files.js';

/*
 * What `attestor-agent run` records after each attempt, in status.json of the state directory
 * (replaced atomically): `attestor-agent status` reads it offline, and a restarted `run`
 * starts from it, so the last renewal and verdict survive a restart.
 */

export const STATUS_FILE = 'status.json';

const RunStatusFile = z.object({
  updatedAt: z.string(),
  lastSuccess: z.object({ at: z.string(), spiffeId: z.string(), expiresAt: z.string(), jwt: z.boolean() }).nullable(),
  lastFailure: z.object({ at: z.string(), reason: z.string(), recovery: z.enum(['enroll', 'refused', 'revoked', 'retry']) }).nullable(),
  /** The verdict of the last attestation the verifier appraised, affirming or not. */
  lastVerdict: VerdictBody.nullable(),
  nextAttemptAt: z.string().nullable(),
});

export type RunStatus = z.output<typeof RunStatusFile>;

export async function writeRunStatus(dir: string, status: RunStatus): Promise<void> {
  await writeStateFile(dir, STATUS_FILE, `${JSON.stringify(status, null, 2)}\n`);
}

/** The recorded status; null when there is none, or none that parses (edited, or of another version): no record. */
export async function readRunStatus(dir: string): Promise<RunStatus | null> {
  const bytes = await readStateFile(dir, STATUS_FILE);
  if (bytes === null) return null;
  let value: unknown;
  try {
    value = JSON.parse(bytes.toString('utf8'));
  } catch {
    return null;
  }
  const parsed = RunStatusFile.safeParse(value);
  return parsed.success ? parsed.data : null;
}
