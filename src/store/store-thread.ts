import { Worker } from 'node:worker_threads';
import { AttestorError } from '../errors.js';
import type { Store } from './store.js';
import { batched, reviveError, type Call, type Hello, type Reply, type ThreadData } from './thread-protocol.js';

/**
 * A store on a worker thread of its own, for the server. SQLite's statements and synced
 * commits (0.2-1 ms each, in which a thread can do nothing else) run beside the event loop that
 * parses, verifies and signs instead of inside it. PostgreSQL's driver spends its CPU on
 * socket writes and protocol messages, 12-16 round trips per attestation; on the thread, a
 * transaction's round trips are not queued behind the event loop's requests, which matters
 * most while it holds the audit chain's head, the lock every replica's appends wait for. The
 * same store as opened in process, the same guarantees: a method resolves once its
 * transaction is committed; calls start in the order they were made; on SQLite the calls
 * that reach the thread in one turn of its event loop share one synced commit.
 *
 * If the thread stops (it should not: it catches what the store throws), the calls in flight
 * and every later one fail with ERR_STORE_UNAVAILABLE, so readiness fails and the verifier's
 * supervisor restarts it; their transactions are committed or rolled back, as after a crash.
 */
export async function openStoreThread(data: ThreadData): Promise<Store> {
  const thread = await startThread(data);
  const dialect: Store['dialect'] = 'sqlite' in data ? 'sqlite' : 'postgres';
  let closed = false;

  const call = async (area: string, method: string, args: readonly unknown[]): Promise<unknown> => {
    if (closed) throw new AttestorError('ERR_STORE_UNAVAILABLE', `${area}.${method}: the store is closed`);
    return thread.call(area, method, args);
  };

  const store: Record<string, unknown> = { dialect };
  for (const [area, methods] of thread.methods) {
    const target = area === '' ? store : ((store[area] = {}) as Record<string, unknown>);
    for (const method of methods) target[method] = (...args: unknown[]) => call(area, method, args);
  }
  store.close = async () => {
    if (closed) return;
    closed = true;
    if (!thread.alive) return;
    try {
      await thread.call('', 'close', []);
    } finally {
      await thread.stop();
    }
  };
  return store as unknown as Store;
}

interface Thread {
  readonly methods: ReadonlyMap<string, readonly string[]>;
  readonly alive: boolean;
  call(area: string, method: string, args: readonly unknown[]): Promise<unknown>;
  stop(): Promise<void>;
}

async function startThread(data: ThreadData): Promise<Thread> {
  const worker = new Worker(workerModule(), { workerData: data });
  const pending = new Map<number, { resolve: (value: unknown) => void; reject: (e: unknown) => void }>();
  let next = 0;
  let alive = true;
  // The thread keeps the process running only while a call waits for it (a CLI that is done exits).
  worker.unref();

  // Listeners of its own, removed again: removeAllListeners would take the Worker's internal ones too.
  const hello = await new Promise<Hello>((resolve, reject) => {
    const exit = (code: number) => done(new Error(`the thread exited (${code}) before the store opened`));
    const done = (e: Error | undefined, message?: Hello) => {
      worker.off('message', resolveWith).off('error', done).off('exit', exit);
      if (e === undefined) resolve(message!);
      else reject(e);
    };
    const resolveWith = (message: Hello) => done(undefined, message);
    worker.on('message', resolveWith).on('error', done).on('exit', exit);
  }).catch((e: unknown) => {
    alive = false;
    void worker.terminate();
    throw new AttestorError('ERR_STORE_UNAVAILABLE', `cannot start the store's thread: ${e instanceof Error ? e.message : String(e)}`, { cause: e });
  });
  if ('failed' in hello) {
    alive = false;
    await worker.terminate();
    throw reviveError(hello.failed);
  }

  let stoppedBecause: string | undefined;
  const stopped = (why: string) => {
    if (!alive) return;
    alive = false;
    stoppedBecause = why;
    for (const { reject } of pending.values()) reject(threadStopped(why));
    pending.clear();
  };
  const take = (id: number) => {
    const waiting = pending.get(id);
    pending.delete(id);
    if (pending.size === 0) worker.unref();
    return waiting;
  };
  worker.on('message', (replies: readonly Reply[]) => {
    for (const [id, ok, value] of replies) {
      if (ok) take(id)?.resolve(value);
      else take(id)?.reject(reviveError(value));
    }
  });
  const send = batched<Call>(
    (calls) => worker.postMessage(calls),
    ([id], e) => take(id)?.reject(e),
  );
  worker.on('error', (e) => stopped(e.message));
  worker.on('exit', (code) => stopped(`exit code ${code}`));

  return {
    methods: new Map(hello.ready),
    get alive() {
      return alive;
    },
    call(area, method, args) {
      if (!alive) return Promise.reject(threadStopped(stoppedBecause ?? CLOSED));
      const id = next++;
      return new Promise((resolve, reject) => {
        if (pending.size === 0) worker.ref();
        pending.set(id, { resolve, reject });
        send([id, area, method, args]);
      });
    },
    async stop() {
      // Calls still unanswered fail now: PostgreSQL's pool, once ended, never answers those
      // waiting for a connection, and a terminated thread answers none.
      stopped(CLOSED);
      await worker.terminate();
    },
  };
}

/** Why a thread stopped when the store was closed. */
const CLOSED = 'closed';

function threadStopped(why: string): AttestorError {
  if (why === CLOSED) return new AttestorError('ERR_STORE_UNAVAILABLE', 'the store was closed before it answered');
  return new AttestorError('ERR_STORE_UNAVAILABLE', `the store's thread stopped (${why}): restart the verifier`);
}

/**
 * The thread's module, built beside this one. Run from the TypeScript sources (the tests), it
 * is the build's (`npm test` builds first): a worker thread cannot load TypeScript.
 */
function workerModule(): URL {
  const here = new URL(import.meta.url);
  if (here.pathname.endsWith('.ts')) return new URL(here.href.replace(/\/src\/store\/[^/]+\.ts$/, '/dist/store/store-thread-worker.js'));
  return new URL('./store-thread-worker.js', here);
}
