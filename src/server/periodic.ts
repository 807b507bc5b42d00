/**
 * Runs `work` every `intervalMs`, skipping a tick while the last run is still going, its
 * failures handed to `failed` (a timer has no caller to throw to). The timer does not keep the
 * process alive. Returns the stop, which awaits a run in progress.
 */
export function runEvery(intervalMs: number, work: () => Promise<unknown>, failed: (e: unknown) => void): () => Promise<void> {
  let running: Promise<void> | undefined;
  const timer = setInterval(() => {
    running ??= work()
      .then(() => undefined, failed)
      .finally(() => (running = undefined));
  }, intervalMs);
  timer.unref();
  return async () => {
    clearInterval(timer);
    await running;
  };
}
