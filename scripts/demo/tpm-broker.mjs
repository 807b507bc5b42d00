// The demo's TPM access broker: tpm2-abrmd in front of swtpm, on a private D-Bus bus of its
// own. swtpm has no resource manager and room for three loaded objects; OpenSSL's tpm2
// provider loads the key, its parent and hash sequences during one TLS handshake, which only
// fits when a broker swaps objects in and out. Once the broker fronts swtpm, every TPM user
// (the agent, tpm2-tools, OpenSSL) goes through it: two direct connections would interleave.
import { spawn, spawnSync } from 'node:child_process';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';

/** The TCTI string of the broker, as the agent, tpm2-tools and the tpm2 provider take it. */
export const BROKER_TCTI = 'tabrmd:bus_type=session';

/**
 * Starts dbus-daemon (a session bus on a socket in `dir`) and tpm2-abrmd on it, talking to
 * the TPM at `tcti`. Resolves once the broker answers; `env` points a child process at the bus.
 */
export async function startTpmBroker({ tcti, dir }) {
  const config = join(dir, 'bus.conf');
  writeFileSync(config, busConfig(join(dir, 'bus')));
  const processes = [];
  const stop = async () => {
    for (const child of processes.reverse()) await stopProcess(child);
  };
  try {
    const bus = spawn('dbus-daemon', ['--config-file', config, '--nofork', '--print-address'], { stdio: ['ignore', 'pipe', 'pipe'] });
    processes.push(bus);
    const address = await firstLine(bus, 'dbus-daemon');
    const env = { DBUS_SESSION_BUS_ADDRESS: address, TPM2TOOLS_TCTI: BROKER_TCTI, TPM2OPENSSL_TCTI: BROKER_TCTI };
    // The daemon refuses to run as root unless told to (a demo in a container often is root).
    const rootFlag = process.getuid?.() === 0 ? ['--allow-root'] : [];
    const broker = spawn('tpm2-abrmd', ['--session', `--tcti=${tcti}`, ...rootFlag], {
      env: { ...process.env, ...env },
      stdio: ['ignore', 'ignore', 'pipe'],
    });
    processes.push(broker);
    await waitForBroker(broker, { ...process.env, ...env });
    return { tcti: BROKER_TCTI, env, stop };
  } catch (e) {
    await stop();
    throw e;
  }
}

/** A session bus that listens only on `socket` and lets its (local, same-user) clients do anything. */
function busConfig(socket) {
  return `<!DOCTYPE busconfig PUBLIC "-//freedesktop//DTD D-Bus Bus Configuration 1.0//EN"
 "http://www.freedesktop.org/standards/dbus/1.0/busconfig.dtd">
<busconfig>
  <type>session</type>
  <listen>unix:path=${socket}</listen>
  <auth>EXTERNAL</auth>
  <policy context="default">
    <allow send_destination="*"/>
    <allow receive_sender="*"/>
    <allow own="*"/>
  </policy>
</busconfig>
`;
}

/** The first line `child` prints (dbus-daemon's address), or its stderr when it exits first. */
function firstLine(child, name) {
  return new Promise((resolve, reject) => {
    let out = '';
    let err = '';
    const timer = setTimeout(() => reject(new Error(`${name} printed nothing within 5 s: ${err}`)), 5000);
    child.stderr.on('data', (d) => (err += d));
    child.stdout.on('data', (d) => {
      out += d;
      const newline = out.indexOf('\n');
      if (newline >= 0) {
        clearTimeout(timer);
        resolve(out.slice(0, newline).trim());
      }
    });
    child.once('exit', (code) => {
      clearTimeout(timer);
      reject(new Error(`${name} exited (${code}): ${err.trim()}`));
    });
  });
}

/** Polls the broker with tpm2_getrandom until it answers (it owns its bus name a moment after start). */
async function waitForBroker(broker, env) {
  let err = '';
  broker.stderr.on('data', (d) => (err += d));
  const deadline = Date.now() + 10_000;
  for (;;) {
    if (broker.exitCode !== null) throw new Error(`tpm2-abrmd exited (${broker.exitCode}): ${err.trim()}`);
    if (spawnSync('tpm2_getrandom', ['1'], { env, stdio: 'ignore' }).status === 0) return;
    if (Date.now() > deadline) throw new Error(`tpm2-abrmd did not answer within 10 s: ${err.trim()}`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

/** SIGTERM, then SIGKILL after 3 s; resolves once the process is gone. */
export function stopProcess(child) {
  if (child.exitCode !== null || child.signalCode !== null) return Promise.resolve();
  return new Promise((resolve) => {
    const timer = setTimeout(() => child.kill('SIGKILL'), 3000);
    child.once('exit', () => {
      clearTimeout(timer);
      resolve();
    });
    child.kill('SIGTERM');
  });
}
