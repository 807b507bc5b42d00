/**
 * Runs tasks one after another in the order they were queued; a failed task does not stop the
 * ones after it. One queue serialises the calls on a TPM context (src/agent/tss.ts), the
 * operations of a TPM session, and the calls on a PKCS#11 session.
 */
export class SerialQueue {
  private tail: Promise<unknown> = Promise.resolve();

  run<T>(task: () => Promise<T> | T): Promise<T> {
    const result = this.tail.then(task);
    this.tail = result.catch(() => undefined);
    return result;
  }
}
