/** Reading CRLs as relying parties do: with OpenSSL. */
import { spawnSync } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

/** What `cmd args` printed, fed `input`; throws when it fails. */
export function spawnText(cmd: string, args: readonly string[], input?: string): string {
  const r = spawnSync(cmd, args, { encoding: 'utf8', ...(input === undefined ? {} : { input }) });
  if (r.status !== 0) throw new Error(`${cmd} failed: ${r.stderr}`);
  return r.stdout;
}

/** OpenSSL's text form of a DER CRL. */
function crlText(der: Buffer): string {
  const dir = mkdtempSync(join(tmpdir(), 'attestor-crl-'));
  try {
    const file = join(dir, 'crl.der');
    writeFileSync(file, der);
    return spawnText('openssl', ['crl', '-inform', 'DER', '-in', file, '-noout', '-text']);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

/** The serials (lower-case hex, no leading zeros) a DER CRL lists. */
export function crlSerials(der: Buffer): string[] {
  return [...crlText(der).matchAll(/Serial Number: ([0-9A-Fa-f]+)/g)].map((m) => m[1]!.toLowerCase().replace(/^0+/, ''));
}

/** The CRL Number of a DER CRL. */
export function crlNumber(der: Buffer): bigint {
  // Decimal, or 0x-prefixed hex for large numbers; BigInt reads both.
  const m = /X509v3 CRL Number:\s*\n\s*(0x[0-9A-Fa-f]+|[0-9]+)/.exec(crlText(der));
  if (!m) throw new Error('the CRL has no CRL Number');
  return BigInt(m[1]!);
}
