import { createHash } from 'node:crypto';
import { EV } from '../src/eventlog/event-types.js';
import { replayTcgLog } from '../src/eventlog/replay.js';
import { parseTcgLog, type TcgLog } from '../src/eventlog/tcg-log.js';
import { TPM_ALG } from '../src/tpm/constants.js';
import type { PcrValues } from '../src/tpm/pcr-selection.js';
import { vector } from './vectors.js';

/** Writes event logs byte by byte as firmware does (PFP §10.2), to build edge cases and tampered logs. */

export interface EventSpec {
  readonly pcr: number;
  readonly type: number;
  readonly data: Uint8Array;
  /** [algorithmId, digest]; by default the hash of `data` in every bank of the log. */
  readonly digests?: ReadonlyArray<readonly [number, Uint8Array]>;
}

export const SHA1_SHA256: ReadonlyArray<readonly [number, number]> = [
  [TPM_ALG.SHA1, 20],
  [TPM_ALG.SHA256, 32],
];

const NAMES: Record<number, string> = { [TPM_ALG.SHA1]: 'sha1', [TPM_ALG.SHA256]: 'sha256', [TPM_ALG.SHA384]: 'sha384', [TPM_ALG.SHA512]: 'sha512' };

export function u32le(v: number): Uint8Array {
  const b = Buffer.alloc(4);
  b.writeUInt32LE(v >>> 0);
  return b;
}

function u16le(v: number): Uint8Array {
  const b = Buffer.alloc(2);
  b.writeUInt16LE(v);
  return b;
}

export function u64le(v: number | bigint): Uint8Array {
  const b = Buffer.alloc(8);
  b.writeBigUInt64LE(BigInt(v));
  return b;
}

export const cat = (...parts: Uint8Array[]): Uint8Array => new Uint8Array(Buffer.concat(parts));

/** TCG_PCR_EVENT: the legacy SHA-1 record, also the form of a crypto-agile log's first event. */
export function sha1Event(e: EventSpec): Uint8Array {
  const digest = e.digests?.[0]?.[1] ?? createHash('sha1').update(e.data).digest();
  return cat(u32le(e.pcr), u32le(e.type), digest, u32le(e.data.length), e.data);
}

/** TCG_EfiSpecIDEventStruct in its TCG_PCR_EVENT (PFP §10.4.5.1). */
export function specIdEvent(algorithms: ReadonlyArray<readonly [number, number]>, vendorInfo = new Uint8Array()): Uint8Array {
  const data = cat(
    Buffer.from('Spec ID Event03\0', 'latin1'),
    u32le(0),
    new Uint8Array([0, 2, 0, 2]),
    u32le(algorithms.length),
    ...algorithms.map(([alg, size]) => cat(u16le(alg), u16le(size))),
    new Uint8Array([vendorInfo.length]),
    vendorInfo,
  );
  return sha1Event({ pcr: 0, type: EV.NO_ACTION, data, digests: [[TPM_ALG.SHA1, new Uint8Array(20)]] });
}

/** TCG_PCR_EVENT2. Digests of banks Node cannot hash are filled with a recognisable pattern. */
export function agileEvent(e: EventSpec, algorithms: ReadonlyArray<readonly [number, number]> = SHA1_SHA256): Uint8Array {
  const digests = e.digests ?? algorithms.map(([alg, size]) => [alg, NAMES[alg] ? createHash(NAMES[alg]).update(e.data).digest() : new Uint8Array(size).fill(0xa5)] as const);
  return cat(
    u32le(e.pcr),
    u32le(e.type),
    u32le(digests.length),
    ...digests.map(([alg, d]) => cat(u16le(alg), d)),
    u32le(e.data.length),
    e.data,
  );
}

export function agileLog(events: readonly EventSpec[], algorithms: ReadonlyArray<readonly [number, number]> = SHA1_SHA256): Uint8Array {
  return cat(specIdEvent(algorithms), ...events.map((e) => agileEvent(e, algorithms)));
}

/** Writes a parsed log again, events possibly edited: the test of a tampered log starts from a real one. */
export function rebuildLog(log: TcgLog, original: Uint8Array, events: readonly EventSpec[]): Uint8Array {
  if (log.format === 'sha1') return cat(...events.map(sha1Event));
  const header = original.subarray(0, log.events[1]?.offset ?? original.length);
  return cat(header, ...events.map((e) => agileEvent(e)));
}

/** The events of a parsed log as specs to edit (the Spec ID event of a crypto-agile log left out). */
export function specsOf(log: TcgLog): EventSpec[] {
  return log.events
    .slice(log.format === 'crypto-agile' ? 1 : 0)
    .map((e) => ({ pcr: e.pcrIndex, type: e.eventType, data: e.data, digests: e.digests.map((d) => [d.algorithmId, d.digest] as const) }));
}

/** UEFI_VARIABLE_DATA (PFP §10.4.6). */
export function variableData(guid: string, name: string, value: Uint8Array): Uint8Array {
  const g = guid.split('-');
  const guidBytes = cat(
    Buffer.from(g[0]!, 'hex').reverse(),
    Buffer.from(g[1]!, 'hex').reverse(),
    Buffer.from(g[2]!, 'hex').reverse(),
    Buffer.from(g[3]! + g[4]!, 'hex'),
  );
  return cat(guidBytes, u64le(name.length), u64le(value.length), Buffer.from(name, 'utf16le'), value);
}

export function hexPcrs(pcrs: PcrValues): Record<string, Record<string, string>> {
  return Object.fromEntries(
    Object.entries(pcrs).map(([bank, v]) => [bank, Object.fromEntries(Object.entries(v).map(([i, d]) => [i, Buffer.from(d).toString('hex')]))]),
  );
}

export const eventlogVector = (name: string): Uint8Array => vector(`eventlog/${name}`);

/** What the PCRs of a TPM that ran the boot a raw log records hold: the tests' quote. */
export const replayedPcrs = (bytes: Uint8Array): PcrValues => replayTcgLog(parseTcgLog(bytes));

/** An image the firmware loaded, as PCR 4 shows it: only its digests (of `image`) tell it apart. */
export function imageEvent(image: string | Uint8Array): EventSpec {
  return {
    pcr: 4,
    type: EV.EFI_BOOT_SERVICES_APPLICATION,
    data: new Uint8Array(32),
    digests: [
      [TPM_ALG.SHA1, createHash('sha1').update(image).digest()],
      [TPM_ALG.SHA256, createHash('sha256').update(image).digest()],
    ],
  };
}
