/**
 * The node-tss addon (native/) through its TS wrapper (src/agent/tss.ts), every call against a
 * real swtpm, each result checked against tpm2-tools on the same TPM or against src/tpm/.
 */
import { createHash, randomBytes } from 'node:crypto';
import { spawn } from 'node:child_process';
import { readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import '../src/reflect-metadata.js';
import * as x509 from '@peculiar/x509';
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import { SerialQueue } from '../src/serial-queue.js';
import { Tpm, TssError, formatOneError, loadNodeTss, openTpm, type Handle, type NativeTpm } from '../src/agent/tss.js';
import { marshalPcrSelection } from '../src/agent/tpm-marshal.js';
import { parseCapabilityData, TPM_CAP, TPM_PT } from '../src/tpm/capability.js';
import { TpmWriter } from '../src/tpm/writer.js';
import { akTemplate, ekTemplate, identityKeyTemplate, srkTemplate, type KeyType } from '../src/agent/tpm-templates.js';
import { verifyCertify } from '../src/appraisal/verify-certify.js';
import { verifyQuote } from '../src/appraisal/verify-quote.js';
import { hex } from '../src/bytes.js';
import type { ErrorCode } from '../src/errors.js';
import { parseAttest } from '../src/tpm/attest.js';
import { EK_CERT_NV, TPMA_OBJECT } from '../src/tpm/constants.js';
import { parseCredentialFile } from '../src/tpm/credential-file.js';
import { makeCredential } from '../src/tpm/make-credential.js';
import { objectName } from '../src/tpm/name.js';
import { publicKeyOf } from '../src/tpm/public-key.js';
import { parseTpm2bPublic } from '../src/tpm/public.js';
import { parseSignature } from '../src/tpm/signature.js';
import { verifyTpmSignature } from '../src/tpm/verify-signature.js';
import { freePortPair, hexHandle, startSwtpm, tpm2, transientHandles, type Swtpm } from './helpers/swtpm.js';
import { rejection } from './helpers/rejection.js';

const ADDON = new URL('../native/build/Release/node_tss.node', import.meta.url);

let sw: Swtpm;
let tpm: Tpm;
beforeAll(async () => {
  sw = await startSwtpm();
  tpm = await openTpm(sw.tcti);
});
afterAll(async () => {
  await tpm?.close();
  await sw?.stop();
});

async function expectTssError(p: Promise<unknown>, code: ErrorCode, command: string, rc: number, rcText: RegExp): Promise<void> {
  const e = await rejection(p, code);
  expect(e).toBeInstanceOf(TssError);
  const t = e as TssError;
  expect(t.command).toBe(command);
  expect(t.rc).toBe(rc);
  expect(t.rcText).toMatch(rcText);
  expect(t.message).toContain(command);
  expect(t.message).toContain(t.rcText);
}

async function scratch(name: string, bytes: Uint8Array): Promise<string> {
  await writeFile(join(sw.dir, name), bytes);
  return name;
}

/** A line `NAME:\n  raw: 0x...` of `tpm2_getcap properties-fixed`. */
function rawProperty(getcap: string, name: string): number {
  const m = new RegExp(`${name}:\\s*\\n\\s*raw: (0x[0-9A-Fa-f]+)`).exec(getcap);
  if (!m?.[1]) throw new Error(`${name} not in tpm2_getcap output`);
  return Number(m[1]);
}

describe('loading the addon and opening a TPM', () => {
  it('says how to build the addon when it is missing', () => {
    const missing = pathToFileURL(join(sw.dir, 'no-build', 'node_tss.node'));
    expect(() => loadNodeTss(missing)).toThrow(expect.objectContaining({ code: 'ERR_TSS_UNAVAILABLE' }));
    expect(() => loadNodeTss(missing)).toThrow(/apt-get install libtss2-dev pkg-config, then npm run build:native/);
  });

  it('loads the built addon once and reuses it', () => {
    expect(loadNodeTss()).toBe(loadNodeTss());
    expect(typeof loadNodeTss().NativeTpm).toBe('function');
  });

  it("turns tpm2-tss' own stderr log off when it loads the addon, unless TSS2_LOG is set", async () => {
    const saved = process.env.TSS2_LOG;
    const loadFresh = async () => {
      vi.resetModules();
      (await import('../src/agent/tss.js')).loadNodeTss();
    };
    try {
      delete process.env.TSS2_LOG;
      await loadFresh();
      expect(process.env.TSS2_LOG).toBe('all+none');
      process.env.TSS2_LOG = 'esys+debug';
      await loadFresh();
      expect(process.env.TSS2_LOG).toBe('esys+debug');
    } finally {
      if (saved === undefined) delete process.env.TSS2_LOG;
      else process.env.TSS2_LOG = saved;
    }
  });

  it.each([
    ['an unknown TCTI', 'nosuchtcti:foo', 0x000a0015, /not supported/i],
    ['a malformed swtpm configuration', 'swtpm:host=127.0.0.1,port=notaport', 0x000a000b, /bad value/i],
  ])('refuses %s with ERR_TSS_TCTI', async (_label, tcti, rc, text) => {
    await expectTssError(openTpm(tcti), 'ERR_TSS_TCTI', 'Tss2_TctiLdr_Initialize', rc, text);
  });

  it('reports a TPM nobody listens for as ERR_TSS_UNREACHABLE', async () => {
    const [port] = await freePortPair();
    const tcti = `swtpm:host=127.0.0.1,port=${port}`;
    await expectTssError(openTpm(tcti), 'ERR_TSS_UNREACHABLE', 'Tss2_TctiLdr_Initialize', 0x000a000a, /IO failure/);
  });

  it('reports a TPM that went away after open as ERR_TSS_UNREACHABLE', async () => {
    const other = await startSwtpm({ pcrBanks: 'sha256' });
    const gone = await openTpm(other.tcti);
    try {
      expect((await gone.getRandom(8)).length).toBe(8);
      await other.stop();
      await expectTssError(gone.getRandom(8), 'ERR_TSS_UNREACHABLE', 'Esys_GetRandom', 0x000a000a, /IO failure/);
    } finally {
      await gone.close();
      await other.stop();
    }
  });

  it('gives up a TPM that stops answering after the timeout (ERR_TSS_UNREACHABLE), then fails at once', async () => {
    const hung = await startSwtpm({ pcrBanks: 'sha256' });
    const t = await openTpm(hung.tcti, { timeoutMs: 1000 });
    try {
      expect((await t.getRandom(8)).length).toBe(8);
      process.kill(hung.pid, 'SIGSTOP');
      try {
        let started = Date.now();
        const e = await rejection(t.getRandom(8), 'ERR_TSS_UNREACHABLE');
        expect(Date.now() - started).toBeGreaterThanOrEqual(950);
        expect(e).toMatchObject({ command: 'Esys_GetRandom', rc: 0x000a000a, timedOut: true });
        expect(e.message).toContain('no answer within 1000 ms');
        started = Date.now();
        const again = await rejection(t.getRandom(8), 'ERR_TSS_UNREACHABLE');
        expect(Date.now() - started).toBeLessThan(500);
        expect(again.message).toContain('was given up when Esys_GetRandom got no answer within 1000 ms');
        // Opening it again is bounded too (the swtpm TCTI talks to swtpm while it loads).
        started = Date.now();
        const open = await rejection(openTpm(hung.tcti, { timeoutMs: 300 }), 'ERR_TSS_UNREACHABLE');
        expect(Date.now() - started).toBeLessThan(2000);
        expect(open).toMatchObject({ command: 'Tss2_TctiLdr_Initialize', timedOut: true });
        await t.close();
      } finally {
        process.kill(hung.pid, 'SIGCONT');
      }
      // Once it answers again, a new connection works.
      const fresh = await openTpm(hung.tcti, { timeoutMs: 10_000 });
      expect((await fresh.getRandom(8)).length).toBe(8);
      await fresh.close();
    } finally {
      await t.close();
      await hung.stop();
    }
  });

  it('close() queued behind createPrimary() or load() still flushes their objects', async () => {
    const t = await openTpm(sw.tcti);
    const primary = t.createPrimary('owner', srkTemplate('ecc'));
    const closed = t.close();
    await primary;
    await closed;
    expect(await transientHandles(sw)).toBe('');

    const u = await openTpm(sw.tcti);
    const srk = await u.createPrimary('owner', srkTemplate('ecc'));
    const blobs = await u.create(srk.handle, akTemplate('ecc'));
    await u.flushContext(srk.handle);
    const parent = await u.createPrimary('owner', srkTemplate('ecc'));
    const loaded = u.load(parent.handle, blobs.private, blobs.public);
    const closedToo = u.close();
    await loaded;
    await closedToo;
    expect(await transientHandles(sw)).toBe('');
  });

  it('refuses calls after close() with ERR_TSS_CLOSED; close() is idempotent', async () => {
    const t = await openTpm(sw.tcti);
    const srk = await t.createPrimary('owner', srkTemplate('ecc'));
    await t.close();
    await t.close();
    await rejection(t.getRandom(8), 'ERR_TSS_CLOSED');
    await rejection(t.readPublic(srk.handle), 'ERR_TSS_CLOSED');
    // close() flushed what this Tpm had loaded.
    expect(await transientHandles(sw)).toBe('');
  });

  it('frees the TCTI and ESYS context of a Tpm that is garbage-collected without close()', async () => {
    // The cmd TCTI holds two pipes and a child process per context, so a leak shows as file descriptors.
    const script = `
      import { createRequire } from 'node:module';
      import { readdirSync } from 'node:fs';
      const { NativeTpm } = createRequire(import.meta.url)(${JSON.stringify(fileURLToPath(ADDON))});
      const fds = () => readdirSync('/proc/self/fd').length;
      const before = fds();
      let open = [];
      for (let i = 0; i < 40; i++) { const t = new NativeTpm(); await t.open('cmd:cat', 30000); open.push(t); }
      const during = fds();
      open = null;
      for (let i = 0; i < 5; i++) { gc(); await new Promise((r) => setTimeout(r, 20)); }
      console.log(JSON.stringify({ before, during, after: fds() }));`;
    const out = await new Promise<string>((resolve, reject) => {
      const child = spawn(process.execPath, ['--expose-gc', '--input-type=module', '-e', script], { stdio: ['ignore', 'pipe', 'inherit'] });
      let stdout = '';
      child.stdout.on('data', (d: Buffer) => (stdout += d.toString()));
      child.once('error', reject);
      child.once('close', (code) => (code === 0 ? resolve(stdout) : reject(new Error(`child exited ${code}`))));
    });
    const { before, during, after } = JSON.parse(out) as { before: number; during: number; after: number };
    expect(during - before).toBeGreaterThanOrEqual(80);
    expect(after - before).toBeLessThan(8);
  });
});

describe('capabilities and random numbers', () => {
  it('getRandom returns the requested number of fresh bytes, over several TPM calls', async () => {
    const a = await tpm.getRandom(100);
    const b = await tpm.getRandom(100);
    expect(a.length).toBe(100);
    expect(b.length).toBe(100);
    expect(hex(a)).not.toBe(hex(b));
  });

  it('reports the manufacturer and firmware as tpm2_getcap does', async () => {
    const props = await tpm.getProperties(TPM_PT.FAMILY_INDICATOR, 32);
    const getcap = (await tpm2(sw, ['tpm2_getcap', 'properties-fixed'])).stdout.toString();
    expect(props.get(TPM_PT.MANUFACTURER)).toBe(rawProperty(getcap, 'TPM2_PT_MANUFACTURER'));
    expect(props.get(TPM_PT.FIRMWARE_VERSION_1)).toBe(rawProperty(getcap, 'TPM2_PT_FIRMWARE_VERSION_1'));
    expect(props.get(TPM_PT.FIRMWARE_VERSION_2)).toBe(rawProperty(getcap, 'TPM2_PT_FIRMWARE_VERSION_2'));
    expect(Buffer.from(props.get(TPM_PT.MANUFACTURER)!.toString(16), 'hex').toString('latin1')).toMatch(/^IBM/);
  });

  it('getCapability returns the marshalled TPMS_CAPABILITY_DATA and moreData', async () => {
    const first = await tpm.getCapability(TPM_CAP.TPM_PROPERTIES, TPM_PT.FAMILY_INDICATOR, 2);
    expect(first.moreData).toBe(true);
    const parsed = parseCapabilityData(first.data);
    expect(parsed.capability).toBe(TPM_CAP.TPM_PROPERTIES);
    expect(parsed.capability === TPM_CAP.TPM_PROPERTIES && [...parsed.properties.keys()]).toEqual([0x100, 0x101]);
  });

  it('lists the allocated PCR banks as tpm2_getcap pcrs does', async () => {
    const banks = await tpm.getPcrBanks();
    const all = Array.from({ length: 24 }, (_, i) => i);
    expect(banks.map((b) => ({ bank: b.hash.name, pcrs: b.pcrs }))).toEqual([
      { bank: 'sha1', pcrs: all },
      { bank: 'sha256', pcrs: all },
    ]);
    const getcap = (await tpm2(sw, ['tpm2_getcap', 'pcrs'])).stdout.toString();
    for (const b of banks) expect(getcap).toContain(`${b.hash.name}: [ ${b.pcrs.join(', ')} ]`);
  });

  it('lists the NV indexes, including both EK certificates, however few the TPM returns per call', async () => {
    const tools = (await tpm2(sw, ['tpm2_getcap', 'handles-nv-index'])).stdout.toString();
    const expected = tools.trim().split('\n').map((line) => Number(line.replace(/^- /, '')));
    expect(expected.length).toBeGreaterThanOrEqual(3);
    expect(await tpm.getHandles(0x01000000)).toEqual(expected);
    // One handle per TPM2_GetCapability: the rest come from following moreData.
    expect(await tpm.getHandles(0x01000000, 1)).toEqual(expected);
    expect(expected).toEqual(expect.arrayContaining([EK_CERT_NV.rsa2048, EK_CERT_NV.eccP256]));
  });

  it('refuses a TPM that answers moreData with handles it already gave (ERR_TSS_COMMAND), instead of looping', async () => {
    const stuck = {
      getCapability: async () => ({ moreData: 1, data: Buffer.from(new TpmWriter().u32(TPM_CAP.HANDLES).u32(1).u32(0x01000005).finish()) }),
    } as unknown as NativeTpm;
    await rejection(new Tpm(stuck, 'stuck').getHandles(0x01000000, 1), 'ERR_TSS_COMMAND');
  });
});

describe('NV storage', () => {
  it.each([
    ['RSA', EK_CERT_NV.rsa2048],
    ['ECC', EK_CERT_NV.eccP256],
  ])('reads the %s EK certificate as tpm2_nvread does, issued by the swtpm CA', async (_label, index) => {
    const pub = await tpm.nvReadPublic(index);
    expect(pub.nvIndex).toBe(index);
    // The Name of an NV index is nameAlg || H(TPMS_NV_PUBLIC) (Part 1 §16).
    const inner = pub.bytes.subarray(2);
    expect(hex(pub.name)).toBe(`000b${createHash('sha256').update(inner).digest('hex')}`);

    const cert = await tpm.nvRead(index);
    expect(cert.length).toBe(pub.dataSize);
    const tools = (await tpm2(sw, ['tpm2_nvread', hexHandle(index), '-C', 'o'])).stdout;
    expect(hex(cert)).toBe(hex(tools));

    const parsed = new x509.X509Certificate(cert);
    const ca = new x509.X509Certificate(sw.caCertPem);
    expect(parsed.issuer).toBe(ca.subject);
    expect(await parsed.verify({ publicKey: ca, signatureOnly: true })).toBe(true);
    const root = new x509.X509Certificate(sw.rootCaCertPem);
    expect(await parsed.verify({ publicKey: root, signatureOnly: true })).toBe(false);
  });

  it('reads an index larger than TPM_PT_NV_BUFFER_MAX in chunks, whole or in part, with owner or index auth', async () => {
    const index = 0x01500017;
    const data = randomBytes(2000);
    const nvMax = (await tpm.getProperties(TPM_PT.NV_BUFFER_MAX, 1)).get(TPM_PT.NV_BUFFER_MAX)!;
    expect(data.length).toBeGreaterThan(nvMax);
    await tpm2(sw, ['tpm2_nvdefine', hexHandle(index), '-C', 'o', '-s', String(data.length), '-a', 'ownerread|ownerwrite|authread|authwrite']);
    try {
      await tpm2(sw, ['tpm2_nvwrite', hexHandle(index), '-C', 'o', '-i', await scratch('nv.bin', data)]);
      expect(hex(await tpm.nvRead(index))).toBe(hex(data));
      expect(hex(await tpm.nvRead(index, { offset: 500, size: 1400, auth: 'owner' }))).toBe(hex(data.subarray(500, 1900)));
      expect(hex(await tpm.nvRead(index, { offset: 1990 }))).toBe(hex(data.subarray(1990)));
    } finally {
      await tpm2(sw, ['tpm2_nvundefine', hexHandle(index), '-C', 'o']);
    }
  });

  it('reports an NV index that does not exist as ERR_TSS_HANDLE', async () => {
    await expectTssError(tpm.nvRead(0x01c00099), 'ERR_TSS_HANDLE', 'Esys_TR_FromTPMPublic', 0x18b, /handle/);
    await expectTssError(tpm.nvReadPublic(0x01c00099), 'ERR_TSS_HANDLE', 'Esys_TR_FromTPMPublic', 0x18b, /handle/);
  });
});

describe('primary keys', () => {
  it.each(['rsa', 'ecc'] as const)('derives the %s EK tpm2_createek derives, the key its certificate certifies', async (type) => {
    // tpm2_createek leaves its EK loaded; `flushcontext -t` flushes it while we have nothing loaded.
    await tpm2(sw, ['tpm2_createek', '-G', type, '-c', `ek-${type}.ctx`, '-u', `ek-${type}.pub`]);
    await tpm2(sw, ['tpm2_flushcontext', '-t']);
    const ek = await tpm.createPrimary('endorsement', ekTemplate(type));
    try {
      expect(hex(ek.public)).toBe(hex(await readFile(join(sw.dir, `ek-${type}.pub`))));

      const cert = new x509.X509Certificate(await tpm.nvRead(type === 'rsa' ? EK_CERT_NV.rsa2048 : EK_CERT_NV.eccP256));
      const spki = publicKeyOf(parseTpm2bPublic(ek.public)).export({ type: 'spki', format: 'der' });
      expect(hex(new Uint8Array(cert.publicKey.rawData))).toBe(hex(spki));

      const read = await tpm.readPublic(ek.handle);
      expect(hex(read.public)).toBe(hex(ek.public));
      expect(hex(read.name)).toBe(hex(objectName(parseTpm2bPublic(ek.public))));
    } finally {
      await tpm.flushContext(ek.handle);
    }
  });

  it.each(['rsa', 'ecc'] as const)('derives the %s SRK of the provisioning guidance as tpm2_createprimary does', async (type) => {
    const alg = type === 'rsa' ? 'rsa2048:null:aes128cfb' : 'ecc256:null:aes128cfb';
    const attrs = 'fixedtpm|fixedparent|sensitivedataorigin|userwithauth|noda|restricted|decrypt';
    await tpm2(sw, ['tpm2_createprimary', '-C', 'o', '-g', 'sha256', '-G', alg, '-a', attrs, '-c', 'srk.ctx']);
    await tpm2(sw, ['tpm2_readpublic', '-c', 'srk.ctx', '-o', 'srk.pub']);
    await tpm2(sw, ['tpm2_flushcontext', '-t']);
    const srk = await tpm.createPrimary('owner', srkTemplate(type));
    try {
      expect(hex(srk.public)).toBe(hex(await readFile(join(sw.dir, 'srk.pub'))));
    } finally {
      await tpm.flushContext(srk.handle);
    }
  });
});

describe('created keys, persistence and flushing', () => {
  const { fixedTPM, fixedParent, sensitiveDataOrigin, userWithAuth, restricted, sign, decrypt } = TPMA_OBJECT;
  const base = fixedTPM | fixedParent | sensitiveDataOrigin | userWithAuth | sign;

  it.each([
    ['ECC AK', akTemplate('ecc'), 'ecc', base | restricted],
    ['RSA AK', akTemplate('rsa'), 'rsa', base | restricted],
    ['identity key', identityKeyTemplate(), 'ecc', base],
  ] as const)('creates and loads an %s under the SRK', async (_label, template, type, attributes) => {
    const srk = await tpm.createPrimary('owner', srkTemplate('ecc'));
    try {
      const blobs = await tpm.create(srk.handle, template);
      const pub = parseTpm2bPublic(blobs.public);
      expect(pub.type).toBe(type);
      expect(pub.objectAttributes).toBe(attributes);
      expect(pub.objectAttributes & decrypt).toBe(0);
      const handle = await tpm.load(srk.handle, blobs.private, blobs.public);
      const read = await tpm.readPublic(handle);
      expect(hex(read.public)).toBe(hex(blobs.public));
      expect(hex(read.name)).toBe(hex(objectName(pub)));
      await tpm.flushContext(handle);
      await expectTssError(tpm.readPublic(handle), 'ERR_TSS_HANDLE', 'Esys_ReadPublic', 0x70018, /ESYS_TR/);
    } finally {
      await tpm.flushContext(srk.handle);
    }
  });

  it('makes a key persistent with evictControl, finds it by its TPM handle, and evicts it', async () => {
    const persistent = 0x81000017;
    const srk = await tpm.createPrimary('owner', srkTemplate('ecc'));
    try {
      const kept = await tpm.evictControl(srk.handle, persistent);
      const found = await tpm.fromTpmHandle(persistent);
      expect(hex((await tpm.readPublic(found)).public)).toBe(hex(srk.public));
      expect(hex((await tpm.readPublic(kept)).public)).toBe(hex(srk.public));
      await tpm2(sw, ['tpm2_readpublic', '-c', hexHandle(persistent), '-o', 'persistent.pub']);
      expect(hex(await readFile(join(sw.dir, 'persistent.pub')))).toBe(hex(srk.public));

      await tpm.evictControl(kept, persistent);
      await expectTssError(tpm.fromTpmHandle(persistent), 'ERR_TSS_HANDLE', 'Esys_TR_FromTPMPublic', 0x18b, /handle/);
    } finally {
      await tpm.flushContext(srk.handle);
    }
  });

  it('reports a handle this context never gave out as ERR_TSS_HANDLE', async () => {
    const srk = await tpm.createPrimary('owner', srkTemplate('ecc'));
    await tpm.flushContext(srk.handle);
    const unknown = srk.handle + 1000;
    await expectTssError(tpm.readPublic(unknown), 'ERR_TSS_HANDLE', 'Esys_ReadPublic', 0x70018, /ESYS_TR/);
    await expectTssError(tpm.flushContext(unknown), 'ERR_TSS_HANDLE', 'Esys_FlushContext', 0x70018, /ESYS_TR/);
  });
});

describe('PCRs', () => {
  it('reads after an extend the value computed in TS, in every bank, and a higher update counter', async () => {
    // Not PCR 16 or 23: on a PC Client TPM their extends leave pcrUpdateCounter as it is (TPM_PT_PCR_NO_INCREMENT).
    const pcr = 15;
    const before = await tpm.pcrRead({ sha1: [pcr], sha256: [pcr] });
    const event = Buffer.from('attestor native test event');
    const digests = { sha1: createHash('sha1').update(event).digest(), sha256: createHash('sha256').update(event).digest() };
    await tpm.pcrExtend(pcr, digests);
    const after = await tpm.pcrRead({ sha1: [pcr], sha256: [pcr] });
    for (const bank of ['sha1', 'sha256'] as const) {
      const expected = createHash(bank).update(before.values[bank]![pcr]!).update(digests[bank]).digest();
      expect(hex(after.values[bank]![pcr]!)).toBe(hex(expected));
    }
    // The extend bumped the TPM's pcrUpdateCounter (this PCR is not one of the no-increment ones).
    expect(after.updateCounter).toBeGreaterThan(before.updateCounter);
  });

  it('reads 48 PCRs (several TPM2_PCR_Read calls) as tpm2_pcrread does', async () => {
    const all = Array.from({ length: 24 }, (_, i) => i);
    const { values } = await tpm.pcrRead({ sha1: all, sha256: all });
    // tpm2_pcrread prints "  sha1:\n    0 : 0x<hex>" per bank and index.
    const printed = (await tpm2(sw, ['tpm2_pcrread', 'sha1:all+sha256:all'])).stdout.toString();
    const ours = ['sha1', 'sha256'].map((bank) => `  ${bank}:\n${all.map((i) => `    ${String(i).padEnd(2)}: 0x${hex(values[bank]![i]!).toUpperCase()}\n`).join('')}`);
    expect(printed).toBe(ours.join(''));
  });

  it('takes bank names in any case, and keys the values by the tpm2-tools names', async () => {
    const { values } = await tpm.pcrRead({ SHA256: [0, 1], Sha1: [7] });
    expect(Object.keys(values).sort()).toEqual(['sha1', 'sha256']);
    expect(Object.keys(values.sha256!)).toEqual(['0', '1']);
    expect(hex(values.sha1![7]!)).toBe(hex((await tpm.pcrRead({ sha1: [7] })).values.sha1![7]!));
  });

  it('refuses, by rejecting, a bank named twice (ERR_TSS_INPUT), an unknown bank and a PCR out of range', async () => {
    await rejection(tpm.pcrRead({ sha256: [0], SHA256: [1] }), 'ERR_TSS_INPUT');
    await rejection(tpm.quote(1, new Uint8Array(8), { sha256: [0], SHA256: [1] }), 'ERR_TSS_INPUT');
    let unknown: Promise<unknown> | undefined;
    expect(() => (unknown = tpm.pcrRead({ md5: [0] }))).not.toThrow();
    await rejection(unknown!, 'ERR_TPM_UNSUPPORTED_ALG');
    await rejection(tpm.pcrRead({ sha256: [24] }), 'ERR_TPM_BAD_VALUE');
  });

  it('refuses a TPM whose TPM2_PCR_Read makes less progress than a TPM must (ERR_TSS_COMMAND), instead of looping', async () => {
    // A stand-in for the addon answering one PCR a call: 24 PCRs take at most ceil(24 / 8) + 1 calls.
    let calls = 0;
    const slow = {
      pcrRead: async () => ({
        updateCounter: 1,
        selection: Buffer.from(marshalPcrSelection({ sha256: [calls++] })),
        digests: Buffer.from(new TpmWriter().u32(1).tpm2b(new Uint8Array(32)).finish()),
      }),
    } as unknown as NativeTpm;
    const all = Array.from({ length: 24 }, (_, i) => i);
    await rejection(new Tpm(slow, 'slow').pcrRead({ sha256: all }), 'ERR_TSS_COMMAND');
    expect(calls).toBe(4);
  });

  it('omits PCRs of a bank the TPM has not allocated', async () => {
    const { values } = await tpm.pcrRead({ sha384: [0], sha256: [0] });
    expect(Object.keys(values)).toEqual(['sha256']);
  });

  it('refuses an extend with a digest of the wrong size before calling the TPM', async () => {
    await rejection(tpm.pcrExtend(23, { sha256: new Uint8Array(20) }), 'ERR_TPM_SIZE_MISMATCH');
  });
});

describe.each(['ecc', 'rsa'] as const)('quote, certify and sign with a %s AK', (akType) => {
  let ak: { handle: Handle; public: Uint8Array };
  let app: { handle: Handle; public: Uint8Array };
  const selection = { sha1: [0], sha256: [0, 1, 2, 3, 23] };

  beforeAll(async () => {
    const srk = await tpm.createPrimary('owner', srkTemplate('ecc'));
    try {
      const akBlobs = await tpm.create(srk.handle, akTemplate(akType));
      const appBlobs = await tpm.create(srk.handle, identityKeyTemplate());
      ak = { handle: await tpm.load(srk.handle, akBlobs.private, akBlobs.public), public: akBlobs.public };
      app = { handle: await tpm.load(srk.handle, appBlobs.private, appBlobs.public), public: appBlobs.public };
    } finally {
      await tpm.flushContext(srk.handle);
    }
  });
  afterAll(async () => {
    if (ak) await tpm.flushContext(ak.handle);
    if (app) await tpm.flushContext(app.handle);
  });

  it('quotes PCRs in a way tpm2_checkquote and verifyQuote accept', async () => {
    const qualifyingData = randomBytes(32);
    const { attest, signature } = await tpm.quote(ak.handle, qualifyingData, selection);
    const { values } = await tpm.pcrRead(selection);

    const files = {
      ak: await scratch(`ak-${akType}.pub`, ak.public),
      msg: await scratch(`quote-${akType}.msg`, attest),
      sig: await scratch(`quote-${akType}.sig`, signature),
    };
    await tpm2(sw, ['tpm2_pcrread', 'sha1:0+sha256:0,1,2,3,23', '-F', 'serialized', '-o', `quote-${akType}.pcrs`]);
    await tpm2(sw, [
      'tpm2_checkquote', '-u', files.ak, '-m', files.msg, '-s', files.sig, '-f', `quote-${akType}.pcrs`, '-g', 'sha256', '-q', hex(qualifyingData),
    ]);

    const verified = verifyQuote(parseTpm2bPublic(ak.public), { quote: attest, signature, pcrs: values }, { qualifyingData, requiredPcrs: selection, allowSha1: true /* the selection includes the sha1 bank */ });
    expect(verified.selection.map((s) => [s.hash.name, s.pcrs])).toEqual([
      ['sha1', [0]],
      ['sha256', [0, 1, 2, 3, 23]],
    ]);
    // The same quote does not verify for other qualifying data.
    expect(() =>
      verifyQuote(parseTpm2bPublic(ak.public), { quote: attest, signature, pcrs: values }, { qualifyingData: randomBytes(32) }),
    ).toThrow(expect.objectContaining({ code: 'ERR_QUOTE_NONCE_MISMATCH' }));
  });

  it('certifies the application key: TPMS_ATTEST of type CERTIFY naming it, accepted by verifyCertify', async () => {
    const qualifyingData = randomBytes(32);
    const { attest, signature } = await tpm.certify(app.handle, ak.handle, qualifyingData);
    const info = parseAttest(attest);
    const appPublic = parseTpm2bPublic(app.public);
    expect(info.attested.type).toBe('certify');
    expect(info.attested.type === 'certify' && hex(info.attested.name)).toBe(hex(objectName(appPublic)));
    verifyCertify(parseTpm2bPublic(ak.public), { keyPublic: appPublic, certifyInfo: attest, signature }, { qualifyingData });
  });

  it('signs a digest with the application key', async () => {
    const message = Buffer.from(`challenge for ${akType}`);
    const signature = parseSignature(await tpm.sign(app.handle, createHash('sha256').update(message).digest()));
    const appPublic = parseTpm2bPublic(app.public);
    verifyTpmSignature(appPublic, message, signature);
    expect(() => verifyTpmSignature(appPublic, Buffer.from('another message'), signature)).toThrow(
      expect.objectContaining({ code: 'ERR_SIGNATURE_INVALID' }),
    );
  });

  it('reports what the TPM refuses as ERR_TSS_COMMAND: a restricted AK signing an outside digest', async () => {
    const digest = createHash('sha256').update('not TPM-generated').digest();
    const e = await rejection(tpm.sign(ak.handle, digest), 'ERR_TSS_COMMAND');
    expect((e as TssError).command).toBe('Esys_Sign');
    expect((e as TssError).rc >>> 16).toBe(0);
    expect((e as TssError).rcText).toMatch(/ticket/i);
  });
});

describe.each(['rsa', 'ecc'] as const)('activateCredential with the %s EK', (ekType: KeyType) => {
  let ak: { handle: Handle; name: Uint8Array };
  let ek: { handle: Handle; public: Uint8Array };

  beforeAll(async () => {
    const srk = await tpm.createPrimary('owner', srkTemplate('ecc'));
    try {
      const blobs = await tpm.create(srk.handle, akTemplate('ecc'));
      ak = { handle: await tpm.load(srk.handle, blobs.private, blobs.public), name: objectName(parseTpm2bPublic(blobs.public)) };
    } finally {
      await tpm.flushContext(srk.handle);
    }
    ek = await tpm.createPrimary('endorsement', ekTemplate(ekType));
  });
  afterAll(async () => {
    if (ak) await tpm.flushContext(ak.handle);
    if (ek) await tpm.flushContext(ek.handle);
  });

  it('recovers the secret of tpm2_makecredential -T none', async () => {
    const secret = randomBytes(32);
    await scratch(`ek-${ekType}-act.pub`, ek.public);
    await scratch('secret.bin', secret);
    await tpm2(sw, ['tpm2_makecredential', '-T', 'none', '-u', `ek-${ekType}-act.pub`, '-s', 'secret.bin', '-n', hex(ak.name), '-o', 'cred.out']);
    const cred = parseCredentialFile(await readFile(join(sw.dir, 'cred.out')));
    const recovered = await tpm.activateCredential(ak.handle, ek.handle, cred.credentialBlob, cred.encryptedSecret);
    expect(hex(recovered)).toBe(hex(secret));
  });

  it('recovers the secret of src/tpm makeCredential', async () => {
    const secret = randomBytes(32);
    const cred = makeCredential(parseTpm2bPublic(ek.public), ak.name, secret);
    expect(hex(await tpm.activateCredential(ak.handle, ek.handle, cred.credentialBlob, cred.encryptedSecret))).toBe(hex(secret));
  });

  it('refuses a credential made for another Name (ERR_TSS_COMMAND, integrity)', async () => {
    const otherName = objectName(parseTpm2bPublic(ek.public));
    const cred = makeCredential(parseTpm2bPublic(ek.public), otherName, randomBytes(32));
    const e = await rejection(tpm.activateCredential(ak.handle, ek.handle, cred.credentialBlob, cred.encryptedSecret), 'ERR_TSS_COMMAND');
    expect((e as TssError).command).toBe('Esys_ActivateCredential');
    expect((e as TssError).rcText).toMatch(/integrity/);
  });
});

describe('one context, many callers', () => {
  it('queues concurrent calls: all succeed, in the order they were made', async () => {
    const srk = await tpm.createPrimary('owner', srkTemplate('ecc'));
    try {
      const done: number[] = [];
      const calls = [
        () => tpm.getRandom(16),
        () => tpm.readPublic(srk.handle),
        () => tpm.pcrRead({ sha256: [0, 1, 2, 3, 4, 5, 6, 7, 8, 9] }),
        () => tpm.nvRead(EK_CERT_NV.rsa2048),
        () => tpm.getPcrBanks(),
        () => tpm.getRandom(48),
      ];
      const results = await Promise.all(calls.map((call, i) => call().then((r) => (done.push(i), r))));
      expect(done).toEqual([0, 1, 2, 3, 4, 5]);
      expect((results[0] as Uint8Array).length).toBe(16);
      expect(hex((results[1] as { public: Uint8Array }).public)).toBe(hex(srk.public));
    } finally {
      await tpm.flushContext(srk.handle);
    }
  });

  it('a failed call does not stop the ones queued after it', async () => {
    const [bad, good] = await Promise.allSettled([tpm.readPublic(-1), tpm.getRandom(8)]);
    expect(bad.status).toBe('rejected');
    expect(good.status === 'fulfilled' && good.value.length).toBe(8);
  });

  it('the raw addon refuses an overlapping call instead of racing on the ESYS context', async () => {
    const raw = new (loadNodeTss().NativeTpm)();
    await raw.open(sw.tcti, 30_000);
    try {
      const first = raw.getRandom(8);
      expect(() => raw.getRandom(8)).toThrow(/must not overlap/);
      expect((await first).bytes.length).toBe(8);
    } finally {
      raw.close();
    }
  });

  it('refuses a TPM whose TPM2_GetRandom returns no bytes instead of looping (ERR_TSS_COMMAND)', async () => {
    // A stand-in for the addon: only the wrapper's loop is under test here.
    const stingy = { getRandom: async () => ({ bytes: Buffer.alloc(0) }) } as unknown as NativeTpm;
    await rejection(new Tpm(stingy, 'stingy').getRandom(8), 'ERR_TSS_COMMAND');
  });

  it('SerialQueue runs tasks one at a time', async () => {
    const q = new SerialQueue();
    let running = 0;
    let most = 0;
    const task = async () => {
      most = Math.max(most, ++running);
      await new Promise((r) => setTimeout(r, 5));
      running--;
    };
    await Promise.all([q.run(task), q.run(task), q.run(task)]);
    expect(most).toBe(1);
  });
});

describe('format-one response codes of the TPM (Part 2 §6.6.3)', () => {
  it('gives the error number and whether a parameter is at fault', () => {
    // TPM_RC_INTEGRITY on parameter 1 (what TPM2_Load says of a damaged blob), TPM_RC_HANDLE on handle 1.
    expect(formatOneError(0x1df)).toEqual({ error: 0x01f, parameter: true });
    expect(formatOneError(0x18b)).toEqual({ error: 0x00b, parameter: false });
  });

  it('is undefined for warnings, format-zero codes and the TSS layers', () => {
    // TPM_RC_OBJECT_MEMORY, TPM_RC_FAILURE, and TPM_RC_HANDLE's bits under the ESAPI and TCTI layers.
    for (const rc of [0x902, 0x101, 0x7018b, 0xa018b]) expect(formatOneError(rc)).toBeUndefined();
  });
});

describe('bad input to the addon', () => {
  it('refuses a template that is not a TPM2B_PUBLIC (ERR_TSS_INPUT, Tss2_MU)', async () => {
    await expectTssError(tpm.createPrimary('owner', Uint8Array.of(0, 9, 1)), 'ERR_TSS_INPUT', 'Tss2_MU_TPM2B_PUBLIC_Unmarshal', 0x00090006, /buffer/i);
  });

  it('refuses trailing bytes after a structure (ERR_TSS_INPUT)', async () => {
    const template = Buffer.concat([srkTemplate('ecc'), Uint8Array.of(0)]);
    await expectTssError(tpm.createPrimary('owner', template), 'ERR_TSS_INPUT', 'Tss2_MU_TPM2B_PUBLIC_Unmarshal', 0x00090010, /size/i);
  });

  it.each([
    ['qualifying data over 64 bytes', () => tpm.quote(1, new Uint8Array(65), { sha256: [0] })],
    ['a handle that is not a UINT32', () => tpm.readPublic(-1)],
    ['a PCR index over 31', () => tpm.pcrExtend(32, { sha256: new Uint8Array(32) })],
    ['an unknown hierarchy', () => tpm.createPrimary('nowhere' as 'owner', srkTemplate('ecc'))],
    ['a timeout of 0 ms', () => openTpm(sw.tcti, { timeoutMs: 0 })],
    ['a timeout that is not an integer', () => openTpm(sw.tcti, { timeoutMs: 1.5 })],
  ])('refuses %s (ERR_TSS_INPUT)', async (_label, call) => {
    await rejection(call(), 'ERR_TSS_INPUT');
  });

  it('leaves no transient object behind after this file', async () => {
    expect(await transientHandles(sw)).toBe('');
  });
});
