import { ParseError } from '../errors.js';

/*
 * Path globs for IMA rules, matched in time linear in the path (times the pattern's length):
 * operators' patterns are simulated as a small NFA instead of being turned into a backtracking
 * RegExp, so no pattern and no path an agent reports can make a match blow up.
 *
 *   **   any characters, '/' included        *   any characters except '/'
 *   ?    one character except '/'            \c  the character c itself
 */

/** Longest pattern accepted: long enough for any real path, short enough to bound matching. */
const MAX_GLOB_LENGTH = 256;
/** PATH_MAX: longer names (which the kernel never logs for files) match no glob. */
export const MAX_GLOB_PATH = 4096;

const ONE = -1;
const STAR = -2;
const GLOBSTAR = -3;
const SLASH = 0x2f;

export class PathGlob {
  /** Literal characters before the first wildcard: most paths are rejected by them alone. */
  private readonly prefix: string;
  /** After the prefix: a char code (>= 0), ONE, STAR or GLOBSTAR per position. */
  private readonly tokens: Int32Array;
  private current: Uint8Array;
  private next: Uint8Array;

  constructor(
    readonly pattern: string,
    field: string,
  ) {
    if (pattern.length === 0 || pattern.length > MAX_GLOB_LENGTH) {
      throw new ParseError('ERR_IMA_RULES_INVALID', `${field}: a pattern must have 1..${MAX_GLOB_LENGTH} characters`);
    }
    const tokens: number[] = [];
    for (let i = 0; i < pattern.length; i++) {
      const c = pattern.charCodeAt(i);
      if (c === 0x5c /* \ */) {
        if (++i === pattern.length) throw new ParseError('ERR_IMA_RULES_INVALID', `${field}: pattern ends with an escaping "\\"`);
        tokens.push(pattern.charCodeAt(i));
      } else if (c === 0x2a /* * */) {
        if (pattern.charCodeAt(i + 1) === 0x2a) {
          tokens.push(GLOBSTAR);
          i++;
        } else {
          tokens.push(STAR);
        }
      } else {
        tokens.push(c === 0x3f /* ? */ ? ONE : c);
      }
    }
    let literal = 0;
    while (literal < tokens.length && (tokens[literal] as number) >= 0) literal++;
    this.prefix = String.fromCharCode(...tokens.slice(0, literal));
    this.tokens = Int32Array.from(tokens.slice(literal));
    this.current = new Uint8Array(this.tokens.length + 1);
    this.next = new Uint8Array(this.tokens.length + 1);
  }

  /** Steps matching takes per character of a path past the prefix: the glob's share of the cost per entry. */
  get cost(): number {
    return this.tokens.length;
  }

  matches(path: string): boolean {
    if (path.length > MAX_GLOB_PATH || !path.startsWith(this.prefix)) return false;
    const { tokens } = this;
    const end = tokens.length;
    if (end === 0) return path.length === this.prefix.length;
    let current = this.current.fill(0);
    let next = this.next;
    current[0] = 1;
    this.skipStars(current);
    for (let i = this.prefix.length; i < path.length; i++) {
      const c = path.charCodeAt(i);
      next.fill(0);
      let alive = false;
      for (let s = 0; s < end; s++) {
        if (current[s] === 0) continue;
        const t = tokens[s] as number;
        if (t === GLOBSTAR || (t === STAR && c !== SLASH)) {
          next[s] = 1;
          alive = true;
        } else if (t === c || (t === ONE && c !== SLASH)) {
          next[s + 1] = 1;
          alive = true;
        }
      }
      if (!alive) return false;
      this.skipStars(next);
      [current, next] = [next, current];
    }
    return current[end] === 1;
  }

  /** A star may match nothing: whoever reaches it also reaches what follows it. */
  private skipStars(states: Uint8Array): void {
    for (let s = 0; s < this.tokens.length; s++) {
      if (states[s] === 1 && (this.tokens[s] as number) <= STAR) states[s + 1] = 1;
    }
  }
}
