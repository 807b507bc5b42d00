import { ParseError } from '../errors.js';
import { hashByName } from '../tpm/constants.js';

/*
 * Operator rules for the measured-boot event log: what a host's verified boot must show.
 * Rules arrive as JSON (API, CLI, files); parseEventlogRules validates every field and
 * refuses unknown ones, so a typo cannot silently drop a requirement.
 *
 * {
 *   "requireSecureBoot": true,
 *   "bootComponents": { "match": "sequence", "allowed": [["sha256:<hex>"], ["sha256:<hex>", "sha256:<hex>"]] }
 *                  or { "match": "any", "allowed": ["sha256:<hex>", ...] },
 *   "signatureDatabases": { "PK": ["sha256:<hex>"], "KEK": [...], "db": [...], "dbx": [...] },
 *   "kernels": { "allowed": ["sha256:<hex>", ...], "otherFiles": ["sha256:<hex>", ...] },
 *   "kernelCmdlines": ["root=/dev/sda1 ro quiet"],
 *   "pcrs": { "sha256": { "0": ["<hex>", ...] } }
 * }
 */

/** A digest in one bank: component and database digests are compared bank by bank. */
export interface DigestRule {
  readonly bank: string;
  /** Lowercase hex. */
  readonly digest: string;
}

export type BootComponentRule =
  /** Exactly these components in this order; position i may be any of allowed[i]. */
  | { readonly match: 'sequence'; readonly allowed: ReadonlyArray<readonly DigestRule[]> }
  /** Every component must be one of these, in any order. */
  | { readonly match: 'any'; readonly allowed: readonly DigestRule[] };

/**
 * The files a boot loader measured into PCR 9 (grub: its configuration, the kernel, the
 * initrd). The log's paths are unsigned labels, so files are told apart by digest only: at
 * least one must be an allowed kernel, and every other one must be listed in `otherFiles`
 * (a file left unjudged could be the kernel that really booted, relabelled).
 */
export interface KernelRule {
  readonly allowed: readonly DigestRule[];
  readonly otherFiles: readonly DigestRule[];
}

export const SIGNATURE_DATABASE_NAMES = ['PK', 'KEK', 'db', 'dbx'] as const;
export type SignatureDatabaseName = (typeof SIGNATURE_DATABASE_NAMES)[number];

export interface EventlogRules {
  /** The SecureBoot variable must be proven enabled in PCR 7. */
  readonly requireSecureBoot?: boolean;
  /** The images measured into PCR 4 (boot loaders, kernel when the firmware loads it): at least one, each allowed. */
  readonly bootComponents?: BootComponentRule;
  /** The measured digest (of the whole UEFI_VARIABLE_DATA) of each named database. */
  readonly signatureDatabases?: { readonly [name in SignatureDatabaseName]?: readonly DigestRule[] };
  /** The kernels (and the other files) a boot loader may measure into PCR 9. */
  readonly kernels?: KernelRule;
  /**
   * At least one kernel command line must be proven, and every proven one must be one of
   * these (compared with outer whitespace trimmed); PCR 8 and 12 must hold no event whose
   * data their digests do not prove.
   */
  readonly kernelCmdlines?: readonly string[];
  /** Allowed values of quoted PCRs, lowercase hex, by bank and index. */
  readonly pcrs?: { readonly [bank: string]: { readonly [index: number]: readonly string[] } };
}

const TOP_LEVEL = ['requireSecureBoot', 'bootComponents', 'signatureDatabases', 'kernels', 'kernelCmdlines', 'pcrs'];
const MAX_PCR_INDEX = 31;
/** Bounds what an operator's file can make the verifier hold and compare. */
const MAX_LIST = 10_000;

export function parseEventlogRules(json: unknown): EventlogRules {
  const root = object(json, 'rules');
  onlyKeys(root, TOP_LEVEL, 'rules');
  const rules: {
    -readonly [K in keyof EventlogRules]: EventlogRules[K];
  } = {};
  if (root.requireSecureBoot !== undefined) {
    if (typeof root.requireSecureBoot !== 'boolean') fail('requireSecureBoot', 'must be true or false');
    rules.requireSecureBoot = root.requireSecureBoot;
  }
  if (root.bootComponents !== undefined) rules.bootComponents = bootComponents(root.bootComponents);
  if (root.signatureDatabases !== undefined) {
    const dbs = object(root.signatureDatabases, 'signatureDatabases');
    onlyKeys(dbs, SIGNATURE_DATABASE_NAMES, 'signatureDatabases');
    const lists = Object.entries(dbs).map(([name, list]) => [name, digestList(list, `signatureDatabases.${name}`)]);
    rules.signatureDatabases = Object.fromEntries(lists);
  }
  if (root.kernels !== undefined) rules.kernels = kernels(root.kernels);
  if (root.kernelCmdlines !== undefined) {
    rules.kernelCmdlines = nonEmptyList(root.kernelCmdlines, 'kernelCmdlines').map((c, i) => {
      if (typeof c !== 'string') fail(`kernelCmdlines[${i}]`, 'must be a string');
      return c.trim();
    });
  }
  if (root.pcrs !== undefined) rules.pcrs = pcrValues(root.pcrs);
  return rules;
}

/** PCR indexes the rules depend on: a quote for this baseline must cover them. */
export function rulePcrs(rules: EventlogRules): number[] {
  const pcrs = new Set<number>();
  if (rules.requireSecureBoot || rules.signatureDatabases) pcrs.add(7);
  if (rules.bootComponents) pcrs.add(4);
  if (rules.kernels) pcrs.add(9);
  if (rules.kernelCmdlines) [8, 12].forEach((p) => pcrs.add(p));
  for (const byIndex of Object.values(rules.pcrs ?? {})) for (const i of Object.keys(byIndex)) pcrs.add(Number(i));
  return [...pcrs].sort((a, b) => a - b);
}

function bootComponents(value: unknown): BootComponentRule {
  const o = object(value, 'bootComponents');
  onlyKeys(o, ['match', 'allowed'], 'bootComponents');
  const allowed = nonEmptyList(o.allowed, 'bootComponents.allowed');
  if (o.match === 'any') return { match: 'any', allowed: digestList(allowed, 'bootComponents.allowed') };
  if (o.match === 'sequence') {
    return { match: 'sequence', allowed: allowed.map((position, i) => digestList(position, `bootComponents.allowed[${i}]`)) };
  }
  return fail('bootComponents.match', 'must be "sequence" or "any"');
}

function kernels(value: unknown): KernelRule {
  const o = object(value, 'kernels');
  onlyKeys(o, ['allowed', 'otherFiles'], 'kernels');
  const otherFiles = o.otherFiles === undefined ? [] : digestList(o.otherFiles, 'kernels.otherFiles');
  return { allowed: digestList(o.allowed, 'kernels.allowed'), otherFiles };
}

function pcrValues(value: unknown): EventlogRules['pcrs'] {
  const banks = object(value, 'pcrs');
  return Object.fromEntries(
    Object.entries(banks).map(([bank, byIndex]) => {
      const size = bankSize(bank, `pcrs.${bank}`);
      const indexes = object(byIndex, `pcrs.${bank}`);
      return [
        bank,
        Object.fromEntries(
          Object.entries(indexes).map(([index, values]) => {
            const path = `pcrs.${bank}.${index}`;
            if (!/^(0|[1-9]\d?)$/.test(index) || Number(index) > MAX_PCR_INDEX) fail(path, `PCR index must be 0..${MAX_PCR_INDEX}`);
            return [Number(index), nonEmptyList(values, path).map((v, i) => hexOf(v, size, `${path}[${i}]`))];
          }),
        ),
      ];
    }),
  );
}

function digestList(value: unknown, path: string): DigestRule[] {
  return nonEmptyList(value, path).map((d, i) => digestRule(d, `${path}[${i}]`));
}

/** "sha256:<hex>": the bank names the digest, so rules for SHA-1-only fleets stay possible. */
function digestRule(value: unknown, path: string): DigestRule {
  if (typeof value !== 'string') fail(path, 'must be a string "<bank>:<hex>"');
  const colon = value.indexOf(':');
  if (colon < 0) fail(path, 'must be "<bank>:<hex>", e.g. "sha256:<64 hex digits>"');
  const bank = value.slice(0, colon).toLowerCase();
  return { bank, digest: hexOf(value.slice(colon + 1), bankSize(bank, path), path) };
}

function bankSize(bank: string, path: string): number {
  try {
    return hashByName(bank).size;
  } catch (e) {
    if (e instanceof ParseError) fail(path, `bank "${bank}" is not sha1, sha256, sha384 or sha512`);
    throw e;
  }
}

function hexOf(value: unknown, size: number, path: string): string {
  if (typeof value !== 'string' || !new RegExp(`^[0-9a-fA-F]{${size * 2}}$`).test(value)) fail(path, `must be ${size * 2} hex digits`);
  return value.toLowerCase();
}

function object(value: unknown, path: string): Record<string, unknown> {
  if (typeof value !== 'object' || value === null || Array.isArray(value)) fail(path, 'must be an object');
  return value as Record<string, unknown>;
}

function nonEmptyList(value: unknown, path: string): unknown[] {
  if (!Array.isArray(value)) fail(path, 'must be a list');
  if (value.length === 0) fail(path, 'must not be empty');
  if (value.length > MAX_LIST) fail(path, `has more than ${MAX_LIST} entries`);
  return value;
}

function onlyKeys(o: Record<string, unknown>, known: readonly string[], path: string): void {
  const unknown = Object.keys(o).find((k) => !known.includes(k));
  if (unknown !== undefined) fail(path, `unknown field "${unknown}" (known: ${known.join(', ')})`);
}

function fail(path: string, message: string): never {
  throw new ParseError('ERR_BASELINE_EVENTLOG_RULES', `event-log rules: ${path} ${message}`);
}
