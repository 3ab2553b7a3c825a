/**
 * Resolves after `ms`, or at once when `signal` aborts — never rejects, so a stopping loop
 * simply wakes up and checks its signal. Shared by every retry and poll loop (worker,
 * hand-over agent, operator lease).
 */
export function sleep(ms: number, signal?: AbortSignal): Promise<void> {
  return new Promise((resolve) => {
    if (signal?.aborted === true) return resolve();
    const timer = setTimeout(done, ms);
    function done(): void {
      clearTimeout(timer);
      signal?.removeEventListener('abort', done);
      resolve();
    }
    signal?.addEventListener('abort', done, { once: true });
  });
}
