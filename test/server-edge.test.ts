/**
 * The verifier's HTTP edge against the real server (startVerifier, HTTPS on a free port):
 * problem+json for every refusal, body limits and decode depth, JSON/CBOR equivalence and
 * Accept negotiation, request ids, deadlines against slow and idle clients (Keylime
 * CVE-2023-38200), the public routes, rate limiting; and property tests of the body codec and
 * the wire schemas. The flows end to end are test/e2e-story.ts's.
 */
import { createHash, randomBytes, X509Certificate } from 'node:crypto';
import { once } from 'node:events';
import { connect as netConnect, type Socket } from 'node:net';
import { gzipSync } from 'node:zlib';
import fc from 'fast-check';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { bootstrapCa } from '../src/client/api-client.js';
import { AttestorError } from '../src/errors.js';
import { agentIdOf } from '../src/tpm/agent-id.js';
import { TPMA_OBJECT } from '../src/tpm/constants.js';
import { CBOR_TYPE, decodeBody, encodeBody, JSON_TYPE, MAX_DEPTH, type BodyFormat } from '../src/wire/codec.js';
import { AttestationRequest, EnrollmentRequest, EnrollmentResponse, TokenCreateResponse } from '../src/wire/schemas.js';
import { httpsCall, problem, tlsClient as openTls, type Answer, type CallOptions } from './helpers/https-call.js';
import { softAk, softEkPublic } from './helpers/tpm-builders.js';
import { startTestVerifier, type TestVerifier } from './helpers/verifier.js';

// ---- a software EK and AK: enrollment without a TPM, through registeredEkHashes -------------

const ekPublic = softEkPublic();
const akPublic = softAk('ecc').public;
const goodEnrollment = { ekPublic, akPublic, labels: { role: 'edge' } };
/** Well-formed for the schema, but the EK public area is junk: the TPM parser refuses it. */
const malformedEk = { ekPublic: Buffer.from('00040102030405', 'hex'), akPublic };

// ---- HTTP -----------------------------------------------------------------------------------

let v: TestVerifier;
let caPem: string;
/** The root CA each verifier's clients pin (fetched by fingerprint). */
const pinned = new Map<TestVerifier, string>();

/** One HTTPS request, verified against the target's pinned CA. */
const call = (target: TestVerifier, path: string, opts: CallOptions = {}): Promise<Answer> => httpsCall(target.url, pinned.get(target), path, opts);

const get = (path: string, headers: Record<string, string> = {}) => call(v, path, { headers });
const postJsonTo = (target: TestVerifier, path: string, value: unknown, headers: Record<string, string> = {}) =>
  call(target, path, { body: encodeBody(value, 'json'), headers: { 'content-type': JSON_TYPE, ...headers } });
const postJson = (path: string, value: unknown, headers: Record<string, string> = {}) => postJsonTo(v, path, value, headers);
const postCbor = (path: string, value: unknown, headers: Record<string, string> = {}) =>
  call(v, path, { body: encodeBody(value, 'cbor'), headers: { 'content-type': CBOR_TYPE, ...headers } });
const post = (format: BodyFormat, path: string, value: unknown, headers: Record<string, string> = {}) =>
  format === 'json' ? postJson(path, value, headers) : postCbor(path, value, headers);
const bearer = (token: string) => ({ authorization: `Bearer ${token}` });

/** A value nested `depth` levels deep: arrays (`[[...]]`) or objects (`{"a":{...}}`). */
function nested(depth: number, kind: 'array' | 'object'): unknown {
  let value: unknown = kind === 'array' ? [] : {};
  for (let i = 1; i < depth; i++) value = kind === 'array' ? [value] : { a: value };
  return value;
}

const BODY_LIMIT = 8 * 1024;
const ATTESTATION_LIMIT = 256 * 1024;
const HEADERS_DEADLINE_MS = 500;

beforeAll(async () => {
  v = await startTestVerifier({
    config: {
      registeredEkHashes: [agentIdOf(ekPublic)],
      limits: { bodyBytes: BODY_LIMIT, attestationBodyBytes: ATTESTATION_LIMIT, headersTimeoutMs: HEADERS_DEADLINE_MS, enrollmentsPerMinute: 10_000 },
    },
  });
  caPem = await bootstrapCa(v.url, v.caFingerprint);
  pinned.set(v, caPem);
});

afterAll(async () => {
  await v?.stop();
});

describe('problem+json', () => {
  it('400 ERR_DECODE for a body that is not JSON; the parser never echoes the body', async () => {
    const p = problem(await call(v, '/v1/enrollments', { body: '{"ekPublic": "secret-looking-bytes', headers: { 'content-type': JSON_TYPE } }), 400, 'ERR_DECODE');
    expect(p.detail).toBe('the body is not well-formed JSON');
    problem(await call(v, '/v1/enrollments', { body: Buffer.from([0xff, 0xfe, 0xfd]), headers: { 'content-type': CBOR_TYPE } }), 400, 'ERR_DECODE');
  });

  it('400 ERR_INPUT naming the field that violates the schema', async () => {
    const cases: Array<[unknown, string]> = [
      [{ ...goodEnrollment, ekPublic: Buffer.alloc(2) }, 'body.ekPublic: must be 4..1024 bytes, got 2'],
      [{ ekPublic }, 'body.akPublic: '],
      [{ ...goodEnrollment, akPublic: 'not base64url!' }, 'body.akPublic: '],
      [{ ...goodEnrollment, labels: { Role: 'x' } }, 'body.labels.Role: '],
      [{ ...goodEnrollment, ekChain: [ekPublic, 7] }, 'body.ekChain.1: '],
      [{ ...goodEnrollment, extra: 1 }, 'body: Unrecognized key: "extra"'],
      [[goodEnrollment], 'body: '],
    ];
    for (const [body, detail] of cases) {
      const p = problem(await postJson('/v1/enrollments', body), 400, 'ERR_INPUT');
      expect(p.detail?.startsWith(detail), `${p.detail} should start with ${detail}`).toBe(true);
    }
    // Path parameters are checked the same way, naming where.
    const p = problem(await postJson('/v1/agents/NOT-AN-ID/challenges', {}), 400, 'ERR_INPUT');
    expect(p.detail).toMatch(/^path\.id: /);
  });

  it('401 for a missing or unknown operator token, with no detail', async () => {
    for (const headers of [{}, bearer(randomBytes(32).toString('base64url')), bearer('not-a-token'), { authorization: 'Basic YWRtaW46YWRtaW4=' }]) {
      const p = problem(await get('/v1/agents', headers), 401, 'ERR_UNAUTHENTICATED');
      expect(p.detail).toBeUndefined();
    }
  });

  it('403 for a token whose role lacks the scope', async () => {
    const rp = TokenCreateResponse.parse(JSON.parse((await postJson('/v1/tokens', { role: 'relying-party' }, bearer(v.adminToken))).body.toString()));
    const p = problem(await get('/v1/agents', bearer(rp.token)), 403, 'ERR_FORBIDDEN');
    expect(p.detail).toContain('agents:read');
    expect(p.detail).not.toContain(rp.token);
  });

  it('404 for an unknown route, method or version', async () => {
    for (const [method, path] of [
      ['GET', '/v1/nothing-here'],
      ['GET', '/v2/agents'],
      ['GET', '/v1/enrollments'],
      ['DELETE', '/v1/agents'],
      ['PUT', '/healthz'],
    ] as const) {
      const p = problem(await call(v, path, { method }), 404, 'ERR_NOT_FOUND');
      expect(p.detail).toBe('no such route');
    }
  });

  it('413 over the default body limit, on agent and operator routes; 411 without a Content-Length', async () => {
    const json = (size: number) => Buffer.from(`"${'a'.repeat(size - 2)}"`);
    for (const [chunks, status, code] of [[undefined, 413, 'ERR_BODY_TOO_LARGE'], [4, 411, 'ERR_LENGTH_REQUIRED']] as const) {
      const over = { body: json(BODY_LIMIT + 1), headers: { 'content-type': JSON_TYPE }, ...(chunks ? { chunks } : {}) };
      problem(await call(v, '/v1/enrollments', over), status, code);
      problem(await call(v, '/v1/baselines', { ...over, headers: { ...over.headers, ...bearer(v.adminToken) } }), status, code);
    }
    // At the limit the body is read and judged on its content.
    problem(await call(v, '/v1/enrollments', { body: json(BODY_LIMIT), headers: { 'content-type': JSON_TYPE } }), 400, 'ERR_INPUT');
    // The limit holds for the inflated size of a compressed body too.
    const gz = gzipSync(json(BODY_LIMIT + 1));
    expect(gz.length).toBeLessThan(BODY_LIMIT);
    problem(await call(v, '/v1/enrollments', { body: gz, headers: { 'content-type': JSON_TYPE, 'content-encoding': 'gzip' } }), 413, 'ERR_BODY_TOO_LARGE');
  });

  it('413 over the attestation limit only on the attestation route, which takes more than the default', async () => {
    const agent = 'ab'.repeat(32);
    const json = (size: number) => Buffer.from(`"${'a'.repeat(size - 2)}"`);
    const attest = (size: number, chunks?: number) =>
      call(v, `/v1/agents/${agent}/attestations`, { body: json(size), headers: { 'content-type': JSON_TYPE }, ...(chunks ? { chunks } : {}) });
    problem(await attest(BODY_LIMIT + 1), 400, 'ERR_INPUT');
    problem(await attest(ATTESTATION_LIMIT), 400, 'ERR_INPUT');
    problem(await attest(ATTESTATION_LIMIT + 1), 413, 'ERR_BODY_TOO_LARGE');
    problem(await attest(ATTESTATION_LIMIT + 1, 16), 411, 'ERR_LENGTH_REQUIRED');
  });

  it('an operator route answers a request without a valid token before reading its body: 401 at once, the connection closed', async () => {
    const client = await openTls(v.verifier.port, caPem);
    // A body declared but never sent: read first, this would wait for the request timeout.
    client.socket.write(`POST /v1/baselines HTTP/1.1\r\nHost: localhost\r\nContent-Type: ${JSON_TYPE}\r\nContent-Length: ${BODY_LIMIT}\r\n\r\n{`);
    await client.closed;
    expect(client.received()).toMatch(/^HTTP\/1\.1 401 [^]*\r\nConnection: close\r\n[^]*"code":"ERR_UNAUTHENTICATED"/i);
  });

  it('415 for a content type or content coding the route does not take', async () => {
    const body = encodeBody(goodEnrollment, 'json');
    for (const type of ['text/plain', 'application/x-www-form-urlencoded', 'application/jsonx', 'multipart/form-data; boundary=x']) {
      problem(await call(v, '/v1/enrollments', { body, headers: { 'content-type': type } }), 415, 'ERR_UNSUPPORTED_MEDIA_TYPE');
    }
    problem(await call(v, '/v1/enrollments', { body }), 415, 'ERR_UNSUPPORTED_MEDIA_TYPE');
    // Operator routes are JSON only.
    const cbor = encodeBody({ name: 'x', document: {} }, 'cbor');
    const p = problem(await call(v, '/v1/baselines', { body: cbor, headers: { 'content-type': CBOR_TYPE, ...bearer(v.adminToken) } }), 415, 'ERR_UNSUPPORTED_MEDIA_TYPE');
    expect(p.detail).toBe('send application/json');
    problem(await call(v, '/v1/enrollments', { body, headers: { 'content-type': JSON_TYPE, 'content-encoding': 'compress' } }), 415, 'ERR_UNSUPPORTED_MEDIA_TYPE');
  });

  it('a compressed body that does not inflate is the client\'s fault (400 ERR_DECODE), a well-formed one is read', async () => {
    problem(await call(v, '/v1/enrollments', { body: Buffer.from('not gzip at all'), headers: { 'content-type': JSON_TYPE, 'content-encoding': 'gzip' } }), 400, 'ERR_DECODE');
    const ok = await call(v, '/v1/enrollments', { body: gzipSync(encodeBody(goodEnrollment, 'json')), headers: { 'content-type': JSON_TYPE, 'content-encoding': 'gzip' } });
    expect(ok.status, ok.body.toString()).toBe(201);
  });

  it('ERR_ACTIVATION_FAILED says nothing about which check failed, and the enrollment is spent', async () => {
    const e = EnrollmentResponse.parse(JSON.parse((await postJson('/v1/enrollments', goodEnrollment)).body.toString()));
    const p = problem(await postJson(`/v1/enrollments/${e.enrollmentId}/activation`, { secret: randomBytes(32) }), 403, 'ERR_ACTIVATION_FAILED');
    expect(p.detail).toBeUndefined();
    problem(await postJson(`/v1/enrollments/${e.enrollmentId}/activation`, { secret: randomBytes(32) }), 404, 'ERR_ENROLLMENT_NOT_FOUND');
  });
});

describe('decode depth', () => {
  const deep = MAX_DEPTH + 1;

  it.each(['json', 'cbor'] as const)('%s: nested deeper than 32 levels is 400 ERR_DECODE; 32 levels decode (and fail the schema)', async (format) => {
    for (const kind of ['array', 'object'] as const) {
      const p = problem(await post(format, '/v1/enrollments', nested(deep, kind)), 400, 'ERR_DECODE');
      expect(p.detail).toBe('the body is nested deeper than 32 levels');
      problem(await post(format, '/v1/enrollments', nested(MAX_DEPTH, kind)), 400, 'ERR_INPUT');
    }
    // Deep inside an otherwise valid body.
    problem(await post(format, '/v1/enrollments', { ...goodEnrollment, labels: nested(deep, 'object') }), 400, 'ERR_DECODE');
  });

  it('hostile depth (a hundred thousand levels) cannot crash the server; the next requests are served as before', async () => {
    const levels = 100_000;
    const cbor = Buffer.concat([Buffer.alloc(levels, 0x81), Buffer.of(0x80)]); // [[[...[]...]]] in CBOR
    const json = Buffer.from(`${'['.repeat(levels)}${']'.repeat(levels)}`);
    const agent = 'cd'.repeat(32);
    const before = EnrollmentResponse.parse(decodeBody((await postCbor('/v1/enrollments', goodEnrollment)).body, 'cbor'));
    for (const [type, body] of [[CBOR_TYPE, cbor], [JSON_TYPE, json]] as const) {
      problem(await call(v, `/v1/agents/${agent}/attestations`, { body, headers: { 'content-type': type } }), 400, 'ERR_DECODE');
      expect((await get('/healthz')).status).toBe(200);
    }
    // The shared CBOR decoder is left in a sound state: the same body decodes as before.
    const after = await postCbor('/v1/enrollments', goodEnrollment);
    expect(after.status).toBe(201);
    const e = EnrollmentResponse.parse(decodeBody(after.body, 'cbor'));
    expect(e.agentId).toBe(before.agentId);
  });
});

describe('JSON and CBOR', () => {
  it('the same input gives the same refusal in both formats (a malformed EK, a bad field, an unknown field, a non-attestation AK)', async () => {
    const cases: Array<[unknown, number, string]> = [
      [malformedEk, 400, 'ERR_TPM_TRAILING_BYTES'],
      [{ ...goodEnrollment, ekPublic: Buffer.alloc(2) }, 400, 'ERR_INPUT'],
      [{ ...goodEnrollment, extra: true }, 400, 'ERR_INPUT'],
      [{ ...goodEnrollment, akPublic: softAk('ecc', { attributes: TPMA_OBJECT.sign }).public }, 400, 'ERR_AK_ATTRIBUTES'],
    ];
    for (const [body, status, code] of cases) {
      const pj = problem(await postJson('/v1/enrollments', body), status, code);
      const pc = problem(await postCbor('/v1/enrollments', body), status, code);
      expect(pc.detail).toBe(pj.detail);
    }
  });

  it('the same enrollment succeeds in both; bytes are base64url in JSON and byte strings in CBOR', async () => {
    const j = await postJson('/v1/enrollments', goodEnrollment);
    const c = await postCbor('/v1/enrollments', goodEnrollment);
    expect([j.status, c.status]).toEqual([201, 201]);
    expect(j.headers['content-type']).toBe('application/json; charset=utf-8');
    expect(c.headers['content-type']).toBe(CBOR_TYPE);
    const rawJson = JSON.parse(j.body.toString()) as Record<string, unknown>;
    const rawCbor = decodeBody(c.body, 'cbor') as Record<string, unknown>;
    expect(typeof rawJson.credentialBlob).toBe('string');
    expect(rawCbor.credentialBlob).toBeInstanceOf(Uint8Array);
    const ej = EnrollmentResponse.parse(rawJson);
    const ec = EnrollmentResponse.parse(rawCbor);
    expect(ec.agentId).toBe(ej.agentId);
    expect(ej.agentId).toBe(agentIdOf(ekPublic));
    expect(ec.enrollmentId).not.toBe(ej.enrollmentId);
  });

  it('Accept picks the response format; without a usable one the request format is answered', async () => {
    const cases: Array<[BodyFormat, string | undefined, BodyFormat]> = [
      ['json', undefined, 'json'],
      ['json', CBOR_TYPE, 'cbor'],
      ['cbor', undefined, 'cbor'],
      ['cbor', JSON_TYPE, 'json'],
      ['json', `text/html, ${CBOR_TYPE};q=0.5`, 'cbor'],
      ['cbor', 'text/html, */*', 'cbor'],
      ['json', 'application/xml', 'json'],
    ];
    for (const [sent, accept, answered] of cases) {
      const a = await post(sent, '/v1/enrollments', goodEnrollment, accept ? { accept } : {});
      expect(a.status).toBe(201);
      expect(a.headers['content-type']?.split(';')[0], `${sent} with Accept ${accept}`).toBe(answered === 'json' ? JSON_TYPE : CBOR_TYPE);
      expect(EnrollmentResponse.parse(decodeBody(a.body, answered)).agentId).toBe(agentIdOf(ekPublic));
    }
  });

  it('refusals are problem+json whatever Accept asks for', async () => {
    problem(await postCbor('/v1/enrollments', malformedEk, { accept: CBOR_TYPE }), 400, 'ERR_TPM_TRAILING_BYTES');
  });
});

describe('request ids', () => {
  const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/;

  it('a sane x-request-id is echoed, in the header and in the problem', async () => {
    for (const id of ['req-1', 'A.b_C-9', 'x'.repeat(64)]) {
      const ok = await get('/healthz', { 'x-request-id': id });
      expect(ok.headers['x-request-id']).toBe(id);
      const p = problem(await get('/v1/nothing', { 'x-request-id': id }), 404, 'ERR_NOT_FOUND');
      expect(p.requestId).toBe(id);
    }
  });

  it('otherwise a fresh UUID is generated, one per request', async () => {
    const ids = new Set<string>();
    for (const headers of [{}, { 'x-request-id': 'x'.repeat(65) }, { 'x-request-id': 'has space' }, { 'x-request-id': 'a/b' }, { 'x-request-id': '<script>' }, { 'x-request-id': 'ünï' }]) {
      const a = await get('/v1/nothing', headers as Record<string, string>);
      const p = problem(a, 404, 'ERR_NOT_FOUND');
      expect(p.requestId).toMatch(UUID);
      ids.add(p.requestId!);
    }
    expect(ids.size).toBe(6);
  });
});

describe('slow and idle clients (Keylime CVE-2023-38200)', () => {
  /** A TLS connection to the verifier, verified against the pinned CA. */
  const tlsClient = () => openTls(v.verifier.port, caPem);

  /** A plain TCP connection (no TLS at all). */
  async function tcpClient(): Promise<{ socket: Socket; closed: Promise<unknown> }> {
    const socket = netConnect({ host: '127.0.0.1', port: v.verifier.port });
    socket.on('error', () => undefined);
    const closed = once(socket, 'close');
    await once(socket, 'connect');
    return { socket, closed };
  }

  // The deadlines are 500 ms; these tests' own timeouts (15 s) are far below the 30 s Node takes
  // to notice an expired deadline unless the listener checks more often.
  it('half the headers, then nothing: answered 408 and cut off at the headers deadline, while another client is served', { timeout: 15_000 }, async () => {
    const slow = await tlsClient();
    slow.socket.write('POST /v1/enrollments HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n');
    // Still open here (closing needs a turn of the event loop): the next request runs beside it.
    expect(slow.socket.destroyed).toBe(false);
    const served = await get('/healthz');
    expect(served.status).toBe(200);
    await slow.closed;
    expect(slow.received()).toMatch(/^HTTP\/1\.1 408 /);
  });

  it('headers trickled a byte at a time do not extend the deadline (slowloris)', { timeout: 15_000 }, async () => {
    const slow = await tlsClient();
    slow.socket.write('GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Padding: ');
    const trickle = setInterval(() => slow.socket.writable && slow.socket.write('a'), 50);
    try {
      await slow.closed;
    } finally {
      clearInterval(trickle);
    }
    expect(slow.received()).toMatch(/^HTTP\/1\.1 408 /);
    expect(slow.received()).not.toContain('200 OK');
  });

  it('a TLS connection that sends nothing after its handshake is closed', { timeout: 15_000 }, async () => {
    const idle = await tlsClient();
    await idle.closed;
    expect((await get('/healthz')).status).toBe(200);
  });

  it('a connection that never finishes its TLS handshake is closed: silent, or stalled inside the ClientHello', { timeout: 15_000 }, async () => {
    const silent = await tcpClient();
    const partial = await tcpClient();
    // A TLS record header announcing a 512-byte handshake message, then the first bytes of it.
    partial.socket.write(Buffer.from([0x16, 0x03, 0x01, 0x02, 0x00, 0x01, 0x00, 0x01]));
    await Promise.all([silent.closed, partial.closed]);
    expect((await get('/healthz')).status).toBe(200);
  });

  it('responses are never cached: Cache-Control no-store on success, problem and PEM answers', async () => {
    for (const path of ['/healthz', '/.well-known/jwks.json', '/v1/ca.pem', '/v1/nothing']) {
      expect((await get(path)).headers['cache-control'], path).toBe('no-store');
    }
    expect((await postJson('/v1/enrollments', goodEnrollment)).headers['cache-control']).toBe('no-store');
  });
});

describe('public routes', () => {
  const jsonOf = async (path: string) => {
    const a = await get(path);
    expect(a.status).toBe(200);
    expect(a.headers['content-type']).toBe('application/json; charset=utf-8');
    return JSON.parse(a.body.toString()) as Record<string, unknown>;
  };
  const caDer = async () => {
    const a = await get('/v1/ca.pem');
    expect(a.status).toBe(200);
    expect(a.headers['content-type']).toMatch(/^application\/x-pem-file/);
    return { pem: a.body.toString(), der: new X509Certificate(a.body).raw };
  };

  it('/healthz and /readyz answer 200', async () => {
    const h = await get('/healthz');
    expect([h.status, h.body.toString(), h.headers['content-type']]).toEqual([200, 'ok\n', 'text/plain; charset=utf-8']);
    const r = await get('/readyz');
    expect([r.status, r.body.toString()]).toEqual([200, 'ready\n']);
  });

  it('/metrics is Prometheus text with attestor_ metrics, and the request counters move', async () => {
    const metrics = async () => {
      const a = await get('/metrics');
      expect(a.status).toBe(200);
      expect(a.headers['content-type']).toMatch(/^text\/plain; version=0\.0\.4/);
      return a.body.toString();
    };
    const healthzCount = (text: string) => {
      const m = /^attestor_http_request_duration_seconds_count\{method="GET",route="\/healthz",status="200"\} (\d+)$/m.exec(text);
      return m ? Number(m[1]) : 0;
    };
    const first = await metrics();
    for (const name of ['attestor_http_request_duration_seconds', 'attestor_enrollments_total', 'attestor_attestations_total', 'attestor_credentials_issued_total', 'attestor_process_cpu_seconds_total']) {
      expect(first).toMatch(new RegExp(`^# TYPE ${name} (counter|histogram|gauge)$`, 'm'));
    }
    // Every sample line is `name{labels} value` of an attestor_ metric.
    for (const line of first.split('\n').filter((l) => l !== '' && !l.startsWith('#'))) {
      expect(line).toMatch(/^attestor_[a-z0-9_]+(\{[^}]*\})? -?[0-9.e+-]+$|^attestor_[a-z0-9_]+(\{[^}]*\})? (NaN|[+-]Inf)$/);
    }
    const before = healthzCount(first);
    await get('/healthz');
    await get('/healthz');
    expect(healthzCount(await metrics())).toBe(before + 2);
    // Unmatched requests are counted under one label, not one per path a client invents.
    await get(`/v1/${randomBytes(8).toString('hex')}`);
    const after = await metrics();
    expect(after).toMatch(/^attestor_http_request_duration_seconds_count\{method="GET",route="unmatched",status="404"\} \d+$/m);
    expect(after).not.toMatch(/route="\/v1\/[0-9a-f]{16}"/);
  });

  it('OIDC discovery has the fields SERVICE.md names', async () => {
    expect(await jsonOf('/.well-known/openid-configuration')).toEqual({
      issuer: v.url,
      jwks_uri: `${v.url}/.well-known/jwks.json`,
      authorization_endpoint: '',
      response_types_supported: ['id_token'],
      subject_types_supported: ['public'],
      id_token_signing_alg_values_supported: ['ES256'],
    });
  });

  it('the JWKS carries the JWT keys with kty crv x y kid alg use', async () => {
    const jwks = (await jsonOf('/.well-known/jwks.json')) as { keys: Array<Record<string, unknown>> };
    expect(jwks.keys.length).toBeGreaterThanOrEqual(1);
    for (const k of jwks.keys) {
      expect(Object.keys(k).sort()).toEqual(['alg', 'crv', 'kid', 'kty', 'use', 'x', 'y']);
      expect(k).toMatchObject({ kty: 'EC', crv: 'P-256', alg: 'ES256', use: 'sig' });
      for (const f of ['x', 'y']) expect(Buffer.from(k[f] as string, 'base64url')).toHaveLength(32);
      expect(k.kid).toMatch(/^[A-Za-z0-9_-]{43}$/);
    }
  });

  it('the SPIFFE bundle: sequence, refresh hint, the CA as an x509-svid entry (x5c = /v1/ca.pem) and the JWT keys', async () => {
    const bundle = (await jsonOf('/v1/bundle')) as { keys: Array<Record<string, unknown>>; spiffe_sequence: unknown; spiffe_refresh_hint: unknown };
    expect(Number.isSafeInteger(bundle.spiffe_sequence) && (bundle.spiffe_sequence as number) >= 0).toBe(true);
    expect(Number.isSafeInteger(bundle.spiffe_refresh_hint) && (bundle.spiffe_refresh_hint as number) > 0).toBe(true);
    const x509 = bundle.keys.filter((k) => k.use === 'x509-svid');
    expect(x509).toHaveLength(1);
    expect(x509[0]!.kid).toBeUndefined();
    const x5c = x509[0]!.x5c as string[];
    expect(x5c).toHaveLength(1);
    const { der } = await caDer();
    expect(Buffer.from(x5c[0]!, 'base64')).toEqual(der);
    expect(x509[0]).toMatchObject({ kty: 'EC', crv: 'P-256' });
    const jwks = (await jsonOf('/.well-known/jwks.json')) as { keys: Array<Record<string, unknown>> };
    const jwt = bundle.keys.filter((k) => k.use === 'jwt-svid');
    expect(jwt.map((k) => [k.kid, k.x, k.y])).toEqual(jwks.keys.map((k) => [k.kid, k.x, k.y]));
  });

  it('/v1/ca.pem is the root CA whose SHA-256 is the fingerprint; /v1/roots/{fp} serves it, 404 for any other', async () => {
    const { pem, der } = await caDer();
    expect(createHash('sha256').update(der).digest('hex')).toBe(v.caFingerprint);
    const root = await get(`/v1/roots/${v.caFingerprint}`);
    expect([root.status, root.body.toString()]).toEqual([200, pem]);
    expect((await get(`/v1/roots/${v.caFingerprint.toUpperCase()}`)).body.toString()).toBe(pem);
    const other = createHash('sha256').update('another root').digest('hex');
    const p = problem(await get(`/v1/roots/${other}`), 404, 'ERR_NOT_FOUND');
    expect(p.detail).toBe('no root CA with this fingerprint');
    problem(await get(`/v1/roots/${v.caFingerprint.slice(1)}`), 400, 'ERR_INPUT');
    problem(await get(`/v1/roots/${'zz'.repeat(32)}`), 400, 'ERR_INPUT');
  });
});

describe('a throw-away verifier: rate limits, then a closed store', () => {
  let t: TestVerifier;
  beforeAll(async () => {
    // A clock that stands still: the rate window cannot roll over during the test.
    const frozen = Date.now();
    t = await startTestVerifier({ config: { limits: { enrollmentsPerMinute: 3 } }, now: () => frozen });
    pinned.set(t, await bootstrapCa(t.url, t.caFingerprint));
  });
  afterAll(async () => {
    await t?.stop();
  });

  const enroll = (opts: Omit<CallOptions, 'body'> = {}) =>
    call(t, '/v1/enrollments', { ...opts, body: encodeBody(malformedEk, 'json'), headers: { 'content-type': JSON_TYPE, ...opts.headers } });

  it('the 4th enrollment request a minute from one address is 429 ERR_RATE_LIMITED; other addresses are not affected', async () => {
    for (let i = 0; i < 3; i++) expect((await enroll()).status).toBe(400);
    const p = problem(await enroll(), 429, 'ERR_RATE_LIMITED');
    expect(p.detail).toContain('3 enrollment requests a minute');
    // Activation attempts share the budget; a forged X-Forwarded-For changes nothing.
    problem(await postJsonTo(t, `/v1/enrollments/${'0'.repeat(8)}-0000-4000-8000-${'0'.repeat(12)}/activation`, { secret: randomBytes(32) }), 429, 'ERR_RATE_LIMITED');
    problem(await enroll({ headers: { 'x-forwarded-for': '203.0.113.7' } }), 429, 'ERR_RATE_LIMITED');
    // Another client address has its own budget.
    expect((await enroll({ localAddress: '127.0.0.2' })).status).toBe(400);
  });

  it('with its store closed: /readyz is 503, and a request that needs the store is a 503 ERR_STORE_UNAVAILABLE that shows nothing internal', async () => {
    await t.verifier.store.close();
    const r = await call(t, '/readyz');
    expect(r.status).toBe(503);
    expect((await call(t, '/healthz')).status).toBe(200);
    const a = await call(t, '/v1/agents', { headers: bearer(t.adminToken) });
    const p = problem(a, 503, 'ERR_STORE_UNAVAILABLE');
    expect(p.detail).toBeUndefined();
    expect(Object.keys(JSON.parse(a.body.toString())).sort()).toEqual(['code', 'requestId', 'status', 'title', 'type']);
    // The store's own words ("the SQLite store is closed") stay in the log.
    expect(a.body.toString()).not.toMatch(/database|sqlite|connection|closed|TypeError/i);
  });
});

// ---- properties of the codec and the wire schemas ------------------------------------------

/** The deepest nesting of a decoded value (a byte string is a leaf). */
function depthOf(value: unknown): number {
  if (value === null || typeof value !== 'object' || value instanceof Uint8Array) return 0;
  const children = Array.isArray(value) ? value : Object.values(value);
  return 1 + children.reduce<number>((m, c) => Math.max(m, depthOf(c)), 0);
}

/** Decodes, expecting a value of at most MAX_DEPTH levels or ERR_DECODE, never another exception. */
function decodesOrErrDecode(bytes: Uint8Array, format: BodyFormat): void {
  let value: unknown;
  try {
    value = decodeBody(bytes, format);
  } catch (e) {
    expect(e).toBeInstanceOf(AttestorError);
    expect((e as AttestorError).code).toBe('ERR_DECODE');
    return;
  }
  expect(depthOf(value)).toBeLessThanOrEqual(MAX_DEPTH);
}

/** Byte arrays as Buffers, so that values decoded (Buffers) and generated (Uint8Arrays) compare. */
function withBuffers(value: unknown): unknown {
  if (value instanceof Uint8Array) return Buffer.from(value);
  if (Array.isArray(value)) return value.map(withBuffers);
  if (value !== null && typeof value === 'object') return Object.fromEntries(Object.entries(value).map(([k, x]) => [k, withBuffers(x)]));
  return value;
}

/** The JSON form of a value by the wire contract: every byte array a base64url string. */
function base64urlBytes(value: unknown): unknown {
  if (value instanceof Uint8Array) return Buffer.from(value).toString('base64url');
  if (Array.isArray(value)) return value.map(base64urlBytes);
  if (value !== null && typeof value === 'object') return Object.fromEntries(Object.entries(value).map(([k, x]) => [k, base64urlBytes(x)]));
  return value;
}

// cbor-x renames a "__proto__" map key (so a body cannot set a prototype): not a round trip by design.
const key = fc.string({ unit: 'grapheme', maxLength: 12 }).filter((k) => k !== '__proto__');
const leaf = fc.oneof(
  fc.constant(null),
  fc.boolean(),
  fc.maxSafeInteger(),
  fc.double({ noNaN: true, noDefaultInfinity: true }).map((d) => (Object.is(d, -0) ? 0 : d)),
  fc.string({ unit: 'grapheme', maxLength: 40 }),
  fc.uint8Array({ maxLength: 80 }),
);
const { value: wireValue } = fc.letrec((tie) => ({
  value: fc.oneof({ depthSize: 'small', maxDepth: 8 }, leaf, fc.array(tie('value'), { maxLength: 5 }), fc.dictionary(key, tie('value'), { maxKeys: 5 })),
}));

const bytesOf = (min: number, max: number) => fc.uint8Array({ minLength: min, maxLength: max });
const labelName = fc.stringMatching(/^[a-z0-9]([a-z0-9._/-]{0,10}[a-z0-9])?$/);
const validEnrollment = fc.record(
  {
    ekPublic: bytesOf(4, 300),
    ekCertificate: bytesOf(0, 600),
    ekChain: fc.array(bytesOf(0, 200), { maxLength: 4 }),
    akPublic: bytesOf(4, 300),
    labels: fc.dictionary(labelName, fc.string({ maxLength: 30 }), { maxKeys: 5 }),
  },
  { requiredKeys: ['ekPublic', 'akPublic'] },
);
const pcrIndex = fc.integer({ min: 0, max: 23 }).map(String);
const tpmKey = fc.record({ kind: fc.constant('tpm' as const), public: bytesOf(4, 200), certifyInfo: bytesOf(4, 200), signature: bytesOf(4, 200) });
const pkcs11Key = fc.record({
  kind: fc.constant('pkcs11' as const),
  report: fc.record({
    publicKey: bytesOf(0, 100),
    attributes: fc.record({
      token: fc.boolean(),
      private: fc.boolean(),
      sensitive: fc.boolean(),
      extractable: fc.boolean(),
      neverExtractable: fc.boolean(),
      alwaysSensitive: fc.boolean(),
      local: fc.boolean(),
      keyType: fc.integer({ min: 0, max: 0xffffffff }),
    }),
    token: fc.record({ manufacturer: fc.string({ maxLength: 64 }), model: fc.string({ maxLength: 32 }), serial: fc.string({ maxLength: 32 }), label: fc.string({ maxLength: 64 }) }),
    signature: bytesOf(0, 100),
    alg: fc.constant('ES256' as const),
  }),
});
const validAttestation = fc.record(
  {
    nonce: bytesOf(32, 32),
    quote: bytesOf(4, 300),
    signature: bytesOf(4, 300),
    pcrs: fc.dictionary(fc.constantFrom('sha1', 'sha256', 'sha384'), fc.dictionary(pcrIndex, bytesOf(20, 64), { maxKeys: 6 }), { maxKeys: 3 }),
    eventLog: bytesOf(0, 500),
    imaLog: bytesOf(0, 500),
    key: fc.oneof(tpmKey, pkcs11Key),
    audience: fc.stringMatching(/^\S{1,40}$/),
  },
  { requiredKeys: ['nonce', 'quote', 'signature', 'pcrs', 'key'] },
);

/** Anything at all, byte arrays, odd prototypes and boxed values included. */
const junk = fc.anything({
  maxDepth: 3,
  withBigInt: true,
  withBoxedValues: true,
  withDate: true,
  withMap: true,
  withNullPrototype: true,
  withObjectString: true,
  withSet: true,
  withSparseArray: true,
  withTypedArray: true,
  withUnicodeString: true,
});
/** Field values a sender might get wrong: junk, strings, byte arrays of any size. */
const fieldValue = fc.oneof(junk, fc.string({ maxLength: 60 }), fc.base64String({ maxLength: 60 }), fc.uint8Array({ maxLength: 1100 }));
/** A record with the schema's own keys (and sometimes others), each with a value that may or may not fit. */
const shaped = (keys: readonly string[]) =>
  fc.dictionary(fc.oneof(fc.constantFrom(...keys), fc.string({ maxLength: 8 })), fieldValue, { maxKeys: keys.length + 2 });
const nearAttestation = fc.oneof(
  validAttestation.chain((valid) =>
    fc.record({ field: fc.constantFrom(...Object.keys(valid)), value: fieldValue }).map(({ field, value }) => ({ ...valid, [field]: value })),
  ),
  shaped(['nonce', 'quote', 'signature', 'pcrs', 'eventLog', 'imaLog', 'key', 'audience']),
  validAttestation.map((a) => ({ ...a, key: { kind: 'pkcs11', report: { ...('report' in a.key ? a.key.report : {}), alg: 'RS256' } } })),
);
const nearEnrollment = fc.oneof(
  validEnrollment.chain((valid) =>
    fc.record({ field: fc.constantFrom('ekPublic', 'ekCertificate', 'ekChain', 'akPublic', 'labels'), value: fieldValue }).map(({ field, value }) => ({ ...valid, [field]: value })),
  ),
  shaped(['ekPublic', 'ekCertificate', 'ekChain', 'akPublic', 'labels']),
);

describe('properties: decodeBody and encodeBody', () => {
  it.each(['json', 'cbor'] as const)('%s: random bytes give a value (at most 32 deep) or ERR_DECODE, nothing else', (format) => {
    fc.assert(fc.property(fc.uint8Array({ maxLength: 300 }), (bytes) => decodesOrErrDecode(bytes, format)), { numRuns: 2000 });
  });

  it('json: mangled JSON texts give a value or ERR_DECODE', () => {
    const mangled = fc
      .tuple(fc.json({ depthSize: 'medium' }), fc.nat(), fc.string({ maxLength: 4 }))
      .map(([text, at, insert]) => Buffer.from(text.slice(0, at % (text.length + 1)) + insert + text.slice(at % (text.length + 1))));
    fc.assert(fc.property(mangled, (bytes) => decodesOrErrDecode(bytes, 'json')), { numRuns: 1000 });
  });

  it('cbor: truncated or bit-flipped encodings of real values give a value or ERR_DECODE, and leave the decoder sound', () => {
    const witness = { ekPublic: Buffer.from([1, 2, 3, 4]), labels: { a: 'b' } };
    const witnessBytes = encodeBody(witness, 'cbor');
    const damaged = fc.tuple(wireValue, fc.nat(), fc.nat(), fc.integer({ min: 1, max: 255 })).map(([value, cut, at, flip]) => {
      const b = Buffer.from(encodeBody(value, 'cbor'));
      if (b.length > 0) b[at % b.length]! ^= flip;
      return b.subarray(0, b.length - (cut % (b.length + 1)));
    });
    fc.assert(
      fc.property(damaged, (bytes) => {
        decodesOrErrDecode(bytes, 'cbor');
        expect(withBuffers(decodeBody(witnessBytes, 'cbor'))).toEqual(withBuffers(witness));
      }),
      { numRuns: 1000 },
    );
  });

  it('round trip: CBOR keeps byte arrays as byte strings, JSON carries them as base64url', () => {
    fc.assert(
      fc.property(wireValue, (value) => {
        expect(withBuffers(decodeBody(encodeBody(value, 'cbor'), 'cbor'))).toEqual(withBuffers(value));
        expect(decodeBody(encodeBody(value, 'json'), 'json')).toEqual(base64urlBytes(value));
      }),
      { numRuns: 500 },
    );
  });

  it('round trip through the wire schemas: a request parses to the same value sent as JSON or as CBOR', () => {
    const cases = [
      [EnrollmentRequest, validEnrollment],
      [AttestationRequest, validAttestation],
    ] as const;
    for (const [schema, arbitrary] of cases) {
      fc.assert(
        fc.property(arbitrary as fc.Arbitrary<unknown>, (value) => {
          const direct = schema.parse(value);
          for (const format of ['json', 'cbor'] as const) {
            expect(schema.parse(decodeBody(encodeBody(value, format), format))).toEqual(direct);
          }
        }),
        { numRuns: 200 },
      );
    }
  });
});

describe('properties: the wire schemas', () => {
  it('any value into AttestationRequest.safeParse and EnrollmentRequest.safeParse: a result, never an exception', () => {
    for (const schema of [AttestationRequest, EnrollmentRequest]) {
      fc.assert(
        fc.property(junk, (value) => {
          expect(typeof schema.safeParse(value).success).toBe('boolean');
        }),
        { numRuns: 1000 },
      );
    }
  });

  it('near-valid attestation and enrollment requests: a result, never an exception; what is accepted has bytes in bounds', () => {
    fc.assert(
      fc.property(nearAttestation, (value) => {
        const r = AttestationRequest.safeParse(value);
        if (r.success) {
          expect(r.data.nonce).toHaveLength(32);
          expect(r.data.quote.length).toBeGreaterThanOrEqual(4);
          expect(r.data.quote.length).toBeLessThanOrEqual(1024);
        }
      }),
      { numRuns: 1000 },
    );
    fc.assert(
      fc.property(nearEnrollment, (value) => {
        const r = EnrollmentRequest.safeParse(value);
        if (r.success) {
          expect(Buffer.isBuffer(r.data.ekPublic)).toBe(true);
          expect(r.data.akPublic.length).toBeLessThanOrEqual(1024);
        }
      }),
      { numRuns: 1000 },
    );
  });
});
