import { ParseError, type ErrorCode } from '../errors.js';

/*
 * Validation of operator rules that arrive as JSON (event-log and IMA rules): every value is
 * checked for its type and bounds, and unknown fields are refused, so a typo cannot silently
 * drop a requirement. Each kind of rules reports its failures under its own error code.
 */

/** The algorithms a "<name>:<hex>" digest may name, and how messages call that name. */
export interface DigestAlgorithms {
  /** "bank", "algo". */
  readonly term: string;
  /** The digest size of the algorithm `name` (lowercase); throws a ParseError when it is not accepted. */
  sizeOf(name: string): number;
  /** The accepted names for messages: "sha1, sha256, sha384 or sha512". */
  readonly accepted: string;
}

/**
 * Checks for one kind of rules. Declare an instance with its type (`const json: JsonRules =
 * ...`): TypeScript narrows after a call that returns `never` only through a typed name.
 */
export class JsonRules {
  constructor(
    private readonly code: ErrorCode,
    /** Starts every message: "IMA rules". */
    private readonly what: string,
  ) {}

  /** Refuses the rules: `path` names the field, as `kernels.allowed[2]`. */
  fail(path: string, message: string): never {
    throw new ParseError(this.code, `${this.what}: ${path} ${message}`);
  }

  object(value: unknown, path: string): Record<string, unknown> {
    if (typeof value !== 'object' || value === null || Array.isArray(value)) this.fail(path, 'must be an object');
    return value as Record<string, unknown>;
  }

  /** An object with no field but the `known` ones. */
  fields(value: unknown, path: string, known: readonly string[]): Record<string, unknown> {
    const o = this.object(value, path);
    const unknown = Object.keys(o).find((k) => !known.includes(k));
    if (unknown !== undefined) this.fail(path, `has an unknown field "${unknown.slice(0, 64)}" (known: ${known.join(', ')})`);
    return o;
  }

  /** A list (of at most `max` items when given), `what` naming its items in messages ("patterns"). */
  list(value: unknown, path: string, max = Number.POSITIVE_INFINITY, what = 'entries'): unknown[] {
    if (!Array.isArray(value)) this.fail(path, `must be a list of ${what}`);
    if (value.length > max) this.fail(path, `has more than ${max} ${what}`);
    return value;
  }

  nonEmptyList(value: unknown, path: string, max?: number, what?: string): unknown[] {
    const list = this.list(value, path, max, what);
    if (list.length === 0) this.fail(path, 'must not be empty');
    return list;
  }

  /** Exactly `size` bytes as hex digits (either case), returned lowercase. */
  hex(value: unknown, size: number, path: string): string {
    if (typeof value !== 'string' || value.length !== size * 2 || !/^[0-9a-fA-F]*$/.test(value)) this.fail(path, `must be ${size * 2} hex digits`);
    return value.toLowerCase();
  }

  /** The digest size of an algorithm `algorithms` accepts, or a failure naming it. */
  digestSize(name: string, algorithms: DigestAlgorithms, path: string): number {
    try {
      return algorithms.sizeOf(name);
    } catch (e) {
      if (e instanceof ParseError) this.fail(path, `${algorithms.term} "${name.slice(0, 32)}" is not ${algorithms.accepted}`);
      throw e;
    }
  }

  /** "<name>:<hex>" (the name says which algorithm made the digest), both parts lowercase. */
  digest(value: unknown, algorithms: DigestAlgorithms, path: string): { readonly algorithm: string; readonly hex: string } {
    const form = `"<${algorithms.term}>:<hex>"`;
    if (typeof value !== 'string') this.fail(path, `must be a string ${form}`);
    const colon = value.indexOf(':');
    if (colon < 0) this.fail(path, `must be ${form}, e.g. "sha256:<64 hex digits>"`);
    const algorithm = value.slice(0, colon).toLowerCase();
    return { algorithm, hex: this.hex(value.slice(colon + 1), this.digestSize(algorithm, algorithms, path), path) };
  }
}
