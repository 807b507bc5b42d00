import { randomUUID } from 'node:crypto';
import type { Socket } from 'node:net';
import express, { type NextFunction, type Request, type Response } from 'express';
import type { Logger } from 'pino';
import type { z } from 'zod';
import { AgentNotActiveError, AttestorError, isAttestorError, type ErrorCode } from '../errors.js';
import type { Store, OperatorToken } from '../store/store.js';
import { CBOR_TYPE, JSON_TYPE, MAX_ENTRIES, PROBLEM_TYPE, decodeBody, encodeBody, formatOf, type BodyFormat } from '../wire/codec.js';
import { authenticate } from './auth.js';
import type { BodyBudget } from './body-budget.js';
import { clientNetwork } from './client-network.js';
import { FORM_TYPE, decodeForm, isForm } from './form.js';
import type { Metrics } from './metrics.js';
import { problemType, statusOf, titleOf } from './problem.js';
import type { Route } from './route.js';
import { roleHas } from './scopes.js';

export interface AppDeps {
  readonly store: Store;
  readonly routes: readonly Route[];
  readonly logger: Logger;
  readonly metrics: Metrics;
  readonly limits: { readonly bodyBytes: number; readonly attestationBodyBytes: number };
  /** Request-body bytes in flight, across connections. */
  readonly bodyBudget: BodyBudget;
}

/** What a refused request may carry besides its code (a refused attestation's verdict). */
export class ProblemError extends AttestorError {
  constructor(
    code: ErrorCode,
    message: string,
    readonly extra: Readonly<Record<string, unknown>>,
  ) {
    super(code, message);
  }
}

/**
 * Codes whose detail could help an attacker (which step of activation failed): the client
 * gets the title only; the log keeps the detail.
 */
const OPAQUE: ReadonlySet<ErrorCode> = new Set<ErrorCode>(['ERR_ACTIVATION_FAILED', 'ERR_UNAUTHENTICATED']);

/** The longest validation message echoed to a client. */
const MAX_DETAIL = 512;

/**
 * The verifier's express app, built from its route list: every route gets the same request
 * id, logging, metrics, authorization, body decoding and validation; errors become
 * problem+json through one handler.
 */
export function createApp(deps: AppDeps): express.Express {
  const app = express();
  app.disable('x-powered-by');
  app.set('etag', false);
  app.set('query parser', 'simple');
  const onSocketClose = socketCloseHooks();

  app.use((req, res, next) => {
    const given = req.get('x-request-id');
    res.locals.requestId = given && /^[A-Za-z0-9._-]{1,64}$/.test(given) ? given : randomUUID();
    res.setHeader('x-request-id', res.locals.requestId as string);
    res.setHeader('cache-control', 'no-store');
    const started = process.hrtime.bigint();
    res.on('finish', () => {
      const seconds = Number(process.hrtime.bigint() - started) / 1e9;
      const routePath = (res.locals.route as string | undefined) ?? 'unmatched';
      deps.metrics.httpDuration.observe({ method: req.method, route: routePath, status: String(res.statusCode) }, seconds);
      deps.logger.info(
        { requestId: res.locals.requestId, method: req.method, route: routePath, status: res.statusCode, ms: Math.round(seconds * 1e4) / 10, code: res.locals.code },
        'request',
      );
    });
    next();
  });

  for (const r of deps.routes) {
    const limit = r.bodyLimit === 'attestation' ? deps.limits.attestationBodyBytes : deps.limits.bodyBytes;
    const raw = express.raw({ type: () => true, limit });
    app[r.method](r.path, (req, res, next) => {
      res.locals.route = r.path;
      res.locals.client = clientNetwork(req.ip ?? '');
      try {
        r.admit?.(res.locals.client as string, req.params);
        next();
      } catch (e) {
        next(e);
      }
    }, declaredLengthWithin(limit), authorized(deps, r), reserved(deps.bodyBudget, limit, onSocketClose), raw, (req, res, next) => {
      handle(deps, r, req, res).catch(next);
    });
  }

  app.use((_req, _res, next) => next(new AttestorError('ERR_NOT_FOUND', 'no such route')));
  app.use((err: unknown, req: Request, res: Response, _next: NextFunction) => sendProblem(deps.logger, req, res, err));
  return app;
}

/**
 * Refuses a body whose length is not declared, or is over `limit`, before reading any of it:
 * body-parser reads a body over its limit to the end before it answers (one sent chunked,
 * for as long as the client sends: an attacker's review measured it), and for a compressed body
 * it caps the inflated size only, never the bytes sent. Attestor's clients, curl and the HTTP
 * libraries send a Content-Length with a body they hold. Node discards the rest of a refused
 * body itself, and the refusal closes the connection.
 */
function declaredLengthWithin(limit: number): express.RequestHandler {
  return (req, _res, next) => {
    const length = req.get('content-length');
    if (length === undefined && req.get('transfer-encoding') !== undefined) {
      next(new AttestorError('ERR_LENGTH_REQUIRED', 'a request body must declare its Content-Length'));
      return;
    }
    next(Number(length ?? 0) > limit ? new AttestorError('ERR_BODY_TOO_LARGE', 'the request body is larger than this route takes') : undefined);
  };
}

/**
 * An operator or relying-party route's token and role, checked before its body is read: no one
 * without a token can make the verifier hold a body (the refusal closes the connection).
 */
function authorized(deps: AppDeps, r: Route): express.RequestHandler {
  const { access } = r;
  return (req, res, next) => {
    if (access === 'public' || access === 'agent') {
      next();
      return;
    }
    authenticate(deps.store, req.get('authorization'))
      .then((token) => {
        if (!roleHas(token.role, access)) throw new AttestorError('ERR_FORBIDDEN', `the token's role "${token.role}" does not grant ${access}`);
        res.locals.token = token;
      })
      .then(() => next(), next);
  };
}

/**
 * The body's size reserved in the budget before any of it is read: its declared length, or the
 * route's limit for a compressed body (it may inflate that far, and body-parser holds what it
 * inflated until the end). Released when the response ends or the connection closes, whichever
 * comes first: a pipelined request's response waiting behind another never emits 'close' when
 * the connection goes. A client gone before this runs (during an operator token's lookup)
 * reserves nothing: its body is never read.
 */
function reserved(budget: BodyBudget, limit: number, onSocketClose: SocketCloseHooks): express.RequestHandler {
  return (req, res, next) => {
    const declared = Number(req.get('content-length') ?? 0);
    if (declared === 0 || req.socket.destroyed || res.closed) {
      next();
      return;
    }
    const encoding = req.get('content-encoding');
    const length = encoding === undefined || encoding.trim().toLowerCase() === 'identity' ? declared : Math.max(declared, limit);
    let release: () => void;
    try {
      release = budget.reserve(res.locals.client as string, length);
    } catch (e) {
      res.set('Retry-After', '1');
      next(e);
      return;
    }
    const unhook = onSocketClose(req.socket, () => done());
    const done = () => {
      release();
      unhook();
      res.off('close', done);
    };
    res.once('close', done);
    next();
  };
}

/** Adds a hook to run once when a socket closes; returns its removal. */
type SocketCloseHooks = (socket: Socket, hook: () => void) => () => void;

/**
 * One 'close' listener per socket, however many requests on it hold a hook (pipelined ones
 * all at once: a listener each would pass Node's limit of 10 and print its warning for any
 * client that pipelines eleven).
 */
function socketCloseHooks(): SocketCloseHooks {
  const hooks = new WeakMap<Socket, Set<() => void>>();
  return (socket, hook) => {
    let set = hooks.get(socket);
    if (!set) {
      const own = new Set<() => void>();
      set = own;
      hooks.set(socket, own);
      socket.once('close', () => {
        hooks.delete(socket);
        for (const h of own) h();
      });
    }
    set.add(hook);
    return () => set.delete(hook);
  };
}

async function handle(deps: AppDeps, r: Route, req: Request, res: Response): Promise<void> {
  const token = (res.locals.token as OperatorToken | undefined) ?? null;
  const formats = r.formats ?? ['json'];
  let body: unknown = undefined;
  let requestFormat: BodyFormat | undefined;
  if (r.body) {
    const bytes = Buffer.isBuffer(req.body) ? req.body : Buffer.alloc(0);
    if (r.form && isForm(req.get('content-type'))) {
      body = parse(r.body, decodeForm(bytes), 'body');
    } else {
      requestFormat = formatOf(req.get('content-type'));
      if (!requestFormat || !formats.includes(requestFormat)) {
        const types = r.form ? [FORM_TYPE] : formats.map((f) => (f === 'json' ? JSON_TYPE : CBOR_TYPE));
        throw new AttestorError('ERR_UNSUPPORTED_MEDIA_TYPE', `send ${types.join(' or ')}`);
      }
      body = parse(r.body, decodeBody(bytes, requestFormat, r.access === 'agent' ? MAX_ENTRIES.agent : MAX_ENTRIES.operator), 'body');
    }
  }
  const params = r.params ? parse(r.params, req.params, 'path') : {};
  const query = r.query ? parse(r.query, req.query, 'query') : {};
  const reply = await r.handle({ params, query, body, token, requestId: res.locals.requestId as string, client: res.locals.client as string });

  if (reply.headers) for (const [k, v] of Object.entries(reply.headers)) res.setHeader(k, v);
  if (reply.contentType) {
    res.status(reply.status).type(reply.contentType).send(reply.body);
    return;
  }
  const wanted = acceptedFormat(req.get('accept'), formats) ?? requestFormat ?? 'json';
  res
    .status(reply.status)
    .type(wanted === 'json' ? JSON_TYPE : CBOR_TYPE)
    .send(encodeBody(reply.body, wanted));
}

function parse<S extends z.ZodType>(schema: S, value: unknown, where: string): z.output<S> {
  const result = schema.safeParse(value);
  if (result.success) return result.data;
  const issue = result.error.issues[0]!;
  const path = issue.path.length > 0 ? `${where}.${issue.path.join('.')}` : where;
  throw new AttestorError('ERR_INPUT', `${path}: ${issue.message}`.slice(0, MAX_DETAIL));
}

/** The first of the route's formats the Accept header names; undefined when it names none. */
function acceptedFormat(accept: string | undefined, formats: readonly BodyFormat[]): BodyFormat | undefined {
  if (!accept) return undefined;
  for (const part of accept.split(',')) {
    const f = formatOf(part);
    if (f && formats.includes(f)) return f;
  }
  return undefined;
}

/** body-parser's error types, as the codes they mean. */
const BODY_ERRORS: Readonly<Record<string, ErrorCode>> = {
  'entity.too.large': 'ERR_BODY_TOO_LARGE',
  'encoding.unsupported': 'ERR_UNSUPPORTED_MEDIA_TYPE',
  'charset.unsupported': 'ERR_UNSUPPORTED_MEDIA_TYPE',
  'request.aborted': 'ERR_DECODE',
  'request.size.invalid': 'ERR_DECODE',
  'stream.encoding.set': 'ERR_INTERNAL',
};

/**
 * The code of a body-parser error; undefined for any other error. body-parser marks the client's
 * own faults 400 with `expose` (a body that does not inflate carries no type): ERR_DECODE.
 */
function bodyErrorCode(err: unknown): ErrorCode | undefined {
  const e = err as { type?: unknown; status?: unknown; expose?: unknown } | null | undefined;
  const byType = typeof e?.type === 'string' ? BODY_ERRORS[e.type] : undefined;
  return byType ?? (e?.expose === true && e.status === 400 ? 'ERR_DECODE' : undefined);
}

function sendProblem(logger: Logger, req: Request, res: Response, err: unknown): void {
  const requestId = res.locals.requestId as string;
  const bodyError = bodyErrorCode(err);
  let code: ErrorCode;
  let detail: string | undefined;
  let extra: Readonly<Record<string, unknown>> = {};
  if (isAttestorError(err)) {
    code = err.code;
    detail = err.message;
    if (err instanceof ProblemError) extra = err.extra;
    // The agent backs off for good on revoked, and waits for an operator on quarantined.
    if (err instanceof AgentNotActiveError) extra = { agentStatus: err.agentStatus };
  } else if (bodyError) {
    code = bodyError;
    detail = bodyError === 'ERR_BODY_TOO_LARGE' ? 'the request body is larger than this route takes' : 'the request body could not be read';
  } else {
    code = 'ERR_INTERNAL';
    logger.error({ requestId, err, method: req.method, url: req.originalUrl.split('?', 1)[0] }, 'unexpected error');
  }
  const status = statusOf(code);
  if (status >= 500 && code !== 'ERR_INTERNAL') logger.error({ requestId, code, detail }, 'request failed');
  res.locals.code = code;
  if (res.headersSent) {
    res.end();
    return;
  }
  const shown = status >= 500 || OPAQUE.has(code) ? undefined : detail?.slice(0, MAX_DETAIL);
  // Refused before its body was read (rate limited, too large): Node would go on reading and
  // discarding it for as long as the client sends, holding the connection. Close it instead.
  const hasBody = req.get('transfer-encoding') !== undefined || Number(req.get('content-length') ?? 0) > 0;
  if (hasBody && !req.complete) res.set('Connection', 'close');
  res
    .status(status)
    .type(PROBLEM_TYPE)
    .send(JSON.stringify({ type: problemType(code), title: titleOf(status), status, ...(shown ? { detail: shown } : {}), code, requestId, ...extra }));
}
