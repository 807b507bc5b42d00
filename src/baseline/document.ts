import { z } from 'zod';
import { AttestorError, ParseError } from '../errors.js';
import { hashByName } from '../tpm/constants.js';
import { parseEventlogRules, ruleBanks, rulePcrs, type EventlogRules } from './eventlog-rules.js';
import { parseImaRules, type ImaRules } from './ima-rules.js';

/*
 * The baseline document, version 1: what an operator enrolls as the golden state of a class of
 * hosts, and what `appraise` judges evidence against. It arrives as JSON (API, CLI, capture);
 * parseBaselineDocument validates every field, refuses unknown ones (a typo must not silently
 * drop a requirement) and names the path of what it refuses.
 *
 * {
 *   "version": 1,
 *   "selector": { "labels": { "role": "gpu" } },           optional; absent: every agent
 *   "pcrs": { "sha256": { "0": ["<hex>", ...], "7": ["<hex>"] } },   allowed values per bank and PCR
 *   "eventlog": { ... },        optional: event-log rules (eventlog-rules.ts)
 *   "ima": { ... },             optional: IMA rules (ima-rules.ts); PCR 10 is then quoted
 *   "key": { "residence": ["tpm", "pkcs11"], "allowedTokens": [{ "manufacturer": "...", "serial": "..." }] },  default tpm only
 *   "audiences": ["spiffe://example.org/service"],          JWT audiences allowed; default none
 *   "credentials": { "x509TtlSeconds": 3600, "jwtTtlSeconds": 300 },   optional caps
 *   "allowSha1": false
 * }
 *
 * - PCR values are hex of the bank's digest size (lowercased here); at most 64 per PCR.
 * - A document must check something: PCR values, event-log rules or IMA rules. One with none
 *   would affirm any host whose quote verifies.
 * - `key.residence` defaults to `tpm` alone: a PKCS#11 key report is the host's statement, bound
 *   to its quote but not proven by the token, so a baseline must opt in to it. `allowedTokens`
 *   (PKCS#11 only) lists tokens the key may live on, each entry matching on the fields it names, so an entry names at least one.
 * - Relying on SHA-1 PCR values is legacy (SHA-1 extends can collide): `pcrs.sha1` and the
 *   event-log rules' `pcrs.sha1` need `"allowSha1": true`, which also lets quotes, AKs and
 *   certifications use SHA-1 (appraisals that accept it end in a warning).
 *
 * A parsed document is the normalized JSON (defaults written out, PCR values lowercased, lists
 * without repeats): store it as it is. Its compiled event-log and IMA rules ride along, out of
 * the JSON, so a verifier that keeps parsed documents compiles each once.
 */

export const KEY_RESIDENCES = ['tpm', 'pkcs11'] as const;
export type KeyResidence = (typeof KEY_RESIDENCES)[number];
/** Without `key.residence`: TPM keys only (certified by the AK, not merely reported). */
const DEFAULT_RESIDENCE: readonly KeyResidence[] = ['tpm'];

const BANKS = ['sha1', 'sha256', 'sha384', 'sha512'] as const;

/** Allowed values, lowercase hex, by bank and PCR index. */
export type PcrAllowlist = { readonly [bank: string]: { readonly [index: string]: readonly string[] } };

/** PCR indexes by bank: what a challenge asks the agent to quote. */
export type PcrSelection = { readonly [bank: string]: readonly number[] };

/** A PKCS#11 token the key may live on: it must match every field the entry names (CK_TOKEN_INFO). */
export type TokenMatch = { manufacturer?: string; model?: string; serial?: string; label?: string };

/** JSON, as stored. */
export type JsonValue = null | boolean | number | string | JsonValue[] | { [key: string]: JsonValue };

/** A document as JSON, normalized: what is stored, served, and parsed again. */
export type BaselineDocumentJson = {
  readonly version: 1;
  readonly selector?: { readonly labels: { readonly [name: string]: string } };
  readonly pcrs?: PcrAllowlist;
  /** The event-log rules as given (eventlog-rules.ts). */
  readonly eventlog?: JsonValue;
  /** The IMA rules as given (ima-rules.ts). */
  readonly ima?: JsonValue;
  readonly key: { readonly residence: readonly KeyResidence[]; readonly allowedTokens?: readonly TokenMatch[] };
  readonly audiences: readonly string[];
  /** Caps on credential lifetimes, in seconds. */
  readonly credentials?: { readonly x509TtlSeconds?: number; readonly jwtTtlSeconds?: number };
  readonly allowSha1: boolean;
};

/** The rules of a document compiled for appraisal (keys imported, globs built): not part of its JSON. */
export interface CompiledRules {
  readonly eventlog?: EventlogRules;
  readonly ima?: ImaRules;
}

/**
 * A validated document. It is its own normalized JSON (its fields are the JSON's, by
 * declaration merging): JSON.stringify stores it, parseBaselineDocument reads it back to an
 * equal document. Only its type is exported, so parseBaselineDocument alone makes one.
 */
interface BaselineDocument extends BaselineDocumentJson {}

class BaselineDocument {
  readonly #rules: CompiledRules;
  readonly #pcrSelection: PcrSelection;
  readonly #reliesOnSha1: boolean;

  /** `sha1Digests`: the event-log rules hold SHA-1 digests or PCR values (worked out by the parser's check). */
  constructor(json: BaselineDocumentJson, rules: CompiledRules, sha1Digests: boolean) {
    // Verifiers share parsed documents between requests: none may change one.
    Object.assign(this, deepFreeze(json));
    this.#rules = rules;
    // Asked for on every challenge and appraisal: worked out once.
    this.#pcrSelection = selectionOf(json, rules);
    this.#reliesOnSha1 = json.pcrs?.sha1 !== undefined || sha1Digests;
    Object.freeze(this);
  }

  get rules(): CompiledRules {
    return this.#rules;
  }

  /** See pcrSelectionOf. */
  get pcrSelection(): PcrSelection {
    return this.#pcrSelection;
  }

  /** Its PCR values or event-log digests include SHA-1 ones (legacy, allowed only with allowSha1). */
  get reliesOnSha1(): boolean {
    return this.#reliesOnSha1;
  }
}

export type { BaselineDocument };

/** For agents that no baseline applies to yet: the boot PCRs, so `capture` has them to build one from. */
export const DEFAULT_PCR_SELECTION: PcrSelection = Object.freeze({ sha256: Object.freeze([...Array(16).keys()]) });

const MAX_VALUES_PER_PCR = 64;
const MAX_AUDIENCES = 32;
const MAX_LABELS = 32;
const MAX_ALLOWED_TOKENS = 64;
/** A week: a cap, so only ever shortens what the service issues. */
const MAX_TTL_SECONDS = 7 * 24 * 3600;
/** Issues named in one error message. */
const MAX_ISSUES_SHOWN = 3;
/** IMA's PCR (CONFIG_IMA_MEASURE_PCR_IDX). */
const IMA_PCR = 10;

const LABEL_NAME = z.string().regex(/^[a-z0-9]([a-z0-9._/-]{0,62}[a-z0-9])?$/, 'label names are lowercase [a-z0-9._/-], 1..64 characters');
/** Host labels (`role=gpu-node`): what selectors match; the wire schemas take them as defined here. */
export const LABELS = z.record(LABEL_NAME, z.string().max(256)).refine((l) => Object.keys(l).length <= MAX_LABELS, `at most ${MAX_LABELS} labels`);
const PCR_INDEX = z.string().regex(/^(?:[0-9]|1[0-9]|2[0-3])$/, 'a PCR index is 0..23 in decimal');
const HEX = z.string().max(128).regex(/^[0-9a-fA-F]*$/, 'must be hex digits');
/** A JWT-SVID audience: a URI or a name, no whitespace. */
export const AUDIENCE = z.string().min(1).max(256).regex(/^\S+$/, 'an audience has no whitespace');
const TTL = z.number().int().min(1).max(MAX_TTL_SECONDS);

/** CK_TOKEN_INFO's fixed-size fields bound what a token can report. */
function tokenText(bytes: number) {
  return z
    .string()
    .refine((s) => Buffer.byteLength(s, 'utf8') <= bytes, `at most ${bytes} UTF-8 bytes (the CK_TOKEN_INFO field's size)`)
    .optional();
}

const TOKEN_MATCH = z
  .strictObject({ manufacturer: tokenText(32), model: tokenText(16), serial: tokenText(16), label: tokenText(32) })
  .refine((t) => Object.values(t).some((v) => v !== undefined), 'an entry names at least one of manufacturer, model, serial, label');

const DOCUMENT = z.strictObject({
  version: z.literal(1, { error: 'must be 1 (the document version this verifier reads)' }),
  selector: z.strictObject({ labels: LABELS }).optional(),
  pcrs: z.partialRecord(z.enum(BANKS), z.record(PCR_INDEX, z.array(HEX).min(1).max(MAX_VALUES_PER_PCR))).optional(),
  eventlog: z.unknown().optional(),
  ima: z.unknown().optional(),
  key: z
    .strictObject({
      residence: z.array(z.enum(KEY_RESIDENCES)).min(1).max(KEY_RESIDENCES.length).optional(),
      allowedTokens: z.array(TOKEN_MATCH).min(1).max(MAX_ALLOWED_TOKENS).optional(),
    })
    .optional(),
  audiences: z.array(AUDIENCE).max(MAX_AUDIENCES).optional(),
  credentials: z.strictObject({ x509TtlSeconds: TTL.optional(), jwtTtlSeconds: TTL.optional() }).optional(),
  allowSha1: z.boolean().optional(),
});

const STORED_SELECTOR = z.object({ selector: z.strictObject({ labels: LABELS }).optional() });

/**
 * The selector labels of a stored document read alone ({} when it has none), for a document
 * that no longer validates as a whole (stored before a rule was tightened): null when even
 * they cannot be read.
 */
export function storedSelectorOf(value: unknown): { readonly [name: string]: string } | null {
  const parsed = STORED_SELECTOR.safeParse(value);
  return parsed.success ? (parsed.data.selector?.labels ?? {}) : null;
}

/** Validates a baseline document; anything wrong is ERR_BASELINE_INVALID naming the path. */
export function parseBaselineDocument(value: unknown): BaselineDocument {
  const parsed = DOCUMENT.safeParse(value);
  if (!parsed.success) {
    const issues = parsed.error.issues.slice(0, MAX_ISSUES_SHOWN).map(describeIssue);
    const more = parsed.error.issues.length - issues.length;
    throw new ParseError('ERR_BASELINE_INVALID', `baseline document: ${issues.join('; ')}${more > 0 ? ` (and ${more} more)` : ''}`);
  }
  const d = parsed.data;
  const allowSha1 = d.allowSha1 ?? false;
  const pcrs = d.pcrs && pcrAllowlist(d.pcrs, allowSha1);
  const pinned = [...new Set(Object.values(d.pcrs ?? {}).flatMap((byIndex) => Object.keys(byIndex ?? {}).map(Number)))];
  const eventlog = d.eventlog === undefined ? undefined : compile('eventlog', () => parseEventlogRules(d.eventlog, pinned));
  if (eventlog && rulePcrs(eventlog).length === 0) fail('eventlog', 'has no rule: it would check nothing');
  const sha1Digests = eventlog !== undefined && ruleBanks(eventlog).has('sha1');
  if (sha1Digests && !allowSha1) fail('eventlog', 'SHA-1 digests and PCR values are legacy: they need "allowSha1": true');
  const ima = d.ima === undefined ? undefined : compile('ima', () => parseImaRules(d.ima));
  if (!pcrs && !eventlog && !ima) fail('', 'a baseline that checks nothing: give pcrs, eventlog or ima');

  const residence = [...new Set(d.key?.residence ?? DEFAULT_RESIDENCE)];
  const allowedTokens = d.key?.allowedTokens;
  if (allowedTokens && !residence.includes('pkcs11')) fail('key.allowedTokens', 'is for PKCS#11 keys, and key.residence does not allow them');
  const key = { residence, ...(allowedTokens && { allowedTokens }) };
  const audiences = [...new Set(d.audiences ?? [])];
  const selector = d.selector && { labels: d.selector.labels };
  const credentials = d.credentials && { ...d.credentials };

  const json: BaselineDocumentJson = {
    version: 1,
    ...(selector && { selector }),
    ...(pcrs && { pcrs }),
    ...(eventlog && { eventlog: jsonCopy(d.eventlog) }),
    ...(ima && { ima: jsonCopy(d.ima) }),
    key,
    audiences,
    ...(credentials && { credentials }),
    allowSha1,
  };
  return new BaselineDocument(json, { ...(eventlog && { eventlog }), ...(ima && { ima }) }, sha1Digests);
}

/**
 * The PCRs a quote must cover for `doc`: its `pcrs`, what its event-log rules depend on (in
 * sha256, and in the banks of the rules' own `pcrs`) and PCR 10 for IMA rules. Banks and
 * indexes ascending.
 */
export function pcrSelectionOf(doc: BaselineDocument): PcrSelection {
  return doc.pcrSelection;
}

/** The document applies to an agent with these labels: every selector label has the same value there. */
export function selectorMatches(doc: BaselineDocument, labels: { readonly [name: string]: string }): boolean {
  return labelsSelect(doc.selector?.labels ?? {}, labels);
}

/** Selector labels `selector` select an agent with `labels`: each has the same value there. */
export function labelsSelect(selector: { readonly [name: string]: string }, labels: { readonly [name: string]: string }): boolean {
  return Object.entries(selector).every(([name, value]) => Object.hasOwn(labels, name) && labels[name] === value);
}

function pcrAllowlist(banks: Partial<Record<(typeof BANKS)[number], Record<string, string[]>>>, allowSha1: boolean): PcrAllowlist {
  // An empty map would read as a requirement while requiring nothing.
  if (Object.keys(banks).length === 0) fail('pcrs', 'lists no bank');
  const out: Record<string, Record<string, string[]>> = {};
  for (const bank of BANKS) {
    const byIndex = banks[bank];
    if (!byIndex) continue;
    if (Object.keys(byIndex).length === 0) fail(`pcrs.${bank}`, 'lists no PCR');
    if (bank === 'sha1' && !allowSha1) fail('pcrs.sha1', 'SHA-1 PCR values are legacy: they need "allowSha1": true');
    const digits = hashByName(bank).size * 2;
    out[bank] = Object.fromEntries(
      Object.entries(byIndex).map(([index, values]) => {
        const wrong = values.findIndex((v) => v.length !== digits);
        if (wrong >= 0) fail(`pcrs.${bank}.${index}[${wrong}]`, `must be ${digits} hex digits (a ${bank} digest)`);
        return [index, [...new Set(values.map((v) => v.toLowerCase()))]];
      }),
    );
  }
  return out;
}

function selectionOf(json: BaselineDocumentJson, { eventlog, ima }: CompiledRules): PcrSelection {
  const selection = new Map<string, Set<number>>();
  const add = (bank: string, pcr: number) => (selection.get(bank) ?? selection.set(bank, new Set()).get(bank)!).add(pcr);
  const addAll = (allowlist: { readonly [bank: string]: object } | undefined) => {
    for (const [bank, byIndex] of Object.entries(allowlist ?? {})) for (const index of Object.keys(byIndex)) add(bank, Number(index));
  };
  addAll(json.pcrs);
  if (eventlog) {
    for (const pcr of rulePcrs(eventlog)) add('sha256', pcr);
    addAll(eventlog.pcrs);
  }
  if (ima) add('sha256', IMA_PCR);
  const banks = BANKS.filter((bank) => selection.has(bank));
  return Object.freeze(Object.fromEntries(banks.map((bank) => [bank, Object.freeze([...selection.get(bank)!].sort((a, b) => a - b))])));
}

/** Runs a rules parser, its refusal reported under the document's code and the field's path. */
function compile<T>(field: string, parse: () => T): T {
  try {
    return parse();
  } catch (e) {
    if (e instanceof AttestorError) fail(field, e.message);
    throw e;
  }
}

function deepFreeze<T>(value: T): T {
  if (typeof value === 'object' && value !== null) {
    for (const v of Object.values(value)) deepFreeze(v);
    Object.freeze(value);
  }
  return value;
}

/** The rules as JSON: their parsers accepted only JSON values, so nothing is lost. */
function jsonCopy(value: unknown): JsonValue {
  return JSON.parse(JSON.stringify(value)) as JsonValue;
}

/** `baseline document: <path>: <message>`, as zod's issues are reported too. */
function fail(path: string, message: string): never {
  throw new ParseError('ERR_BASELINE_INVALID', `baseline document: ${path === '' ? '' : `${path}: `}${message}`);
}

function describeIssue(issue: z.core.$ZodIssue): string {
  const at = formatPath(issue.path);
  const where = at === '' ? 'document' : at;
  switch (issue.code) {
    case 'unrecognized_keys':
      return `${where}: unknown field ${issue.keys.map((k) => JSON.stringify(k.slice(0, 64))).join(', ')}`;
    case 'invalid_key':
      return `${where}: ${issue.issues[0]?.message ?? issue.message}`;
    default:
      return `${where}: ${issue.message}`;
  }
}

/** `pcrs.sha256.7[0]`; keys that are not plain names quoted and cut. */
function formatPath(path: readonly PropertyKey[]): string {
  return path
    .map((p, i) => {
      if (typeof p === 'number') return `[${p}]`;
      const key = String(p);
      const name = /^[A-Za-z0-9_]{1,64}$/.test(key) ? key : JSON.stringify(key.slice(0, 64));
      return i === 0 ? name : `.${name}`;
    })
    .join('');
}
