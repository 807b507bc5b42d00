import { IntrospectionRequest, IntrospectionResponse } from '../../wire/schemas.js';
import type { Introspection } from '../flows/introspection.js';
import { route, type Route } from '../route.js';

/** RFC 7662 introspection of JWT-SVIDs, for relying parties holding a `relying-party` token. */
export function introspectionRoute(introspect: (token: string) => Promise<Introspection>): Route {
  return route({
    method: 'post',
    path: '/v1/introspect',
    operationId: 'introspect',
    summary: 'Is this JWT-SVID live? (RFC 7662; a form body with `token`)',
    tag: 'operator',
    access: 'introspect',
    form: true,
    body: IntrospectionRequest,
    responses: { 200: IntrospectionResponse },
    handle: async ({ body }) => ({ status: 200, body: await introspect(body.token) }),
  });
}
