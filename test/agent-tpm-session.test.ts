/**
 * The agent's TPM session (src/agent/tpm-session.ts) against a real swtpm: EK and its
 * certificate, an AK created once and kept, quote, certify and sign with the identity key,
 * activation, quotes with the PCR values they signed (src/agent/quote-with-values.ts), and the
 * failures of a damaged state directory.
 */
import { createHash, randomBytes } from 'node:crypto';
import { chmod, mkdir, readdir, readFile, rm, stat, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { quoteWithPcrValues } from '../src/agent/quote-with-values.js';
import { EK_CERT_INDEX, TpmSession } from '../src/agent/tpm-session.js';
import { srkTemplate } from '../src/agent/tpm-templates.js';
import { TssError, openTpm } from '../src/agent/tss.js';
import { verifyCertify } from '../src/appraisal/verify-certify.js';
import { verifyQuote } from '../src/appraisal/verify-quote.js';
import { TPMA_OBJECT } from '../src/tpm/constants.js';
import { verifyEkCertificate } from '../src/tpm/ek-certificate.js';
import { rootStoreFromPemTexts } from '../src/tpm/ek-roots.js';
import { makeCredential } from '../src/tpm/make-credential.js';
import { objectName } from '../src/tpm/name.js';
import { parseTpm2bPublic } from '../src/tpm/public.js';
import { parseSignature } from '../src/tpm/signature.js';
import { verifyTpmSignature } from '../src/tpm/verify-signature.js';
import { hex } from '../src/bytes.js';
import { AttestorError } from '../src/errors.js';
import { rejection } from './helpers/rejection.js';
import { hexHandle, startSwtpm, tpm2, transientHandles, type Swtpm } from './helpers/swtpm.js';

let sw: Swtpm;
let stateSeq = 0;
beforeAll(async () => {
  sw = await startSwtpm();
});
afterAll(async () => {
  await sw?.stop();
});

function newStateDir(): string {
  return join(sw.dir, `agent-state-${stateSeq++}`);
}

/** Opens a session, runs `f`, and always closes it. */
async function withSession<T>(opts: Partial<Parameters<typeof TpmSession.open>[0]>, f: (s: TpmSession) => Promise<T>): Promise<T> {
  const session = await TpmSession.open({ tcti: sw.tcti, stateDir: newStateDir(), ...opts });
  try {
    return await f(session);
  } finally {
    await session.close();
  }
}

function ekRoots() {
  return rootStoreFromPemTexts([{ name: 'swtpm-localca', pem: sw.caCertPem }]);
}

describe('a session with the default keys (RSA EK, ECC AK)', () => {
  let session: TpmSession;
  let dir: string;

  beforeAll(async () => {
    dir = newStateDir();
    session = await TpmSession.open({ tcti: sw.tcti, stateDir: dir });
  });
  afterAll(async () => {
    await session?.close();
  });

  it('uses the RSA EK the certificate at 0x01c00002 certifies, which chains to the swtpm CA', async () => {
    expect(session.ek.type).toBe('rsa');
    const tools = (await tpm2(sw, ['tpm2_nvread', hexHandle(EK_CERT_INDEX.rsa), '-C', 'o'])).stdout;
    expect(hex(session.ek.certificate!)).toBe(hex(tools));
    const verified = verifyEkCertificate(session.ek.certificate!, ekRoots(), { ekPublic: parseTpm2bPublic(session.ek.public) });
    expect(verified.anchor).toBe('swtpm-localca');
  });

  it('keeps the AK as tpm2-tools blobs, private to the agent', async () => {
    const pub = parseTpm2bPublic(session.ak.public);
    const { fixedTPM, fixedParent, sensitiveDataOrigin, userWithAuth, restricted, sign } = TPMA_OBJECT;
    expect(pub.type).toBe('ecc');
    expect(pub.objectAttributes).toBe(fixedTPM | fixedParent | sensitiveDataOrigin | userWithAuth | restricted | sign);
    expect(hex(session.ak.name)).toBe(hex(objectName(pub)));
    expect(hex(await readFile(join(dir, 'ak.pub')))).toBe(hex(session.ak.public));
    for (const file of ['ak.pub', 'ak.priv']) expect((await stat(join(dir, file))).mode & 0o777).toBe(0o600);
    expect((await stat(dir)).mode & 0o777).toBe(0o700);
  });

  it('quotes a PCR selection with qualifying data; verifyQuote accepts it with the PCRs read', async () => {
    const qualifyingData = randomBytes(32);
    const selection = { sha256: [0, 1, 2, 3, 4, 5, 6, 7] };
    const { attest, signature } = await session.quote(selection, qualifyingData);
    const pcrs = await session.pcrRead(selection);
    const verified = verifyQuote(parseTpm2bPublic(session.ak.public), { quote: attest, signature, pcrs }, { qualifyingData, requiredPcrs: selection });
    expect(Object.keys(verified.pcrs.sha256!)).toHaveLength(8);
  });

  it('certifies the identity key with the AK; verifyCertify accepts it', async () => {
    const key = await session.identityKey();
    const keyPublic = parseTpm2bPublic(key.public);
    expect(keyPublic.objectAttributes & TPMA_OBJECT.restricted).toBe(0);
    expect(keyPublic.objectAttributes & TPMA_OBJECT.fixedTPM).toBe(TPMA_OBJECT.fixedTPM);
    const qualifyingData = randomBytes(32);
    const { attest, signature } = await session.certifyIdentityKey(qualifyingData);
    verifyCertify(parseTpm2bPublic(session.ak.public), { keyPublic, certifyInfo: attest, signature }, { qualifyingData });
  });

  it('signs with the identity key', async () => {
    const message = Buffer.from('proof of possession');
    const signature = await session.signWithIdentityKey(createHash('sha256').update(message).digest());
    verifyTpmSignature(parseTpm2bPublic((await session.identityKey()).public), message, parseSignature(signature));
  });

  it('activates a credential made for its EK and AK, and not one made for another Name', async () => {
    const secret = randomBytes(32);
    const ek = parseTpm2bPublic(session.ek.public);
    const cred = makeCredential(ek, session.ak.name, secret);
    expect(hex(await session.activate(cred.credentialBlob, cred.encryptedSecret))).toBe(hex(secret));

    const wrong = makeCredential(ek, (await session.identityKey()).name, secret);
    await rejection(session.activate(wrong.credentialBlob, wrong.encryptedSecret), 'ERR_TSS_COMMAND');
    // The EK is flushed after a failed activation too: a second good one still works.
    expect(hex(await session.activate(cred.credentialBlob, cred.encryptedSecret))).toBe(hex(secret));
  });

  it('reports the activation failure, not a failure to flush the EK afterwards', async () => {
    const ek = parseTpm2bPublic(session.ek.public);
    const wrong = makeCredential(ek, (await session.identityKey()).name, randomBytes(32));
    const flush = session.tpm.flushContext;
    let leftEk: number | undefined;
    // A fault injected into the wrapper: the flush after the failed activation fails too.
    session.tpm.flushContext = async (handle) => {
      leftEk = handle;
      throw new AttestorError('ERR_TSS_UNREACHABLE', 'injected flush failure');
    };
    try {
      const e = await rejection(session.activate(wrong.credentialBlob, wrong.encryptedSecret), 'ERR_TSS_COMMAND');
      expect((e as TssError).command).toBe('Esys_ActivateCredential');
    } finally {
      session.tpm.flushContext = flush;
    }
    await session.tpm.flushContext(leftEk!);
  });

  it('runs concurrent operations of one session to completion, each result valid', async () => {
    const qualifyingData = randomBytes(16);
    const ek = parseTpm2bPublic(session.ek.public);
    const cred = makeCredential(ek, session.ak.name, qualifyingData);
    const selection = { sha256: [0] };
    const [quote, certify, secret] = await Promise.all([
      session.quote(selection, qualifyingData),
      session.certifyIdentityKey(qualifyingData),
      session.activate(cred.credentialBlob, cred.encryptedSecret),
    ]);
    const ak = parseTpm2bPublic(session.ak.public);
    const pcrs = await session.pcrRead(selection);
    verifyQuote(ak, { quote: quote.attest, signature: quote.signature, pcrs }, { qualifyingData, requiredPcrs: selection });
    const keyPublic = parseTpm2bPublic((await session.identityKey()).public);
    verifyCertify(ak, { keyPublic, certifyInfo: certify.attest, signature: certify.signature }, { qualifyingData });
    expect(hex(secret)).toBe(hex(qualifyingData));
  });

  it('keeps the AK and identity key across sessions on the same state directory', async () => {
    const identity = await session.identityKey();
    const ak = session.ak;
    await session.close();
    // akType only applies to a new AK: the kept one is the one the verifier enrolled.
    session = await TpmSession.open({ tcti: sw.tcti, stateDir: dir, akType: 'rsa' });
    expect(hex(session.ak.public)).toBe(hex(ak.public));
    expect(parseTpm2bPublic(session.ak.public).type).toBe('ecc');
    expect(hex((await session.identityKey()).public)).toBe(hex(identity.public));
  });

  it('leaves only its AK and identity key loaded, and nothing after close()', async () => {
    await session.identityKey();
    expect((await transientHandles(sw)).split('\n')).toHaveLength(2);
    await session.close();
    expect(await transientHandles(sw)).toBe('');
  });
});

describe('EK and AK choices', () => {
  it('uses the ECC EK and its certificate at 0x01c0000a, with an RSA AK', async () => {
    await withSession({ ekType: 'ecc', akType: 'rsa' }, async (s) => {
      expect(s.ek.type).toBe('ecc');
      const tools = (await tpm2(sw, ['tpm2_nvread', hexHandle(EK_CERT_INDEX.ecc), '-C', 'o'])).stdout;
      expect(hex(s.ek.certificate!)).toBe(hex(tools));
      verifyEkCertificate(s.ek.certificate!, ekRoots(), { ekPublic: parseTpm2bPublic(s.ek.public) });
      expect(parseTpm2bPublic(s.ak.public).type).toBe('rsa');

      const secret = randomBytes(32);
      const cred = makeCredential(parseTpm2bPublic(s.ek.public), s.ak.name, secret);
      expect(hex(await s.activate(cred.credentialBlob, cred.encryptedSecret))).toBe(hex(secret));

      const qualifyingData = randomBytes(20);
      const quote = await s.quote({ sha1: [0], sha256: [0, 7] }, qualifyingData);
      const pcrs = await s.pcrRead({ sha1: [0], sha256: [0, 7] });
      verifyQuote(parseTpm2bPublic(s.ak.public), { quote: quote.attest, signature: quote.signature, pcrs }, { qualifyingData, allowSha1: false });
    });
  });
});

describe('the state directory', () => {
  it('gives two agents opening a fresh state directory at once one AK, which both use', async () => {
    const dir = newStateDir();
    const [a, b] = await Promise.all([TpmSession.open({ tcti: sw.tcti, stateDir: dir }), TpmSession.open({ tcti: sw.tcti, stateDir: dir })]);
    try {
      expect(hex(a.ak.public)).toBe(hex(b.ak.public));
      expect(hex(await readFile(join(dir, 'ak.pub')))).toBe(hex(a.ak.public));
      // No temporary files are left behind, only the key and the lock file.
      expect((await readdir(dir)).sort()).toEqual(['.lock', 'ak.priv', 'ak.pub']);
      // Both quote with it.
      const qualifyingData = randomBytes(16);
      for (const s of [a, b]) {
        const q = await s.quote({ sha256: [0] }, qualifyingData);
        verifyQuote(parseTpm2bPublic(a.ak.public), { quote: q.attest, signature: q.signature, pcrs: await s.pcrRead({ sha256: [0] }) }, { qualifyingData });
      }
    } finally {
      await a.close();
      await b.close();
    }
  });

  it.each(['777', '770', '703'])('refuses a state directory of mode %s, writable by others (ERR_TPM_STATE)', async (mode) => {
    const dir = newStateDir();
    await mkdir(dir);
    await chmod(dir, parseInt(mode, 8));
    const e = await rejection(TpmSession.open({ tcti: sw.tcti, stateDir: dir }), 'ERR_TPM_STATE');
    expect(e.message).toContain(`mode ${mode}`);
    expect(await readdir(dir)).toEqual([]);
  });

  it('reports a TPM without room for the AK (a TPM warning) as ERR_TSS_COMMAND, not as a foreign AK', async () => {
    const dir = await stateWithAk();
    // swtpm has three object slots and no resource manager: fill two of them elsewhere.
    const filler = await openTpm(sw.tcti);
    try {
      await filler.createPrimary('owner', srkTemplate('ecc'));
      await filler.createPrimary('owner', srkTemplate('rsa'));
      const e = await rejection(TpmSession.open({ tcti: sw.tcti, stateDir: dir }), 'ERR_TSS_COMMAND');
      // TPM_RC_OBJECT_MEMORY (Part 2 §6.6.3): out of object slots.
      expect((e as TssError).rc).toBe(0x902);
      expect((e as TssError).command).toBe('Esys_Load');
    } finally {
      await filler.close();
    }
    // The AK was kept and loads once there is room.
    const s = await TpmSession.open({ tcti: sw.tcti, stateDir: dir });
    expect(hex(s.ak.public)).toBe(hex(await readFile(join(dir, 'ak.pub'))));
    await s.close();
  });
});

async function stateWithAk(): Promise<string> {
  const dir = newStateDir();
  const s = await TpmSession.open({ tcti: sw.tcti, stateDir: dir });
  await s.close();
  return dir;
}

describe('a damaged state directory', () => {
  it('refuses a state directory with an ak.pub but no ak.priv (ERR_TPM_STATE)', async () => {
    const dir = await stateWithAk();
    await rm(join(dir, 'ak.priv'));
    const e = await rejection(TpmSession.open({ tcti: sw.tcti, stateDir: dir }), 'ERR_TPM_STATE');
    expect(e.message).toContain('ak.priv');
  });

  it('refuses an ak.pub that is not a TPM2B_PUBLIC (ERR_TPM_STATE)', async () => {
    const dir = await stateWithAk();
    await writeFile(join(dir, 'ak.pub'), Uint8Array.of(0, 4, 1, 2));
    await rejection(TpmSession.open({ tcti: sw.tcti, stateDir: dir }), 'ERR_TPM_STATE');
  });

  it('refuses AK blobs this TPM cannot load, rather than making a new AK (ERR_TPM_STATE)', async () => {
    const dir = await stateWithAk();
    const priv = await readFile(join(dir, 'ak.priv'));
    priv[priv.length - 1]! ^= 0x01;
    await writeFile(join(dir, 'ak.priv'), priv);
    const e = await rejection(TpmSession.open({ tcti: sw.tcti, stateDir: dir }), 'ERR_TPM_STATE');
    expect(e.message).toMatch(/integrity/);
    // TPM_RC_INTEGRITY on TPM2_Load's first parameter (inPrivate).
    expect(((e as AttestorError).cause as TssError).rc).toBe(0x1df);
    // The blobs were left as they were.
    expect(hex(await readFile(join(dir, 'ak.priv')))).toBe(hex(priv));
  });

  it('does not leave objects loaded after a failed open', async () => {
    expect(await transientHandles(sw)).toBe('');
  });

  it('reports an unreachable TPM as ERR_TSS_UNREACHABLE', async () => {
    const dir = newStateDir();
    await mkdir(dir);
    await rejection(TpmSession.open({ tcti: 'swtpm:host=127.0.0.1,port=1', stateDir: dir }), 'ERR_TSS_UNREACHABLE');
  });
});

describe('PCR values that change while quoting', () => {
  const selection = { sha256: [7, 8] };
  const extendPcr8 = (s: TpmSession) => s.tpm.pcrExtend(8, { sha256: randomBytes(32) });

  it('are checked against the quote itself, so a change to a PCR the update counter ignores (16) is seen', async () => {
    const session = await TpmSession.open({ tcti: sw.tcti, stateDir: newStateDir() });
    try {
      const nonce = randomBytes(16);
      const quoting = quoteWithPcrValues(session, { sha256: [7, 16] }, nonce);
      // Queued behind the first quote, so it lands before that quote's values are read.
      await session.tpm.pcrExtend(16, { sha256: randomBytes(32) });
      const q = await quoting;
      expect(q.attempts).toBeGreaterThan(1);
      verifyQuote(parseTpm2bPublic(session.ak.public), { quote: q.attest, signature: q.signature, pcrs: q.values }, { qualifyingData: nonce, requiredPcrs: { sha256: [7, 16] } });
    } finally {
      await session.close();
    }
  });

  it('are read again with a new quote until they are those the quote signed', async () => {
    const session = await TpmSession.open({ tcti: sw.tcti, stateDir: newStateDir() });
    try {
      const nonce = randomBytes(16);
      const quoting = quoteWithPcrValues(session, selection, nonce);
      // Queued behind the first quote, so it lands before that quote's values are read.
      await extendPcr8(session);
      const q = await quoting;
      expect(q.attempts).toBeGreaterThan(1);
      verifyQuote(parseTpm2bPublic(session.ak.public), { quote: q.attest, signature: q.signature, pcrs: q.values }, { qualifyingData: nonce, requiredPcrs: selection });
    } finally {
      await session.close();
    }
  });

  it('give up with ERR_TPM_PCRS_UNSTABLE when every attempt sees a change', async () => {
    const session = await TpmSession.open({ tcti: sw.tcti, stateDir: newStateDir() });
    let quoting = true;
    try {
      const result = quoteWithPcrValues(session, selection, randomBytes(16), 3).finally(() => (quoting = false));
      // One extend queued behind each of the quoting's TPM calls: every interval sees a change.
      const extending = (async () => {
        while (quoting) await extendPcr8(session);
      })();
      await rejection(result, 'ERR_TPM_PCRS_UNSTABLE');
      await extending;
    } finally {
      await session.close();
    }
  });
});

describe('which EK "auto" picks (runs last: it removes the EK certificates)', () => {
  it('takes the ECC EK when only its certificate is present, and RSA without a certificate when none is', async () => {
    await tpm2(sw, ['tpm2_nvundefine', hexHandle(EK_CERT_INDEX.rsa), '-C', 'p']);
    await withSession({}, async (s) => {
      expect(s.ek.type).toBe('ecc');
      expect(s.ek.certificate).not.toBeNull();
    });
    await tpm2(sw, ['tpm2_nvundefine', hexHandle(EK_CERT_INDEX.ecc), '-C', 'p']);
    await withSession({}, async (s) => {
      expect(s.ek.type).toBe('rsa');
      expect(s.ek.certificate).toBeNull();
    });
  });
});
