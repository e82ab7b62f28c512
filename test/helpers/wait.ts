/**
 * Waiting in tests: every wait has a deadline that fails with a message
 * (a test never hangs until tap's 300 s timeout).
 */

export const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

/** Poll `fn` until it returns a truthy value (and resolve with it); throw after `timeoutMs`. */
export async function waitFor<T>(what: string, fn: () => T | Promise<T>, timeoutMs = 10000, everyMs = 20): Promise<T> {
  const end = Date.now() + timeoutMs;
  for (;;) {
    const v = await fn();
    if (v) return v;
    if (Date.now() > end) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
    await sleep(everyMs);
  }
}

/** `p`'s value, or null if it has not settled within `ms` (the timer does not outlive the race). */
export async function within<T>(p: Promise<T>, ms: number): Promise<T | null> {
  let timer: NodeJS.Timeout | undefined;
  try {
    return await Promise.race([p, new Promise<null>((r) => (timer = setTimeout(() => r(null), ms)))]);
  } finally {
    clearTimeout(timer);
  }
}

/**
 * Call poll() once per turn of the event loop until t tears down (the data
 * path of guest drivers a test runs in its own process).
 */
export function pollUntilTeardown(t: { teardown(fn: () => Promise<void>): void }, poll: () => void): void {
  let polling = true;
  const poller = (async () => {
    while (polling) {
      poll();
      await new Promise((r) => setImmediate(r));
    }
  })();
  t.teardown(async () => {
    polling = false;
    await poller;
  });
}
