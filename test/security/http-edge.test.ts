/**
 * The HTTP edge under attack, against the real verifier (HTTPS on a free port): hostile bodies
 * (oversized, deeply nested, truncated, CBOR tags and indefinite lengths, compression bombs),
 * slow and idle connections (slowloris, slow bodies, half-open, idle keep-alives; Keylime
 * CVE-2023-38200) and rate limits per client address and per agent. Each case asserts its
 * status and code; while a connection attack runs, a well-behaved client from another address
 * is served and its latency measured. test/server-edge.test.ts has the single-request cases
 * (one slow client, the body limits with and without a Content-Length, the depth limit).
 */
import { once } from 'node:events';
import { connect as netConnect, type Socket } from 'node:net';
import { join } from 'node:path';
import { brotliCompressSync, constants as zlibConstants, deflateSync, gzipSync } from 'node:zlib';
import BetterSqlite3 from 'better-sqlite3';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { bootstrapCa } from '../../src/client/api-client.js';
import { agentIdOf } from '../../src/tpm/agent-id.js';
import { CBOR_TYPE, encodeBody, JSON_TYPE, MAX_DEPTH, MAX_ENTRIES } from '../../src/wire/codec.js';
import { httpsCall, problem, tlsClient, type Answer, type CallOptions } from '../helpers/https-call.js';
import { softAk, softEkPublic } from '../helpers/tpm-builders.js';
import { startTestVerifier, type TestVerifier } from '../helpers/verifier.js';
import { expectNothingRecorded, recordOf } from './harness.js';

const BODY_LIMIT = 8 * 1024;
const ATTESTATION_LIMIT = 64 * 1024;
const HEADERS_DEADLINE_MS = 1_000;
const REQUEST_DEADLINE_MS = 2_000;
const KEEP_ALIVE_MS = 1_000;
const PER_ADDRESS = 48;
/** What a well-behaved client may wait, at most, for an answer while an attack runs. */
const SERVED_WITHIN_MS = 2_000;
/** The attacker's address; the well-behaved client uses 127.0.0.1. */
const ATTACKER = '127.0.0.2';

const ekPublic = softEkPublic();
const akPublic = softAk('ecc').public;
const goodEnrollment = { ekPublic, akPublic };
const someAgent = 'ab'.repeat(32);
/** Well-formed for the schema (an unknown agent's nonce): decoded and validated in full, then refused by the flow. */
const attestationBody = {
  nonce: Buffer.alloc(32, 7),
  quote: Buffer.alloc(64, 1),
  signature: Buffer.alloc(64, 2),
  pcrs: { sha256: { '0': Buffer.alloc(32) } },
  key: { kind: 'tpm', public: Buffer.alloc(8, 3), certifyInfo: Buffer.alloc(8, 4), signature: Buffer.alloc(8, 5) },
};

let v: TestVerifier;
let caPem: string;

const call = (path: string, opts: CallOptions = {}): Promise<Answer> => httpsCall(v.url, caPem, path, opts);
const postBytes = (path: string, type: string, body: Buffer, headers: Record<string, string> = {}) =>
  call(path, { body, headers: { 'content-type': type, ...headers } });

beforeAll(async () => {
  v = await startTestVerifier({
    config: {
      registeredEkHashes: [agentIdOf(ekPublic)],
      limits: {
        bodyBytes: BODY_LIMIT,
        attestationBodyBytes: ATTESTATION_LIMIT,
        headersTimeoutMs: HEADERS_DEADLINE_MS,
        requestTimeoutMs: REQUEST_DEADLINE_MS,
        keepAliveTimeoutMs: KEEP_ALIVE_MS,
        connectionsPerAddress: PER_ADDRESS,
        enrollmentsPerMinute: 100_000,
        challengesPerMinute: 100_000,
        agentRequestsPerMinute: 100_000,
      },
    },
  });
  caPem = await bootstrapCa(v.url, v.caFingerprint);
});

afterAll(async () => {
  await v?.stop();
});

// ---- bodies ---------------------------------------------------------------------------------

/** CBOR head of major type `major` with argument `n` (n < 2^32). */
function cborHead(major: number, n: number): Buffer {
  if (n < 24) return Buffer.of((major << 5) | n);
  if (n < 0x100) return Buffer.of((major << 5) | 24, n);
  if (n < 0x10000) return Buffer.of((major << 5) | 25, n >> 8, n & 0xff);
  const b = Buffer.alloc(5);
  b[0] = (major << 5) | 26;
  b.writeUInt32BE(n, 1);
  return b;
}

/** The enrollment as a CBOR map of indefinite length (0xbf ... 0xff). */
function indefiniteMap(): Buffer {
  const members = Object.entries(goodEnrollment).flatMap(([k, x]) => [encodeBody(k, 'cbor'), encodeBody(x, 'cbor')]);
  return Buffer.concat([Buffer.of(0xbf), ...members, Buffer.of(0xff)]);
}

describe('hostile bodies: status and code', () => {
  it('oversized JSON and CBOR on the enrollment and the attestation route: 413 ERR_BODY_TOO_LARGE by their Content-Length; sent chunked, 411 ERR_LENGTH_REQUIRED', async () => {
    const cases: Array<[string, number]> = [
      ['/v1/enrollments', BODY_LIMIT],
      [`/v1/agents/${someAgent}/attestations`, ATTESTATION_LIMIT],
    ];
    for (const [path, limit] of cases) {
      const json = Buffer.from(JSON.stringify({ ...goodEnrollment, pad: 'a'.repeat(limit) }));
      const cbor = encodeBody({ ...attestationBody, pad: Buffer.alloc(limit) }, 'cbor');
      for (const [type, body] of [[JSON_TYPE, json], [CBOR_TYPE, cbor]] as const) {
        problem(await call(path, { body, headers: { 'content-type': type } }), 413, 'ERR_BODY_TOO_LARGE');
        problem(await call(path, { body, headers: { 'content-type': type }, chunks: 8 }), 411, 'ERR_LENGTH_REQUIRED');
      }
    }
  });

  it('a declared Content-Length over the limit is refused before any byte of the body is sent', { timeout: 10_000 }, async () => {
    const { socket, received, closed } = await tlsClient(v.verifier.port, caPem);
    socket.write(`POST /v1/enrollments HTTP/1.1\r\nHost: localhost\r\nContent-Type: ${JSON_TYPE}\r\nContent-Length: ${1024 ** 4}\r\n\r\n`);
    const started = performance.now();
    while (!received().includes('ERR_BODY_TOO_LARGE')) await once(socket, 'data');
    expect(performance.now() - started).toBeLessThan(HEADERS_DEADLINE_MS);
    expect(received()).toMatch(/^HTTP\/1\.1 413 /);
    // The body is not read: the server closes the connection rather than drain it.
    expect(received()).toMatch(/\r\nconnection: close\r\n/i);
    await closed;
    expect(performance.now() - started).toBeLessThan(HEADERS_DEADLINE_MS);
  });

  it.each(['json', 'cbor'] as const)(`%s nested deeper than ${MAX_DEPTH} levels, on the attestation route too: 400 ERR_DECODE`, async (format) => {
    const type = format === 'json' ? JSON_TYPE : CBOR_TYPE;
    let deep: unknown = [];
    for (let i = 0; i < MAX_DEPTH; i++) deep = [deep];
    for (const path of ['/v1/enrollments', `/v1/agents/${someAgent}/attestations`]) {
      const p = problem(await postBytes(path, type, encodeBody({ ...attestationBody, pcrs: { sha256: deep } }, format)), 400, 'ERR_DECODE');
      expect(p.detail).toBe(`the body is nested deeper than ${MAX_DEPTH} levels`);
    }
  });

  it.each(['json', 'cbor'] as const)('%s: a list or map wider than an agent body may have is 400 ERR_DECODE, before the schema walks it', async (format) => {
    const type = format === 'json' ? JSON_TYPE : CBOR_TYPE;
    const wide = Object.fromEntries(Array.from({ length: MAX_ENTRIES.agent + 1 }, (_, i) => [String(i), Buffer.alloc(32)]));
    const p = problem(await postBytes(`/v1/agents/${someAgent}/attestations`, type, encodeBody({ ...attestationBody, pcrs: { sha256: wide } }, format)), 400, 'ERR_DECODE');
    expect(p.detail).toBe(`the body has a list or map of more than ${MAX_ENTRIES.agent} entries`);
  });

  it.each(['json', 'cbor'] as const)('%s truncated anywhere: 400 ERR_DECODE, and nothing is recorded', async (format) => {
    const type = format === 'json' ? JSON_TYPE : CBOR_TYPE;
    const whole = encodeBody(goodEnrollment, format);
    const before = await recordOf(v);
    const cuts = Array.from({ length: 16 }, (_, i) => Math.floor((i * whole.length) / 16));
    for (const cut of [...cuts, whole.length - 1]) {
      problem(await postBytes('/v1/enrollments', type, whole.subarray(0, cut)), 400, 'ERR_DECODE');
    }
    await expectNothingRecorded(v, before);
  });

  it('CBOR tags of any number (self-described, embedded CBOR, typed arrays, dates) around or inside a valid body: 400 ERR_DECODE', async () => {
    const body = encodeBody(goodEnrollment, 'cbor');
    const ek = encodeBody(ekPublic, 'cbor');
    const tagged = [
      Buffer.concat([Buffer.of(0xd9, 0xd9, 0xf7), body]), // 55799: self-described CBOR
      Buffer.concat([Buffer.of(0xd8, 24), cborHead(2, body.length), body]), // 24: embedded CBOR
      Buffer.concat([Buffer.of(0xa2), encodeBody('ekPublic', 'cbor'), Buffer.of(0xd8, 64), ek, encodeBody('akPublic', 'cbor'), encodeBody(akPublic, 'cbor')]), // 64: uint8 typed array
      Buffer.concat([Buffer.of(0xa2), encodeBody('ekPublic', 'cbor'), Buffer.of(0xc1, 0x1a, 0x65, 0, 0, 0), encodeBody('akPublic', 'cbor'), encodeBody(akPublic, 'cbor')]), // 1: epoch date
    ];
    for (const b of tagged) {
      const p = problem(await postBytes('/v1/enrollments', CBOR_TYPE, b), 400, 'ERR_DECODE');
      expect(p.detail).toBe('the body is not CBOR this API takes: tags are not used by this API');
    }
  });

  it('CBOR indefinite lengths (map, array, byte and text string) and lengths past the body: 400 ERR_DECODE', async () => {
    const indefinite = [
      indefiniteMap(),
      Buffer.of(0x9f, 0x01, 0x02, 0xff), // [_ 1, 2]
      Buffer.of(0xa1, 0x61, 0x61, 0x5f, 0x42, 0x01, 0x02, 0xff), // {"a": (_ h'0102')}
      Buffer.of(0xa1, 0x61, 0x61, 0x7f, 0x61, 0x62, 0xff), // {"a": (_ "b")}
    ];
    for (const b of indefinite) {
      const p = problem(await postBytes('/v1/enrollments', CBOR_TYPE, b), 400, 'ERR_DECODE');
      expect(p.detail).toBe('the body is not CBOR this API takes: indefinite lengths are not used by this API');
    }
    // A byte string, an array and a map claiming 2^32-1 and 2^64-1 items in a 12-byte body: refused without allocating.
    for (const b of [Buffer.of(0x5a, 0xff, 0xff, 0xff, 0xff), Buffer.of(0x9b, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff), Buffer.of(0xba, 0xff, 0xff, 0xff, 0xff)]) {
      problem(await postBytes('/v1/enrollments', CBOR_TYPE, Buffer.concat([b, Buffer.alloc(7)])), 400, 'ERR_DECODE');
    }
  });
});

// ---- compression bombs ----------------------------------------------------------------------

/** Bytes of memory the process holds (the verifier runs in this process). */
const heldBytes = () => {
  const m = process.memoryUsage();
  return m.heapUsed + m.arrayBuffers;
};

describe('compression bombs: refused with 413 ERR_BODY_TOO_LARGE at the limit, never inflated in full', () => {
  // Each fits the body limit as sent and inflates to a thousand times it or more.
  const INFLATED = 8 * 1024 ** 2;
  const bombs: Array<[string, () => Buffer, number]> = [
    ['gzip', () => gzipSync(Buffer.alloc(INFLATED), { level: 9 }), INFLATED],
    ['deflate', () => deflateSync(Buffer.alloc(INFLATED), { level: 9 }), INFLATED],
    ['br', () => brotliCompressSync(Buffer.alloc(1024 ** 3), { params: { [zlibConstants.BROTLI_PARAM_QUALITY]: 4 } }), 1024 ** 3],
  ];

  it.each(bombs)('%s: 413 within the well-behaved bound, holding far less memory than the body inflates to', { timeout: 30_000 }, async (encoding, make, inflated) => {
    const bomb = make();
    expect(bomb.length).toBeLessThanOrEqual(BODY_LIMIT);
    const before = heldBytes();
    const started = performance.now();
    const answer = await call('/v1/enrollments', { body: bomb, headers: { 'content-type': JSON_TYPE, 'content-encoding': encoding } });
    const ms = performance.now() - started;
    problem(answer, 413, 'ERR_BODY_TOO_LARGE');
    expect(ms).toBeLessThan(SERVED_WITHIN_MS);
    // What the verifier inflated is bounded by the limit and a zlib window or two.
    expect(heldBytes() - before).toBeLessThan(Math.min(inflated / 2, 64 * 1024 ** 2));
    expect((await call('/healthz')).status).toBe(200);
  });

  it('a compressed body larger than the limit that inflates to nothing (empty gzip members): 413 ERR_BODY_TOO_LARGE by its declared length', async () => {
    // body-parser caps only the inflated size: without the declared length, this would be read and inflated to its end.
    const empty = gzipSync(Buffer.alloc(0));
    const body = Buffer.concat(Array.from({ length: Math.ceil((4 * BODY_LIMIT) / empty.length) }, () => empty));
    problem(await postBytes('/v1/enrollments', JSON_TYPE, body, { 'content-encoding': 'gzip' }), 413, 'ERR_BODY_TOO_LARGE');
  });

  it.each(['gzip', 'deflate', 'br', 'x-unknown'])('a %s body sent chunked, without a Content-Length: 411 ERR_LENGTH_REQUIRED before any of it is read, nothing recorded', async (encoding) => {
    const before = await recordOf(v);
    const body = encoding === 'br' ? brotliCompressSync(encodeBody(goodEnrollment, 'json')) : encoding === 'deflate' ? deflateSync(encodeBody(goodEnrollment, 'json')) : gzipSync(encodeBody(goodEnrollment, 'json'));
    problem(await call('/v1/enrollments', { body, chunks: 4, headers: { 'content-type': JSON_TYPE, 'content-encoding': encoding } }), 411, 'ERR_LENGTH_REQUIRED');
    await expectNothingRecorded(v, before);
    // Declared, the same body is taken.
    if (encoding !== 'x-unknown') expect((await postBytes('/v1/enrollments', JSON_TYPE, body, { 'content-encoding': encoding })).status).toBe(201);
  });

  it('an uncompressed body sent chunked: 411 ERR_LENGTH_REQUIRED; streamed without end, answered at once and the connection closed, not read on', async () => {
    const before = await recordOf(v);
    problem(await call('/v1/enrollments', { body: encodeBody(goodEnrollment, 'json'), chunks: 4, headers: { 'content-type': JSON_TYPE, 'content-encoding': 'identity' } }), 411, 'ERR_LENGTH_REQUIRED');
    // Once read to its end before the 413 came: for as long as the client kept sending.
    const client = await tlsClient(v.verifier.port, caPem);
    client.socket.write(`POST /v1/enrollments HTTP/1.1\r\nHost: localhost\r\nContent-Type: ${JSON_TYPE}\r\nTransfer-Encoding: chunked\r\n\r\n`);
    const chunk = Buffer.alloc(64 * 1024, 0x20);
    const sender = setInterval(() => client.socket.writable && client.socket.write(Buffer.concat([Buffer.from(`${chunk.length.toString(16)}\r\n`), chunk, Buffer.from('\r\n')])), 5);
    try {
      await client.closed;
    } finally {
      clearInterval(sender);
    }
    expect(client.received()).toMatch(/^HTTP\/1\.1 411 [^]*\r\nConnection: close\r\n[^]*"code":"ERR_LENGTH_REQUIRED"/i);
    await expectNothingRecorded(v, before);
    expect((await call('/healthz')).status).toBe(200);
  });
});

// ---- slow and idle connections -----------------------------------------------------------------

/** A TLS connection from `localAddress`, handshake done. */
const tlsFrom = (localAddress: string) => tlsClient(v.verifier.port, caPem, localAddress);

/** A plain TCP connection from `localAddress` that has not started TLS. */
async function tcpFrom(localAddress: string): Promise<{ socket: Socket; closed: Promise<unknown> }> {
  const socket = netConnect({ host: '127.0.0.1', port: v.verifier.port, localAddress });
  socket.on('error', () => undefined);
  const closed = once(socket, 'close');
  await once(socket, 'connect');
  return { socket, closed };
}

/**
 * A well-behaved client (127.0.0.1) enrolling and asking /healthz again and again for as long as
 * any of `sockets` is open: the latencies it saw. At least two rounds, the first while every
 * attacking connection is still open.
 */
async function servedMeanwhile(sockets: ReadonlyArray<{ destroyed: boolean }>): Promise<number[]> {
  const latencies: number[] = [];
  expect(sockets.every((s) => !s.destroyed)).toBe(true);
  while (latencies.length < 4 || sockets.some((s) => !s.destroyed)) {
    for (const request of [() => call('/healthz'), () => postBytes('/v1/enrollments', JSON_TYPE, encodeBody(goodEnrollment, 'json'))]) {
      const started = performance.now();
      const a = await request();
      latencies.push(performance.now() - started);
      expect(a.status).toBeLessThan(300);
    }
  }
  return latencies;
}

/** The time from now until every one of `closed` settled. */
async function closedWithin(closed: ReadonlyArray<Promise<unknown>>): Promise<number> {
  const started = performance.now();
  await Promise.all(closed);
  return performance.now() - started;
}

describe('slow and idle connections do not starve a well-behaved client (Keylime CVE-2023-38200)', () => {
  const N = 40;

  it.each([
    [`slowloris: ${N} connections trickling their headers are answered 408 at the headers deadline`, 'GET /healthz HTTP/1.1\r\nHost: localhost\r\nX-Padding: ', 'a', HEADERS_DEADLINE_MS],
    [
      `slow bodies: ${N} requests whose body trickles in are answered 408 at the request deadline`,
      `POST /v1/enrollments HTTP/1.1\r\nHost: localhost\r\nContent-Type: ${JSON_TYPE}\r\nContent-Length: ${BODY_LIMIT}\r\n\r\n{"ekPublic":"`,
      'AAAA',
      REQUEST_DEADLINE_MS,
    ],
  ] as const)('%s; meanwhile another client is served', { timeout: 20_000 }, async (_title, start, piece, deadline) => {
    const slow = await Promise.all(Array.from({ length: N }, () => tlsFrom(ATTACKER)));
    for (const s of slow) s.socket.write(start);
    const trickle = setInterval(() => {
      for (const s of slow) if (s.socket.writable) s.socket.write(piece);
    }, 100);
    try {
      const latencies = await servedMeanwhile(slow.map((s) => s.socket));
      expect(Math.max(...latencies)).toBeLessThan(SERVED_WITHIN_MS);
      expect(await closedWithin(slow.map((s) => s.closed))).toBeLessThan(deadline + 2_000);
    } finally {
      clearInterval(trickle);
    }
    for (const s of slow) expect(s.received()).toMatch(/^HTTP\/1\.1 408 /);
  });

  it(`half-open: ${N} connections that never start TLS, and ${N} that send part of a body and go silent, are closed; meanwhile another client is served`, { timeout: 20_000 }, async () => {
    const silent = await Promise.all(Array.from({ length: N / 2 }, () => tcpFrom(ATTACKER)));
    const partial = await Promise.all(Array.from({ length: N / 2 }, () => tlsFrom('127.0.0.3')));
    for (const s of partial) s.socket.write(`POST /v1/enrollments HTTP/1.1\r\nHost: localhost\r\nContent-Type: ${JSON_TYPE}\r\nContent-Length: 1000\r\n\r\n{"ekPublic":`);
    const latencies = await servedMeanwhile([...silent, ...partial].map((s) => s.socket));
    expect(Math.max(...latencies)).toBeLessThan(SERVED_WITHIN_MS);
    expect(await closedWithin([...silent, ...partial].map((s) => s.closed))).toBeLessThan(REQUEST_DEADLINE_MS + 2_000);
    for (const s of partial) expect(s.received()).toMatch(/^HTTP\/1\.1 408 /);
  });

  it('a client that half-closes inside its body gets a 400 from the HTTP parser, and the service goes on', { timeout: 20_000 }, async () => {
    const s = await tlsFrom(ATTACKER);
    s.socket.end(`POST /v1/enrollments HTTP/1.1\r\nHost: localhost\r\nContent-Type: ${JSON_TYPE}\r\nContent-Length: 1000\r\n\r\n{"ekPublic":`);
    await s.closed;
    // Node's HTTP parser refuses it (a bare 400, no problem+json): the request never reaches the app.
    expect(s.received()).toMatch(/^HTTP\/1\.1 400 Bad Request\r\nConnection: close\r\n\r\n$/);
    expect((await call('/healthz')).status).toBe(200);
  });

  it(`${N} idle keep-alive connections are closed after the keep-alive timeout; meanwhile another client is served`, { timeout: 20_000 }, async () => {
    const idle = await Promise.all(Array.from({ length: N }, () => tlsFrom(ATTACKER)));
    for (const s of idle) s.socket.write('GET /healthz HTTP/1.1\r\nHost: localhost\r\nConnection: keep-alive\r\n\r\n');
    await Promise.all(idle.map((s) => (s.received().includes('ok\n') ? undefined : once(s.socket, 'data'))));
    const latencies = await servedMeanwhile(idle.map((s) => s.socket));
    expect(Math.max(...latencies)).toBeLessThan(SERVED_WITHIN_MS);
    expect(await closedWithin(idle.map((s) => s.closed))).toBeLessThan(KEEP_ALIVE_MS + 2_000);
    for (const s of idle) expect(s.received()).toMatch(/^HTTP\/1\.1 200 /);
  });

  it(`one address opening more than ${PER_ADDRESS} connections has the extra ones dropped at once; another client is served`, { timeout: 20_000 }, async () => {
    const held = await Promise.all(Array.from({ length: PER_ADDRESS }, () => tcpFrom(ATTACKER)));
    const extra = await tcpFrom(ATTACKER);
    expect(await closedWithin([extra.closed])).toBeLessThan(500);
    const latencies = await servedMeanwhile(held.map((s) => s.socket));
    expect(Math.max(...latencies)).toBeLessThan(SERVED_WITHIN_MS);
    await Promise.all(held.map((s) => s.closed));
  });
});

// ---- body bytes in flight -------------------------------------------------------------------

describe('request bytes in flight, bounded per address and in all: 503 ERR_BUSY, others served', () => {
  const SHARE = 2 * ATTESTATION_LIMIT;
  let b: TestVerifier;
  let bCa: string;

  beforeAll(async () => {
    b = await startTestVerifier({
      config: {
        limits: {
          bodyBytes: BODY_LIMIT,
          attestationBodyBytes: ATTESTATION_LIMIT,
          bodyBytesInFlightPerAddress: SHARE,
          bodyBytesInFlight: 2 * SHARE,
          enrollmentsPerMinute: 100_000,
          challengesPerMinute: 100_000,
          agentRequestsPerMinute: 100_000,
        },
      },
    });
    bCa = await bootstrapCa(b.url, b.caFingerprint);
  });
  afterAll(async () => {
    await b?.stop();
  });

  /** Attestation uploads from `localAddress` that declare the route's largest body and send a few bytes of it. */
  async function slowUploads(localAddress: string, n: number) {
    const uploads = await Promise.all(Array.from({ length: n }, () => tlsClient(b.verifier.port, bCa, localAddress)));
    for (const u of uploads) {
      u.socket.write(`POST /v1/agents/${someAgent}/attestations HTTP/1.1\r\nHost: localhost\r\nContent-Type: ${JSON_TYPE}\r\nContent-Length: ${ATTESTATION_LIMIT}\r\n\r\n{"nonce":`);
    }
    // The reservations are made as the headers are parsed: a round trip after them gives the server the time to.
    await httpsCall(b.url, bCa, '/healthz', { localAddress });
    return uploads;
  }
  const askChallenge = (localAddress: string) =>
    httpsCall(b.url, bCa, `/v1/agents/${someAgent}/challenges`, { body: encodeBody({}, 'json'), headers: { 'content-type': JSON_TYPE }, localAddress });
  /** The gauge operators watch. */
  async function bytesInFlight(): Promise<number> {
    const text = (await httpsCall(b.url, bCa, '/metrics')).body.toString();
    return Number(/^attestor_request_body_bytes_in_flight (\d+)$/m.exec(text)?.[1]);
  }
  /** Asks until the answer is not ERR_BUSY (the server sees the uploads' connections close a moment after the client). */
  async function admittedAgain(localAddress: string): Promise<Answer> {
    for (let i = 0; ; i++) {
      const a = await askChallenge(localAddress);
      if (a.status !== 503 || i === 50) return a;
      await new Promise((r) => setTimeout(r, 20));
    }
  }

  it("an address holding its share in slow uploads has its next body refused at once, 503 ERR_BUSY with Retry-After, the connection closed; another address's body is admitted", { timeout: 20_000 }, async () => {
    const uploads = await slowUploads('127.0.2.1', 2);
    expect(await bytesInFlight()).toBe(SHARE);
    const refusedBody = await askChallenge('127.0.2.1');
    problem(refusedBody, 503, 'ERR_BUSY');
    expect(refusedBody.headers['retry-after']).toBe('1');
    expect(refusedBody.headers.connection).toBe('close');
    // Another address: its body is read, decoded and handled (an unknown agent).
    problem(await askChallenge('127.0.2.2'), 404, 'ERR_AGENT_NOT_FOUND');
    // Requests without a body reserve nothing.
    expect((await httpsCall(b.url, bCa, '/healthz', { localAddress: '127.0.2.1' })).status).toBe(200);
    for (const u of uploads) u.socket.destroy();
    await Promise.all(uploads.map((u) => u.closed));
    problem(await admittedAgain('127.0.2.1'), 404, 'ERR_AGENT_NOT_FOUND');
    expect(await bytesInFlight()).toBe(0);
  });

  it('addresses each within their share that together hold the whole budget: a newcomer\'s body is refused 503 ERR_BUSY, bodiless requests are served; freed, it is admitted', { timeout: 20_000 }, async () => {
    const uploads = [...(await slowUploads('127.0.2.3', 2)), ...(await slowUploads('127.0.2.4', 2))];
    problem(await askChallenge('127.0.2.5'), 503, 'ERR_BUSY');
    expect((await httpsCall(b.url, bCa, '/healthz', { localAddress: '127.0.2.5' })).status).toBe(200);
    for (const u of uploads) u.socket.destroy();
    await Promise.all(uploads.map((u) => u.closed));
    problem(await admittedAgain('127.0.2.5'), 404, 'ERR_AGENT_NOT_FOUND');
  });

  it("a body pipelined behind a pending response, its connection closed at once, gives its bytes back (the queued response never emits 'close')", { timeout: 20_000 }, async () => {
    for (let i = 0; i < 3; i++) {
      const c = await tlsClient(b.verifier.port, bCa, '127.0.2.8');
      // An operator route's token lookup keeps the first response pending while the attestation behind it is admitted.
      c.socket.write(
        `GET /v1/agents HTTP/1.1\r\nHost: localhost\r\nAuthorization: Bearer ${'A'.repeat(43)}\r\n\r\n` +
          `POST /v1/agents/${someAgent}/attestations HTTP/1.1\r\nHost: localhost\r\nContent-Type: ${JSON_TYPE}\r\nContent-Length: ${ATTESTATION_LIMIT}\r\n\r\n{"nonce":`,
      );
      c.socket.destroy();
      await c.closed;
    }
    problem(await admittedAgain('127.0.2.8'), 404, 'ERR_AGENT_NOT_FOUND');
  });

  it('thirty bodies pipelined on one connection: all answered, one close listener on the socket (no MaxListenersExceededWarning), nothing held after', { timeout: 20_000 }, async () => {
    const warnings: string[] = [];
    const onWarning = (w: Error) => warnings.push(w.name);
    process.on('warning', onWarning);
    try {
      const c = await tlsClient(b.verifier.port, bCa, '127.0.2.12');
      const one = `POST /v1/agents/${someAgent}/challenges HTTP/1.1\r\nHost: localhost\r\nContent-Type: ${JSON_TYPE}\r\nContent-Length: 2\r\n\r\n{}`;
      c.socket.write(one.repeat(30));
      while ((c.received().match(/HTTP\/1\.1 404 /g) ?? []).length < 30) await once(c.socket, 'data');
      c.socket.destroy();
      await c.closed;
      await new Promise((r) => setImmediate(r));
      expect(warnings).not.toContain('MaxListenersExceededWarning');
      expect(await bytesInFlight()).toBe(0);
    } finally {
      process.off('warning', onWarning);
    }
  });

  it("a compressed body reserves the route's limit, what it may inflate to, not its declared length", { timeout: 20_000 }, async () => {
    const uploads = await Promise.all([0, 1].map(() => tlsClient(b.verifier.port, bCa, '127.0.2.9')));
    for (const u of uploads) {
      u.socket.write(`POST /v1/agents/${someAgent}/attestations HTTP/1.1\r\nHost: localhost\r\nContent-Type: ${JSON_TYPE}\r\nContent-Encoding: gzip\r\nContent-Length: 100\r\n\r\n\x1f\x8b`);
    }
    await httpsCall(b.url, bCa, '/healthz', { localAddress: '127.0.2.9' });
    problem(await askChallenge('127.0.2.9'), 503, 'ERR_BUSY');
    for (const u of uploads) u.socket.destroy();
    await Promise.all(uploads.map((u) => u.closed));
    problem(await admittedAgain('127.0.2.9'), 404, 'ERR_AGENT_NOT_FOUND');
  });

  it('a client gone while its operator token is looked up reserves nothing', { timeout: 30_000 }, async () => {
    // Bodies of at most 8 KiB, and one such body in flight per address: one leaked reservation would refuse the address for good.
    const small = 8 * 1024;
    const t = await startTestVerifier({
      config: {
        registeredEkHashes: [agentIdOf(ekPublic)],
        limits: { bodyBytes: small, attestationBodyBytes: small, bodyBytesInFlightPerAddress: small, bodyBytesInFlight: 2 * small, enrollmentsPerMinute: 100_000 },
      },
    });
    const lock = new BetterSqlite3(join(t.dataDir, 'attestor.db'));
    try {
      const tCa = await bootstrapCa(t.url, t.caFingerprint);
      // The store's thread waits for the write lock on an enrollment, and the token lookup queued behind it waits too.
      lock.pragma('busy_timeout = 0');
      lock.exec('BEGIN IMMEDIATE');
      const blocked = httpsCall(t.url, tCa, '/v1/enrollments', { body: encodeBody(goodEnrollment, 'json'), headers: { 'content-type': JSON_TYPE }, localAddress: '127.0.2.10' });
      await new Promise((r) => setTimeout(r, 100));
      const c = await tlsClient(t.verifier.port, tCa, '127.0.2.11');
      c.socket.write(`POST /v1/baselines HTTP/1.1\r\nHost: localhost\r\nAuthorization: Bearer ${t.adminToken}\r\nContent-Type: ${JSON_TYPE}\r\nContent-Length: ${small}\r\n\r\n{`);
      await new Promise((r) => setTimeout(r, 100));
      c.socket.destroy();
      await c.closed;
      lock.exec('ROLLBACK');
      expect((await blocked).status).toBe(201);
      const ask = () => httpsCall(t.url, tCa, `/v1/agents/${someAgent}/challenges`, { body: encodeBody({}, 'json'), headers: { 'content-type': JSON_TYPE }, localAddress: '127.0.2.11' });
      problem(await ask(), 404, 'ERR_AGENT_NOT_FOUND');
    } finally {
      lock.close();
      await t.stop();
    }
  });

  it('a slow upload answered at the request deadline gives its bytes back', { timeout: 20_000 }, async () => {
    const t = await startTestVerifier({
      config: { limits: { bodyBytes: BODY_LIMIT, attestationBodyBytes: ATTESTATION_LIMIT, bodyBytesInFlightPerAddress: ATTESTATION_LIMIT, bodyBytesInFlight: ATTESTATION_LIMIT, headersTimeoutMs: HEADERS_DEADLINE_MS, requestTimeoutMs: REQUEST_DEADLINE_MS } },
    });
    try {
      const tCa = await bootstrapCa(t.url, t.caFingerprint);
      const upload = await tlsClient(t.verifier.port, tCa, '127.0.2.6');
      upload.socket.write(`POST /v1/agents/${someAgent}/attestations HTTP/1.1\r\nHost: localhost\r\nContent-Type: ${JSON_TYPE}\r\nContent-Length: ${ATTESTATION_LIMIT}\r\n\r\n{`);
      await httpsCall(t.url, tCa, '/healthz', { localAddress: '127.0.2.6' });
      const ask = () => httpsCall(t.url, tCa, `/v1/agents/${someAgent}/challenges`, { body: encodeBody({}, 'json'), headers: { 'content-type': JSON_TYPE }, localAddress: '127.0.2.7' });
      problem(await ask(), 503, 'ERR_BUSY');
      await upload.closed;
      expect(upload.received()).toMatch(/^HTTP\/1\.1 408 /);
      problem(await ask(), 404, 'ERR_AGENT_NOT_FOUND');
    } finally {
      await t.stop();
    }
  });
});

// ---- rate limits ----------------------------------------------------------------------------

describe('rate limits per client address and per agent: 429 ERR_RATE_LIMITED, others served', () => {
  const PER_ADDRESS_MINUTE = 6;
  const PER_AGENT_MINUTE = 2;
  const limitedEk = softEkPublic();
  let t: TestVerifier;
  let tCa: string;

  beforeAll(async () => {
    // A clock that stands still: the rate window cannot roll over during the test.
    const frozen = Date.now();
    t = await startTestVerifier({
      config: {
        registeredEkHashes: [agentIdOf(limitedEk)],
        limits: { enrollmentsPerMinute: PER_ADDRESS_MINUTE, challengesPerMinute: PER_ADDRESS_MINUTE, agentRequestsPerMinute: PER_AGENT_MINUTE },
      },
      now: () => frozen,
    });
    tCa = await bootstrapCa(t.url, t.caFingerprint);
  });
  afterAll(async () => {
    await t?.stop();
  });

  /** A fresh client address for each use: 127.0.1.x. */
  let nextHost = 1;
  const freshAddress = () => `127.0.1.${nextHost++}`;
  const post = (path: string, value: unknown, localAddress: string) =>
    httpsCall(t.url, tCa, path, { body: encodeBody(value, 'json'), headers: { 'content-type': JSON_TYPE }, localAddress });
  /** From one address, whose own budget (PER_ADDRESS_MINUTE) is larger than an agent's. */
  const postAs = (localAddress: string, path: string, value: unknown) => post(path, value, localAddress);
  const agentId = (i: number) => i.toString(16).padStart(64, '0');

  it('enrollment per agent: the same EK from one address is limited, with nothing recorded; another EK, or the same EK from another address, is not', async () => {
    const body = { ekPublic: limitedEk, akPublic };
    const address = freshAddress();
    for (let i = 0; i < PER_AGENT_MINUTE; i++) expect((await postAs(address, '/v1/enrollments', body)).status).toBe(201);
    const before = await recordOf(t);
    const p = problem(await postAs(address, '/v1/enrollments', body), 429, 'ERR_RATE_LIMITED');
    expect(p.detail).toBe(`more than ${PER_AGENT_MINUTE} enrollment requests a minute for this agent from this address; wait and retry`);
    await expectNothingRecorded(t, before);
    // Another EK (not registered here: refused by the flow, past the limiter).
    problem(await postAs(address, '/v1/enrollments', { ekPublic: softEkPublic(), akPublic }), 403, 'ERR_EK_CERT_CHAIN');
    // The host itself, from its own address: nobody else can spend its budget.
    expect((await postAs(freshAddress(), '/v1/enrollments', body)).status).toBe(201);
  });

  for (const [what, path] of [
    ['challenges', (id: string) => `/v1/agents/${id}/challenges`],
    ['attestations', (id: string) => `/v1/agents/${id}/attestations`],
  ] as const) {
    const body = what === 'challenges' ? {} : attestationBody;

    it(`${what} per address: one address asking for many agents is limited; another address is served`, async () => {
      const address = freshAddress();
      for (let i = 0; i < PER_ADDRESS_MINUTE; i++) problem(await post(path(agentId(1000 + i)), body, address), 404, 'ERR_AGENT_NOT_FOUND');
      const p = problem(await post(path(agentId(2000)), body, address), 429, 'ERR_RATE_LIMITED');
      expect(p.detail).toBe(`more than ${PER_ADDRESS_MINUTE} ${what} a minute from this address; wait and retry`);
      problem(await post(path(agentId(2000)), body, freshAddress()), 404, 'ERR_AGENT_NOT_FOUND');
    });

    it(`${what} per agent: one address asking for one agent is limited; another agent, or the same agent from another address, is served`, async () => {
      const target = agentId(what === 'challenges' ? 3000 : 4000);
      const address = freshAddress();
      for (let i = 0; i < PER_AGENT_MINUTE; i++) problem(await postAs(address, path(target), body), 404, 'ERR_AGENT_NOT_FOUND');
      const p = problem(await postAs(address, path(target), body), 429, 'ERR_RATE_LIMITED');
      expect(p.detail).toBe(`more than ${PER_AGENT_MINUTE} ${what} a minute for this agent from this address; wait and retry`);
      problem(await postAs(address, path(agentId(5000)), body), 404, 'ERR_AGENT_NOT_FOUND');
      // Others spending an agent's budget cannot keep the host from renewing.
      problem(await post(path(target), body, freshAddress()), 404, 'ERR_AGENT_NOT_FOUND');
    });

  }

  it('a request refused before its body is read is answered at once and its connection closed, not drained until the request deadline', { timeout: 10_000 }, async () => {
    const address = freshAddress();
    const target = agentId(6000);
    for (let i = 0; i < PER_AGENT_MINUTE; i++) problem(await postAs(address, `/v1/agents/${target}/challenges`, {}), 404, 'ERR_AGENT_NOT_FOUND');
    const { socket, received, closed } = await tlsClient(t.verifier.port, tCa, address);
    socket.write(`POST /v1/agents/${target}/challenges HTTP/1.1\r\nHost: localhost\r\nContent-Type: ${JSON_TYPE}\r\nContent-Length: 4096\r\n\r\n{`);
    const started = performance.now();
    await closed;
    expect(performance.now() - started).toBeLessThan(1_000);
    expect(received()).toMatch(/^HTTP\/1\.1 429 [^]*\r\nconnection: close\r\n[^]*ERR_RATE_LIMITED/i);
  });

  it('per address: bodies refused before they are decoded (too large, malformed, invalid) count too, on enrollments and attestations', async () => {
    // Another agent each time: the address's budget is what runs out.
    for (const path of [() => '/v1/enrollments', (i: number) => `/v1/agents/${agentId(8000 + i)}/attestations`]) {
      const address = freshAddress();
      const bodies = [Buffer.alloc(ATTESTATION_LIMIT + 1, 0x20), Buffer.from('{"nonce":'), Buffer.from('{"unknown":1}')];
      const junk = (i: number) => httpsCall(t.url, tCa, path(i), { body: bodies[i % 3]!, headers: { 'content-type': JSON_TYPE }, localAddress: address });
      for (let i = 0; i < PER_ADDRESS_MINUTE; i++) expect([400, 413]).toContain((await junk(i)).status);
      problem(await junk(PER_ADDRESS_MINUTE), 429, 'ERR_RATE_LIMITED');
    }
  });

  it('a flood of limited requests from one address does not slow a client from another address', { timeout: 20_000 }, async () => {
    const flooder = freshAddress();
    let flooding = true;
    const statuses: number[] = [];
    // Four lanes asking back to back for as long as the other client is measured.
    const lane = async (n: number) => {
      for (let i = 0; flooding; i++) statuses.push((await post(`/v1/agents/${agentId(6000 + n * 1000 + i)}/challenges`, {}, flooder)).status);
    };
    const lanes = Promise.all([0, 1, 2, 3].map(lane));
    const latencies: number[] = [];
    for (let i = 0; i < 9; i++) {
      const started = performance.now();
      problem(await post(`/v1/agents/${agentId(7000 + i)}/challenges`, {}, freshAddress()), 404, 'ERR_AGENT_NOT_FOUND');
      latencies.push(performance.now() - started);
    }
    flooding = false;
    await lanes;
    // The flood shares this process's event loop with the client and the server, and the machine
    // may be busy: one slow answer is the machine's; most answers slow is the service starving.
    latencies.sort((a, b) => a - b);
    expect(latencies[4]).toBeLessThan(SERVED_WITHIN_MS);
    expect(latencies[8]).toBeLessThan(3 * SERVED_WITHIN_MS);
    expect(statuses.length).toBeGreaterThan(PER_ADDRESS_MINUTE);
    expect(statuses.filter((s) => s !== 429)).toHaveLength(PER_ADDRESS_MINUTE);
  });
});
