// `npm run demo`: the service story with real parts. A verifier on SQLite with its issuing
// keys in a SoftHSM token; a host whose TPM is swtpm (behind the tpm2-abrmd broker) enrolls
// with `attestor-agent`; the operator captures and enforces a baseline; the host attests and
// gets an X.509 certificate and a JWT bound to a key inside its TPM; two relying parties accept
// them over mTLS, OpenSSL signing with the TPM key; the JWT key is rotated and the JWT from
// before still verifies; the operator quarantines the host and both refuse it at once (CRL,
// introspection); the host's key moves to a SoftHSM token; then a PCR changes, the next
// attestation is refused, with the reason, and the credentials stop working.
// `npm run demo -- evidence` runs the evidence demo (real machines' quotes, event logs and IMA lists).
import { spawn, spawnSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { copyFileSync, mkdtempSync, readFileSync, rmSync, writeFileSync, mkdirSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';

if (process.argv[2] === 'evidence') {
  await import('./demo-evidence.mjs');
  process.exit(process.exitCode ?? 0);
}

const { startSwtpm } = await import('../dist/dev/swtpm.js');
const { startSoftHsm } = await import('../dist/dev/softhsm.js');
const { startTpmBroker, stopProcess } = await import('./demo/tpm-broker.mjs');

const root = fileURLToPath(new URL('..', import.meta.url));
const attestorBin = join(root, 'dist/cli/attestor.js');
const agentBin = join(root, 'dist/cli/attestor-agent.js');
const relyingPartiesScript = join(root, 'scripts/demo/relying-parties.mjs');
const work = mkdtempSync(join(tmpdir(), 'attestor-demo-'));
const trustDomain = 'demo.attestor.internal';
const audience = 'demo-service';
const cleanups = [];
let failed = false;

const say = (text) => console.log(`\n== ${text}`);
const show = (text) => console.log(text.trimEnd().replace(/^/gm, '   '));
const abbreviated = (secret) => `${secret.slice(0, 6)}...`;
function fail(message) {
  failed = true;
  throw new Error(message);
}

/** Runs a command as a user would type it; shows it and its output (as `display` puts it, paths under $DEMO). */
function run(label, args, { env = {}, expect = 0, input, display = (output) => output } = {}) {
  const [cmd, ...rest] = args;
  console.log(`$ ${(label ?? args.join(' ')).replaceAll(work, '$DEMO')}`);
  const r = spawnSync(cmd, rest, { encoding: 'utf8', input, env: { ...process.env, ...env } });
  show(display(`${r.stdout}${r.stderr}`).replaceAll(work, '$DEMO'));
  if (r.status !== expect) fail(`exit status ${r.status}, expected ${expect}`);
  return r.stdout;
}

try {
  console.log('Attestor demo: a TPM-attested host gets short-lived credentials, and loses them when it changes.');
  console.log(`(scratch space: ${work}, removed at the end)`);

  say('1. The parts: a software TPM for the host behind a TPM broker, SoftHSM tokens for the verifier and the host');
  const tpm = await startSwtpm();
  cleanups.push(() => tpm.stop());
  const broker = await startTpmBroker({ tcti: tpm.tcti, dir: work });
  cleanups.push(() => broker.stop());
  const hsm = await startSoftHsm({ tokenLabel: 'attestor' });
  cleanups.push(() => hsm.stop());
  const hostHsm = await startSoftHsm({ tokenLabel: 'host' });
  cleanups.push(() => hostHsm.stop());
  const ekRoots = join(work, 'ek-roots');
  mkdirSync(ekRoots);
  writeFileSync(join(ekRoots, 'swtpm-root.pem'), tpm.rootCaCertPem);
  writeFileSync(join(ekRoots, 'swtpm-issuer.pem'), tpm.caCertPem);
  const pinFile = join(work, 'hsm.pin');
  writeFileSync(pinFile, `${hsm.userPin}\n`, { mode: 0o600 });
  show(`swtpm TPM at ${tpm.tcti} (its EK certificates are issued by a local CA, trusted below as the EK root)`);
  show(`tpm2-abrmd --session --tcti=${tpm.tcti} on a private D-Bus bus: TCTI ${broker.tcti} for the agent, tpm2-tools and OpenSSL`);
  show(`SoftHSM tokens "attestor" (the verifier's) and "host" (the host's), each in its own token directory`);

  say('2. The verifier: SQLite in its data dir, issuing keys generated inside the token');
  const dataDir = join(work, 'verifier');
  const keys = `pkcs11:token=attestor?module-path=${hsm.modulePath}&pin-source=${pinFile}`;
  const serveArgs = [attestorBin, 'serve', '--data-dir', dataDir, '--listen', '127.0.0.1:0', '--ek-roots', ekRoots, '--trust-domain', trustDomain, '--keys', keys, '--log-level', 'warn'];
  console.log(`$ attestor serve --data-dir $DEMO/verifier --listen 127.0.0.1:0 --ek-roots $DEMO/ek-roots --trust-domain ${trustDomain} --keys 'pkcs11:token=attestor?module-path=...&pin-source=...'`);
  const server = spawn(process.execPath, serveArgs, { env: { ...process.env, SOFTHSM2_CONF: hsm.conf }, stdio: ['ignore', 'pipe', 'inherit'] });
  cleanups.push(() => stopProcess(server));
  const started = await startedService(server, 'the verifier', (out) => {
    const url = /listening on (https:\S+)/.exec(out)?.[1];
    const fingerprint = /Root CA fingerprint: ([0-9a-f]{64})/.exec(out)?.[1];
    const token = /First admin token[^:]*: (\S+)/.exec(out)?.[1];
    return url && fingerprint && token && { url, fingerprint, token };
  });
  show(started.out.replace(started.token, `${abbreviated(started.token)} (kept in $ATTESTOR_TOKEN for the operator commands)`));
  const serverEnv = { ATTESTOR_SERVER: started.url, ATTESTOR_CA_FINGERPRINT: started.fingerprint };
  const operatorEnv = { ...serverEnv, ATTESTOR_TOKEN: started.token };
  const operator = (label, args, opts = {}) => run(`attestor ${label}`, [process.execPath, attestorBin, ...args], { ...opts, env: operatorEnv });

  say('3. The host enrolls: EK certificate checked, AK activated by TPM2_ActivateCredential');
  const stateDir = join(work, 'agent');
  const hostEnv = { ...serverEnv, ...broker.env, SOFTHSM2_CONF: hostHsm.conf };
  const agent = (label, cmd, more, opts = {}) =>
    run(`attestor-agent ${cmd} ${label}`, [process.execPath, agentBin, cmd, '--tcti', broker.tcti, '--state-dir', stateDir, ...more], { ...opts, env: hostEnv });
  agent(`--tcti ${broker.tcti} --state-dir $DEMO/agent --label role=demo`, 'enroll', ['--label', 'role=demo']);
  const { agentId } = JSON.parse(readFileSync(join(stateDir, 'agent.json'), 'utf8'));
  const shortId = `${agentId.slice(0, 12)}...`;

  say('4. Its first attestation: verified, but no baseline is enforced yet, so no credentials (fail closed)');
  agent('--key tpm', 'attest', ['--key', 'tpm'], { expect: 1 });

  say('5. The operator captures a baseline from that verified evidence and enforces it');
  const captured = JSON.parse(
    operator(`baseline capture --agent ${shortId} --name demo-host --audience ${audience} --json`, ['baseline', 'capture', '--agent', agentId, '--name', 'demo-host', '--audience', audience, '--json']),
  );
  operator(`baseline enforce ${captured.id}`, ['baseline', 'enforce', captured.id]);

  say('6. The host attests again: affirming, credentials bound to a key that never leaves its TPM');
  agent(`--key tpm --audience ${audience}`, 'attest', ['--key', 'tpm', '--audience', audience]);
  const files = (name) => join(stateDir, name);
  run('openssl verify -CAfile bundle.pem cert.pem', ['openssl', 'verify', '-x509_strict', '-CAfile', files('bundle.pem'), files('cert.pem')]);

  say('7. Two relying parties accept them: an mTLS service, and a JWT service that also wants the client certificate');
  const created = JSON.parse(
    run(
      'attestor token create --role relying-party --label demo-relying-parties --data-dir $DEMO/verifier --json',
      [process.execPath, attestorBin, 'token', 'create', '--role', 'relying-party', '--label', 'demo-relying-parties', '--data-dir', dataDir, '--json'],
      { display: (out) => out.replace(/("token":")([^"]+)/, (_, key, token) => `${key}${abbreviated(token)}`) },
    ),
  );
  const rpDir = join(work, 'relying-parties');
  mkdirSync(rpDir);
  console.log(`$ ATTESTOR_INTROSPECTION_TOKEN=${abbreviated(created.token)} node scripts/demo/relying-parties.mjs --server ${started.url} --ca-fingerprint ${started.fingerprint.slice(0, 12)}... --trust-domain ${trustDomain} --audience ${audience} --dir $DEMO/relying-parties`);
  const rpArgs = [relyingPartiesScript, '--server', started.url, '--ca-fingerprint', started.fingerprint, '--trust-domain', trustDomain, '--audience', audience, '--dir', rpDir];
  const relyingParties = spawn(process.execPath, rpArgs, { env: { ...process.env, ATTESTOR_INTROSPECTION_TOKEN: created.token }, stdio: ['ignore', 'pipe', 'inherit'] });
  cleanups.push(() => stopProcess(relyingParties));
  const rp = await startedService(relyingParties, 'the relying parties', (out) => {
    const mtls = /mTLS service +https:\/\/(\S+)/.exec(out)?.[1];
    const jwt = /JWT service +https:\/\/(\S+)/.exec(out)?.[1];
    const cert = /server certificate (\S+)/.exec(out)?.[1];
    return mtls && jwt && cert && { mtls, jwt, cert };
  });
  show(rp.out.replaceAll(work, '$DEMO'));
  const tpmKey = { args: ['-provider', 'tpm2', '-provider', 'default', '-key', files('key.pem')], env: { TPM2OPENSSL_TCTI: broker.tcti } };
  const call = callService(rp, stateDir, hostEnv);
  call('mTLS service, TPM key', rp.mtls, tpmKey, { expect: 200 });
  call('JWT service, TPM key', rp.jwt, tpmKey, { jwt: 'token.jwt', expect: 200 });

  say('8. The operator rotates the JWT signing key: new JWTs name the new key, those issued before still verify');
  console.log('$ cp token.jwt old.jwt; cp cert.pem old-cert.pem');
  copyFileSync(files('token.jwt'), files('old.jwt'));
  copyFileSync(files('cert.pem'), files('old-cert.pem'));
  operator('keys rotate --key jwt --now', ['keys', 'rotate', '--key', 'jwt', '--now']);
  agent(`--key tpm --audience ${audience}`, 'attest', ['--key', 'tpm', '--audience', audience]);
  call('JWT service, TPM key, the new JWT', rp.jwt, tpmKey, { jwt: 'token.jwt', expect: 200 });
  call('JWT service, TPM key, the JWT from before the rotation', rp.jwt, tpmKey, { cert: 'old-cert.pem', jwt: 'old.jwt', expect: 200 });

  say('9. The operator quarantines the host: both relying parties refuse it at once (CRL, introspection)');
  operator(`agent quarantine ${shortId}`, ['agent', 'quarantine', agentId]);
  const quarantinedAt = Date.now();
  call('mTLS service, TPM key', rp.mtls, tpmKey, { expect: 403 });
  call('JWT service, TPM key', rp.jwt, tpmKey, { jwt: 'token.jwt', expect: 401 });
  console.log(`both refused ${Date.now() - quarantinedAt} ms after the quarantine`);

  say("10. Released, the host keeps its key in its SoftHSM token instead (the baseline opts in to that token's keys)");
  operator(`agent release ${shortId}`, ['agent', 'release', agentId]);
  const hsmDocument = { ...captured.document, key: { residence: ['tpm', 'pkcs11'], allowedTokens: [{ manufacturer: 'SoftHSM project', label: 'host' }] } };
  const hsmBaselineFile = join(work, 'demo-host-v2.json');
  writeFileSync(hsmBaselineFile, JSON.stringify(hsmDocument, null, 2));
  console.log(`(demo-host-v2.json: the captured document plus "key": ${JSON.stringify(hsmDocument.key)})`);
  const added = /^id +(\S+)/m.exec(operator('baseline add demo-host-v2.json --name demo-host', ['baseline', 'add', hsmBaselineFile, '--name', 'demo-host']))?.[1];
  operator(`baseline enforce ${added}`, ['baseline', 'enforce', added]);
  const hostPinFile = join(work, 'host.pin');
  // No newline: libp11 reads the whole file as the PIN (the agent reads its first line).
  writeFileSync(hostPinFile, hostHsm.userPin, { mode: 0o600 });
  const hostKey = `pkcs11:token=host?module-path=${hostHsm.modulePath}&pin-source=${hostPinFile}`;
  agent(`--key 'pkcs11:token=host?module-path=...&pin-source=...' --audience ${audience}`, 'attest', ['--key', hostKey, '--audience', audience]);
  const keyUri = readFileSync(files('key.uri'), 'utf8').trim();
  show(`key.uri: ${keyUri.replace(/\?.*/, '?...')}`);
  // libp11's engine takes the module from PKCS11_MODULE_PATH and the PIN from the URI.
  const engineUri = `${keyUri.replace(/\?.*/, '')};type=private?pin-source=${hostPinFile}`;
  const hsmKey = { args: ['-engine', 'pkcs11', '-keyform', 'engine', '-key', engineUri], env: { PKCS11_MODULE_PATH: hostHsm.modulePath } };
  call('mTLS service, SoftHSM key', rp.mtls, hsmKey, { expect: 200 });

  say('11. Something changes on the host: PCR 15 is extended');
  run('tpm2_pcrextend 15:sha256=<digest>', ['tpm2_pcrextend', `15:sha256=${createHash('sha256').update('unexpected change').digest('hex')}`], { env: broker.env });

  say('12. The next attestation is refused, says why, and the credentials it had stop working');
  agent(`--key 'pkcs11:token=host?...' --audience ${audience}`, 'attest', ['--key', hostKey, '--audience', audience], { expect: 1 });
  operator(`agent show ${shortId}`, ['agent', 'show', agentId]);
  call('mTLS service, SoftHSM key', rp.mtls, hsmKey, { expect: 403 });
  call('JWT service, SoftHSM key', rp.jwt, hsmKey, { jwt: 'token.jwt', expect: 401 });

  console.log('\ndemo complete: enrolled, attested, credentials accepted, refused once quarantined, change detected');
} catch (e) {
  failed = true;
  console.error(`\ndemo FAILED: ${e.message}`);
} finally {
  for (const c of cleanups.reverse()) await c().catch(() => undefined);
  rmSync(work, { recursive: true, force: true });
}
process.exit(failed ? 1 : 0);

/** Waits until `child`'s stdout shows what `parse` looks for (within 30 s); resolves with that and the output. */
function startedService(child, name, parse) {
  return new Promise((resolve, reject) => {
    let out = '';
    const timer = setTimeout(() => reject(new Error(`${name} did not start within 30 s:\n${out}`)), 30_000);
    child.once('exit', (code) => reject(new Error(`${name} exited (${code}):\n${out}`)));
    child.stdout.on('data', (d) => {
      out += d;
      const found = parse(out);
      if (found) {
        clearTimeout(timer);
        resolve({ ...found, out });
      }
    });
  });
}

/**
 * An HTTPS GET with OpenSSL (which can use the TPM or token key), as a user would pipe it into
 * s_client in the agent's state dir; shows the status line and the body, and checks the status.
 */
function callService(rp, stateDir, env) {
  const files = (name) => join(stateDir, name);
  // In the state dir, its files go by their names; a PKCS#11 URI needs quotes.
  const shellWord = (a) => (a.startsWith(`${stateDir}/`) ? a.slice(stateDir.length + 1) : a === rp.cert ? 'relying-party.pem' : /[;?&]/.test(a) ? `'${a}'` : a);
  return (what, hostPort, key, { cert = 'cert.pem', jwt, expect }) => {
    const token = jwt && readFileSync(files(jwt), 'utf8').trim();
    const request = `GET / HTTP/1.1\r\nHost: ${hostPort}\r\n${token ? `Authorization: Bearer ${token}\r\n` : ''}Connection: close\r\n\r\n`;
    const printf = `printf 'GET / HTTP/1.1\\r\\nHost: ${hostPort}\\r\\n${token ? 'Authorization: Bearer %s\\r\\n' : ''}Connection: close\\r\\n\\r\\n'${token ? ` "$(cat ${jwt})"` : ''}`;
    const args = ['openssl', 's_client', '-quiet', '-verify_quiet', '-verify_return_error', '-noservername', '-connect', hostPort, '-CAfile', rp.cert, '-cert', files(cert), ...key.args];
    const envShown = Object.entries(key.env).map(([k, v]) => `${k}=${v} `).join('');
    console.log(`(${what})`);
    const out = run(`${printf} | ${envShown}${args.map(shellWord).join(' ')}`, args, {
      env: { ...env, ...key.env },
      input: request,
      // The status line and the body; the headers say nothing here.
      display: (output) => output.replace(/\r\n[^]*?\r\n\r\n/, '\n').replaceAll('\r', ''),
    });
    const status = Number(/^HTTP\/1\.1 (\d{3})/.exec(out)?.[1]);
    if (status !== expect) fail(`${what}: HTTP ${status}, expected ${expect}`);
  };
}
