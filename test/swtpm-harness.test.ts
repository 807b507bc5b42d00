import { X509Certificate } from 'node:crypto';
import { existsSync } from 'node:fs';
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { connect } from 'node:net';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { EK_CERT_NV } from '../src/tpm/constants.js';
import { hexHandle, startSwtpm, tpm2, type Swtpm } from './helpers/swtpm.js';

let sw: Swtpm;
beforeAll(async () => {
  sw = await startSwtpm();
});
afterAll(async () => {
  await sw?.stop();
});

async function readEkCert(index: number): Promise<X509Certificate> {
  const { stdout } = await tpm2(sw, ['tpm2_nvread', hexHandle(index), '-C', 'o']);
  return new X509Certificate(stdout);
}

describe('swtpm harness', () => {
  it('exposes a tcti for tpm2-tools', () => {
    expect(sw.tcti).toBe(`swtpm:host=127.0.0.1,port=${sw.port}`);
    expect(sw.env.TPM2TOOLS_TCTI).toBe(sw.tcti);
    expect(sw.ctrlPort).not.toBe(sw.port);
  });

  it.each([
    ['RSA 2048', EK_CERT_NV.rsa2048, { modulusLength: 2048 }],
    ['ECC P-256', EK_CERT_NV.eccP256, { namedCurve: 'prime256v1' }],
  ])('has an %s EK certificate issued by the local CA', async (_label, index, details) => {
    const cert = await readEkCert(index);
    const ca = new X509Certificate(sw.caCertPem);
    expect(cert.checkIssued(ca)).toBe(true);
    expect(cert.verify(ca.publicKey)).toBe(true);
    expect(cert.publicKey.asymmetricKeyDetails).toMatchObject(details);
    // The EK certificate must not verify under another key (the root above the CA).
    const root = new X509Certificate(sw.rootCaCertPem);
    expect(cert.verify(root.publicKey)).toBe(false);
    expect(ca.verify(root.publicKey)).toBe(true);
  });

  it('certifies the key tpm2_createek derives for the ECC P-256 EK', async () => {
    const cert = await readEkCert(EK_CERT_NV.eccP256);
    await tpm2(sw, ['tpm2_createek', '-G', 'ecc', '-c', 'ek-ecc.ctx', '-f', 'der', '-u', 'ek-ecc.der']);
    await tpm2(sw, ['tpm2_flushcontext', '-t']);
    const der = await readFile(join(sw.dir, 'ek-ecc.der'));
    expect(cert.publicKey.export({ type: 'spki', format: 'der' }).equals(der)).toBe(true);
  });

  it('stop() kills swtpm and removes its dir', async () => {
    const other = await startSwtpm({ pcrBanks: 'sha256' });
    expect(existsSync(other.dir)).toBe(true);
    await other.stop();
    expect(existsSync(other.dir)).toBe(false);
    const refused = await new Promise<boolean>((resolve) => {
      const s = connect(other.port, '127.0.0.1');
      s.once('connect', () => {
        s.destroy();
        resolve(false);
      });
      s.once('error', () => resolve(true));
    });
    expect(refused).toBe(true);
  });
});
