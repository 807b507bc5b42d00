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
  server.maxConnections = opts.limits.maxConnections;
  // Counted per client network (an IPv6 /64 is one host's) at the TCP level, before any TLS
  // work is spent on the connection. The map holds at most maxConnections keys.
  const perAddress = new Map<string, number>();
  server.on('connection', (socket: Socket) => {
    const address = clientNetwork(socket.remoteAddress ?? '');
    const open = (perAddress.get(address) ?? 0) + 1;
    if (open > opts.limits.connectionsPerAddress) {
      socket.destroy();
      return;
    }
    perAddress.set(address, open);
    socket.once('close', () => {
      const left = (perAddress.get(address) ?? 1) - 1;
      if (left > 0) perAddress.set(address, left);
      else perAddress.delete(address);
    });
  });
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
