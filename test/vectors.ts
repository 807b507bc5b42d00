import { existsSync, readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';

/** The shared real-world vectors live beside the repository; ATTESTOR_VECTORS overrides. */
export const vectorsDir = process.env.ATTESTOR_VECTORS ?? fileURLToPath(new URL('../../shared/vectors/', import.meta.url));

if (!existsSync(`${vectorsDir}/NOTICE.md`)) {
  throw new Error(`test vectors not found at ${vectorsDir}: put the shared vectors beside the repository or set ATTESTOR_VECTORS`);
}

export function vector(path: string): Uint8Array {
  return new Uint8Array(readFileSync(`${vectorsDir}/${path}`));
}
