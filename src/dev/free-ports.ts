import { randomInt } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { createServer, type Server } from 'node:net';

/** Where the search starts: above the ports of well-known services. */
const LOWEST = 10_000;

/**
 * `count` adjacent TCP ports free now on 127.0.0.1, below the kernel's ephemeral range: a
 * process restarted on its port (swtpm, PostgreSQL in the fault tests) finds it free again,
 * as no other process's outgoing connection can be given it as its local port meanwhile.
 */
export async function freePorts(count: number): Promise<number[]> {
  const below = ephemeralLow();
  const lowest = below - count > LOWEST ? LOWEST : 1024;
  for (let attempt = 0; attempt < 50; attempt++) {
    const first = randomInt(lowest, below - count + 1);
    const servers: Server[] = [];
    try {
      for (let i = 0; i < count; i++) servers.push(await listen(first + i));
      return servers.map((_, i) => first + i);
    } catch {
      // taken: another start
    } finally {
      await Promise.all(servers.map((s) => new Promise((resolve) => s.close(resolve))));
    }
  }
  throw new Error(`no ${count} adjacent free TCP ports on 127.0.0.1 below ${below}`);
}

/** The first port of Linux's ephemeral range (ip_local_port_range), 32768 where it cannot be read. */
function ephemeralLow(): number {
  try {
    const low = Number(readFileSync('/proc/sys/net/ipv4/ip_local_port_range', 'utf8').trim().split(/\s+/)[0]);
    return Number.isInteger(low) && low > 1024 ? low : 32768;
  } catch {
    return 32768;
  }
}

function listen(port: number): Promise<Server> {
  return new Promise((resolve, reject) => {
    const s = createServer();
    s.once('error', reject);
    s.listen(port, '127.0.0.1', () => resolve(s));
  });
}
