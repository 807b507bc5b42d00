/**
 * The OpenAPI document the verifier serves at /v1/openapi.json cannot drift from the code:
 * every route the express app registers (its router stack) is documented with the same method
 * and path and nothing else is; the served router answers every documented operation; operator
 * routes carry their scope and bearer security; agent routes document JSON and CBOR; every
 * schema is the JSON Schema of the route's zod schema; and the document is OpenAPI 3.1 in every
 * way checkable without a validator.
 */
import type { IncomingHttpHeaders } from 'node:http';
import { request } from 'node:https';
import { pino } from 'pino';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { z } from 'zod';
import { bootstrapCa } from '../src/client/api-client.js';
import { createApp } from '../src/server/app.js';
import { createBodyBudget } from '../src/server/body-budget.js';
import { createMetrics } from '../src/server/metrics.js';
import type { Route } from '../src/server/route.js';
import { ROLE_SCOPES } from '../src/server/scopes.js';
import { API_VERSION } from '../src/server/verifier.js';
import { Problem } from '../src/wire/schemas.js';
import { startTestVerifier, type TestVerifier } from './helpers/verifier.js';

type Json = Record<string, unknown>;

interface Operation extends Json {
  operationId: string;
  tags: string[];
  parameters?: Array<{ name: string; in: string; required?: boolean; schema: unknown }>;
  requestBody?: { required?: boolean; content: Record<string, { schema: unknown }> };
  responses: Record<string, { description: string; content?: Record<string, { schema: unknown }> }>;
  security: Array<Record<string, string[]>>;
  'x-required-scope'?: string;
}

interface Document {
  openapi: string;
  info: { title: string; version: string };
  servers: Array<{ url: string }>;
  paths: Record<string, Record<string, Operation>>;
  components: { securitySchemes: Record<string, Json> };
}

let v: TestVerifier;
let caPem: string;
let doc: Document;
let routes: readonly Route[];

function get(path: string, method = 'GET'): Promise<{ status: number; headers: IncomingHttpHeaders; body: Buffer }> {
  return new Promise((resolve, reject) => {
    const req = request(new URL(path, v.url), { method, ca: caPem, agent: false }, (res) => {
      const chunks: Buffer[] = [];
      res.on('data', (c: Buffer) => chunks.push(c));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, headers: res.headers, body: Buffer.concat(chunks) }));
      res.on('error', reject);
    });
    req.on('error', reject);
    req.end();
  });
}

beforeAll(async () => {
  v = await startTestVerifier();
  caPem = await bootstrapCa(v.url, v.caFingerprint);
  routes = v.verifier.routes;
  const served = await get('/v1/openapi.json');
  expect(served.status).toBe(200);
  expect(served.headers['content-type']).toBe('application/json; charset=utf-8');
  doc = JSON.parse(served.body.toString()) as Document;
});

afterAll(async () => {
  await v?.stop();
});

/** Express path syntax to an OpenAPI path template: `/v1/agents/:id` -> `/v1/agents/{id}`. */
const templateOf = (expressPath: string) => expressPath.replace(/:([A-Za-z_][A-Za-z0-9_]*)/g, '{$1}');
const HTTP_METHODS = ['get', 'put', 'post', 'delete', 'options', 'head', 'patch', 'trace'] as const;

/** Every documented operation as "METHOD /path". */
function documented(): string[] {
  return Object.entries(doc.paths).flatMap(([path, item]) => Object.keys(item).map((m) => `${m.toUpperCase()} ${path}`));
}

/** A route's operation in the document. */
function operationOf(r: Route): Operation {
  const op = doc.paths[templateOf(r.path)]?.[r.method];
  expect(op, `${r.method.toUpperCase()} ${r.path} is documented`).toBeDefined();
  return op!;
}

/** Whether some documented operation of `method` takes this concrete path. */
function documentedAt(method: string, path: string): boolean {
  return Object.entries(doc.paths).some(
    ([template, item]) => item[method] !== undefined && new RegExp(`^${template.replace(/\{[^}]+\}/g, '[^/]+')}$`).test(path),
  );
}

const isOperatorRoute = (r: Route) => r.access !== 'public' && r.access !== 'agent';

/**
 * The JSON Schema of a zod schema, as zod itself writes it, with the one convention the
 * document states: a bytes field is shown in its JSON form, a base64url string (the text branch
 * of its input union, with its bounds), since a CBOR byte string has no JSON Schema.
 */
function expectedSchema(schema: z.ZodType, io: 'input' | 'output'): unknown {
  const bytesAsText = (node: unknown): unknown => {
    if (Array.isArray(node)) return node.map(bytesAsText);
    if (node === null || typeof node !== 'object') return node;
    const n = node as Json;
    if (n.contentEncoding === 'base64url') {
      const text = (n.anyOf as Json[] | undefined)?.find((s) => s.type === 'string');
      return { type: 'string', ...text, contentEncoding: 'base64url', description: n.description };
    }
    return Object.fromEntries(Object.entries(n).map(([k, x]) => [k, bytesAsText(x)]));
  };
  return bytesAsText(z.toJSONSchema(schema, { io, target: 'draft-2020-12', unrepresentable: 'any' }));
}

describe('no drift between the router and the document', () => {
  it('the served document describes this verifier', () => {
    expect(doc.info.version).toBe(API_VERSION);
    expect(doc.servers).toEqual([{ url: v.url }]);
  });

  it("every route express registered (its router stack) is documented with the same method and path, and nothing else is", () => {
    // The app as startVerifier builds it, from the running verifier's route list.
    const app = createApp({ store: v.verifier.store, routes, logger: pino({ level: 'silent' }), metrics: createMetrics(), limits: v.config.limits, bodyBudget: createBodyBudget({ total: 1, perNetwork: 1 }) });
    // express 5 (router 2): app.router.stack holds one Layer per app.METHOD(path) call, its Route
    // with the path as given and the methods it handles ({get: true}).
    const stack = (app.router as unknown as { stack: Array<{ route?: { path: unknown; methods: Record<string, boolean> } }> }).stack;
    const registered = stack
      .filter((layer) => layer.route !== undefined)
      .flatMap((layer) => {
        const { path, methods } = layer.route!;
        expect(typeof path, 'every route path is a string, not a pattern').toBe('string');
        return Object.keys(methods)
          .filter((m) => methods[m])
          .map((m) => `${m.toUpperCase()} ${templateOf(path as string)}`);
      });
    expect(new Set(registered).size, 'no route registered twice').toBe(registered.length);
    expect(registered.length).toBeGreaterThanOrEqual(20);
    expect([...registered].sort()).toEqual(documented().sort());
  });

  it('the served router answers every documented operation, and no other method on those paths', async () => {
    const fallback = (a: { status: number; body: Buffer }) => {
      if (a.status !== 404) return false;
      const p = JSON.parse(a.body.toString()) as Json;
      return p.code === 'ERR_NOT_FOUND' && p.detail === 'no such route';
    };
    const candidates = ['00000000-0000-4000-8000-000000000000', 'ab'.repeat(32)];
    for (const r of routes) {
      const shape = (r.params as z.ZodObject | undefined)?.shape ?? {};
      const path = r.path.replace(/:([A-Za-z]+)/g, (_, name: string) => candidates.find((c) => (shape[name] as z.ZodType).safeParse(c).success)!);
      const answered = await get(path, r.method.toUpperCase());
      expect(fallback(answered), `${r.method.toUpperCase()} ${path}: ${answered.body.toString()}`).toBe(false);
      // Other methods on this path fall through, unless another template takes them (GET /v1/baselines/capture is GET /v1/baselines/{id}).
      for (const m of ['get', 'post', 'put', 'delete', 'patch'].filter((x) => !documentedAt(x, path))) {
        expect(fallback(await get(path, m.toUpperCase())), `${m.toUpperCase()} ${path} is not a route`).toBe(true);
      }
    }
  });

  it('each operation is its route: operationId, tag, summary', () => {
    for (const r of routes) {
      expect(operationOf(r)).toMatchObject({ operationId: r.operationId, tags: [r.tag], summary: r.summary });
    }
  });
});

describe('access and formats', () => {
  const allScopes = new Set<string>(ROLE_SCOPES.admin);

  it('every operator route names its scope (x-required-scope) and takes a bearer token; agent and public routes neither', () => {
    expect(doc.components.securitySchemes.bearer).toMatchObject({ type: 'http', scheme: 'bearer' });
    const operator = routes.filter(isOperatorRoute);
    expect(operator.length).toBeGreaterThanOrEqual(9);
    for (const r of operator) {
      const op = operationOf(r);
      expect(op['x-required-scope']).toBe(r.access);
      expect(allScopes.has(op['x-required-scope']!), `${op['x-required-scope']} is a scope of the role table`).toBe(true);
      expect(op.security).toEqual([{ bearer: [] }]);
      expect(op.tags).toEqual(['operator']);
    }
    for (const r of routes.filter((x) => !isOperatorRoute(x))) {
      const op = operationOf(r);
      expect(op['x-required-scope']).toBeUndefined();
      expect(op.security).toEqual([]);
    }
  });

  it('every agent route documents JSON and CBOR, for its request body and its answers', () => {
    const agent = routes.filter((r) => r.access === 'agent');
    expect(agent.map((r) => r.operationId).sort()).toEqual(['activateEnrollment', 'createAttestation', 'createChallenge', 'createEnrollment']);
    for (const r of agent) {
      const op = operationOf(r);
      if (r.body) expect(Object.keys(op.requestBody!.content).sort()).toEqual(['application/cbor', 'application/json']);
      for (const status of Object.keys(r.responses)) {
        expect(Object.keys(op.responses[status]!.content!).sort(), `${r.operationId} ${status}`).toEqual(['application/cbor', 'application/json']);
      }
    }
  });

  it('operator routes take and answer JSON only (introspection takes a form, as RFC 7662 sends it)', () => {
    for (const r of routes.filter(isOperatorRoute)) {
      const op = operationOf(r);
      if (r.body) expect(Object.keys(op.requestBody!.content)).toEqual([r.form ? 'application/x-www-form-urlencoded' : 'application/json']);
      for (const status of Object.keys(r.responses)) expect(Object.keys(op.responses[status]!.content!)).toEqual(['application/json']);
    }
  });

  it('raw answers of the public routes are served with the media type the document gives them', async () => {
    const caKid = (await v.verifier.store.keys.list('x509-ca'))[0]!.kid;
    for (const r of routes.filter((x) => x.access === 'public' && x.method === 'get')) {
      const path = r.path.replace(':fingerprint', v.caFingerprint).replace(':kid', caKid);
      const answered = await get(path);
      const documentedTypes = Object.keys(operationOf(r).responses[String(answered.status)]?.content ?? {});
      expect(documentedTypes, `${path} answered ${answered.status}`).toHaveLength(1);
      expect(answered.headers['content-type']?.split(';')[0]).toBe(documentedTypes[0]);
    }
  });
});

describe('schemas', () => {
  it('request bodies are the JSON Schema of the route body schema (input side)', () => {
    for (const r of routes) {
      const op = operationOf(r);
      if (!r.body) {
        expect(op.requestBody).toBeUndefined();
        continue;
      }
      expect(op.requestBody!.required).toBe(true);
      for (const media of Object.values(op.requestBody!.content)) expect(media.schema).toEqual(expectedSchema(r.body, 'input'));
    }
  });

  it('responses are the JSON Schema of the route response schemas (output side); raw bodies are strings or a document', () => {
    const raw = { pem: ['application/x-pem-file', { type: 'string' }], crl: ['application/pkix-crl', { type: 'string' }], text: ['text/plain', { type: 'string' }], 'json-document': ['application/json', { type: 'object' }] } as const;
    for (const r of routes) {
      const op = operationOf(r);
      for (const [status, schema] of Object.entries(r.responses)) {
        const content = op.responses[status]!.content!;
        if (typeof schema === 'string') {
          expect(content).toEqual({ [raw[schema][0]]: { schema: raw[schema][1] } });
        } else {
          for (const media of Object.values(content)) expect(media.schema).toEqual(expectedSchema(schema, 'output'));
        }
      }
      expect(op.responses.default!.content).toEqual({ 'application/problem+json': { schema: expectedSchema(Problem, 'output') } });
      expect(op.responses.default!.description).toContain('ERR_INPUT');
      for (const code of r.errors ?? []) expect(op.responses.default!.description).toContain(code);
    }
  });

  it('path and query parameters are the properties of the route params and query schemas', () => {
    for (const r of routes) {
      const op = operationOf(r);
      const expected = (schema: z.ZodType | undefined, where: 'path' | 'query') => {
        if (!schema) return [];
        const json = expectedSchema(schema, 'input') as { properties: Json; required?: string[] };
        return Object.entries(json.properties).map(([name, s]) => ({ name, in: where, required: where === 'path' || (json.required ?? []).includes(name), schema: s }));
      };
      const wanted = [...expected(r.params, 'path'), ...expected(r.query, 'query')];
      expect(op.parameters ?? []).toEqual(wanted);
      // Every {name} of the path template is a path parameter, and the other way round.
      const templated = [...templateOf(r.path).matchAll(/\{([^}]+)\}/g)].map((m) => m[1]).sort();
      expect((op.parameters ?? []).filter((p) => p.in === 'path').map((p) => p.name).sort()).toEqual(templated);
    }
  });
});

describe('valid OpenAPI 3.1 (what can be checked without a validator)', () => {
  const OPERATION_FIELDS = new Set(['tags', 'summary', 'description', 'externalDocs', 'operationId', 'parameters', 'requestBody', 'responses', 'callbacks', 'deprecated', 'security', 'servers']);

  it('the required top-level fields', () => {
    expect(doc.openapi).toMatch(/^3\.1\.\d+$/);
    expect(typeof doc.info.title).toBe('string');
    expect(doc.info.title.length).toBeGreaterThan(0);
    expect(typeof doc.info.version).toBe('string');
    expect(Object.keys(doc).every((k) => ['openapi', 'info', 'jsonSchemaDialect', 'servers', 'paths', 'webhooks', 'components', 'security', 'tags', 'externalDocs'].includes(k) || k.startsWith('x-'))).toBe(true);
    for (const s of doc.servers) expect(() => new URL(s.url)).not.toThrow();
  });

  it('paths are templates starting with "/", each with known methods only', () => {
    for (const [path, item] of Object.entries(doc.paths)) {
      expect(path).toMatch(/^\/(?:[A-Za-z0-9._~-]+|\{[A-Za-z][A-Za-z0-9_]*\})(?:\/(?:[A-Za-z0-9._~-]+|\{[A-Za-z][A-Za-z0-9_]*\}))*$|^\/$/);
      for (const method of Object.keys(item)) expect(HTTP_METHODS as readonly string[]).toContain(method);
    }
    // Two templates that differ only in parameter names would be the same path (OpenAPI 3.1 §4.8.8).
    const shapes = Object.keys(doc.paths).map((p) => p.replace(/\{[^}]+\}/g, '{}'));
    expect(new Set(shapes).size).toBe(shapes.length);
  });

  it('operations: known fields, unique operationIds, parameters, a request body with a schema, responses with descriptions', () => {
    const ids = new Set<string>();
    for (const [path, item] of Object.entries(doc.paths)) {
      for (const [method, op] of Object.entries(item)) {
        const where = `${method.toUpperCase()} ${path}`;
        for (const field of Object.keys(op)) expect(OPERATION_FIELDS.has(field) || field.startsWith('x-'), `${where}: field ${field}`).toBe(true);
        expect(op.operationId).toMatch(/^[A-Za-z][A-Za-z0-9_]*$/);
        expect(ids.has(op.operationId), `operationId ${op.operationId} is unique`).toBe(false);
        ids.add(op.operationId);
        const seen = new Set<string>();
        for (const p of op.parameters ?? []) {
          expect(['query', 'header', 'path', 'cookie']).toContain(p.in);
          if (p.in === 'path') expect(p.required, `${where}: path parameter ${p.name} is required`).toBe(true);
          expect(seen.has(`${p.in}:${p.name}`)).toBe(false);
          seen.add(`${p.in}:${p.name}`);
          expect(typeof p.schema).toBe('object');
        }
        if (op.requestBody) {
          expect(Object.keys(op.requestBody.content).length).toBeGreaterThan(0);
          for (const media of Object.values(op.requestBody.content)) expect(typeof media.schema).toBe('object');
        }
        const statuses = Object.keys(op.responses);
        expect(statuses.some((s) => /^2\d\d$/.test(s)), `${where} has a success response`).toBe(true);
        for (const [status, response] of Object.entries(op.responses)) {
          expect(status).toMatch(/^(default|[1-5]\d\d)$/);
          expect(typeof response.description).toBe('string');
          for (const [type, media] of Object.entries(response.content ?? {})) {
            expect(type).toMatch(/^[a-z]+\/[a-z0-9.+-]+$/);
            expect(typeof media.schema).toBe('object');
          }
        }
        for (const requirement of op.security) {
          for (const [scheme, scopes] of Object.entries(requirement)) {
            expect(doc.components.securitySchemes[scheme], `${where}: security scheme ${scheme} is defined`).toBeDefined();
            expect(scopes).toEqual([]);
          }
        }
      }
    }
    expect(ids.size).toBe(routes.length);
  });

  it('every $ref resolves inside the document', () => {
    const refs: string[] = [];
    const walk = (node: unknown): void => {
      if (Array.isArray(node)) node.forEach(walk);
      else if (node !== null && typeof node === 'object') {
        for (const [k, x] of Object.entries(node)) {
          if (k === '$ref') refs.push(x as string);
          else walk(x);
        }
      }
    };
    walk(doc);
    const resolve = (ref: string): unknown => {
      expect(ref.startsWith('#/'), `${ref} is a local reference`).toBe(true);
      return ref
        .slice(2)
        .split('/')
        .map((t) => decodeURIComponent(t).replace(/~1/g, '/').replace(/~0/g, '~'))
        .reduce<unknown>((at, token) => (at !== null && typeof at === 'object' ? (at as Json)[token] : undefined), doc);
    };
    for (const ref of refs) expect(resolve(ref), `${ref} resolves`).toBeDefined();
    // zod writes $defs (with references into them) only for recursive or registered schemas;
    // one inside an operation would be resolved against the document root, so there must be none.
    expect(JSON.stringify(doc)).not.toContain('"$defs"');
  });
});
