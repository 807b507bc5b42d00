import { freePorts } from '../../src/dev/free-ports.js';

/** A TCP port free now on 127.0.0.1, below the ephemeral range (a server restarted on it finds it free). */
export async function freePort(): Promise<number> {
  return (await freePorts(1))[0]!;
}
