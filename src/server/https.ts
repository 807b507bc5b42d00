import { createServer, type Server } from 'node:https';
import type { AddressInfo, Socket } from 'node:net';
import type { RequestListener } from 'node:http';
import { AttestorError } from '../errors.js';
import { clientNetwork } from './client-network.js';

export interface HttpsLimits {
  readonly headersTimeoutMs: number;
  readonly requestTimeoutMs: number;
  readonly keepAliveTimeoutMs: number;
  readonly maxConnections: number;
  readonly connectionsPerAddress: number;
}

export interface ListeningServer {
  readonly server: Server;
  /** The bound port (the configured one, or the one the system chose for 0). */
  readonly port: number;
  /** Installs the certificate and the app: from then on requests are served. */
  serve(app: RequestListener, tls: { key: string | Buffer; cert: string | Buffer }): void;
  close(): Promise<void>;
}

/**
 * The HTTPS listener, bound before the app exists so that a port of 0 is resolved (and a port
 * in use reported) before keys and certificates are made for the URL. Slow or idle clients
 * cannot hold the verifier (Keylime CVE-2023-38200): the TLS handshake, the headers and the
 * whole request each have a deadline, idle keep-alive connections are closed, and the number
 * of connections is capped, in all and per client address.
 */
export function listenHttps(opts: { host: string; port: number; limits: HttpsLimits }): Promise<ListeningServer> {
  const server = createServer({
    minVersion: 'TLSv1.2',
    handshakeTimeout: Math.min(opts.limits.headersTimeoutMs, 10_000),
    headersTimeout: opts.limits.headersTimeoutMs,
    requestTimeout: opts.limits.requestTimeoutMs,
    keepAliveTimeout: opts.limits.keepAliveTimeoutMs,
    // Node checks the headers and request deadlines on this interval (default 30 s, which would
    // let a stalled client outlive a short headers deadline many times over).
    connectionsCheckingInterval: Math.min(opts.limits.headersTimeoutMs, 1_000),
    maxHeaderSize: 16 * 1024,
  });
  // Counted per client network (an IPv6 /64 is one host's) at the TCP level, before any TLS
  // work is spent on the connection. At the cap in all, a newcomer takes the oldest connection
  // of the network holding the most, if that holds more than the newcomer's own: a few networks
  // that open connections and never finish TLS cannot keep everyone else out (Node's own
  // maxConnections would refuse every newcomer instead). The map holds at most maxConnections keys.
  const perNetwork = new Map<string, Set<Socket>>();
  let open = 0;
  server.on('connection', (socket: Socket) => {
    const network = clientNetwork(socket.remoteAddress ?? '');
    const own = perNetwork.get(network) ?? new Set<Socket>();
    if (own.size >= opts.limits.connectionsPerAddress) {
      socket.destroy();
      return;
    }
    if (open >= opts.limits.maxConnections) {
      let heaviest: [string, Set<Socket>] | undefined;
      for (const entry of perNetwork) if (!heaviest || entry[1].size > heaviest[1].size) heaviest = entry;
      if (!heaviest || heaviest[1].size <= own.size + 1) {
        socket.destroy();
        return;
      }
      const [oldest] = heaviest[1];
      forget(oldest!, heaviest[0]);
      oldest!.destroy();
    }
    own.add(socket);
    perNetwork.set(network, own);
    open++;
    socket.once('close', () => forget(socket, network));
  });
  function forget(socket: Socket, network: string): void {
    const sockets = perNetwork.get(network);
    if (!sockets?.delete(socket)) return;
    open--;
    if (sockets.size === 0) perNetwork.delete(network);
  }
  // A socket with no traffic at all (after the handshake, between requests) is closed.
  server.setTimeout(opts.limits.requestTimeoutMs + opts.limits.keepAliveTimeoutMs);
  return new Promise((resolve, reject) => {
    server.once('error', (e: NodeJS.ErrnoException) =>
      reject(new AttestorError('ERR_CONFIG', `configuration key "listen": cannot listen on ${opts.host}:${opts.port} (${e.code ?? e.message})`)),
    );
    server.listen(opts.port, opts.host, () => {
      server.removeAllListeners('error');
      server.on('error', () => undefined);
      resolve({
        server,
        port: (server.address() as AddressInfo).port,
        serve(app, tls) {
          server.setSecureContext({ key: tls.key, cert: tls.cert });
          server.on('request', app);
        },
        close: () =>
          new Promise<void>((done) => {
            server.close(() => done());
            server.closeAllConnections();
          }),
      });
    });
  });
}
