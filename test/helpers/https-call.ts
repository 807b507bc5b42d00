/**
 * Raw HTTPS requests to the real verifier, with any method, headers and body bytes (the API
 * client would not send most of those the edge tests need), and the check of a problem+json
 * refusal.
 */
import { once } from 'node:events';
import type { IncomingHttpHeaders } from 'node:http';
import { request } from 'node:https';
import { connect as netConnect } from 'node:net';
import { connect as tlsConnect, type TLSSocket } from 'node:tls';
import { expect } from 'vitest';
import { Problem } from '../../src/wire/schemas.js';

export interface Answer {
  readonly status: number;
  readonly headers: IncomingHttpHeaders;
  readonly body: Buffer;
}

export interface CallOptions {
  readonly method?: string;
  readonly headers?: Readonly<Record<string, string>>;
  readonly body?: Buffer | string;
  /** Send the body in this many chunks without a Content-Length (chunked transfer coding). */
  readonly chunks?: number;
  /** The client address to connect from (any of 127/8 reaches the loopback listener). */
  readonly localAddress?: string;
}

/** One HTTPS request to `baseUrl` + `path`, its certificate verified against `caPem`; never rejects on an HTTP status. */
export function httpsCall(baseUrl: string, caPem: string | undefined, path: string, opts: CallOptions = {}): Promise<Answer> {
  const body = typeof opts.body === 'string' ? Buffer.from(opts.body) : opts.body;
  const headers = { ...(body && !opts.chunks ? { 'content-length': String(body.length) } : {}), ...opts.headers };
  return new Promise((resolve, reject) => {
    const req = request(
      new URL(path, baseUrl),
      { method: opts.method ?? (body ? 'POST' : 'GET'), headers, ca: caPem, agent: false, ...(opts.localAddress ? { localAddress: opts.localAddress } : {}) },
      (res) => {
        const chunks: Buffer[] = [];
        res.on('data', (c: Buffer) => chunks.push(c));
        res.on('end', () => resolve({ status: res.statusCode ?? 0, headers: res.headers, body: Buffer.concat(chunks) }));
        res.on('error', reject);
      },
    );
    req.on('error', reject);
    if (body && opts.chunks) {
      const size = Math.ceil(body.length / opts.chunks);
      for (let i = 0; i < body.length; i += size) req.write(body.subarray(i, i + size));
      req.end();
    } else {
      req.end(body);
    }
  });
}

export interface TlsClient {
  readonly socket: TLSSocket;
  /** What the server sent so far (latin1). */
  received(): string;
  readonly closed: Promise<unknown>;
}

/** A raw TLS connection to the verifier on `port` (from `localAddress`, if given), handshake done. */
export async function tlsClient(port: number, caPem: string, localAddress?: string): Promise<TlsClient> {
  const tcp = netConnect({ host: '127.0.0.1', port, ...(localAddress ? { localAddress } : {}) });
  const socket = tlsConnect({ socket: tcp, ca: caPem, servername: 'localhost' });
  let received = '';
  socket.on('data', (d: Buffer) => (received += d.toString('latin1')));
  socket.on('error', () => undefined);
  const closed = once(socket, 'close');
  await once(socket, 'secureConnect');
  return { socket, received: () => received, closed };
}

const TITLES: Readonly<Record<number, string>> = {
  400: 'Bad request',
  401: 'Unauthenticated',
  403: 'Forbidden',
  404: 'Not found',
  411: 'Length required',
  413: 'Payload too large',
  415: 'Unsupported media type',
  429: 'Too many requests',
  500: 'Internal error',
  503: 'Service unavailable',
};
const PROBLEM_MEMBERS = new Set(['type', 'title', 'status', 'detail', 'code', 'requestId', 'verdict', 'agentStatus']);

/** Checks an answer is the problem+json of `status` and `code` (RFC 9457 members, our code and request id) and returns it. */
export function problem(a: Answer, status: number, code: string): Problem {
  expect(a.status, a.body.toString()).toBe(status);
  expect(a.headers['content-type']).toBe('application/problem+json; charset=utf-8');
  expect(a.headers['cache-control']).toBe('no-store');
  const p = Problem.parse(JSON.parse(a.body.toString('utf8')));
  expect(p).toMatchObject({
    type: `urn:attestor:problem:${code.replace(/^ERR_/, '').toLowerCase().replace(/_/g, '-')}`,
    title: TITLES[status],
    status,
    code,
    requestId: a.headers['x-request-id'],
  });
  expect(Object.keys(JSON.parse(a.body.toString('utf8'))).filter((k) => !PROBLEM_MEMBERS.has(k))).toEqual([]);
  return p;
}
