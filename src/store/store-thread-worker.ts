import { parentPort, workerData } from 'node:worker_threads';
import { openPostgresStore } from './postgres.js';
import { openSqliteStore } from './sqlite.js';
import { batched, describeError, storeMethods, type Call, type Reply, type ThreadData } from './thread-protocol.js';

/*
 * The store's thread (src/store/store-thread.ts starts it): the store as src/store/sqlite.ts or
 * src/store/postgres.ts builds it, its methods called in the order the messages arrive. On
 * SQLite the calls of one turn of this thread's event loop share one synced commit, as they
 * would on the caller's thread.
 */

const port = parentPort;
if (port === null) throw new Error('store-thread-worker.js runs as a worker thread');
const data = workerData as ThreadData;

try {
  const store = 'sqlite' in data ? await openSqliteStore(data.sqlite) : await openPostgresStore(data.postgres);
  const methods = storeMethods(store);
  // A value that cannot be cloned (none of the store's should be) fails its call, not the thread.
  const reply = batched<Reply>(
    (replies) => port.postMessage(replies),
    ([id], e) => port.postMessage([[id, false, describeError(e)]] satisfies Reply[]),
  );
  port.on('message', (calls: readonly Call[]) => {
    for (const [id, area, method, args] of calls) {
      const fn = methods.get(area)?.get(method);
      if (fn === undefined) {
        reply([id, false, describeError(new TypeError(`the store has no method ${area}.${method}`))]);
        continue;
      }
      // Through a promise, so that a method throwing before its first await fails its call alone.
      Promise.resolve()
        .then(() => fn(...args))
        .then(
          (value) => reply([id, true, value]),
          (e: unknown) => reply([id, false, describeError(e)]),
        );
    }
  });
  port.postMessage({ ready: [...methods].map(([area, fns]) => [area, [...fns.keys()]]) });
} catch (e) {
  port.postMessage({ failed: describeError(e) });
}
