import { randomUUID } from 'node:crypto';
import { constants } from 'node:fs';
import { open, unlink } from 'node:fs/promises';
import { join } from 'node:path';

/*
 * Durable writes of the agent's state: a file is written whole under a temporary name (0600,
 * never an existing file), fsynced, then put in place by the caller's `place` (rename to
 * replace, link to never replace), and the directory is fsynced so the new name survives a
 * crash. The temporary name is removed whatever happens.
 */

/** Writes `content` to a new temporary file in `dir`, then `place(temp)`; fsyncs `dir` after. */
export async function writeDurably(dir: string, name: string, content: string | Uint8Array, place: (temp: string) => Promise<void>): Promise<void> {
  const temp = join(dir, `.${name}.${randomUUID()}.tmp`);
  try {
    const file = await open(temp, 'wx', 0o600);
    try {
      await file.writeFile(content);
      await file.sync();
    } finally {
      await file.close();
    }
    await place(temp);
  } finally {
    await unlink(temp).catch(() => undefined);
  }
  await syncDirectory(dir);
}

export async function syncDirectory(path: string): Promise<void> {
  const dir = await open(path, constants.O_RDONLY | constants.O_DIRECTORY);
  try {
    await dir.sync();
  } finally {
    await dir.close();
  }
}
