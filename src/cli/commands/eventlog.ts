import { Command } from 'commander';
import { hex } from '../../bytes.js';
import { decodeEventData, type EventData } from '../../eventlog/event-data.js';
import { eventTypeName } from '../../eventlog/event-types.js';
import { deriveEventlogFacts, formatDigests, type EventlogFacts } from '../../eventlog/facts.js';
import { replayTcgLog } from '../../eventlog/replay.js';
import { parseTcgLog, supportedHash, type TcgLog } from '../../eventlog/tcg-log.js';
import type { PcrValues } from '../../tpm/pcr-selection.js';
import { readInput, type CliIo } from '../io.js';

/*
 * `attestor eventlog replay FILE [--json]` and `attestor eventlog show FILE [--json]` for a
 * UEFI measured-boot log (/sys/kernel/security/tpm0/binary_bios_measurements). A malformed
 * log throws a ParseError, which the program prints as `error: <CODE>: <message>` with exit
 * status 1; a missing or unreadable FILE is a usage error (status 2).
 */

interface Options {
  json?: boolean;
}

export function eventlogCommand(io: CliIo): Command {
  const eventlog = new Command('eventlog').description('UEFI measured-boot event logs (TCG PC Client, SHA-1 and crypto-agile)');
  /** Both subcommands read and replay FILE, then print their own view of it. */
  type Print = (log: TcgLog, pcrs: PcrValues, json: boolean) => string;
  const subcommand = (name: string, description: string, json: string, print: Print): void => {
    eventlog
      .command(name)
      .description(description)
      .argument('<file>', 'event log (binary_bios_measurements)')
      .option('--json', json)
      .action((file: string, opts: Options) => {
        const log = parseTcgLog(readInput(file, 'FILE'));
        io.out(print(log, replayTcgLog(log), opts.json === true));
      });
  };
  const replayJson = 'print {"pcrs": {"<bank>": {"<index>": "<hex>"}}}';
  subcommand('replay', 'replay the log: the PCR values its digests produce, per bank', replayJson, (log, pcrs, json) =>
    json ? `${JSON.stringify({ format: log.format, pcrs: pcrsJson(pcrs), quirks: log.quirks })}\n` : pcrsText(pcrs),
  );
  const showHelp = 'list the events decoded, the replayed PCRs and the facts the log claims';
  subcommand('show', showHelp, 'print the events, PCRs and facts as JSON', (log, pcrs, json) => {
    // No quote here: every replayed PCR counts as verified, so the facts are the log's claims.
    const facts = deriveEventlogFacts(log, Object.fromEntries(Object.entries(pcrs).map(([bank, v]) => [bank, Object.keys(v).map(Number)])));
    return json ? `${JSON.stringify(showJson(log, pcrs, facts), jsonBytes)}\n` : showText(log, pcrs, facts);
  });
  return eventlog;
}

function pcrsJson(pcrs: PcrValues): Record<string, Record<string, string>> {
  const bankJson = (v: PcrValues[string]) => Object.fromEntries(Object.entries(v).map(([i, d]) => [i, hex(d)]));
  return Object.fromEntries(Object.entries(pcrs).map(([bank, v]) => [bank, bankJson(v)]));
}

/** tpm2_eventlog's layout, so the two can be compared by eye. */
function pcrsText(pcrs: PcrValues): string {
  return Object.entries(pcrsJson(pcrs))
    .map(([bank, v]) => `${bank}:\n${Object.entries(v).map(([i, d]) => `  ${i.padEnd(2)} : 0x${d}\n`).join('')}`)
    .join('');
}

function showJson(log: TcgLog, pcrs: PcrValues, facts: EventlogFacts): unknown {
  return {
    format: log.format,
    algorithms: log.algorithms.map((a) => ({ algorithmId: a.algorithmId, name: algorithmName(a.algorithmId), digestSize: a.digestSize })),
    startupLocality: log.startupLocality,
    quirks: log.quirks,
    events: log.events.map((e) => ({
      index: e.index,
      pcr: e.pcrIndex,
      type: e.eventType,
      typeName: eventTypeName(e.eventType),
      digests: Object.fromEntries(e.digests.map((d) => [algorithmName(d.algorithmId), hex(d.digest)])),
      size: e.data.length,
      data: decodeEventData(e.eventType, e.data),
    })),
    pcrs: pcrsJson(pcrs),
    facts,
  };
}

/** JSON has no bytes or bigints: bytes become hex, addresses 0x-hex. */
function jsonBytes(_key: string, value: unknown): unknown {
  if (value instanceof Uint8Array) return hex(value);
  if (typeof value === 'bigint') return `0x${value.toString(16)}`;
  return value;
}

function showText(log: TcgLog, pcrs: PcrValues, facts: EventlogFacts): string {
  const banks = log.algorithms.map((a) => algorithmName(a.algorithmId)).join(' ');
  const lines = [`${log.format} event log, ${log.events.length} events, banks ${banks}`];
  if (log.startupLocality !== 0) lines.push(`PCR 0 starts at locality ${log.startupLocality}`);
  for (const quirk of log.quirks) lines.push(`note: ${quirk}`);
  for (const e of log.events) {
    lines.push(`#${e.index} PCR ${e.pcrIndex} ${eventTypeName(e.eventType)} (${e.data.length} bytes)`);
    for (const d of e.digests) lines.push(`    ${algorithmName(d.algorithmId).padEnd(6)} ${hex(d.digest)}`);
    lines.push(`    ${summarize(decodeEventData(e.eventType, e.data))}`);
  }
  lines.push('', 'replayed PCRs:', pcrsText(pcrs).trimEnd(), '');
  lines.push('facts (as the log claims them; a verifier trusts them only where a quote matches the replay):');
  lines.push(`  secure boot: ${facts.secureBoot.state} (${facts.secureBoot.detail})`);
  for (const db of facts.signatureDatabases) {
    lines.push(`  ${db.name}: event ${db.event}, ${db.entries.length} entries, ${formatDigests(db.digests)}`);
  }
  for (const c of facts.bootComponents) {
    lines.push(`  boot component ${c.position}: event ${c.event}, ${c.label}, ${formatDigests(c.digests)}`);
  }
  for (const f of facts.bootFiles) lines.push(`  boot file: event ${f.event}, ${f.label}, ${formatDigests(f.digests)}`);
  for (const k of facts.kernelCmdlines) lines.push(`  kernel command line (${k.source}, PCR ${k.pcr}, event ${k.event}): ${k.cmdline}`);
  for (const u of facts.unprovenCmdlineEvents) lines.push(`  unproven: PCR ${u.pcr} event ${u.event} (${u.label}): its digest is not the hash of its data`);
  return `${lines.join('\n')}\n`;
}

/** The bank's name, or the TPM_ALG_ID in hex for a bank Attestor does not hash. */
function algorithmName(algorithmId: number): string {
  return supportedHash(algorithmId)?.name ?? `0x${algorithmId.toString(16).padStart(4, '0')}`;
}

const SHOWN_BYTES = 48;

function shortHex(b: Uint8Array): string {
  return b.length > SHOWN_BYTES ? `${hex(b.subarray(0, SHOWN_BYTES))}... (${b.length} bytes)` : hex(b);
}

/** One line a person can read for each kind of event data. */
function summarize(data: EventData): string {
  switch (data.kind) {
    case 'spec-id':
      return (
        `${data.signature}: ${data.algorithms.map((a) => `${algorithmName(a.algorithmId)}/${a.digestSize}`).join(' ')}` +
        (data.vendorInfo.length ? ` vendor ${hex(data.vendorInfo)}` : '')
      );
    case 'startup-locality':
      return `StartupLocality ${data.locality}`;
    case 'no-action':
      return `"${data.signature}"`;
    case 'separator':
      return `separator 0x${data.value.toString(16).padStart(8, '0')}`;
    case 'text':
      return JSON.stringify(data.text);
    case 'firmware-blob':
      return (
        (data.description ? `${JSON.stringify(data.description)} ` : '') +
        `base 0x${data.base.toString(16)} length 0x${data.length.toString(16)}`
      );
    case 'variable':
      return `${data.name} (${data.guid}) = ${variableSummary(data)}`;
    case 'image-load':
      return `image at 0x${data.imageLocationInMemory.toString(16)}, ${data.imageLengthInMemory} bytes${imagePath(data)}`;
    case 'gpt':
      return `GPT disk ${data.diskGuid}: ${data.partitions.map((p) => JSON.stringify(p.name)).join(', ')}`;
    case 'handoff-tables':
      return `${data.tables.length} configuration tables: ${data.tables.map((t) => t.guid).join(', ')}`;
    case 'tagged':
      return `tag 0x${data.id.toString(16)}: ${data.text === undefined ? shortHex(data.data) : JSON.stringify(data.text)}`;
    case 'raw':
      return `${shortHex(data.bytes)}${data.error ? ` (not decoded: ${data.error})` : ''}`;
  }
}

function imagePath(data: Extract<EventData, { kind: 'image-load' }>): string {
  if (data.devicePath) return `, ${data.devicePath.text}`;
  return data.devicePathBytes.length ? `, path ${shortHex(data.devicePathBytes)}` : '';
}

function variableSummary(data: Extract<EventData, { kind: 'variable' }>): string {
  const v = data.value;
  switch (v.kind) {
    case 'signature-lists':
      return v.lists.map((l) => `${l.entries.length} ${l.type}`).join(', ') || 'empty';
    case 'signature':
      return `${v.entry.owner}: ${shortHex(v.entry.data)}`;
    case 'boot-order':
      return v.order.map((n) => `Boot${n.toString(16).toUpperCase().padStart(4, '0')}`).join(',');
    case 'load-option':
      return `${JSON.stringify(v.option.description)}${v.option.active ? '' : ' (inactive)'}${v.path ? ` ${v.path.text}` : ''}`;
    case 'bytes':
      return `${data.data.length ? shortHex(data.data) : 'empty'}${v.error ? ` (not decoded: ${v.error})` : ''}`;
  }
}
