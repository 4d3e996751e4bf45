/**
 * The one way tests wait for something that happens in another process or thread: poll until the
 * probe answers, and fail naming what was awaited. The bound is a liveness bound (did it happen
 * at all), never a measure of how fast: give seconds, not the figure one run happened to take.
 */

/** What a probe may answer: a value (done), or undefined, null or false (not yet). */
export type Probe<T> = () => T | undefined | null | false | Promise<T | undefined | null | false>;

export const DEFAULT_TIMEOUT_MS = 10_000;
const INTERVAL_MS = 20;

/**
 * Poll `probe` until it answers a value other than undefined, null or false; resolves to that
 * value. A probe that throws ends the wait with its error (e.g. "the child exited first").
 * `what` names the awaited thing in the timeout error; a function is asked only then, so it can
 * say what was seen so far.
 */
export async function waitFor<T>(
  what: string | (() => string),
  probe: Probe<T>,
  timeoutMs = DEFAULT_TIMEOUT_MS,
): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const value = await probe();
    if (value !== undefined && value !== null && value !== false) return value;
    if (Date.now() > deadline) {
      const named = typeof what === 'string' ? what : what();
      throw new Error(`timed out after ${timeoutMs} ms waiting for ${named}`);
    }
    await sleep(INTERVAL_MS);
  }
}

/**
 * Wait for a quiet spell: until `read` has answered the same value for `stillMs` in a row (a
 * thread's run count that does not move, a counter of forks that stays put). Resolves to the
 * Date.now() at which the spell began. Like waitFor, `timeoutMs` bounds the whole wait.
 */
export async function waitForStill(
  what: string,
  read: () => string | number,
  stillMs: number,
  timeoutMs = DEFAULT_TIMEOUT_MS,
): Promise<number> {
  let last = read();
  let since = Date.now();
  await waitFor(
    `${what} to stay still for ${stillMs} ms`,
    () => {
      const now = read();
      if (now !== last) {
        last = now;
        since = Date.now();
      }
      return Date.now() - since >= stillMs;
    },
    timeoutMs,
  );
  return since;
}

export function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}
