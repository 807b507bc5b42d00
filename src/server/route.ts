import type { z } from 'zod';
import type { BodyFormat } from '../wire/codec.js';
import type { OperatorToken } from '../store/store.js';
import type { Scope } from './scopes.js';

/*
 * A route is data: method, path, who may call it, the schemas of what it takes and returns,
 * and a handler that gets validated input. The router (src/server/app.ts) and the OpenAPI
 * document (src/server/openapi.ts) are both built from the one list, so they cannot drift.
 */

/** `public`: anyone; `agent`: agent routes (the evidence authenticates); a scope: an operator token holding it. */
export type Access = 'public' | 'agent' | Scope;

/** Response bodies that are not wire schemas. */
export type RawBody = 'pem' | 'crl' | 'text' | 'json-document';

export interface RouteInput<P, Q, B> {
  readonly params: P;
  readonly query: Q;
  readonly body: B;
  /** The operator token of the request (operator routes only). */
  readonly token: OperatorToken | null;
  readonly requestId: string;
  /** The client's network (src/server/client-network.ts), for rate limits. */
  readonly client: string;
}

export interface Reply {
  readonly status: number;
  /** A value to encode as JSON or CBOR (as the client accepts), or raw text/bytes. */
  readonly body: unknown;
  /** For raw bodies: the content type. */
  readonly contentType?: string;
  readonly headers?: Readonly<Record<string, string>>;
}

export interface Route<P extends z.ZodType = z.ZodType, Q extends z.ZodType = z.ZodType, B extends z.ZodType = z.ZodType> {
  readonly method: 'get' | 'post';
  /** Express path syntax (`/v1/agents/:id`); OpenAPI gets `{id}`. */
  readonly path: string;
  readonly operationId: string;
  readonly summary: string;
  readonly tag: 'agent' | 'operator' | 'public';
  readonly access: Access;
  readonly params?: P;
  readonly query?: Q;
  readonly body?: B;
  /** Body formats taken: agent routes take JSON and CBOR, operator routes JSON. */
  readonly formats?: readonly BodyFormat[];
  /** The body is an HTML form (application/x-www-form-urlencoded), as RFC 7662 introspection sends it; answered in JSON. */
  readonly form?: boolean;
  /** Largest request body; default the configured `limits.bodyBytes`. */
  readonly bodyLimit?: 'attestation';
  /**
   * Rate limits counted before the body is read or decoded, so that a body refused as too
   * large, malformed or invalid counts as well: the client's network and the path's raw
   * (not yet validated) parameters.
   */
  readonly admit?: (client: string, params: Readonly<Record<string, unknown>>) => void;
  /** Success status -> response schema (or a raw body kind). */
  readonly responses: Readonly<Record<number, z.ZodType | RawBody>>;
  /** Problem codes this route may answer with, besides the generic ones (documentation). */
  readonly errors?: readonly string[];
  readonly handle: (input: RouteInput<z.output<P>, z.output<Q>, z.output<B>>) => Promise<Reply>;
}

/** Keeps each route's handler typed by its own schemas in a heterogeneous list. */
export function route<P extends z.ZodType, Q extends z.ZodType, B extends z.ZodType>(r: Route<P, Q, B>): Route {
  return r as unknown as Route;
}
