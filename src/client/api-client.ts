import { createHash, X509Certificate } from 'node:crypto';
import { Agent, request as httpsRequest } from 'node:https';
import type { z } from 'zod';
import { equalBytes } from '../bytes.js';
import { AttestorError } from '../errors.js';
import { CBOR_TYPE, JSON_TYPE, decodeBody, encodeBody, formatOf, type BodyFormat } from '../wire/codec.js';

/*
 * The HTTPS client of the agent and of the operator CLI. The verifier's root CA is pinned the
 * way `step ca bootstrap` does it: fetched once from /v1/roots/{fingerprint} and kept only
 * when the SHA-256 of its DER is the fingerprint the user gave; every request after that
 * verifies the server against that root alone.
 */

/** What the server's problem+json said, with its stable code. */
export class ApiError extends AttestorError {
  constructor(
    readonly status: number,
    /** The server's `code` (a stable string; not necessarily one of this build's ErrorCodes). */
    readonly remoteCode: string,
    readonly problem: { readonly [key: string]: unknown },
  ) {
    super('ERR_SERVER_RESPONSE', `${remoteCode}: ${typeof problem.detail === 'string' ? problem.detail : (problem.title ?? `HTTP ${status}`)}`);
  }
}

export interface ApiClientOptions {
  /** Base URL, https://host:port. */
  readonly server: string;
  /** PEM of the root CA the server's certificate must chain to. */
  readonly caPem: string;
  /** Operator bearer token (operator routes). */
  readonly token?: string;
  /** Body format of requests and wanted responses (default JSON). */
  readonly format?: BodyFormat;
  readonly timeoutMs?: number;
}

export interface ApiClient {
  /** Sends `body` (if any) and returns the response parsed by `schema`; a problem+json throws ApiError. */
  call<S extends z.ZodType>(method: string, path: string, schema: S, body?: unknown): Promise<z.output<S>>;
  /** The raw response body of a GET (PEM, JSON documents of public routes). */
  get(path: string): Promise<{ status: number; type: string; body: Buffer }>;
  close(): void;
}

/** The SHA-256 fingerprint (lowercase hex) of a certificate's DER. */
export function certificateFingerprint(der: Uint8Array): string {
  return createHash('sha256').update(der).digest('hex');
}

/**
 * Fetches the root CA by its fingerprint and checks it; resolves with its PEM. The TLS
 * connection of this one request is not verified: the fingerprint check is what trusts the
 * answer (ERR_SERVER_UNTRUSTED when it does not match).
 */
export async function bootstrapCa(server: string, fingerprint: string, timeoutMs = 10_000): Promise<string> {
  const wanted = fingerprint.toLowerCase().replace(/:/g, '');
  if (!/^[0-9a-f]{64}$/.test(wanted)) {
    throw new AttestorError('ERR_INPUT', 'the CA fingerprint must be 64 hex digits (SHA-256 of the root certificate DER)');
  }
  const agent = new Agent({ rejectUnauthorized: false, keepAlive: false });
  try {
    const res = await send(agent, new URL(`/v1/roots/${wanted}`, server), 'GET', undefined, {}, timeoutMs);
    if (res.status !== 200) throw new AttestorError('ERR_SERVER_UNTRUSTED', `the server has no root CA with fingerprint ${wanted} (HTTP ${res.status})`);
    let cert: X509Certificate;
    try {
      cert = new X509Certificate(res.body);
    } catch {
      throw new AttestorError('ERR_SERVER_UNTRUSTED', 'the server answered the root CA request with something that is not a certificate');
    }
    if (!equalBytes(Buffer.from(certificateFingerprint(cert.raw), 'hex'), Buffer.from(wanted, 'hex'))) {
      throw new AttestorError('ERR_SERVER_UNTRUSTED', `the root CA the server sent does not have fingerprint ${wanted}`);
    }
    return cert.toString();
  } finally {
    agent.destroy();
  }
}

export function createApiClient(opts: ApiClientOptions): ApiClient {
  const format = opts.format ?? 'json';
  const contentType = format === 'json' ? JSON_TYPE : CBOR_TYPE;
  const agent = new Agent({ ca: opts.caPem, keepAlive: true, maxSockets: 4 });
  const timeoutMs = opts.timeoutMs ?? 30_000;
  const auth: Record<string, string> = opts.token ? { authorization: `Bearer ${opts.token}` } : {};
  return {
    async call(method, path, schema, body) {
      const headers = { ...auth, accept: contentType, ...(body === undefined ? {} : { 'content-type': contentType }) };
      const payload = body === undefined ? undefined : encodeBody(body, format);
      const res = await send(agent, new URL(path, opts.server), method, payload, headers, timeoutMs);
      const resFormat = formatOf(res.type) ?? (res.type.startsWith('application/problem+json') ? 'json' : undefined);
      if (resFormat === undefined) {
        throw new AttestorError('ERR_SERVER_RESPONSE', `${method} ${path}: HTTP ${res.status} with an unexpected content type "${res.type}"`);
      }
      const value = decodeBody(res.body, resFormat);
      if (res.status >= 400) {
        const problem = (value ?? {}) as Record<string, unknown>;
        throw new ApiError(res.status, typeof problem.code === 'string' ? problem.code : `HTTP_${res.status}`, problem);
      }
      const parsed = schema.safeParse(value);
      if (!parsed.success) {
        throw new AttestorError('ERR_SERVER_RESPONSE', `${method} ${path}: the response does not have the expected shape: ${parsed.error.issues[0]?.message ?? ''}`);
      }
      return parsed.data;
    },
    get(path) {
      return send(agent, new URL(path, opts.server), 'GET', undefined, auth, timeoutMs);
    },
    close() {
      agent.destroy();
    },
  };
}

/** Response bodies the client reads at most (the largest is an agent list page). */
const MAX_RESPONSE = 16 * 1024 * 1024;

function send(
  agent: Agent,
  url: URL,
  method: string,
  body: Buffer | undefined,
  headers: Record<string, string>,
  timeoutMs: number,
): Promise<{ status: number; type: string; body: Buffer }> {
  if (url.protocol !== 'https:') return Promise.reject(new AttestorError('ERR_INPUT', `the server URL must be https:// (got ${url.protocol})`));
  return new Promise((resolve, reject) => {
    const req = httpsRequest(url, { method, agent, headers: { ...headers, ...(body ? { 'content-length': String(body.length) } : {}) } }, (res) => {
      const chunks: Buffer[] = [];
      let size = 0;
      res.on('data', (c: Buffer) => {
        size += c.length;
        if (size > MAX_RESPONSE) {
          req.destroy(new AttestorError('ERR_SERVER_RESPONSE', `the response of ${url.pathname} is larger than ${MAX_RESPONSE} bytes`));
          return;
        }
        chunks.push(c);
      });
      res.on('end', () => resolve({ status: res.statusCode ?? 0, type: String(res.headers['content-type'] ?? ''), body: Buffer.concat(chunks) }));
      res.on('error', reject);
    });
    req.setTimeout(timeoutMs, () => req.destroy(new AttestorError('ERR_SERVER_UNREACHABLE', `${url.host} did not answer within ${timeoutMs} ms`)));
    req.on('error', (e: NodeJS.ErrnoException) => {
      if (e instanceof AttestorError) return reject(e);
      const tls = typeof e.code === 'string' && /CERT|SELF_SIGNED|HOSTNAME|ERR_TLS|UNABLE_TO/.test(e.code);
      reject(
        tls
          ? new AttestorError('ERR_SERVER_UNTRUSTED', `${url.host}: the server's certificate is not issued by the pinned root CA (${e.code})`)
          : new AttestorError('ERR_SERVER_UNREACHABLE', `${url.host}: ${e.code ?? e.message}`),
      );
    });
    req.end(body);
  });
}
