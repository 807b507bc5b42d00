import { mkdir, stat } from 'node:fs/promises';
import { dirname, resolve } from 'node:path';

/**
 * `mkdir -p` that always ends: node's recursive mkdir retries forever where a parent exists
 * but refuses the child with ENOENT (under /proc, for one). Each missing component is made
 * once, top down, and any failure is thrown. Returns the first directory it made, or
 * undefined when `path` existed (as mkdir -p's result does).
 */
export async function makeDirectories(path: string, mode?: number): Promise<string | undefined> {
  const missing: string[] = [];
  let first: string | undefined;
  for (let dir = resolve(path); ; dir = dirname(dir)) {
    try {
      await mkdir(dir, { mode });
      first = dir;
      break;
    } catch (e) {
      const code = (e as NodeJS.ErrnoException).code;
      if (code === 'EEXIST') {
        // As with mkdir -p, an existing file in the directory's place is an error.
        if (!(await stat(dir)).isDirectory()) throw e;
        break;
      }
      if (code !== 'ENOENT' || dirname(dir) === dir) throw e;
      missing.unshift(dir);
    }
  }
  for (const dir of missing) {
    if (dir === first) continue;
    try {
      await mkdir(dir, { mode });
      first ??= dir;
    } catch (e) {
      // Another process made it meanwhile: fine, as with mkdir -p, if it is a directory.
      if ((e as NodeJS.ErrnoException).code !== 'EEXIST' || !(await stat(dir)).isDirectory()) throw e;
    }
  }
  return first;
}
