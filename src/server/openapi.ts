import { z } from 'zod';
import { CBOR_TYPE, JSON_TYPE, PROBLEM_TYPE } from '../wire/codec.js';
import { Problem } from '../wire/schemas.js';
import { FORM_TYPE } from './form.js';
import type { Route } from './route.js';

/*
 * The OpenAPI 3.1 document, generated from the same route list the router is built from and
 * from the wire schemas (zod's JSON Schema output), so neither can drift from the code.
 * Bytes fields are shown as base64url strings, their JSON form (CBOR carries byte strings).
 */

const RAW_TYPES = { pem: 'application/x-pem-file', crl: 'application/pkix-crl', text: 'text/plain', 'json-document': JSON_TYPE } as const;

export function openApiDocument(routes: readonly Route[], info: { version: string; serverUrl: string }): unknown {
  const paths: Record<string, Record<string, unknown>> = {};
  for (const r of routes) {
    const path = r.path.replace(/:([A-Za-z]+)/g, '{$1}');
    const formats = r.formats ?? ['json'];
    const types = formats.map((f) => (f === 'json' ? JSON_TYPE : CBOR_TYPE));
    const parameters = [...fieldsOf(r.params, 'path'), ...fieldsOf(r.query, 'query')];
    const responses: Record<string, unknown> = {};
    for (const [status, body] of Object.entries(r.responses)) {
      const content =
        typeof body === 'string'
          ? { [RAW_TYPES[body]]: { schema: body === 'json-document' ? { type: 'object' } : { type: 'string' } } }
          : Object.fromEntries(types.map((t) => [t, { schema: schemaOf(body, 'output') }]));
      responses[status] = { description: r.summary, content };
    }
    responses.default = {
      description: `problem details (RFC 9457); codes include ${['ERR_INPUT', ...(r.errors ?? [])].join(', ')}`,
      content: { [PROBLEM_TYPE]: { schema: schemaOf(Problem, 'output') } },
    };
    paths[path] ??= {};
    paths[path]![r.method] = {
      operationId: r.operationId,
      summary: r.summary,
      tags: [r.tag],
      ...(parameters.length > 0 ? { parameters } : {}),
      ...(r.body ? { requestBody: { required: true, content: Object.fromEntries((r.form ? [FORM_TYPE] : types).map((t) => [t, { schema: schemaOf(r.body!, 'input') }])) } } : {}),
      responses,
      ...(r.access === 'public' || r.access === 'agent' ? { security: [] } : { security: [{ bearer: [] }], 'x-required-scope': r.access }),
    };
  }
  return {
    openapi: '3.1.0',
    info: { title: 'Attestor verifier API', version: info.version },
    servers: [{ url: info.serverUrl }],
    paths,
    components: { securitySchemes: { bearer: { type: 'http', scheme: 'bearer', description: 'operator token' } } },
  };
}

function fieldsOf(schema: z.ZodType | undefined, where: 'path' | 'query'): unknown[] {
  if (!schema) return [];
  const json = schemaOf(schema, 'input') as { properties?: Record<string, unknown>; required?: string[] };
  return Object.entries(json.properties ?? {}).map(([name, s]) => ({
    name,
    in: where,
    required: where === 'path' || (json.required ?? []).includes(name),
    schema: s,
  }));
}

function schemaOf(schema: z.ZodType, io: 'input' | 'output'): unknown {
  return z.toJSONSchema(schema, {
    io,
    target: 'draft-2020-12',
    unrepresentable: 'any',
    override: (ctx) => {
      const meta = z.globalRegistry.get(ctx.zodSchema as unknown as z.ZodType);
      if (meta?.contentEncoding === 'base64url') {
        // The JSON form keeps its bounds (the base64url text branch of the input union, if any).
        const text = (ctx.jsonSchema as { anyOf?: Array<Record<string, unknown>> }).anyOf?.find((s) => s.type === 'string');
        for (const k of Object.keys(ctx.jsonSchema)) delete (ctx.jsonSchema as Record<string, unknown>)[k];
        Object.assign(ctx.jsonSchema, { type: 'string', ...text, contentEncoding: 'base64url', description: meta.description });
      }
    },
  });
}
