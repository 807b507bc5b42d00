import { createHash } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { vectorsDir } from '../vectors.js';

/*
 * An independent, deliberately naive formulation of the kernel's IMA rules, written straight
 * from ima_fs.c / ima_crypto.c / ima_template_lib.c without the project's parser: the tests
 * compare the project's parser and replay against it.
 */

export const imaVectorPath = `${vectorsDir}/ima/ascii_runtime_measurements`;

export function imaVector(): Buffer {
  return readFileSync(imaVectorPath);
}

function le32(n: number): Buffer {
  const b = Buffer.alloc(4);
  b.writeUInt32LE(n);
  return b;
}

/** The kernel's field data for one ASCII token of the given field id. */
function fieldData(id: string, token: string): Buffer {
  if (id === 'd-ng') {
    const [algo, hex] = token.split(':') as [string, string];
    return Buffer.concat([Buffer.from(`${algo}:\0`, 'latin1'), Buffer.from(hex, 'hex')]);
  }
  if (id === 'n-ng' || id === 'n') return Buffer.from(`${token}\0`, 'latin1');
  return Buffer.from(token, 'hex');
}

const FIELDS: Record<string, string[]> = {
  ima: ['d', 'n'],
  'ima-ng': ['d-ng', 'n-ng'],
  'ima-sig': ['d-ng', 'n-ng', 'sig'],
  'ima-buf': ['d-ng', 'n-ng', 'buf'],
};

interface RefLine {
  pcr: number;
  templateHash: Buffer;
  template: string;
  fields: Buffer[];
}

function refLines(ascii: Buffer): RefLine[] {
  const text = ascii.toString('latin1');
  return text
    .split('\n')
    .slice(0, -1)
    .map((line) => {
      const parts = line.trimStart().split(' ');
      const template = parts[2] as string;
      const ids = FIELDS[template] as string[];
      return {
        pcr: Number(parts[0]),
        templateHash: Buffer.from(parts[1] as string, 'hex'),
        template,
        fields: ids.map((id, i) => fieldData(id, parts[3 + i] as string)),
      };
    });
}

function hashed(line: RefLine): Buffer {
  if (line.template === 'ima') {
    const name = Buffer.alloc(256);
    (line.fields[1] as Buffer).copy(name);
    return Buffer.concat([line.fields[0] as Buffer, name]);
  }
  return Buffer.concat(line.fields.flatMap((f) => [le32(f.length), f]));
}

/** Per-bank digests each line extends, as the kernel computes them (pre-5.11 when `padded`). */
export function referenceDigests(ascii: Buffer, padded = false): { pcr: number; sha1: Buffer; sha256: Buffer }[] {
  return refLines(ascii).map((line) => {
    const violation = line.templateHash.equals(Buffer.alloc(20));
    const data = hashed(line);
    const sha1 = violation ? Buffer.alloc(20, 0xff) : createHash('sha1').update(data).digest();
    if (!violation && !sha1.equals(line.templateHash)) throw new Error('reference: template hash mismatch');
    let sha256: Buffer;
    if (padded) sha256 = Buffer.concat([sha1, Buffer.alloc(12)]);
    else sha256 = violation ? Buffer.alloc(32, 0xff) : createHash('sha256').update(data).digest();
    return { pcr: line.pcr, sha1, sha256 };
  });
}

/** PCR values (hex per bank and index) replayed straight from ASCII text. */
export function referenceReplay(ascii: Buffer, padded = false): { sha1: Record<string, string>; sha256: Record<string, string> } {
  const pcrs = new Map<number, { sha1: Buffer; sha256: Buffer }>([[10, { sha1: Buffer.alloc(20), sha256: Buffer.alloc(32) }]]);
  for (const d of referenceDigests(ascii, padded)) {
    const pcr = pcrs.get(d.pcr) ?? { sha1: Buffer.alloc(20), sha256: Buffer.alloc(32) };
    pcr.sha1 = createHash('sha1').update(pcr.sha1).update(d.sha1).digest();
    pcr.sha256 = createHash('sha256').update(pcr.sha256).update(d.sha256).digest();
    pcrs.set(d.pcr, pcr);
  }
  const out = { sha1: {} as Record<string, string>, sha256: {} as Record<string, string> };
  for (const [i, v] of pcrs) {
    out.sha1[i] = v.sha1.toString('hex');
    out.sha256[i] = v.sha256.toString('hex');
  }
  return out;
}

/** PCR 10 after each prefix of a list whose entries all extend PCR 10: element i is after i entries. */
export function referencePcr10Prefixes(ascii: Buffer): { sha1: Buffer; sha256: Buffer }[] {
  const out = [{ sha1: Buffer.alloc(20), sha256: Buffer.alloc(32) }];
  for (const d of referenceDigests(ascii)) {
    const last = out[out.length - 1] as { sha1: Buffer; sha256: Buffer };
    out.push({
      sha1: createHash('sha1').update(last.sha1).update(d.sha1).digest(),
      sha256: createHash('sha256').update(last.sha256).update(d.sha256).digest(),
    });
  }
  return out;
}

/** binary_runtime_measurements written straight from ASCII text. */
export function referenceBinary(ascii: Buffer): Buffer {
  const out: Buffer[] = [];
  for (const line of refLines(ascii)) {
    out.push(le32(line.pcr), line.templateHash, le32(line.template.length), Buffer.from(line.template));
    if (line.template === 'ima') {
      const name = (line.fields[1] as Buffer).subarray(0, -1);
      out.push(line.fields[0] as Buffer, le32(name.length), name);
    } else {
      const data = Buffer.concat(line.fields.flatMap((f) => [le32(f.length), f]));
      out.push(le32(data.length), data);
    }
  }
  return Buffer.concat(out);
}

const HASH_ALGO_ID: Record<string, number> = { sha1: 2, sha256: 4, sha384: 5, sha512: 6, sha224: 7, sm3: 17 };

/** security.ima digsig v2 as ima-evm-utils writes it: 03 02 algo keyid(4) size(be16) sig. */
export function imaSignatureHeader(algo: string, keyIdHex: string, signature: Uint8Array): Buffer {
  const header = Buffer.alloc(9);
  header[0] = 0x03;
  header[1] = 0x02;
  header[2] = HASH_ALGO_ID[algo] as number;
  Buffer.from(keyIdHex, 'hex').copy(header, 3);
  header.writeUInt16BE(signature.length, 7);
  return Buffer.concat([header, signature]);
}
