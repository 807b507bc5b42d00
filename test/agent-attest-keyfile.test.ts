/**
 * key.pem (src/agent/tpm-key-file.ts): the TPM identity key as a "TSS2 PRIVATE KEY" PEM, checked
 * against the TPMKey ASN.1 structure (openssl asn1parse as the reference reader, and a strict
 * DER reader here for the property test), and loaded by OpenSSL's tpm2 provider against the
 * same swtpm, which re-creates the owner SRK for parent 0x40000001: the public key it reads out
 * is the identity key's.
 */
import { spawnSync } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import fc from 'fast-check';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { StateDir } from '../src/agent/state-dir.js';
import { TpmSession } from '../src/agent/tpm-session.js';
import { OWNER_PARENT, tss2PrivateKeyDer, tss2PrivateKeyPem } from '../src/agent/tpm-key-file.js';
import { loadNodeTss } from '../src/agent/tss.js';
import { hex } from '../src/bytes.js';
import { parseTpm2bPublic } from '../src/tpm/public.js';
import { publicKeyOf } from '../src/tpm/public-key.js';
import { startSwtpm, type Swtpm } from './helpers/swtpm.js';

let sw: Swtpm;
let tmp: string;
let blobs: { public: Uint8Array; private: Uint8Array };
let identityPem: string;

beforeAll(async () => {
  sw = await startSwtpm();
  tmp = mkdtempSync(join(tmpdir(), 'attestor-agent-keyfile-'));
  const stateDir = join(tmp, 'state');
  const session = await TpmSession.open({ tcti: sw.tcti, stateDir });
  try {
    const identity = await session.identityKey();
    identityPem = publicKeyOf(parseTpm2bPublic(identity.public)).export({ type: 'spki', format: 'pem' }).toString();
  } finally {
    // swtpm serves one connection at a time: the provider's comes after this one.
    await session.close();
  }
  const dir = await StateDir.open(stateDir, loadNodeTss());
  blobs = (await dir.withLock(() => dir.readKey('identity')))!;
});
afterAll(async () => {
  await sw?.stop();
  if (tmp) rmSync(tmp, { recursive: true, force: true });
});

/** openssl with its tpm2 provider pointed at this test's swtpm (and tpm2-tss' own log off). */
function openssl(args: string[], tss2Log = 'all+none') {
  const env = { ...process.env, TPM2OPENSSL_TCTI: sw.tcti, TSS2_LOG: tss2Log };
  const r = spawnSync('openssl', args, { encoding: 'utf8', env });
  if (r.error) throw r.error;
  return r;
}

function writeKey(name: string, pem: string): string {
  const path = join(tmp, name);
  writeFileSync(path, pem);
  return path;
}

/** A strict DER reader for the test: one TLV at `at`, definite minimal lengths only. */
function readTlv(der: Uint8Array, at: number): { tag: number; value: Uint8Array; end: number } {
  const tag = der[at]!;
  let length = der[at + 1]!;
  let start = at + 2;
  if (length & 0x80) {
    const n = length & 0x7f;
    if (n === 0 || n > 4) throw new Error('unsupported length form');
    length = 0;
    for (let i = 0; i < n; i++) length = length * 256 + der[start + i]!;
    if (length < 0x80 || (n > 1 && der[start] === 0)) throw new Error('non-minimal length');
    start += n;
  }
  if (start + length > der.length) throw new Error('truncated');
  return { tag, value: der.subarray(start, start + length), end: start + length };
}

/** The TPMKey fields, read back from its DER. */
function parseTpmKey(der: Uint8Array) {
  const outer = readTlv(der, 0);
  if (outer.tag !== 0x30 || outer.end !== der.length) throw new Error('not one SEQUENCE');
  const fields: { tag: number; value: Uint8Array }[] = [];
  for (let at = 0; at < outer.value.length; ) {
    const f = readTlv(outer.value, at);
    fields.push(f);
    at = f.end;
  }
  return fields.map((f) => ({ tag: f.tag, hex: hex(f.value) }));
}

describe('key.pem of the TPM identity key', () => {
  it('is the TPMKey structure: loadable-key OID, emptyAuth TRUE, parent 0x40000001, TPM2B_PUBLIC, TPM2B_PRIVATE (openssl asn1parse)', () => {
    const path = writeKey('asn1.pem', tss2PrivateKeyPem(blobs));
    const r = openssl(['asn1parse', '-in', path]);
    expect(r.status, r.stderr).toBe(0);
    const lines = r.stdout.trim().split('\n').map((l) => l.replace(/^\s*\d+:d=/, 'd=').replace(/\s+/g, ' '));
    expect(lines).toEqual([
      expect.stringMatching(/^d=0 hl=\d l= *\d+ cons: SEQUENCE $/),
      expect.stringMatching(/^d=1 hl=2 l= 6 prim: OBJECT :2\.23\.133\.10\.1\.3$/),
      'd=1 hl=2 l= 3 cons: cont [ 0 ] ',
      'd=2 hl=2 l= 1 prim: BOOLEAN :255',
      'd=1 hl=2 l= 4 prim: INTEGER :40000001',
      expect.stringMatching(new RegExp(`^d=1 hl=\\d l= *${blobs.public.length} prim: OCTET STRING \\[HEX DUMP\\]:${hex(blobs.public).toUpperCase()}$`)),
      expect.stringMatching(new RegExp(`^d=1 hl=\\d l= *${blobs.private.length} prim: OCTET STRING \\[HEX DUMP\\]:${hex(blobs.private).toUpperCase()}$`)),
    ]);
    expect(tss2PrivateKeyPem(blobs)).toMatch(/^-----BEGIN TSS2 PRIVATE KEY-----\n([A-Za-z0-9+/=]{64}\n)*[A-Za-z0-9+/=]{1,64}\n-----END TSS2 PRIVATE KEY-----\n$/);
  });

  it("loads in OpenSSL's tpm2 provider against the same TPM, which reads out the identity key's public key", () => {
    const providers = openssl(['list', '-providers', '-provider', 'tpm2']);
    if (providers.status !== 0 || !/tpm2/.test(providers.stdout)) {
      throw new Error(
        `OpenSSL's tpm2 provider cannot be loaded (install tpm2-openssl; scripts/bootstrap.sh does): ${providers.stderr.trim() || providers.stdout.trim()}`,
      );
    }
    const path = writeKey('provider.pem', tss2PrivateKeyPem(blobs));
    const r = openssl(['pkey', '-provider', 'tpm2', '-provider', 'default', '-in', path, '-pubout']);
    expect(r.status, r.stderr).toBe(0);
    expect(r.stdout).toBe(identityPem);
  });

  it('does not load in the provider with a private blob of another key (the TPM checks the pair)', () => {
    const other = { ...blobs, private: Uint8Array.from(blobs.private, (b, i) => (i === blobs.private.length - 1 ? b ^ 1 : b)) };
    const r = openssl(['pkey', '-provider', 'tpm2', '-provider', 'default', '-in', writeKey('tampered.pem', tss2PrivateKeyPem(other)), '-pubout'], 'esys+error');
    expect(r.status).not.toBe(0);
    // TPM_RC_INTEGRITY on TPM2_Load's first parameter: the blob reached the TPM under the right parent, which refused it.
    expect(r.stderr).toMatch(/Esys_Load\(\) Esys Finish ErrorCode \(0x000001df\)/);
  });
});

describe('tss2PrivateKeyDer', () => {
  it('encodes any blobs, short and long lengths alike, so that they read back exactly', () => {
    const blob = fc.uint8Array({ minLength: 0, maxLength: 1200 }).map((b) => new Uint8Array(b));
    fc.assert(
      fc.property(blob, blob, (pub, priv) => {
        const fields = parseTpmKey(tss2PrivateKeyDer({ public: pub, private: priv }));
        expect(fields).toEqual([
          { tag: 0x06, hex: '6781050a0103' },
          { tag: 0xa0, hex: '0101ff' },
          { tag: 0x02, hex: OWNER_PARENT.toString(16).padStart(8, '0') },
          { tag: 0x04, hex: hex(pub) },
          { tag: 0x04, hex: hex(priv) },
        ]);
      }),
      { numRuns: 200 },
    );
  });
});
