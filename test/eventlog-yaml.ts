import { execFileSync } from 'node:child_process';

/*
 * tpm2_eventlog's output is regular YAML in a fixed layout; this reads just that layout
 * (there is no YAML parser among the dependencies), for comparing our parser with it.
 */

export interface YamlEvent {
  num?: number;
  pcr?: number;
  type?: string;
  digests: Array<{ alg: string; digest: string }>;
  size?: number;
  /** `Event: <scalar>` on one line, or the `|-` block below it. */
  inline?: string;
  /** `    Key: value` lines under `Event:` (first occurrence of each key). */
  fields: Map<string, string>;
  /** Every `SignatureData:` value under the event, in order. */
  signatureData: string[];
  /** `    - Boot0001` items of a BootOrder. */
  listItems: string[];
}

/** The events and PCRs of tpm2_eventlog's output; double-quoted scalars may continue over lines with `\` escapes. */
export function readTpm2EventlogYaml(text: string): { events: YamlEvent[]; pcrs: Record<string, Record<string, string>> } {
  const lines = text.split('\n');
  const events: YamlEvent[] = [];
  const pcrs: Record<string, Record<string, string>> = {};
  let current: YamlEvent | undefined;
  let section: 'head' | 'events' | 'pcrs' = 'head';
  let bank = '';
  const start = (): YamlEvent => {
    current = { digests: [], fields: new Map(), signatureData: [], listItems: [] };
    events.push(current);
    return current;
  };
  for (let i = 0; i < lines.length; i++) {
    const line = lines[i]!;
    if (line === 'events:') section = 'events';
    else if (line === 'pcrs:') section = 'pcrs';
    if (section === 'pcrs') {
      const b = /^ {2}(\w+):$/.exec(line);
      if (b) pcrs[(bank = b[1]!)] = {};
      const v = /^ {4}(\d+) *: 0x([0-9a-f]+)$/.exec(line);
      if (v) pcrs[bank]![v[1]!] = v[2]!;
      continue;
    }
    if (section !== 'events') continue;
    let m: RegExpExecArray | null;
    if ((m = /^- EventNum: (\d+)$/.exec(line))) start().num = Number(m[1]);
    else if ((m = /^ {2}PCRIndex: (\d+)$/.exec(line))) ((current?.pcr === undefined ? current : undefined) ?? start()).pcr = Number(m[1]);
    else if ((m = /^ {2}EventType: (\S+)$/.exec(line))) current!.type = m[1];
    else if ((m = /^ {2}Digest: "([0-9a-f]+)"$/.exec(line))) current!.digests.push({ alg: 'sha1', digest: m[1]! });
    else if ((m = /^ {2}- AlgorithmId: (\S+)$/.exec(line))) current!.digests.push({ alg: m[1]!, digest: /^ {4}Digest: "([0-9a-f]+)"$/.exec(lines[++i]!)![1]! });
    else if ((m = /^ {2}EventSize: (\d+)$/.exec(line))) current!.size = Number(m[1]);
    else if (line === '  Event: |-') current!.inline = lines[++i]!.slice(4);
    else if ((m = /^ {2}Event: (.+)$/.exec(line))) current!.inline = unquote(m[1]!);
    else if ((m = /^ +(?:- )?SignatureData: ([0-9a-f]+)$/.exec(line))) current!.signatureData.push(m[1]!);
    else if ((m = /^ {4}- (Boot[0-9A-F]{4})$/.exec(line))) current!.listItems.push(m[1]!);
    else if ((m = /^(?: {4,6}| {2}- )(\w+): (.*)$/.exec(line))) {
      let value = m[2]!;
      // A double-quoted scalar ends at an unescaped quote, possibly lines later.
      while (value.startsWith('"') && !closed(value) && i + 1 < lines.length) value += `\n${lines[++i]!}`;
      if (!current!.fields.has(m[1]!)) current!.fields.set(m[1]!, unquote(value));
    }
  }
  return { events, pcrs };
}

/** Whether a double-quoted scalar has its closing quote (one not escaped by a backslash). */
function closed(value: string): boolean {
  for (let i = 1; i < value.length; i++) {
    if (value[i] === '\\') i++;
    else if (value[i] === '"') return true;
  }
  return false;
}

/** YAML 1.2 double-quoted scalar (§7.3.1) as tpm2_eventlog writes them; single-quoted and plain as is. */
function unquote(raw: string): string {
  if (raw.startsWith("'")) return raw.slice(1, -1).replace(/''/g, "'");
  if (!raw.startsWith('"')) return raw;
  const body = raw.slice(1, raw.lastIndexOf('"'));
  let out = '';
  for (let i = 0; i < body.length; i++) {
    const c = body[i]!;
    if (c === '\n') {
      out += ' ';
      while (body[i + 1] === ' ') i++;
    } else if (c !== '\\') {
      out += c;
    } else {
      const e = body[++i]!;
      if (e === '\n') {
        while (body[i + 1] === ' ') i++;
      } else if (e === 'x') {
        out += String.fromCharCode(parseInt(body.slice(i + 1, i + 3), 16));
        i += 2;
      } else {
        out += ({ '0': '\0', n: '\n', t: '\t', r: '\r', '"': '"', '\\': '\\', '/': '/', ' ': ' ' } as Record<string, string>)[e] ?? `\\${e}`;
      }
    }
  }
  return out;
}


/** Runs the installed tpm2_eventlog (tpm2-tools) on a log file and reads its output. */
export function runTpm2Eventlog(file: string): ReturnType<typeof readTpm2EventlogYaml> {
  return readTpm2EventlogYaml(execFileSync('tpm2_eventlog', [file], { encoding: 'latin1', stdio: ['ignore', 'pipe', 'ignore'] }));
}
