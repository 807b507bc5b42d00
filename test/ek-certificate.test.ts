import { readdirSync, readFileSync } from 'node:fs';
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { createPublicKey, KeyObject, webcrypto } from 'node:crypto';
import fc from 'fast-check';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import '../src/reflect-metadata.js';
import * as x509 from '@peculiar/x509';
import { AttestorError } from '../src/errors.js';
import { EK_CERT_NV } from '../src/tpm/constants.js';
import { parseEkCertificate, verifyEkCertificate } from '../src/tpm/ek-certificate.js';
import { rootStoreFromPemTexts, type EkRootStore, type PemText } from '../src/tpm/ek-roots.js';
import { parseTpm2bPublic, type TpmPublic } from '../src/tpm/public.js';
import { codeOf } from './helpers/code-of.js';
import { startSwtpm, tpm2, type Swtpm } from './helpers/swtpm.js';

const FIXTURE_ROOTS = fileURLToPath(new URL('../fixtures/ek-roots/', import.meta.url));
const VECTORS = process.env.ATTESTOR_VECTORS ?? fileURLToPath(new URL('../../shared/vectors/', import.meta.url));

function pemFiles(dir: string): PemText[] {
  return readdirSync(dir)
    .filter((f) => f.endsWith('.pem'))
    .sort()
    .map((name) => ({ name, pem: readFileSync(join(dir, name), 'utf8') }));
}

/** Runs f; an AttestorError is an accepted outcome, any other exception fails the property. */
function onlyAttestorErrors(f: () => unknown): void {
  try {
    f();
  } catch (e) {
    if (!(e instanceof AttestorError)) throw e;
  }
}

function pemOf(der: Uint8Array): string {
  const b64 = Buffer.from(der).toString('base64').replace(/.{64}/g, '$&\n');
  return `-----BEGIN CERTIFICATE-----\n${b64}\n-----END CERTIFICATE-----\n`;
}

const vendorTexts = pemFiles(FIXTURE_ROOTS);
const vendorStore = rootStoreFromPemTexts(vendorTexts);

describe('default EK root store (vendor certificates)', () => {
  it('is an unchanged copy of every vendor PEM in the vectors', () => {
    const vectors = pemFiles(join(VECTORS, 'ek-roots'));
    expect(vectors.length).toBeGreaterThan(40);
    expect(vendorTexts).toEqual(vectors);
  });

  it('parses every vendor PEM on its own', () => {
    for (const text of vendorTexts) {
      const store = rootStoreFromPemTexts([text]);
      expect(store.entries.map((e) => e.name)).toEqual([text.name]);
      // The validity read here agrees with @peculiar/x509's reading of the same certificate.
      const [entry] = store.entries;
      expect([entry!.notBefore, entry!.notAfter]).toEqual([entry!.certificate.notBefore, entry!.certificate.notAfter]);
      // A store of one certificate trusts it directly, whatever issued it.
      expect(store.anchors).toHaveLength(1);
    }
  });

  it('keeps one entry per distinct certificate', () => {
    expect(vendorTexts).toHaveLength(51);
    // IFX1..5 and IFX8 are the same certificates as IFX_RSA_01I..05I and IFX_RSA_08I.
    expect(vendorStore.entries).toHaveLength(45);
    expect(vendorStore.entries.map((e) => e.name)).toContain('IFX1.pem');
    expect(vendorStore.entries.map((e) => e.name)).not.toContain('IFX_RSA_01I.pem');
  });

  it('makes the self-signed roots and the tops of incomplete chains its anchors', () => {
    const byName = (n: string) => vendorStore.entries.find((e) => e.name === n)!;
    const selfSigned = vendorStore.entries.filter((e) => e.selfSigned).map((e) => e.name);
    expect(selfSigned.sort()).toEqual(
      ['GS_TPM_RT.pem', 'INF_ECC_010RT.pem', 'INF_RSA_010RT.pem', 'INTEL_RT.pem', 'NTC1.pem', 'NTC2.pem']
        .concat(['NUVO_0100.pem', 'NUVO_1110.pem', 'NUVO_1111.pem', 'NUVO_2110.pem', 'NUVO_2111.pem'])
        .sort(),
    );
    // Issued by CAs the vendors do not publish (VeriSign, GlobalSign ECC, Aliyun and Nationz roots).
    const topsOfIncomplete = ['Alibaba_Cloud_vTPM_EK.pem', 'IFX_RSA_RT.pem', 'Nationz_TPM_EK.pem', 'STM_ECC_01RT.pem'];
    expect(vendorStore.anchors.map((a) => a.name).sort()).toEqual([...selfSigned, ...topsOfIncomplete].sort());
    for (const name of topsOfIncomplete) expect(byName(name).selfSigned).toBe(false);
  });

  it('chains the intermediates to their vendor roots with verified signatures', () => {
    const parentsOf = (n: string) => vendorStore.entries.find((e) => e.name === n)!.parents.map((p) => p.name);
    // STMicro RSA: intermediate -> STM root -> GlobalSign TPM root (three levels).
    for (let i = 1; i <= 7; i++) expect(parentsOf(`STM_RSA_0${i}I.pem`)).toEqual(['STM_RSA_RT.pem']);
    expect(parentsOf('STM_RSA_RT.pem')).toEqual(['GS_TPM_RT.pem']);
    expect(parentsOf('STM_ECC_01I.pem')).toEqual(['STM_ECC_01RT.pem']);
    // Infineon: OPTIGA RSA/ECC manufacturing CAs and the older "IFX TPM EK Intermediate CA" series.
    for (const n of ['INF_RSA_010I.pem', 'INF_RSA_011.pem', 'INF_RSA_022.pem', 'IFX_RSA_034.pem', 'IFX_RSA_042.pem']) {
      expect(parentsOf(n)).toEqual(['INF_RSA_010RT.pem']);
    }
    for (const n of ['INF_ECC_010I.pem', 'INF_ECC_011.pem', 'IFX_ECC_034.pem', 'IFX_ECC_042.pem']) {
      expect(parentsOf(n)).toEqual(['INF_ECC_010RT.pem']);
    }
    // IFX5.pem is the entry kept for IFX_RSA_05I.pem (the same certificate).
    for (const n of ['IFX5.pem', 'IFX_RSA_17I.pem', 'IFX15.pem']) expect(parentsOf(n)).toEqual(['IFX_RSA_RT.pem']);
    expect(parentsOf('INTEL_I.pem')).toEqual(['INTEL_RT.pem']);
  });

  it('treats an intermediate as an anchor only when its issuer is absent', () => {
    const pick = (...names: string[]) => vendorTexts.filter((t) => names.includes(t.name));
    const full = rootStoreFromPemTexts(pick('STM_RSA_01I.pem', 'STM_RSA_RT.pem', 'GS_TPM_RT.pem'));
    expect(full.anchors.map((a) => a.name)).toEqual(['GS_TPM_RT.pem']);
    const partial = rootStoreFromPemTexts(pick('STM_RSA_01I.pem', 'STM_RSA_RT.pem'));
    expect(partial.anchors.map((a) => a.name)).toEqual(['STM_RSA_RT.pem']);
  });

  it('refuses a vendor CA certificate given as an EK certificate', () => {
    const stm = vendorTexts.find((t) => t.name === 'STM_RSA_01I.pem')!;
    expect(codeOf(() => verifyEkCertificate(stm.pem, vendorStore))).toBe('ERR_EK_CERT_NOT_EK');
  });

  it('refuses an empty store, a text without certificates and a damaged PEM', () => {
    expect(codeOf(() => rootStoreFromPemTexts([]))).toBe('ERR_EK_ROOTS_EMPTY');
    expect(codeOf(() => rootStoreFromPemTexts([{ name: 'README.pem', pem: 'no certificate here' }]))).toBe('ERR_EK_CERT_MALFORMED');
    const damaged = vendorTexts[0]!.pem.replace(/[A-Za-z0-9+/]{64}\n/, '!\n');
    expect(codeOf(() => rootStoreFromPemTexts([{ name: 'x.pem', pem: damaged }]))).toBe('ERR_EK_CERT_MALFORMED');
  });

  it('names each certificate of a PEM bundle', () => {
    const bundle = vendorTexts.filter((t) => ['INTEL_I.pem', 'INTEL_RT.pem'].includes(t.name)).map((t) => t.pem);
    const store = rootStoreFromPemTexts([{ name: 'intel.pem', pem: bundle.join('') }]);
    expect(store.entries.map((e) => e.name)).toEqual(['intel.pem#1', 'intel.pem#2']);
    expect(store.anchors.map((e) => e.name)).toEqual(['intel.pem#2']);
  });
});

describe('EK certificates of a real swtpm', () => {
  let sw: Swtpm;
  let rsaDer: Uint8Array;
  let eccDer: Uint8Array;
  let rsaEk: TpmPublic;
  let eccEk: TpmPublic;
  let swtpmStore: EkRootStore;

  async function createEk(alg: 'rsa' | 'ecc'): Promise<TpmPublic> {
    await tpm2(sw, ['tpm2_createek', '-G', alg, '-u', `ek-${alg}.pub`, '-c', `ek-${alg}.ctx`]);
    await tpm2(sw, ['tpm2_flushcontext', '-t']);
    return parseTpm2bPublic(await readFile(join(sw.dir, `ek-${alg}.pub`)));
  }

  async function nvRead(index: number): Promise<Uint8Array> {
    return new Uint8Array((await tpm2(sw, ['tpm2_nvread', `0x${index.toString(16)}`, '-C', 'o'])).stdout);
  }

  beforeAll(async () => {
    sw = await startSwtpm();
    rsaDer = await nvRead(EK_CERT_NV.rsa2048);
    eccDer = await nvRead(EK_CERT_NV.eccP256);
    rsaEk = await createEk('rsa');
    eccEk = await createEk('ecc');
    swtpmStore = rootStoreFromPemTexts([
      { name: 'swtpm-localca.pem', pem: sw.caCertPem },
      { name: 'swtpm-rootca.pem', pem: sw.rootCaCertPem },
    ]);
  });

  afterAll(async () => {
    await sw?.stop();
  });

  it('parses the TCG device attributes and the EK key purpose', () => {
    for (const der of [rsaDer, eccDer]) {
      const ek = parseEkCertificate(der);
      expect(ek.manufacturer).toEqual({ id: 'id:00001014', ascii: undefined });
      expect(ek.model).toBe('swtpm');
      expect(ek.version).toBe('id:20191023');
      expect(ek.hasEkKeyPurpose).toBe(true);
      expect(Buffer.from(ek.der).equals(Buffer.from(der))).toBe(true);
    }
    expect(parseEkCertificate(rsaDer).publicKey.asymmetricKeyType).toBe('rsa');
    expect(parseEkCertificate(eccDer).publicKey.asymmetricKeyType).toBe('ec');
  });

  it('verifies the certificates up to the swtpm root and matches the TPM EKs', async () => {
    for (const [der, ekPublic] of [
      [rsaDer, rsaEk],
      [eccDer, eccEk],
    ] as const) {
      const v = verifyEkCertificate(der, swtpmStore, { ekPublic });
      expect(v.anchor).toBe('swtpm-rootca.pem');
      expect(v.chain.map((c) => c.subject)).toEqual(['CN=unknown', 'CN=swtpm-localca', 'CN=swtpm-localca-rootca']);
      expect(v.info.model).toBe('swtpm');
    }
    // swtpm_setup's own ECC P-384 EK certificate (high-range index) chains the same way.
    expect(verifyEkCertificate(await nvRead(EK_CERT_NV.eccP384), swtpmStore).anchor).toBe('swtpm-rootca.pem');
  });

  it('accepts PEM, NV padding and the TPM 1.2 NV header around the same certificate', () => {
    const padded = Buffer.concat([rsaDer, Buffer.alloc(200, 0xff)]);
    const header = Buffer.from([0x10, 0x01, 0x00, rsaDer.length >> 8, rsaDer.length & 0xff]);
    const inputs: (Uint8Array | string)[] = [pemOf(rsaDer), Buffer.from(pemOf(rsaDer)), padded, Buffer.concat([header, rsaDer])];
    for (const input of inputs) {
      const v = verifyEkCertificate(input, swtpmStore, { ekPublic: rsaEk });
      expect(Buffer.from(v.info.der).equals(Buffer.from(rsaDer))).toBe(true);
    }
    expect(verifyEkCertificate(pemOf(rsaDer), swtpmStore).anchor).toBe('swtpm-rootca.pem');
  });

  it('ends the chain at the local CA when the store holds only that CA', () => {
    const store = rootStoreFromPemTexts([{ name: 'issuer.pem', pem: sw.caCertPem }]);
    const v = verifyEkCertificate(rsaDer, store, { ekPublic: rsaEk });
    expect(v.anchor).toBe('issuer.pem');
    expect(v.chain).toHaveLength(2);
  });

  it('refuses a certificate for another key than the TPM EK', () => {
    expect(codeOf(() => verifyEkCertificate(rsaDer, swtpmStore, { ekPublic: eccEk }))).toBe('ERR_EK_CERT_KEY_MISMATCH');
    expect(codeOf(() => verifyEkCertificate(eccDer, swtpmStore, { ekPublic: rsaEk }))).toBe('ERR_EK_CERT_KEY_MISMATCH');
  });

  it('refuses a chain to a CA the store does not hold', () => {
    expect(codeOf(() => verifyEkCertificate(rsaDer, vendorStore))).toBe('ERR_EK_CERT_CHAIN');
    const rootOnly = rootStoreFromPemTexts([{ name: 'root.pem', pem: sw.rootCaCertPem }]);
    expect(codeOf(() => verifyEkCertificate(eccDer, rootOnly))).toBe('ERR_EK_CERT_CHAIN');
    // ...unless the missing intermediate comes along with it.
    expect(verifyEkCertificate(eccDer, rootOnly, { extraIntermediates: [sw.caCertPem] }).chain).toHaveLength(3);
  });

  it('refuses at an instant outside the validity of a certificate', () => {
    const ek = parseEkCertificate(rsaDer);
    expect(ek.notAfter.toISOString()).toBe('9999-12-31T23:59:59.000Z');
    expect(ek.notBefore).toEqual(ek.certificate.notBefore);
    const after = new Date(ek.notAfter.getTime() + 1000);
    const before = new Date(ek.notBefore.getTime() - 1000);
    expect(codeOf(() => verifyEkCertificate(ek, swtpmStore, { now: after }))).toBe('ERR_EK_CERT_EXPIRED');
    expect(codeOf(() => verifyEkCertificate(ek, swtpmStore, { now: before }))).toBe('ERR_EK_CERT_EXPIRED');
  });

  it('refuses a certificate whose signature has one bit flipped', () => {
    const flipped = Uint8Array.from(rsaDer);
    flipped[flipped.length - 1]! ^= 0x01;
    expect(codeOf(() => verifyEkCertificate(flipped, swtpmStore))).toBe('ERR_EK_CERT_CHAIN');
  });

  it('refuses garbage, truncated DER and two certificates where one is expected', () => {
    expect(codeOf(() => parseEkCertificate(Uint8Array.from([0xde, 0xad, 0xbe, 0xef])))).toBe('ERR_EK_CERT_MALFORMED');
    expect(codeOf(() => parseEkCertificate(new Uint8Array(0)))).toBe('ERR_EK_CERT_MALFORMED');
    expect(codeOf(() => verifyEkCertificate(rsaDer.subarray(0, rsaDer.length - 10), swtpmStore))).toBe('ERR_EK_CERT_MALFORMED');
    expect(codeOf(() => parseEkCertificate(rsaDer.subarray(0, 600)))).toBe('ERR_EK_CERT_MALFORMED');
    expect(codeOf(() => parseEkCertificate(pemOf(rsaDer) + pemOf(eccDer)))).toBe('ERR_EK_CERT_MALFORMED');
  });

  it('refuses the CA certificate given as an EK certificate', () => {
    expect(codeOf(() => verifyEkCertificate(sw.caCertPem, swtpmStore))).toBe('ERR_EK_CERT_NOT_EK');
  });

  it('turns mutated and truncated certificates into AttestorError only', () => {
    fc.assert(
      fc.property(
        fc.array(fc.record({ at: fc.nat(), xor: fc.integer({ min: 1, max: 255 }) }), { minLength: 1, maxLength: 4 }),
        fc.option(fc.nat(), { nil: undefined }),
        (flips, cut) => {
          const bytes = Uint8Array.from(rsaDer);
          for (const { at, xor } of flips) bytes[at % bytes.length]! ^= xor;
          onlyAttestorErrors(() => verifyEkCertificate(cut === undefined ? bytes : bytes.subarray(0, cut % bytes.length), swtpmStore));
        },
      ),
      { numRuns: 400 },
    );
  });
});

describe('EK certificates made here (chains, constraints, vendor quirks)', () => {
  type Keys = webcrypto.CryptoKeyPair;
  /** WebCrypto algorithm parameters (RsaHashedKeyGenParams, EcKeyGenParams, EcdsaParams, RsaPssParams). */
  type Algorithm = { name: string } & Record<string, unknown>;
  const subtle = webcrypto.subtle;
  const DAY = 86_400_000;
  const EK_SAN = '2.23.133.2.1=id:53544D20, 2.23.133.2.2=ST33HTPHAHD4, 2.23.133.2.3=id:00010102';

  let rootKeys: Keys;
  let rsaKeys: Keys;
  let ecLeafKeys: Keys;
  let root: Issued;
  let intermediate: Issued;
  let leaf: Issued;
  let rootStore: EkRootStore;

  interface Issued {
    readonly cert: x509.X509Certificate;
    readonly keys: Keys;
    readonly pem: string;
    readonly der: Uint8Array;
  }

  interface IssueOptions {
    subject?: string;
    issuer?: Issued;
    /** The issuer name written into the certificate, when it should differ from the issuer's subject. */
    issuerName?: string;
    keys: Keys;
    /** A SubjectPublicKeyInfo to certify instead of keys.publicKey. */
    spki?: Uint8Array;
    ca?: { pathLength?: number };
    ek?: boolean;
    extensions?: x509.Extension[];
    notBefore?: Date;
    notAfter?: Date;
    signingKey?: webcrypto.CryptoKey;
    signingAlgorithm?: Algorithm;
  }

  async function issue(o: IssueOptions): Promise<Issued> {
    const extensions: x509.Extension[] = [];
    if (o.ca) {
      extensions.push(new x509.BasicConstraintsExtension(true, o.ca.pathLength, true));
      extensions.push(new x509.KeyUsagesExtension(x509.KeyUsageFlags.keyCertSign | x509.KeyUsageFlags.cRLSign, true));
    }
    if (o.ek) {
      extensions.push(new x509.SubjectAlternativeNameExtension([{ type: 'dn', value: EK_SAN }], true));
      extensions.push(new x509.BasicConstraintsExtension(false, undefined, true));
      extensions.push(new x509.KeyUsagesExtension(x509.KeyUsageFlags.keyEncipherment, true));
    }
    const signingKey = o.signingKey ?? (o.issuer ?? { keys: o.keys }).keys.privateKey;
    const cert = await x509.X509CertificateGenerator.create({
      serialNumber: Buffer.from(webcrypto.getRandomValues(new Uint8Array(8))).toString('hex').replace(/^./, '1'),
      subject: o.subject,
      issuer: o.issuerName ?? o.issuer?.cert.subject ?? o.subject,
      notBefore: o.notBefore ?? new Date(Date.now() - DAY),
      notAfter: o.notAfter ?? new Date(Date.now() + 365 * DAY),
      publicKey: o.spki ?? (o.keys.publicKey as never),
      signingKey: signingKey as never,
      signingAlgorithm: (o.signingAlgorithm ?? { hash: 'SHA-256', ...signingKey.algorithm }) as never,
      extensions: [...extensions, ...(o.extensions ?? [])],
    });
    return { cert, keys: o.keys, pem: cert.toString('pem'), der: new Uint8Array(cert.rawData) };
  }

  async function generate(alg: Algorithm): Promise<Keys> {
    return (await subtle.generateKey(alg as never, true, ['sign', 'verify'])) as Keys;
  }

  /** The RSA private key of `rsaKeys` for another signature algorithm (WebCrypto binds keys to one). */
  async function rsaSigner(alg: { name: string; hash: string }): Promise<webcrypto.CryptoKey> {
    const pkcs8 = await subtle.exportKey('pkcs8', rsaKeys.privateKey);
    return subtle.importKey('pkcs8', pkcs8, alg, false, ['sign']);
  }

  const ekExtension = (...usages: string[]) => new x509.ExtendedKeyUsageExtension(usages);
  const TCG_EK = '2.23.133.8.1';

  beforeAll(async () => {
    rootKeys = await generate({ name: 'ECDSA', namedCurve: 'P-384' });
    rsaKeys = await generate({ name: 'RSASSA-PKCS1-v1_5', modulusLength: 2048, publicExponent: new Uint8Array([1, 0, 1]), hash: 'SHA-256' });
    ecLeafKeys = await generate({ name: 'ECDSA', namedCurve: 'P-256' });
    root = await issue({ subject: 'CN=EK Test Root, O=Attestor', keys: rootKeys, ca: {}, signingAlgorithm: { name: 'ECDSA', hash: 'SHA-384' } });
    intermediate = await issue({
      subject: 'CN=EK Test Intermediate, O=Attestor',
      issuer: root,
      keys: rsaKeys,
      ca: { pathLength: 0 },
      signingAlgorithm: { name: 'ECDSA', hash: 'SHA-384' },
    });
    leaf = await issue({ issuer: intermediate, keys: ecLeafKeys, ek: true, extensions: [ekExtension(TCG_EK)] });
    rootStore = rootStoreFromPemTexts([{ name: 'root.pem', pem: root.pem }]);
  });

  it('verifies a three-level chain with an empty-subject EK certificate and reads the TCG attributes', () => {
    const v = verifyEkCertificate(leaf.der, rootStore, { extraIntermediates: [intermediate.der] });
    expect(v.anchor).toBe('root.pem');
    expect(v.chain.map((c) => c.subject)).toEqual(['', 'CN=EK Test Intermediate, O=Attestor', 'CN=EK Test Root, O=Attestor']);
    expect(v.info.manufacturer).toEqual({ id: 'id:53544D20', ascii: 'STM ' });
    expect(v.info.model).toBe('ST33HTPHAHD4');
    expect(v.info.version).toBe('id:00010102');
    expect(v.info.hasEkKeyPurpose).toBe(true);
    expect(v.info.publicKey.equals(KeyObject.from(ecLeafKeys.publicKey))).toBe(true);
    const both = rootStoreFromPemTexts([
      { name: 'root.pem', pem: root.pem },
      { name: 'intermediate.pem', pem: intermediate.pem },
    ]);
    expect(verifyEkCertificate(leaf.pem, both).chain).toHaveLength(3);
  });

  it('ERR_EK_CERT_MALFORMED: more intermediates sent along than a real EK chain has', () => {
    const five = Array.from({ length: 5 }, () => intermediate.der);
    expect(codeOf(() => verifyEkCertificate(leaf.der, rootStore, { extraIntermediates: five }))).toBe('ERR_EK_CERT_MALFORMED');
    expect(verifyEkCertificate(leaf.der, rootStore, { extraIntermediates: five.slice(0, 4) }).chain).toHaveLength(3);
  });

  it('ERR_EK_CERT_MALFORMED: an RSA key with an exponent above 65537 (each verification would cost more)', async () => {
    const big = await generate({
      name: 'RSASSA-PKCS1-v1_5',
      modulusLength: 1024,
      publicExponent: new Uint8Array([1, 0, 3]),
      hash: 'SHA-256',
    });
    const cert = await issue({ subject: 'CN=Big Exponent', keys: big, ca: {} });
    expect(codeOf(() => parseEkCertificate(cert.der))).toBe('ERR_EK_CERT_MALFORMED');
  });

  it('refuses an EK certificate whose intermediate is neither in the store nor sent along', () => {
    expect(codeOf(() => verifyEkCertificate(leaf.der, rootStore))).toBe('ERR_EK_CERT_CHAIN');
    expect(codeOf(() => verifyEkCertificate(leaf.der, rootStore, { extraIntermediates: ['garbage'] }))).toBe('ERR_EK_CERT_MALFORMED');
  });

  it('verifies RSA PKCS#1 v1.5 with SHA-1 and RSA-PSS signatures', async () => {
    for (const alg of [
      { name: 'RSASSA-PKCS1-v1_5', hash: 'SHA-1' },
      { name: 'RSA-PSS', hash: 'SHA-256', saltLength: 32 },
    ]) {
      const signingKey = await rsaSigner(alg);
      const ek = await issue({ issuer: intermediate, keys: ecLeafKeys, ek: true, signingKey, signingAlgorithm: alg });
      const v = verifyEkCertificate(ek.der, rootStore, { extraIntermediates: [intermediate.pem] });
      expect(v.chain).toHaveLength(3);
    }
  });

  it('reads the vendor id in ASCII without NUL padding, from separate or multi-valued RDNs', async () => {
    const san = (dn: string) => new x509.SubjectAlternativeNameExtension([{ type: 'dn', value: dn }], true);
    const ifx = await issue({ issuer: root, keys: ecLeafKeys, extensions: [san('2.23.133.2.1=id:49465800+2.23.133.2.2=SLB9670')] });
    expect(parseEkCertificate(ifx.der).manufacturer).toEqual({ id: 'id:49465800', ascii: 'IFX' });
    expect(parseEkCertificate(ifx.der).model).toBe('SLB9670');
    const odd = await issue({ issuer: root, keys: ecLeafKeys, extensions: [san('2.23.133.2.1=NTC')] });
    expect(parseEkCertificate(odd.der).manufacturer).toEqual({ id: 'NTC', ascii: undefined });
    expect(parseEkCertificate(root.der).manufacturer).toBeUndefined();
  });

  it('accepts an EK certificate without the EK key purpose and reports it', async () => {
    const plain = await issue({ issuer: root, keys: ecLeafKeys, ek: true });
    const v = verifyEkCertificate(plain.der, rootStore);
    expect(v.info.hasEkKeyPurpose).toBe(false);
    const any = await issue({ issuer: root, keys: ecLeafKeys, ek: true, extensions: [ekExtension('2.5.29.37.0')] });
    expect(verifyEkCertificate(any.der, rootStore).info.hasEkKeyPurpose).toBe(false);
  });

  it('refuses certificates that cannot be EK certificates', async () => {
    const serverAuth = await issue({ issuer: root, keys: ecLeafKeys, ek: true, extensions: [ekExtension('1.3.6.1.5.5.7.3.1')] });
    const unknownCritical = await issue({
      issuer: root,
      keys: ecLeafKeys,
      ek: true,
      extensions: [new x509.Extension('1.3.6.1.4.1.99999.1', true, Uint8Array.from([0x05, 0x00]))],
    });
    const signsCerts = await issue({
      issuer: root,
      keys: ecLeafKeys,
      extensions: [new x509.KeyUsagesExtension(x509.KeyUsageFlags.keyCertSign)],
    });
    for (const c of [serverAuth, unknownCritical, signsCerts, intermediate, root]) {
      expect(codeOf(() => verifyEkCertificate(c.der, rootStore))).toBe('ERR_EK_CERT_NOT_EK');
    }
  });

  it('refuses issuers that are not CAs, may not sign certificates or carry unknown critical extensions', async () => {
    const notCa = await issue({ subject: 'CN=Not a CA', issuer: root, keys: rsaKeys, extensions: [new x509.BasicConstraintsExtension(false)] });
    const noCertSign = await issue({
      subject: 'CN=No keyCertSign',
      issuer: root,
      keys: rsaKeys,
      extensions: [new x509.BasicConstraintsExtension(true, undefined, true), new x509.KeyUsagesExtension(x509.KeyUsageFlags.digitalSignature)],
    });
    const unknownCritical = await issue({
      subject: 'CN=Constrained',
      issuer: root,
      keys: rsaKeys,
      ca: {},
      extensions: [new x509.Extension('2.5.29.30', true, Uint8Array.from([0x30, 0x00]))],
    });
    for (const ca of [notCa, noCertSign, unknownCritical]) {
      const ek = await issue({ issuer: ca, keys: ecLeafKeys, ek: true });
      expect(codeOf(() => verifyEkCertificate(ek.der, rootStore, { extraIntermediates: [ca.der] }))).toBe('ERR_EK_CERT_CHAIN');
    }
  });

  it('enforces pathLenConstraint', async () => {
    const below = await issue({ subject: 'CN=Second Intermediate', issuer: intermediate, keys: ecLeafKeys, ca: {} });
    const ek = await issue({ issuer: below, keys: ecLeafKeys, ek: true });
    const extraIntermediates = [intermediate.der, below.der];
    expect(codeOf(() => verifyEkCertificate(ek.der, rootStore, { extraIntermediates }))).toBe('ERR_EK_CERT_CHAIN');
    const open = await issue({ subject: 'CN=Open Intermediate', issuer: root, keys: rsaKeys, ca: {} });
    const below2 = await issue({ subject: 'CN=Second Intermediate', issuer: open, keys: ecLeafKeys, ca: {} });
    const ek2 = await issue({ issuer: below2, keys: ecLeafKeys, ek: true });
    expect(verifyEkCertificate(ek2.der, rootStore, { extraIntermediates: [below2.der, open.der] }).chain).toHaveLength(4);
  });

  it('refuses an intermediate outside its validity even when the EK certificate is valid', async () => {
    const old = await issue({
      subject: 'CN=Old Intermediate',
      issuer: root,
      keys: rsaKeys,
      ca: {},
      notBefore: new Date(Date.now() - 30 * DAY),
      notAfter: new Date(Date.now() - DAY),
    });
    const ek = await issue({ issuer: old, keys: ecLeafKeys, ek: true });
    expect(codeOf(() => verifyEkCertificate(ek.der, rootStore, { extraIntermediates: [old.der] }))).toBe('ERR_EK_CERT_EXPIRED');
    const store = rootStoreFromPemTexts([
      { name: 'root.pem', pem: root.pem },
      { name: 'old.pem', pem: old.pem },
    ]);
    expect(codeOf(() => verifyEkCertificate(ek.der, store))).toBe('ERR_EK_CERT_EXPIRED');
  });

  it('matches issuer names regardless of case and spacing', async () => {
    const ek = await issue({ issuerName: 'CN=ek  test intermediate, O=ATTESTOR', issuer: intermediate, keys: ecLeafKeys, ek: true });
    expect(verifyEkCertificate(ek.der, rootStore, { extraIntermediates: [intermediate.der] }).chain).toHaveLength(3);
  });

  it('reads the RSA key of an SPKI labelled RSAES-OAEP (TPM 1.2 era vendor certificates)', async () => {
    const spki = new Uint8Array(await subtle.exportKey('spki', rsaKeys.publicKey));
    // AlgorithmIdentifier { id-RSAES-OAEP, { pSourceFunc pSpecified "TCPA" } } as Infineon writes it.
    const algorithm = Buffer.from('302206092a864886f70d0101073015a213301106092a864886f70d010109040454435041', 'hex');
    // SEQUENCE (4 header bytes) { AlgorithmIdentifier rsaEncryption (15 bytes), BIT STRING }
    const bitString = spki.subarray(4 + 15);
    const body = Buffer.concat([algorithm, bitString]);
    const relabelled = Buffer.concat([Buffer.from([0x30, 0x82, body.length >> 8, body.length & 0xff]), body]);
    const ek = await issue({ issuer: root, keys: ecLeafKeys, spki: relabelled, ek: true });
    const v = verifyEkCertificate(ek.der, rootStore);
    expect(v.info.publicKey.equals(createPublicKey({ key: Buffer.from(spki), format: 'der', type: 'spki' }))).toBe(true);
  });

  it('refuses a certificate whose outer signature algorithm differs from the signed one', () => {
    const der = Buffer.from(leaf.der);
    // sha256WithRSAEncryption (…01 01 0b) appears in tbsCertificate and after it; make the outer one sha384 (…01 01 0c).
    const oid = Buffer.from('06092a864886f70d01010b', 'hex');
    const outer = der.lastIndexOf(oid);
    expect(der.indexOf(oid)).toBeLessThan(outer);
    der[outer + oid.length - 1] = 0x0c;
    expect(codeOf(() => parseEkCertificate(der))).toBe('ERR_EK_CERT_MALFORMED');
  });

  it('bounds the length of a chain', async () => {
    let issuer = root;
    const intermediates: Issued[] = [];
    for (let i = 1; i <= 7; i++) {
      issuer = await issue({ subject: `CN=Level ${i}`, issuer, keys: ecLeafKeys, ca: {} });
      intermediates.push(issuer);
    }
    const ek = await issue({ issuer, keys: ecLeafKeys, ek: true });
    // In the store: at most four intermediates may be sent along.
    const deep = rootStoreFromPemTexts([
      { name: 'root.pem', pem: root.pem },
      ...intermediates.map((c, i) => ({ name: `level-${i + 1}.pem`, pem: c.pem })),
    ]);
    expect(() => verifyEkCertificate(ek.der, deep)).toThrow(/more than 6 intermediates/);
    expect(codeOf(() => verifyEkCertificate(ek.der, deep))).toBe('ERR_EK_CERT_CHAIN');
    const six = await issue({ issuer: intermediates[5]!, keys: ecLeafKeys, ek: true });
    expect(verifyEkCertificate(six.der, deep).chain).toHaveLength(8);
  });

  it('refuses, without trying every ordering, intermediates that all sign each other', async () => {
    // Same name and key: each one verifies every other; the search must end with no anchor.
    const loop = await Promise.all(
      Array.from({ length: 4 }, () => issue({ subject: 'CN=Loop', issuerName: 'CN=Loop', keys: ecLeafKeys, ca: {} })),
    );
    const ek = await issue({ issuer: loop[0], keys: ecLeafKeys, ek: true });
    const extraIntermediates = loop.map((c) => c.der);
    expect(codeOf(() => verifyEkCertificate(ek.der, rootStore, { extraIntermediates }))).toBe('ERR_EK_CERT_CHAIN');
  });

  it('refuses a store whose certificates only certify each other', async () => {
    const a = await issue({ subject: 'CN=Cross A', issuerName: 'CN=Cross B', keys: rsaKeys, signingKey: ecLeafKeys.privateKey, ca: {} });
    const b = await issue({ subject: 'CN=Cross B', issuerName: 'CN=Cross A', keys: ecLeafKeys, signingKey: rsaKeys.privateKey, ca: {} });
    const texts = [
      { name: 'a.pem', pem: a.pem },
      { name: 'b.pem', pem: b.pem },
    ];
    expect(codeOf(() => rootStoreFromPemTexts(texts))).toBe('ERR_EK_ROOTS_EMPTY');
  });

  it('refuses what is not a certificate or breaks DER rules', async () => {
    const csr = await x509.Pkcs10CertificateRequestGenerator.create({
      name: 'CN=csr',
      keys: ecLeafKeys as never,
      signingAlgorithm: { name: 'ECDSA', hash: 'SHA-256' } as never,
    });
    const duplicate = await issue({ issuer: root, keys: ecLeafKeys, ek: true, extensions: [ekExtension(TCG_EK), ekExtension(TCG_EK)] });
    const indefinite = Uint8Array.from(leaf.der);
    indefinite[1] = 0x80;
    const multiByteTag = Uint8Array.from([0x1f, 0x81, 0x01, 0x00]);
    const oversized = Buffer.concat([Buffer.from([0x30, 0x82, 0x9c, 0x40]), Buffer.alloc(0x9c40)]);
    for (const bad of [new Uint8Array(csr.rawData), duplicate.der, indefinite, multiByteTag, oversized, new Uint8Array(70_000)]) {
      expect(codeOf(() => parseEkCertificate(bad))).toBe('ERR_EK_CERT_MALFORMED');
    }
  });

  it('refuses a certificate whose validity dates cannot be read', () => {
    const der = Buffer.from(leaf.der);
    // Validity ::= SEQUENCE { notBefore UTCTime "YYMMDDhhmmssZ", notAfter }: make the notAfter month "ab".
    const notAfter = der.indexOf(Buffer.from([0x17, 0x0d]), der.indexOf(Buffer.from([0x17, 0x0d])) + 2);
    der.write('ab', notAfter + 2 + 2, 'latin1');
    expect(() => parseEkCertificate(der)).toThrow(/neither UTCTime nor GeneralizedTime/);
    der.write('13', notAfter + 2 + 2, 'latin1');
    expect(() => parseEkCertificate(der)).toThrow(/invalid validity time/);
    expect(codeOf(() => parseEkCertificate(der))).toBe('ERR_EK_CERT_MALFORMED');
  });

  it('turns random bytes and random PEM text into AttestorError only', () => {
    fc.assert(
      fc.property(fc.uint8Array({ maxLength: 2048 }), (bytes) => onlyAttestorErrors(() => verifyEkCertificate(bytes, rootStore))),
      { numRuns: 300 },
    );
    fc.assert(
      fc.property(fc.base64String({ maxLength: 1024 }), (b64) =>
        onlyAttestorErrors(() => parseEkCertificate(`-----BEGIN CERTIFICATE-----\n${b64}\n-----END CERTIFICATE-----\n`)),
      ),
      { numRuns: 300 },
    );
    fc.assert(
      fc.property(fc.array(fc.record({ at: fc.nat(), xor: fc.integer({ min: 1, max: 255 }) }), { minLength: 1, maxLength: 4 }), (flips) => {
        const bytes = Uint8Array.from(leaf.der);
        for (const { at, xor } of flips) bytes[at % bytes.length]! ^= xor;
        onlyAttestorErrors(() => verifyEkCertificate(bytes, rootStore, { extraIntermediates: [intermediate.der] }));
      }),
      { numRuns: 300 },
    );
  });
});
