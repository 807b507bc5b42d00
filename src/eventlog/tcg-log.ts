import { ParseError } from '../errors.js';
import { hashInfo, TPM_ALG, type HashInfo } from '../tpm/constants.js';
import { TpmReader } from '../tpm/reader.js';
import { readSpecIdEvent, signatureOf, SPEC_ID_SIGNATURE, startupLocalityOf, type SpecIdEvent } from './event-data.js';
import { EV } from './event-types.js';
import { MAX_PCR_INDEX } from './pcr-index.js';
import { withCode } from './tcg-reader.js';

/*
 * The TCG PC Client measured-boot event log (binary_bios_measurements), TCG PC Client
 * Platform Firmware Profile (PFP) §10.2:
 *  - legacy SHA-1 format: a sequence of TCG_PCR_EVENT {PCRIndex, EventType, SHA-1 digest,
 *    EventSize, Event};
 *  - crypto-agile format: a TCG_PCR_EVENT whose data is the "Spec ID Event03" structure
 *    naming the banks and their digest sizes, then TCG_PCR_EVENT2 {PCRIndex, EventType,
 *    TPML_DIGEST_VALUES, EventSize, Event}.
 * This module reads the framing only (cheap, so replay stays fast); event-data.ts decodes
 * what an event's data claims. Every failure is a ParseError with an ERR_EVENTLOG_* code.
 */

export interface EventDigest {
  readonly algorithmId: number;
  /** Undefined for an algorithm Attestor cannot compute: its digest is kept but not replayed. */
  readonly hash?: HashInfo;
  readonly digest: Uint8Array;
}

export interface TcgEvent {
  /** Position in the log, 0 first (the Spec ID event of a crypto-agile log), as tpm2_eventlog numbers them. */
  readonly index: number;
  readonly offset: number;
  readonly pcrIndex: number;
  readonly eventType: number;
  readonly digests: readonly EventDigest[];
  /** A view into the input, not a copy. */
  readonly data: Uint8Array;
}

export interface LogAlgorithm {
  readonly algorithmId: number;
  readonly digestSize: number;
  readonly hash?: HashInfo;
}

export interface TcgLog {
  readonly format: 'sha1' | 'crypto-agile';
  readonly specId?: SpecIdEvent;
  /** The banks the log declares (SHA-1 alone for the legacy format). */
  readonly algorithms: readonly LogAlgorithm[];
  readonly events: readonly TcgEvent[];
  /**
   * The locality PCR 0 was reset at: 0, or 3 from a StartupLocality event, or 4 after an
   * H-CRTM event (PFP §10.4.5.3, TPM 2.0 Part 1 §34.3). PCR 0 starts at 0...0<locality>.
   */
  readonly startupLocality: number;
  /** Deviations from the spec this parser tolerated, each as a sentence (empty for a clean log). */
  readonly quirks: readonly string[];
}

export interface TcgLogLimits {
  /** Default 100,000: real logs have hundreds to a few thousand events. */
  readonly maxEvents?: number;
  /** Default DEFAULT_MAX_LOG_BYTES. */
  readonly maxBytes?: number;
}

const DEFAULT_MAX_EVENTS = 100_000;
/**
 * 1 MiB: real logs are 10-100 KB (a few hundred events, PK/KEK/db/dbx included), and every
 * byte of event data is unsigned input a verifier may hash or decode.
 */
export const DEFAULT_MAX_LOG_BYTES = 1024 * 1024;
const SHA1_SIZE = 20;
/** TCG_PCR_EVENT up to its data: PCRIndex, EventType, SHA-1 digest, EventSize. */
const SHA1_EVENT_HEADER = 32;
const SUPPORTED_HASHES = [TPM_ALG.SHA1, TPM_ALG.SHA256, TPM_ALG.SHA384, TPM_ALG.SHA512].map((alg) => hashInfo(alg));
/** PCR 0's reset localities: TPM2_Startup at 0 or 3, H-CRTM at 4 (Part 1 §34.3). */
const STARTUP_LOCALITIES = new Set([0, 3, 4]);

export function supportedHash(algorithmId: number): HashInfo | undefined {
  return SUPPORTED_HASHES.find((h) => h.alg === algorithmId);
}

export function parseTcgLog(bytes: Uint8Array, limits: TcgLogLimits = {}): TcgLog {
  const maxBytes = limits.maxBytes ?? DEFAULT_MAX_LOG_BYTES;
  if (bytes.length > maxBytes) {
    throw new ParseError('ERR_EVENTLOG_TOO_LARGE', `event log: ${bytes.length} bytes exceed the limit of ${maxBytes}`);
  }
  const padding = paddingStart(bytes);
  if (padding === 0) {
    throw new ParseError('ERR_EVENTLOG_TRUNCATED', bytes.length === 0 ? 'event log is empty' : `event log: no events, ${bytes.length} bytes of padding`);
  }
  const r = new TpmReader(bytes, 'event log');
  const quirks: string[] = [];

  const first = readEvent(r, 0, () => readSha1Event(r, 0));
  const agile = first.eventType === EV.NO_ACTION && signatureOf(first.data) === SPEC_ID_SIGNATURE;
  let specId: SpecIdEvent | undefined;
  let algorithms: LogAlgorithm[] = [{ algorithmId: TPM_ALG.SHA1, digestSize: SHA1_SIZE, hash: supportedHash(TPM_ALG.SHA1) }];
  const events: TcgEvent[] = [first];
  if (agile) {
    ({ specId, algorithms } = readSpecId(bytes, r, first, quirks));
    events[0] = { ...first, data: bytes.subarray(SHA1_EVENT_HEADER, r.position) };
  }
  const declared = new Map(algorithms.map((a) => [a.algorithmId, a]));
  const locality = new LocalityTracker();
  if (!agile) locality.see(first);

  const maxEvents = limits.maxEvents ?? DEFAULT_MAX_EVENTS;
  while (r.remaining > 0) {
    if (r.position >= padding) {
      // Firmware hands over its whole log area; what follows the last event is 00 or FF fill.
      quirks.push(`${r.remaining} bytes of 0x${bytes[r.position]!.toString(16).padStart(2, '0')} padding after the last event`);
      break;
    }
    if (events.length >= maxEvents) {
      throw new ParseError('ERR_EVENTLOG_TOO_LARGE', `event log: more than ${maxEvents} events`);
    }
    const index = events.length;
    const event = readEvent(r, index, () => (agile ? readAgileEvent(r, index, declared) : readSha1Event(r, index)));
    locality.see(event);
    events.push(event);
  }
  return {
    format: agile ? 'crypto-agile' : 'sha1',
    ...(specId ? { specId } : {}),
    algorithms,
    events,
    startupLocality: locality.value,
    quirks,
  };
}

/** Where a trailing run of 0x00 or 0xFF bytes starts (bytes.length when there is none). */
function paddingStart(bytes: Uint8Array): number {
  const fill = bytes[bytes.length - 1];
  if (fill !== 0x00 && fill !== 0xff) return bytes.length;
  let start = bytes.length;
  while (start > 0 && bytes[start - 1] === fill) start--;
  return start;
}

/** Names the event in any error its reading raises, and gives framing errors the log's code. */
function readEvent<T>(r: TpmReader, index: number, read: () => T): T {
  const offset = r.position;
  try {
    return withCode('ERR_EVENTLOG_TRUNCATED', read);
  } catch (e) {
    if (e instanceof ParseError) throw new ParseError(e.code, `event ${index} at offset ${offset}: ${e.message}`, { cause: e });
    throw e;
  }
}

/** TCG_PCR_EVENT (PFP §10.2.1). */
function readSha1Event(r: TpmReader, index: number): TcgEvent {
  const offset = r.position;
  const pcrIndex = pcr(r.u32le('PCRIndex'));
  const eventType = r.u32le('EventType');
  const digest = r.bytesOf(SHA1_SIZE, 'Digest');
  const data = r.bytesOf(r.u32le('EventSize'), 'Event');
  return { index, offset, pcrIndex, eventType, digests: [{ algorithmId: TPM_ALG.SHA1, hash: SUPPORTED_HASHES[0], digest }], data };
}

/** TCG_PCR_EVENT2 (PFP §10.2.2): each digest's size comes from the Spec ID event, so unknown banks are skippable. */
function readAgileEvent(r: TpmReader, index: number, algorithms: ReadonlyMap<number, LogAlgorithm>): TcgEvent {
  const offset = r.position;
  const pcrIndex = pcr(r.u32le('PCRIndex'));
  const eventType = r.u32le('EventType');
  const count = r.u32le('Digests.count');
  if (count === 0 || count > algorithms.size) {
    throw new ParseError('ERR_EVENTLOG_MALFORMED', `${count} digests, the log declares ${algorithms.size} banks`);
  }
  const digests: EventDigest[] = [];
  for (let i = 0; i < count; i++) {
    const algorithmId = r.u16le('Digests.hashAlg');
    const alg = algorithms.get(algorithmId);
    if (!alg) {
      const name = `0x${algorithmId.toString(16)}`;
      throw new ParseError('ERR_EVENTLOG_UNKNOWN_ALG', `digest algorithm ${name} is not declared by the Spec ID event`);
    }
    if (digests.some((d) => d.algorithmId === algorithmId)) {
      throw new ParseError('ERR_EVENTLOG_MALFORMED', `two digests of algorithm 0x${algorithmId.toString(16)}`);
    }
    digests.push({ algorithmId, ...(alg.hash ? { hash: alg.hash } : {}), digest: r.bytesOf(alg.digestSize, 'Digests.digest') });
  }
  const data = r.bytesOf(r.u32le('EventSize'), 'Event');
  return { index, offset, pcrIndex, eventType, digests, data };
}

function pcr(index: number): number {
  if (index > MAX_PCR_INDEX) throw new ParseError('ERR_EVENTLOG_MALFORMED', `PCR index ${index} exceeds ${MAX_PCR_INDEX}`);
  return index;
}

/**
 * The Spec ID event (PFP §10.4.5.1), read from where its data starts. Its own lengths and
 * EventSize both say where it ends; when they disagree the later end wins and the quirk is
 * reported. A log whose EventSize leaves out the vendor info (specid-vendordata.bin) is so
 * read as tpm2_eventlog reads it: from the structure.
 */
function readSpecId(
  bytes: Uint8Array,
  r: TpmReader,
  first: TcgEvent,
  quirks: string[],
): { specId: SpecIdEvent; algorithms: LogAlgorithm[] } {
  if (first.pcrIndex !== 0 || first.digests[0]!.digest.some((b) => b !== 0)) {
    throw new ParseError('ERR_EVENTLOG_MALFORMED', 'event 0: the Spec ID event must be in PCR 0 with a zero digest');
  }
  const spec = new TpmReader(bytes.subarray(SHA1_EVENT_HEADER), 'Spec ID event');
  const specId = readEvent(spec, 0, () => readSpecIdEvent(spec));
  const structureEnd = SHA1_EVENT_HEADER + spec.position;
  if (spec.position !== first.data.length) {
    quirks.push(`Spec ID event: EventSize is ${first.data.length}, its structure is ${spec.position} bytes`);
  }
  if (structureEnd > r.position) r.bytesOf(structureEnd - r.position, 'Spec ID vendorInfo');
  return { specId, algorithms: checkAlgorithms(specId) };
}

function checkAlgorithms(specId: SpecIdEvent): LogAlgorithm[] {
  if (specId.algorithms.length === 0) throw new ParseError('ERR_EVENTLOG_MALFORMED', 'Spec ID event: no algorithms');
  const seen = new Set<number>();
  return specId.algorithms.map(({ algorithmId, digestSize }) => {
    const hash = supportedHash(algorithmId);
    const name = `0x${algorithmId.toString(16)}`;
    if (seen.has(algorithmId)) throw new ParseError('ERR_EVENTLOG_MALFORMED', `Spec ID event: algorithm ${name} listed twice`);
    seen.add(algorithmId);
    if (digestSize === 0 || (hash && hash.size !== digestSize)) {
      throw new ParseError('ERR_EVENTLOG_MALFORMED', `Spec ID event: algorithm ${hash?.name ?? name} with digest size ${digestSize}`);
    }
    return { algorithmId, digestSize, ...(hash ? { hash } : {}) };
  });
}

/** Finds PCR 0's reset locality while the log is read; it must be known before PCR 0's first extend. */
class LocalityTracker {
  value = 0;
  private decided = false;

  see(event: TcgEvent): void {
    if (event.pcrIndex !== 0) return;
    if (event.eventType === EV.NO_ACTION) {
      const locality = startupLocalityOf(event.data);
      if (locality === undefined) return;
      if (!STARTUP_LOCALITIES.has(locality)) {
        throw new ParseError('ERR_EVENTLOG_MALFORMED', `event ${event.index}: StartupLocality ${locality} is not 0, 3 or 4`);
      }
      this.fix(event, 'StartupLocality', locality);
    } else if (event.eventType === EV.EFI_HCRTM_EVENT) {
      this.fix(event, 'H-CRTM', 4);
    } else {
      this.decided = true;
    }
  }

  /** A second statement of the locality may repeat the first, never change it or come after PCR 0 moved. */
  private fix(event: TcgEvent, what: string, locality: number): void {
    if (this.decided && this.value !== locality) {
      throw new ParseError('ERR_EVENTLOG_MALFORMED', `event ${event.index}: ${what} event after PCR 0's start value was fixed`);
    }
    this.value = locality;
    this.decided = true;
  }
}
