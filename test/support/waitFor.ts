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

export function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}
