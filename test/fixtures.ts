import { readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';

/** The swtpm fixtures made by scripts/make-fixtures.sh, with their manifest. */
export const swtpmFixturesDir = fileURLToPath(new URL('../fixtures/swtpm/', import.meta.url));

export interface FixtureDir {
  ak: { pub: string; pem: string; name: string; nameHex: string; scheme: string };
  quote: { msg: string; sig: string; pcrs: string; nonce: string; selection: string };
  certify?: {
    key: { pub: string; nameHex: string };
    msg: string;
    sig: string;
    qualifyingData: string;
    expect?: string;
  };
  [more: string]: unknown;
}

export const manifest = JSON.parse(readFileSync(`${swtpmFixturesDir}manifest.json`, 'utf8')) as {
  pcrValues: Record<string, Record<string, string>>;
  dirs: Record<string, FixtureDir>;
};

export function fixture(path: string): Uint8Array {
  return new Uint8Array(readFileSync(`${swtpmFixturesDir}${path}`));
}

export const fixturePath = (path: string): string => `${swtpmFixturesDir}${path}`;
