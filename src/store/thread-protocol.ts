import { AgentNotActiveError, AttestorError, ParseError, PolicyError, VerificationError, type ErrorCode } from '../errors.js';
import type { Store } from './store.js';

/*
 * The messages between a store on a worker thread and its callers (src/store/store-thread.ts),
 * sent in batches (`batched`): a call names the store's area (`agents`, `audit`, ... or '' for
 * ping and close), the method and its arguments; the reply carries the value or the error, both
 * structured clones. Store
 * values are plain data (strings, numbers, JSON, Uint8Arrays), which the clone keeps as they
 * are; a Buffer argument arrives as a Uint8Array, which is what the store's types ask for.
 */

/** The store the thread opens: SQLite at a path, or a PostgreSQL database (and schema). */
export type ThreadData = { readonly sqlite: { readonly path: string } } | { readonly postgres: { readonly url: string; readonly schema?: string } };

export type Call = readonly [id: number, area: string, method: string, args: readonly unknown[]];
export type Reply = readonly [id: number, ok: true, value: unknown] | readonly [id: number, ok: false, error: ErrorDescription];

/** The worker's first message: the methods it serves, or why it could not open the store. */
export type Hello = { readonly ready: ReadonlyArray<readonly [string, readonly string[]]> } | { readonly failed: ErrorDescription };

export interface ErrorDescription {
  readonly name: string;
  readonly message: string;
  readonly code?: string;
  readonly agentStatus?: 'quarantined' | 'revoked';
}

type Method = (...args: readonly unknown[]) => Promise<unknown>;

/** Every method of the store by area ('' for the store's own, ping and close). */
export function storeMethods(store: Store): Map<string, Map<string, Method>> {
  const areas = new Map<string, Map<string, Method>>();
  for (const [area, value] of Object.entries(store)) {
    if (typeof value === 'function') {
      const own = areas.get('') ?? new Map<string, Method>();
      own.set(area, value as Method);
      areas.set('', own);
    } else if (typeof value === 'object' && value !== null) {
      areas.set(area, new Map(Object.entries(value as Record<string, Method>).filter(([, fn]) => typeof fn === 'function')));
    }
  }
  return areas;
}

/** What a thrown value keeps across the thread: its class, code and message (never its cause, which may hold a row). */
export function describeError(e: unknown): ErrorDescription {
  if (e instanceof AgentNotActiveError) return { name: 'AgentNotActiveError', message: e.message, code: e.code, agentStatus: e.agentStatus };
  if (e instanceof AttestorError) return { name: e.name, message: e.message, code: e.code };
  if (e instanceof Error) return { name: e.name, message: e.message };
  return { name: 'Error', message: String(e) };
}

const ATTESTOR_ERRORS: Record<string, new (code: ErrorCode, message: string) => AttestorError> = { AttestorError, ParseError, VerificationError, PolicyError };

/** The error the store threw, as the caller's thread would have seen it. */
export function reviveError(d: ErrorDescription): Error {
  if (d.name === 'AgentNotActiveError' && d.agentStatus !== undefined) return new AgentNotActiveError(d.agentStatus, d.message);
  const attestor = ATTESTOR_ERRORS[d.name];
  if (attestor !== undefined && d.code !== undefined) return new attestor(d.code as ErrorCode, d.message);
  const error = new Error(d.message);
  error.name = d.name;
  return error;
}

/**
 * Items sent as one message per turn of the microtask queue: every message wakes the other
 * thread, which on busy cores preempts this one (a wake-up cost 12-22 us a message under load,
 * more than cloning it). An item that cannot be cloned fails alone; the others are still sent.
 */
export function batched<T>(post: (items: readonly T[]) => void, failed: (item: T, e: unknown) => void): (item: T) => void {
  let items: T[] = [];
  const flush = () => {
    const sending = items;
    items = [];
    try {
      post(sending);
    } catch {
      for (const item of sending) {
        try {
          post([item]);
        } catch (e) {
          failed(item, e);
        }
      }
    }
  };
  return (item) => {
    if (items.length === 0) queueMicrotask(flush);
    items.push(item);
  };
}
