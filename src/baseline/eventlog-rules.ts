import { MAX_PCR_INDEX, pcrIndexOfKey } from '../eventlog/pcr-index.js';
import { hashByName } from '../tpm/constants.js';
import { JsonRules, type DigestAlgorithms } from './json-rules.js';

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
 *
 * What these rules cannot see: root on the host can extend any PCR after boot and append a
 * matching, honestly hashed event. Only PCR 7 has a boot-time boundary (its separator), so
 * requireSecureBoot and signatureDatabases judge what firmware measured. The presence rules
 * of PCRs 4, 8, 9 and 12 (an allowed component, kernel or command line is present) can be met
 * after boot where the real boot measured nothing there or less than the baseline lists (a
 * UKI's command line goes to PCR 11; systemd-boot and EFI-stub kernels appear in PCR 4, not
 * 9). Pinning those PCRs' values with `pcrs` is no better there: root extends a PCR the boot
 * left at its reset value to the pinned value. PCRs 0-7, which firmware extends before any
 * loader runs (PCR 4 with its separator), cannot be replayed so: judge every stage
 * (bootComponents "sequence", or PCR 4 pinned, plus kernels) rather than one.
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

const SIGNATURE_DATABASE_NAMES = ['PK', 'KEK', 'db', 'dbx'] as const;
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
   * data their digests do not prove. A multiboot2 (Xen) boot proves one per image: the
   * hypervisor's and each module's (dom0's kernel, its initrd), each starting with its path.
   * Needs bootComponents, or PCR 4 pinned: which loader wrote PCR 8 (grub, systemd-stub) is
   * not in PCR 8, and a systemd-stub before v251 started from a Boot#### entry measures its
   * load options there as they are, bytes that can read as grub text while the kernel gets
   * the low byte of each UTF-16 unit. Allowed components keep an unlisted stub from running.
   */
  readonly kernelCmdlines?: readonly string[];
  /** Allowed values of quoted PCRs, lowercase hex, by bank and index. */
  readonly pcrs?: { readonly [bank: string]: { readonly [index: number]: readonly string[] } };
}

const TOP_LEVEL = ['requireSecureBoot', 'bootComponents', 'signatureDatabases', 'kernels', 'kernelCmdlines', 'pcrs'];
/** Bounds what an operator's file can make the verifier hold and compare. */
const MAX_LIST = 10_000;

const json: JsonRules = new JsonRules('ERR_BASELINE_EVENTLOG_RULES', 'event-log rules');

/** The PCR banks a digest may be of: the bank names the digest, so rules for SHA-1-only fleets stay possible. */
const BANKS: DigestAlgorithms = { term: 'bank', sizeOf: (name) => hashByName(name).size, accepted: 'sha1, sha256, sha384 or sha512' };

/**
 * `pinned`: PCR indexes whose values the enclosing baseline document pins in its own `pcrs`
 * (PCR 4 there counts, as in the rules' own `pcrs`, for what kernelCmdlines needs beside it).
 */
export function parseEventlogRules(value: unknown, pinned: readonly number[] = []): EventlogRules {
  const root = json.fields(value, 'rules', TOP_LEVEL);
  const rules: {
    -readonly [K in keyof EventlogRules]: EventlogRules[K];
  } = {};
  if (root.requireSecureBoot !== undefined) {
    if (typeof root.requireSecureBoot !== 'boolean') json.fail('requireSecureBoot', 'must be true or false');
    rules.requireSecureBoot = root.requireSecureBoot;
  }
  if (root.bootComponents !== undefined) rules.bootComponents = bootComponents(root.bootComponents);
  if (root.signatureDatabases !== undefined) {
    const dbs = json.fields(root.signatureDatabases, 'signatureDatabases', SIGNATURE_DATABASE_NAMES);
    // An empty map would require nothing while reading as a requirement.
    if (Object.keys(dbs).length === 0) json.fail('signatureDatabases', 'must name at least one of PK, KEK, db, dbx');
    const lists = Object.entries(dbs).map(([name, list]) => [name, digestList(list, `signatureDatabases.${name}`)]);
    rules.signatureDatabases = Object.fromEntries(lists);
  }
  if (root.kernels !== undefined) rules.kernels = kernels(root.kernels);
  if (root.kernelCmdlines !== undefined) {
    rules.kernelCmdlines = json.nonEmptyList(root.kernelCmdlines, 'kernelCmdlines', MAX_LIST).map((c, i) => {
      if (typeof c !== 'string') json.fail(`kernelCmdlines[${i}]`, 'must be a string');
      // U+FFFD is what bytes that are not UTF-8 decode to: allowing it would allow any such bytes.
      if (c.includes('\ufffd')) json.fail(`kernelCmdlines[${i}]`, 'must not contain U+FFFD (the replacement character)');
      return trimCmdline(c);
    });
  }
  if (root.pcrs !== undefined) rules.pcrs = pcrValues(root.pcrs);
  // PCR 4 pinned does what bootComponents does; PCR 8 pinned does not: after a boot that
  // measured nothing into PCR 8 (a UKI's line goes to PCR 11), root can extend it from its
  // reset value to the pinned one. Firmware extends PCR 4 before any loader runs.
  if (rules.kernelCmdlines && !rules.bootComponents && !pinned.includes(4) && !pinsPcr(rules, 4)) {
    json.fail(
      'kernelCmdlines',
      'need bootComponents (or PCR 4 pinned in pcrs): PCR 8 is read as grub or systemd-stub wrote it, and only the boot ' +
        'components in PCR 4 show which ran (systemd-stub before v251 measures any load option bytes there)',
    );
  }
  return rules;
}

function pinsPcr(rules: EventlogRules, pcr: number): boolean {
  return Object.values(rules.pcrs ?? {}).some((byIndex) => byIndex[pcr] !== undefined);
}

/**
 * A command line without its outer ASCII blanks. Only those: the kernel splits parameters at
 * ASCII whitespace, so a no-break or ideographic space (which String.prototype.trim also
 * removes) is part of a parameter, and a line ending in one is another line.
 */
export function trimCmdline(cmdline: string): string {
  return cmdline.replace(/^[ \t\r\n]+|[ \t\r\n]+$/g, '');
}

/** The banks the rules' digests and PCR values are in: a decision rests on each. */
export function ruleBanks(rules: EventlogRules): Set<string> {
  const digests = [
    ...(rules.bootComponents?.allowed.flat() ?? []),
    ...Object.values(rules.signatureDatabases ?? {}).flat(),
    ...(rules.kernels ? [...rules.kernels.allowed, ...rules.kernels.otherFiles] : []),
  ];
  return new Set([...digests.map((d) => d.bank), ...Object.keys(rules.pcrs ?? {})]);
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
  const o = json.fields(value, 'bootComponents', ['match', 'allowed']);
  const allowed = json.nonEmptyList(o.allowed, 'bootComponents.allowed', MAX_LIST);
  if (o.match === 'any') return { match: 'any', allowed: digestList(allowed, 'bootComponents.allowed') };
  if (o.match === 'sequence') {
    return { match: 'sequence', allowed: allowed.map((position, i) => digestList(position, `bootComponents.allowed[${i}]`)) };
  }
  return json.fail('bootComponents.match', 'must be "sequence" or "any"');
}

function kernels(value: unknown): KernelRule {
  const o = json.fields(value, 'kernels', ['allowed', 'otherFiles']);
  const otherFiles = o.otherFiles === undefined ? [] : digestList(o.otherFiles, 'kernels.otherFiles');
  return { allowed: digestList(o.allowed, 'kernels.allowed'), otherFiles };
}

function pcrValues(value: unknown): EventlogRules['pcrs'] {
  const banks = json.object(value, 'pcrs');
  return Object.fromEntries(
    Object.entries(banks).map(([bank, byIndex]) => {
      // Quotes and the SHA-1 gate name banks in lowercase: "SHA1" would pass the gate and never be quoted.
      if (bank !== bank.toLowerCase()) json.fail(`pcrs.${bank.slice(0, 32)}`, 'a bank name is lowercase: sha1, sha256, sha384 or sha512');
      const size = json.digestSize(bank, BANKS, `pcrs.${bank}`);
      const indexes = json.object(byIndex, `pcrs.${bank}`);
      return [
        bank,
        Object.fromEntries(
          Object.entries(indexes).map(([key, values]) => {
            const path = `pcrs.${bank}.${key}`;
            const index = pcrIndexOfKey(key, MAX_PCR_INDEX) ?? json.fail(path, `PCR index must be 0..${MAX_PCR_INDEX}`);
            return [index, json.nonEmptyList(values, path, MAX_LIST).map((v, i) => json.hex(v, size, `${path}[${i}]`))];
          }),
        ),
      ];
    }),
  );
}

function digestList(value: unknown, path: string): DigestRule[] {
  return json.nonEmptyList(value, path, MAX_LIST).map((d, i) => {
    const { algorithm: bank, hex: digest } = json.digest(d, BANKS, `${path}[${i}]`);
    return { bank, digest };
  });
}
