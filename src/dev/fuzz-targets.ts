/**
 * Fuzz targets (development; `npm test` properties and `npm run fuzz`): every parser of
 * untrusted input and every decoder of the HTTP edge, each fed bytes. A target may return
 * anything or refuse with an AttestorError whose code is stable; any other exception (a
 * TypeError, a RangeError of a blown stack) is a crash. Hangs and super-linear running time are
 * found by the callers with the time budgets and the growth check below.
 */
import { readdirSync, readFileSync, statSync } from 'node:fs';
import { join, relative } from 'node:path';
import { parseHsmKeyReport } from '../appraisal/hsm-key-report.js';
import { parseCapturedEvidence } from '../baseline/capture.js';
import { parseBaselineDocument } from '../baseline/document.js';
import { parseEventlogRules } from '../baseline/eventlog-rules.js';
import { PathGlob } from '../baseline/ima-glob.js';
import { parseImaRules } from '../baseline/ima-rules.js';
import { isAttestorError } from '../errors.js';
import { readBootOrder, readDevicePath, readLoadOption, readSignatureLists } from '../eventlog/efi.js';
import { decodeEventData } from '../eventlog/event-data.js';
import { deriveEventlogFacts } from '../eventlog/facts.js';
import { parseImaSignature } from '../eventlog/ima/digsig.js';
import { parseImaLog } from '../eventlog/ima/parse.js';
import { replayIma } from '../eventlog/ima/replay.js';
import { replayTcgLog } from '../eventlog/replay.js';
import { parseTcgLog } from '../eventlog/tcg-log.js';
import { parseSpiffeId } from '../issuer/spiffe-id.js';
import { parsePkcs11Uri } from '../pkcs11/uri.js';
import { decodeForm } from '../server/form.js';
import { parseAttest } from '../tpm/attest.js';
import { parseCapabilityData } from '../tpm/capability.js';
import { parseCredentialFile } from '../tpm/credential-file.js';
import { parseEkCertificate } from '../tpm/ek-certificate.js';
import { parseNvPublic } from '../tpm/nv-public.js';
import { parsePcrFile } from '../tpm/pcr-file.js';
import { parseDigestList } from '../tpm/pcr-read.js';
import { parsePcrSelectionSpec } from '../tpm/pcr-selection.js';
import { parseTpm2bPublic } from '../tpm/public.js';
import { parseSignature } from '../tpm/signature.js';
import { decodeBody, MAX_ENTRIES } from '../wire/codec.js';

export interface FuzzTarget {
  readonly name: string;
  /** Corpus files (paths relative to a corpus root, `/`-separated) that seed this target. */
  readonly seeds?: RegExp;
  /** Built-in seeds, for inputs no corpus file holds. */
  readonly samples?: readonly string[];
  run(input: Uint8Array): unknown;
  /**
   * A seed with `factor` times as much of its repeating structure (events, lines, entries), for
   * the running-time check; absent where nothing repeats.
   */
  grow?(seed: Uint8Array, factor: number): Uint8Array;
}

const text = (b: Uint8Array) => Buffer.from(b.buffer, b.byteOffset, b.byteLength).toString('utf8');
/** JSON values come through the edge's own decoder: malformed JSON is its typed ERR_DECODE. */
const json = (b: Uint8Array) => decodeBody(b, 'json');

function tcgLog(b: Uint8Array): void {
  const log = parseTcgLog(b);
  const pcrs = replayTcgLog(log);
  deriveEventlogFacts(log, Object.fromEntries(Object.entries(pcrs).map(([bank, values]) => [bank, Object.keys(values).map(Number)])));
  for (const e of log.events) decodeEventData(e.eventType, e.data);
}

/** `pattern NUL path...`: a glob compiled and matched against each path. */
function glob(b: Uint8Array): void {
  const [pattern = '', ...paths] = text(b).split('\0');
  const g = new PathGlob(pattern, 'fuzz');
  for (const p of paths) g.matches(p);
}

const SHA256 = 'a'.repeat(64);
const latin1 = (s: string) => new Uint8Array(Buffer.from(s, 'latin1'));
/** The whole seed, `factor` times over (logs of lines). */
const repeated = (seed: Uint8Array, factor: number) => new Uint8Array(Buffer.concat(Array.from({ length: factor }, () => seed)));
/** A JSON text with a list of `factor` entries made by `entry`. */
const jsonList = (factor: number, entry: (i: number) => string, wrap: (list: string) => string) =>
  latin1(wrap(Array.from({ length: factor }, (_, i) => entry(i)).join(',')));

/** The events after the Spec ID event, `factor` times over. */
function moreEvents(seed: Uint8Array, factor: number): Uint8Array {
  const log = parseTcgLog(seed);
  const from = log.events[1]?.offset ?? seed.length;
  return new Uint8Array(Buffer.concat([seed.subarray(0, from), ...Array.from({ length: factor }, () => seed.subarray(from))]));
}

export const FUZZ_TARGETS: readonly FuzzTarget[] = [
  { name: 'tpm-public', seeds: /(^|\/)(ak|ek|key|dup-key)\.pub$/, run: parseTpm2bPublic },
  { name: 'tpm-attest', seeds: /\.msg$|quote\.out$/, run: parseAttest },
  { name: 'tpm-signature', seeds: /\.sig$|quotesig\.out$/, run: parseSignature },
  { name: 'tpm-pcr-file', seeds: /quotepcr\.out$/, run: parsePcrFile },
  { name: 'tpm-credential-file', seeds: /mkcred\.out$/, run: parseCredentialFile },
  { name: 'tpm-capability', samples: ['\x00\x00\x00\x06\x00\x00\x00\x01\x00\x00\x01\x00\x32\x2e\x30\x00'], run: parseCapabilityData },
  { name: 'tpm-nv-public', samples: ['\x00\x0e\x01\xc0\x00\x02\x00\x0b\x42\x0a\x00\x02\x00\x00\x01\x00'], run: parseNvPublic },
  { name: 'tpm-digest-list', samples: ['\x00\x00\x00\x01\x00\x20' + 'A'.repeat(32)], run: parseDigestList },
  { name: 'pcr-selection-spec', samples: ['sha256:0,1,2,7', 'sha1:0+sha256:all'], run: (b) => parsePcrSelectionSpec(text(b)) },
  { name: 'ek-certificate', seeds: /ek-cert\.der$|\.pem$/, run: (b) => parseEkCertificate(b) },
  { name: 'tcg-log', seeds: /^eventlog\/[^/]*$/, run: tcgLog, grow: moreEvents },
  { name: 'efi-signature-lists', run: (b) => readSignatureLists(b, 'fuzz') },
  { name: 'efi-device-path', run: (b) => readDevicePath(b, 'fuzz') },
  { name: 'efi-load-option', run: (b) => readLoadOption(b, 'fuzz') },
  { name: 'efi-boot-order', samples: ['\x01\x00\x02\x00'], run: (b) => readBootOrder(b, 'fuzz') },
  { name: 'ima-log', seeds: /^ima\//, run: (b) => replayIma(parseImaLog(b)), grow: repeated },
  { name: 'ima-signature', samples: ['\x03\x02\x04\x12\x34\x56\x78\x00\x04ABCD'], run: parseImaSignature },
  {
    name: 'ima-glob',
    samples: ['/usr/**/lib*.so\0/usr/lib/x86_64/libc.so\0/etc/passwd', '/a/*/b?c/**\0/a/x/bzc/d/e'],
    run: glob,
    // The classic worst case of backtracking matchers (stars against near misses), path after path.
    grow: (_seed, factor) => latin1(`${'*a'.repeat(128)}${`\0${'a'.repeat(1000)}b`.repeat(factor)}`),
  },
  {
    name: 'body-json',
    seeds: /\.json$/,
    run: (b) => decodeBody(b, 'json', MAX_ENTRIES.operator),
    grow: (_seed, factor) => jsonList(factor, (i) => `{"k${i}":[1,"x",null]}`, (l) => `[${l}]`),
  },
  {
    name: 'body-cbor',
    samples: ['\xa2\x68ekPublic\x44\x01\x02\x03\x04\x68akPublic\x44\x05\x06\x07\x08', '\x9f\x01\xff', '\xd8\x18\x41\x00'],
    run: (b) => decodeBody(b, 'cbor', MAX_ENTRIES.operator),
    // An array of `factor` maps {"k": h'00'}.
    grow: (_seed, factor) => new Uint8Array(Buffer.concat([Buffer.of(0x9a, factor >>> 24, (factor >>> 16) & 0xff, (factor >>> 8) & 0xff, factor & 0xff), Buffer.alloc(factor * 5, Buffer.of(0xa1, 0x61, 0x6b, 0x41, 0x00))])),
  },
  { name: 'form', samples: ['token=abc.def.ghi&token_type_hint=access_token', 'a=%zz&b=%E2%82%AC'], run: decodeForm, grow: (_seed, factor) => latin1(`token=${'%41'.repeat(factor)}`) },
  {
    name: 'pkcs11-uri',
    samples: ['pkcs11:token=attestor;object=key?module-path=/usr/lib/softhsm/libsofthsm2.so&pin-source=/run/pin'],
    run: (b) => parsePkcs11Uri(text(b)),
    grow: (_seed, factor) => latin1(`pkcs11:token=${'%41'.repeat(factor)}?module-path=/m`),
  },
  { name: 'spiffe-id', samples: ['spiffe://attestor.internal/agent/' + SHA256], run: (b) => parseSpiffeId(text(b)) },
  {
    name: 'baseline-document',
    samples: [JSON.stringify({ version: 1, pcrs: { sha256: { '0': [SHA256] } }, eventlog: { requireSecureBoot: true, kernels: { allowed: [`sha256:${SHA256}`] } } })],
    run: (b) => parseBaselineDocument(json(b)),
  },
  {
    name: 'eventlog-rules',
    samples: [JSON.stringify({ requireSecureBoot: true, kernelCmdlines: ['ro quiet'], kernels: { allowed: [`sha256:${SHA256}`] }, pcrs: { sha256: { 4: [SHA256] } } })],
    run: (b) => parseEventlogRules(json(b)),
    grow: (_seed, factor) => jsonList(factor, (i) => `"ro quiet root=/dev/sda${i}"`, (l) => `{"kernelCmdlines":[${l}]}`),
  },
  {
    name: 'ima-rules',
    samples: [JSON.stringify({ allow: { '/usr/bin/bash': [`sha256:${SHA256}`] }, exclude: ['/tmp/**'], allowViolations: false })],
    run: (b) => parseImaRules(json(b)),
    grow: (_seed, factor) => jsonList(factor, (i) => `"/usr/lib/${i}/**/lib*.so"`, (l) => `{"allow":{"/usr/bin/bash":["sha256:${SHA256}"]},"exclude":[${l}]}`),
  },
  { name: 'captured-evidence', samples: [JSON.stringify({ version: 1, pcrs: { sha256: { '0': SHA256 } }, keyResidence: 'tpm' })], run: (b) => parseCapturedEvidence(json(b)) },
  { name: 'hsm-key-report', run: (b) => parseHsmKeyReport(decodeBody(b, 'cbor', MAX_ENTRIES.agent)) },
];

export type Outcome = { readonly kind: 'ok' } | { readonly kind: 'refused'; readonly code: string } | { readonly kind: 'crash'; readonly error: string };

/** Runs `target` on `input`: a value, a typed refusal, or a crash (described without the input). */
export function outcomeOf(target: FuzzTarget, input: Uint8Array): Outcome {
  try {
    target.run(input);
    return { kind: 'ok' };
  } catch (e) {
    if (isAttestorError(e) && /^ERR_[A-Z0-9_]+$/.test(e.code)) return { kind: 'refused', code: e.code };
    const error = e instanceof Error ? `${e.name}: ${e.message}`.slice(0, 300) : `thrown ${typeof e}`;
    return { kind: 'crash', error };
  }
}

// ---- corpus and mutation ------------------------------------------------------------------

/** Every file under `root` (relative paths, `/`-separated), skipping documentation. */
export function corpusFiles(root: string): Array<{ readonly path: string; readonly bytes: Uint8Array }> {
  const out: Array<{ path: string; bytes: Uint8Array }> = [];
  const walk = (dir: string) => {
    for (const name of readdirSync(dir).sort()) {
      const full = join(dir, name);
      if (statSync(full).isDirectory()) walk(full);
      else if (!/\.(md|yaml)$/.test(name)) out.push({ path: relative(root, full).split('\\').join('/'), bytes: new Uint8Array(readFileSync(full)) });
    }
  };
  walk(root);
  return out;
}

/** The seeds of `target`: its samples and the corpus files its pattern names. */
export function seedsOf(target: FuzzTarget, files: ReadonlyArray<{ readonly path: string; readonly bytes: Uint8Array }>): Uint8Array[] {
  const samples = (target.samples ?? []).map((s) => new Uint8Array(Buffer.from(s, 'latin1')));
  const fromFiles = target.seeds ? files.filter((f) => target.seeds!.test(f.path)).map((f) => f.bytes) : [];
  return [...samples, ...fromFiles];
}

/** A small seeded generator (mulberry32): the same seed, the same mutations. */
export function createRng(seed: number): (n: number) => number {
  let s = seed >>> 0;
  return (n) => {
    s = (s + 0x6d2b79f5) >>> 0;
    let t = s;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return Math.floor((((t ^ (t >>> 14)) >>> 0) / 2 ** 32) * n);
  };
}

/** Values parsers compare lengths and counts against. */
const INTERESTING = [0, 1, 2, 0x7f, 0x80, 0xff, 0x100, 0x7fff, 0x8000, 0xffff, 0x10000, 0x7fffffff, 0x80000000, 0xffffffff];
export const MAX_MUTANT_BYTES = 1 << 20;
/** The largest input the running-time check grows to. */
const MAX_GROWN_BYTES = 4 << 20;
const MIN_TIMED_MS = 1;

/**
 * One to four mutations of `input`: bit flips, interesting bytes, truncation, insertion,
 * deletion, duplication of a range, splicing with `other`, and a length field (16 or 32 bits,
 * either byte order) overwritten with an interesting value or the input's own size.
 */
export function mutate(rand: (n: number) => number, input: Uint8Array, other: Uint8Array): Uint8Array {
  let b = Buffer.from(input);
  for (let round = 1 + rand(4); round > 0; round--) {
    const at = b.length === 0 ? 0 : rand(b.length);
    switch (rand(8)) {
      case 0:
        if (b.length > 0) b[at]! ^= 1 << rand(8);
        break;
      case 1:
        if (b.length > 0) b[at] = INTERESTING[rand(6)]!;
        break;
      case 2:
        b = b.subarray(0, at);
        break;
      case 3: {
        const extra = Buffer.alloc(1 + rand(16));
        for (let i = 0; i < extra.length; i++) extra[i] = rand(256);
        b = Buffer.concat([b.subarray(0, at), extra, b.subarray(at)]);
        break;
      }
      case 4:
        b = Buffer.concat([b.subarray(0, at), b.subarray(at + 1 + rand(64))]);
        break;
      case 5: {
        const range = b.subarray(at, at + 1 + rand(256));
        b = Buffer.concat([b.subarray(0, at), range, range, b.subarray(at + range.length)]);
        break;
      }
      case 6: {
        const from = other.length === 0 ? 0 : rand(other.length);
        b = Buffer.concat([b.subarray(0, at), Buffer.from(other.subarray(from, from + 1 + rand(512)))]);
        break;
      }
      default: {
        const width = rand(2) === 0 ? 2 : 4;
        if (b.length < width) break;
        const pos = rand(b.length - width + 1);
        const value = (rand(4) === 0 ? b.length + rand(3) - 1 : INTERESTING[rand(INTERESTING.length)]!) % 2 ** (8 * width);
        const field = Buffer.alloc(width);
        if (width === 2) (rand(2) === 0 ? field.writeUInt16BE : field.writeUInt16LE).call(field, value);
        else (rand(2) === 0 ? field.writeUInt32BE : field.writeUInt32LE).call(field, value >>> 0);
        field.copy(b, pos);
      }
    }
  }
  return new Uint8Array(b.subarray(0, MAX_MUTANT_BYTES));
}

// ---- running time -------------------------------------------------------------------------

/** Milliseconds of the fastest of `runs` runs of `target` on `input`. */
/** The quickest of `runs` runs of `target` on each input, the inputs taken in turn so that a busy spell slows both alike (ms). */
function timesOf(target: FuzzTarget, inputs: readonly Uint8Array[], runs = 5): number[] {
  const best = inputs.map(() => Infinity);
  for (let i = 0; i < runs; i++) {
    inputs.forEach((input, j) => {
      const started = performance.now();
      outcomeOf(target, input);
      best[j] = Math.min(best[j]!, performance.now() - started);
    });
  }
  return best;
}

/**
 * How much slower `target` gets per byte when its input grows sixteenfold (about 1 for linear
 * time, 16 for quadratic), measured from about `bytes` on; undefined for a target that does not
 * grow, or runs too quick to time.
 */
export function growthPerByte(target: FuzzTarget, seed: Uint8Array, fromBytes = 16 * 1024): number | undefined {
  if (!target.grow) return undefined;
  const unit = Math.max(1, target.grow(seed, 2).length - target.grow(seed, 1).length);
  // Quick runs are timed again at larger sizes: what is quick at 64 KB may be quadratic up to the
  // 12 MB a body may have. Only a small input that takes a millisecond is timed against the
  // large one: below that, caches and timer resolution make a linear parser look quadratic.
  for (let bytes = fromBytes; bytes <= MAX_GROWN_BYTES; bytes *= 4) {
    const factor = Math.max(1, Math.floor(bytes / 16 / unit));
    const small = target.grow(seed, factor);
    const large = target.grow(seed, factor * 16);
    const [tSmall] = timesOf(target, [small], 2);
    if (tSmall! < MIN_TIMED_MS && bytes * 4 <= MAX_GROWN_BYTES) continue;
    const [s, l] = timesOf(target, [small, large]);
    if (l! >= 10 * MIN_TIMED_MS) return l! / large.length / (Math.max(s!, 0.05) / small.length);
  }
  return undefined;
}
