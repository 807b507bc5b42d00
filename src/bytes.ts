/** Lowercase hex, as digests are shown and compared in rules and facts. */
export function hex(b: Uint8Array): string {
  return Buffer.from(b.buffer, b.byteOffset, b.byteLength).toString('hex');
}

/** Equality of public values (digests, PCRs): no secret, so no constant-time compare needed. */
export function equalBytes(a: Uint8Array, b: Uint8Array): boolean {
  if (a.length !== b.length) return false;
  // Digests and nonces: a loop is twice as fast as wrapping a Buffer for the native compare.
  if (a.length > 64) return Buffer.from(a.buffer, a.byteOffset, a.byteLength).equals(b);
  for (let i = 0; i < a.length; i++) if (a[i] !== b[i]) return false;
  return true;
}

/**
 * The text without its trailing NULs (firmware pads strings and often counts the terminator).
 * A loop, not /\0+$/: on attacker-sized data that regex retries from every NUL of a run and
 * takes time quadratic in the run's length.
 */
export function withoutTrailingNuls(text: string): string {
  let end = text.length;
  while (end > 0 && text.charCodeAt(end - 1) === 0) end--;
  return end === text.length ? text : text.slice(0, end);
}
