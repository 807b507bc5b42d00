import { spawn } from 'node:child_process';
import { randomBytes, webcrypto } from 'node:crypto';
import { connect } from 'node:net';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import '../dist/reflect-metadata.js';
import * as x509 from '@peculiar/x509';
import { akTemplate, ekTemplate, identityKeyTemplate, srkTemplate } from '../dist/agent/tpm-templates.js';
import { openTpm } from '../dist/agent/tss.js';
import { startSwtpm } from '../dist/dev/swtpm.js';
import { SerialQueue } from '../dist/serial-queue.js';
import { objectName } from '../dist/tpm/name.js';
import { publicKeyOf } from '../dist/tpm/public-key.js';
import { parseTpm2bPublic } from '../dist/tpm/public.js';

/*
 * The TPMs of `npm run load`: a pool of swtpm instances, each hosting many simulated agents.
 * An agent is a TPM identity, and one swtpm has one endorsement seed, so each agent's EK is a
 * primary key of that seed from the L-2 template (ECC P-256, the EK policy) with a unique field
 * of its own: a distinct key that only this swtpm holds, for which a test EK CA issues a
 * certificate. Its AK and identity key are ordinary children of the SRK. swtpm has three
 * object slots and no resource manager, so an instance's agents take turns: each holds the
 * instance for one TPM operation (activation, or the certify + quote of one attestation),
 * loads its keys, and flushes them again; the SRK stays loaded.
 */

const DAY_MS = 86_400_000;
/** tcg-kp-EKCertificate (TCG EK Credential Profile). */
const TCG_EK_CERTIFICATE = '2.23.133.8.1';
const SIGNING = { name: 'ECDSA', namedCurve: 'P-256', hash: 'SHA-256' };

/** A swtpm with one open connection, the SRK loaded, and a queue its agents take turns in. */
export async function startTpm() {
  const sw = await startSwtpm();
  let server;
  try {
    server = await serveOnUnixSocket(sw);
    const tpm = await openTpm(`swtpm:path=${server.path}`);
    const { handle: srk } = await tpm.createPrimary('owner', srkTemplate('ecc'));
    const turns = new SerialQueue();
    return {
      /** The swtpm serving this instance, for its CPU time. */
      pid: server.pid,
      /** Runs `operation(tpm, srk)` when no other agent of this instance is using it. */
      use: (operation) => turns.run(() => operation(tpm, srk)),
      async stop() {
        await tpm.close().catch(() => undefined);
        await server.stop();
        await sw.stop();
      },
    };
  } catch (e) {
    await server?.stop();
    await sw.stop();
    throw e;
  }
}

/**
 * The swtpm harness serves TCP, and the swtpm TCTI opens a connection per TPM command: at
 * hundreds of attestations a second that leaves tens of thousands of sockets in TIME-WAIT,
 * which starves every other process on the machine of ports. So the provisioned TPM state is
 * served again on a Unix socket (the TCTI's `path=`; its control channel at path + ".ctrl").
 */
async function serveOnUnixSocket(sw) {
  await sw.kill();
  const path = join(sw.dir, 'tpm.sock');
  const child = spawn(
    'swtpm',
    ['socket', '--tpm2', '--tpmstate', `dir=${join(sw.dir, 'state')}`, '--server', `type=unixio,path=${path}`, '--ctrl', `type=unixio,path=${path}.ctrl`, '--flags', 'not-need-init,startup-clear'],
    { stdio: 'ignore' },
  );
  const exited = new Promise((resolve) => child.once('exit', resolve));
  const orphaned = () => child.kill('SIGKILL');
  process.once('exit', orphaned);
  const stop = async () => {
    process.off('exit', orphaned);
    if (child.exitCode === null && child.signalCode === null) {
      child.kill('SIGTERM');
      await exited;
    }
  };
  for (let waited = 0; !(await accepts(path)); waited += 50) {
    if (child.exitCode !== null || waited > 10_000) {
      await stop();
      throw new Error(`swtpm did not serve ${path}`);
    }
    await sleep(50);
  }
  return { pid: child.pid, path, stop };
}

function accepts(path) {
  return new Promise((resolve) => {
    const socket = connect(path);
    socket.once('connect', () => {
      socket.destroy();
      resolve(true);
    });
    socket.once('error', () => resolve(false));
  });
}

/** A self-signed EK root for the verifier's EK root store, and the certificates it issues for the agents' EKs. */
export async function createEkCa() {
  x509.cryptoProvider.set(webcrypto);
  const keys = await webcrypto.subtle.generateKey(SIGNING, false, ['sign', 'verify']);
  const name = 'CN=Attestor load test EK CA';
  const validity = { notBefore: new Date(Date.now() - DAY_MS), notAfter: new Date(Date.now() + DAY_MS) };
  const root = await x509.X509CertificateGenerator.createSelfSigned({
    serialNumber: '01',
    name,
    keys,
    signingAlgorithm: SIGNING,
    ...validity,
    extensions: [new x509.BasicConstraintsExtension(true, undefined, true), new x509.KeyUsagesExtension(x509.KeyUsageFlags.keyCertSign, true)],
  });
  let serial = 1;
  return {
    pem: root.toString('pem'),
    /** DER of an EK certificate for the marshalled TPM2B_PUBLIC `ekPublic`. */
    async issue(ekPublic) {
      const spki = publicKeyOf(parseTpm2bPublic(ekPublic)).export({ type: 'spki', format: 'der' });
      const cert = await x509.X509CertificateGenerator.create({
        serialNumber: (++serial).toString(16).padStart(2, '0'),
        subject: `CN=load agent EK ${serial}`,
        issuer: name,
        publicKey: spki,
        signingKey: keys.privateKey,
        signingAlgorithm: SIGNING,
        ...validity,
        extensions: [
          new x509.BasicConstraintsExtension(false, undefined, true),
          new x509.KeyUsagesExtension(x509.KeyUsageFlags.keyAgreement, true),
          new x509.ExtendedKeyUsageExtension([TCG_EK_CERTIFICATE]),
        ],
      });
      return new Uint8Array(cert.rawData);
    },
  };
}

/** The L-2 EK template with its own unique.ecc.x: the two coordinates, each a TPM2B of 32 bytes, end the template. */
function agentEkTemplate(unique) {
  const template = Buffer.from(ekTemplate('ecc'));
  unique.copy(template, template.length - 2 * (2 + 32) + 2);
  return template;
}

/**
 * A new agent on `instance`: its EK (certified by `ekCa`), AK and identity key. Resolves with
 * the part of TpmSession that enrollAgent() and buildAttestationRequest() use, bound to this
 * agent, and `attest(build)`, which runs `build(session)` with the agent's keys loaded.
 */
export async function createTpmAgent(instance, ekCa) {
  const ekTemplateOfAgent = agentEkTemplate(randomBytes(32));
  const made = await instance.use(async (tpm, srk) => {
    const ek = await tpm.createPrimary('endorsement', ekTemplateOfAgent);
    await tpm.flushContext(ek.handle);
    return { ek: ek.public, ak: await tpm.create(srk, akTemplate('ecc')), identity: await tpm.create(srk, identityKeyTemplate()) };
  });
  const key = (blobs) => ({ public: blobs.public, name: objectName(parseTpm2bPublic(blobs.public)) });
  const ek = { type: 'ecc', public: made.ek, certificate: await ekCa.issue(made.ek) };
  const ak = key(made.ak);
  const identity = key(made.identity);

  /** Runs `operation` with the agent's AK (and identity key) loaded in its turn on the instance; flushes them after. */
  const withKeys = (withIdentity, operation) =>
    instance.use(async (tpm, srk) => {
      const loaded = [await tpm.load(srk, made.ak.private, made.ak.public)];
      try {
        if (withIdentity) loaded.push(await tpm.load(srk, made.identity.private, made.identity.public));
        return await operation(tpm, ...loaded);
      } finally {
        for (const handle of loaded.reverse()) await tpm.flushContext(handle);
      }
    });

  return {
    ek,
    ak,
    activate: (credentialBlob, encryptedSecret) =>
      withKeys(false, async (tpm, akHandle) => {
        const primary = await tpm.createPrimary('endorsement', ekTemplateOfAgent);
        try {
          return await tpm.activateCredential(akHandle, primary.handle, credentialBlob, encryptedSecret);
        } finally {
          await tpm.flushContext(primary.handle);
        }
      }),
    attest: (build) =>
      withKeys(true, (tpm, akHandle, identityHandle) =>
        build({
          tpm,
          identityKey: async () => identity,
          certifyIdentityKey: (qualifyingData) => tpm.certify(identityHandle, akHandle, qualifyingData),
          quote: (selection, qualifyingData) => tpm.quote(akHandle, qualifyingData, selection),
        }),
      ),
  };
}
