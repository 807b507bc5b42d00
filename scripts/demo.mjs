// `npm run demo`: the service story with real parts. A verifier on SQLite with its issuing
// keys in a SoftHSM token; a host whose TPM is swtpm enrolls with `attestor-agent`; the
// operator captures and enforces a baseline; the host attests and gets an X.509 certificate
// and a JWT bound to a key inside its TPM; OpenSSL and jose verify them; then a PCR changes and
// the next attestation is refused, with the reason. `npm run demo -- evidence` runs the
// evidence demo (real machines' quotes, event logs and IMA lists).
import { spawn, spawnSync } from 'node:child_process';
import { createHash, X509Certificate } from 'node:crypto';
import { mkdtempSync, readFileSync, rmSync, writeFileSync, mkdirSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';

if (process.argv[2] === 'evidence') {
  await import('./demo-evidence.mjs');
  process.exit(process.exitCode ?? 0);
}

const { startSwtpm } = await import('../dist/dev/swtpm.js');
const { startSoftHsm } = await import('../dist/dev/softhsm.js');
const { createRemoteJWKSet, customFetch, jwtVerify } = await import('jose');
const { Agent, request: httpsRequest } = await import('node:https');

const root = fileURLToPath(new URL('..', import.meta.url));
const attestorBin = join(root, 'dist/cli/attestor.js');
const agentBin = join(root, 'dist/cli/attestor-agent.js');
const work = mkdtempSync(join(tmpdir(), 'attestor-demo-'));
const cleanups = [];
let failed = false;

const say = (text) => console.log(`\n== ${text}`);
const show = (text) => console.log(text.trimEnd().replace(/^/gm, '   '));
function fail(message) {
  failed = true;
  throw new Error(message);
}

/** Runs a command as a user would type it; shows it and its output. */
function run(label, args, { env = {}, expect = 0 } = {}) {
  const [cmd, ...rest] = args;
  const shown = args.map((a) => (a.includes(work) ? a.replaceAll(work, '$DEMO') : a)).join(' ');
  console.log(`$ ${label ?? shown}`);
  const r = spawnSync(cmd, rest, { encoding: 'utf8', env: { ...process.env, ...env } });
  show(`${r.stdout}${r.stderr}`);
  if (r.status !== expect) fail(`exit status ${r.status}, expected ${expect}`);
  return r.stdout;
}

try {
  console.log('Attestor demo: a TPM-attested host gets short-lived credentials, and loses them when it changes.');
  console.log(`(scratch space: ${work}, removed at the end)`);

  say('1. The parts: a software TPM for the host, a SoftHSM token for the verifier');
  const tpm = await startSwtpm();
  cleanups.push(() => tpm.stop());
  const hsm = await startSoftHsm({ tokenLabel: 'attestor' });
  cleanups.push(() => hsm.stop());
  const ekRoots = join(work, 'ek-roots');
  mkdirSync(ekRoots);
  writeFileSync(join(ekRoots, 'swtpm-root.pem'), tpm.rootCaCertPem);
  writeFileSync(join(ekRoots, 'swtpm-issuer.pem'), tpm.caCertPem);
  const pinFile = join(work, 'hsm.pin');
  writeFileSync(pinFile, `${hsm.userPin}\n`, { mode: 0o600 });
  show(`swtpm TPM at ${tpm.tcti} (its EK certificates are issued by a local CA, trusted below as the EK root)`);
  show(`SoftHSM token "attestor" (its own token directory)`);

  say('2. The verifier: SQLite in its data dir, issuing keys generated inside the token');
  const dataDir = join(work, 'verifier');
  const keys = `pkcs11:token=attestor?module-path=${hsm.modulePath}&pin-source=${pinFile}`;
  const serveArgs = [attestorBin, 'serve', '--data-dir', dataDir, '--listen', '127.0.0.1:0', '--ek-roots', ekRoots, '--trust-domain', 'demo.attestor.internal', '--keys', keys, '--log-level', 'warn'];
  console.log(`$ attestor serve --data-dir $DEMO/verifier --listen 127.0.0.1:0 --ek-roots $DEMO/ek-roots --trust-domain demo.attestor.internal --keys 'pkcs11:token=attestor?module-path=...&pin-source=...'`);
  const server = spawn(process.execPath, serveArgs, { env: { ...process.env, SOFTHSM2_CONF: hsm.conf }, stdio: ['ignore', 'pipe', 'inherit'] });
  cleanups.push(() => new Promise((r) => (server.exitCode !== null ? r() : (server.once('exit', r), server.kill('SIGTERM')))));
  const started = await new Promise((resolve, reject) => {
    let out = '';
    const timer = setTimeout(() => reject(new Error(`the verifier did not start within 30 s:\n${out}`)), 30_000);
    server.once('exit', (code) => reject(new Error(`the verifier exited (${code}):\n${out}`)));
    server.stdout.on('data', (d) => {
      out += d;
      const url = /listening on (https:\S+)/.exec(out)?.[1];
      const fingerprint = /Root CA fingerprint: ([0-9a-f]{64})/.exec(out)?.[1];
      const token = /First admin token[^:]*: (\S+)/.exec(out)?.[1];
      if (url && fingerprint && token) {
        clearTimeout(timer);
        resolve({ url, fingerprint, token, out });
      }
    });
  });
  show(started.out.replace(started.token, `${started.token.slice(0, 6)}... (kept in $ATTESTOR_TOKEN for the operator commands)`));
  const serverEnv = { ATTESTOR_SERVER: started.url, ATTESTOR_CA_FINGERPRINT: started.fingerprint };
  const operatorEnv = { ...serverEnv, ATTESTOR_TOKEN: started.token };

  say('3. The host enrolls: EK certificate checked, AK activated by TPM2_ActivateCredential');
  const stateDir = join(work, 'agent');
  const agentArgs = (cmd, more = []) => [process.execPath, agentBin, cmd, '--tcti', tpm.tcti, '--state-dir', stateDir, ...more];
  run('attestor-agent enroll --tcti swtpm:... --state-dir $DEMO/agent --label role=demo', agentArgs('enroll', ['--label', 'role=demo']), { env: serverEnv });
  const { agentId } = JSON.parse(readFileSync(join(stateDir, 'agent.json'), 'utf8'));

  say('4. Its first attestation: verified, but no baseline is enforced yet, so no credentials (fail closed)');
  run('attestor-agent attest --key tpm', agentArgs('attest', ['--key', 'tpm']), { env: serverEnv, expect: 1 });

  say('5. The operator captures a baseline from that verified evidence and enforces it');
  const captured = JSON.parse(
    run(
      `attestor baseline capture --agent ${agentId.slice(0, 12)}... --name demo-host --audience demo-service --json`,
      [process.execPath, attestorBin, 'baseline', 'capture', '--agent', agentId, '--name', 'demo-host', '--audience', 'demo-service', '--json'],
      { env: operatorEnv },
    ),
  );
  run(`attestor baseline enforce ${captured.id}`, [process.execPath, attestorBin, 'baseline', 'enforce', captured.id], { env: operatorEnv });

  say('6. The host attests again: affirming, credentials bound to a key that never leaves its TPM');
  run('attestor-agent attest --key tpm --audience demo-service', agentArgs('attest', ['--key', 'tpm', '--audience', 'demo-service']), { env: serverEnv });

  say('7. Relying parties check them');
  run('openssl verify -CAfile bundle.pem cert.pem', ['openssl', 'verify', '-x509_strict', '-CAfile', join(stateDir, 'bundle.pem'), join(stateDir, 'cert.pem')]);
  const cert = new X509Certificate(readFileSync(join(stateDir, 'cert.pem')));
  show(`subject alternative name: ${cert.subjectAltName}\nvalid until: ${cert.validTo}`);
  const jwt = readFileSync(join(stateDir, 'token.jwt'), 'utf8').trim();
  const ca = readFileSync(join(stateDir, 'bundle.pem'), 'utf8');
  const discovery = await (await fetchPinned(`${started.url}/.well-known/openid-configuration`, ca)).json();
  const jwks = createRemoteJWKSet(new URL(discovery.jwks_uri), { [customFetch]: (url, init) => fetchPinned(url, ca, init) });
  const { payload, protectedHeader } = await jwtVerify(jwt, jwks, { issuer: discovery.issuer, audience: 'demo-service' });
  const x5t = createHash('sha256').update(cert.raw).digest('base64url');
  if (payload.cnf?.['x5t#S256'] !== x5t) fail('the JWT is not bound to the certificate');
  console.log('$ (a relying party) verify token.jwt through OIDC discovery + JWKS, and its cnf against cert.pem');
  show(`JWT verified: alg ${protectedHeader.alg}, kid ${protectedHeader.kid.slice(0, 12)}..., sub ${payload.sub}, aud ${payload.aud}`);
  show(`cnf x5t#S256 = SHA-256 of cert.pem: yes; attestation claims: verdict ${payload.attestation?.verdict}`);

  say('8. Something changes on the host: PCR 15 is extended');
  run('tpm2_pcrextend 15:sha256=<digest>', ['tpm2_pcrextend', `15:sha256=${createHash('sha256').update('unexpected change').digest('hex')}`], { env: tpm.env });

  say('9. The next attestation is refused, and says why');
  run('attestor-agent attest --key tpm --audience demo-service', agentArgs('attest', ['--key', 'tpm', '--audience', 'demo-service']), { env: serverEnv, expect: 1 });
  run(`attestor agent show ${agentId.slice(0, 12)}...`, [process.execPath, attestorBin, 'agent', 'show', agentId], { env: operatorEnv });

  console.log('\ndemo complete: enrolled, attested, credentials verified, change detected');
} catch (e) {
  failed = true;
  console.error(`\ndemo FAILED: ${e.message}`);
} finally {
  for (const c of cleanups.reverse()) await c().catch(() => undefined);
  rmSync(work, { recursive: true, force: true });
}
process.exit(failed ? 1 : 0);

/** fetch() with the verifier's root CA pinned (node's fetch takes no CA option, so node:https). */
function fetchPinned(url, ca, init = {}) {
  return new Promise((resolve, reject) => {
    const req = httpsRequest(new URL(url), { agent: new Agent({ ca }), method: 'GET', headers: init.headers }, (res) => {
      const chunks = [];
      res.on('data', (c) => chunks.push(c));
      res.on('end', () => resolve(new Response(Buffer.concat(chunks), { status: res.statusCode })));
    });
    req.on('error', reject);
    req.end();
  });
}
