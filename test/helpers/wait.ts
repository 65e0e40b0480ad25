/** The one sleep and poll helpers of the tests (etcd, nginx and controller helpers re-export them). */

/** Resolves after `ms`. */
export const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));

/**
 * Polls `check` every `intervalMs` until it returns a truthy value, and returns that value; throws naming `what` (and
 * the error `check` threw on its last call, if it threw) after `timeoutMs`.
 */
export async function waitFor<T>(
  what: string,
  check: () => T | null | undefined | false | Promise<T | null | undefined | false>,
  timeoutMs = 15_000,
  intervalMs = 25,
): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  let last: unknown;
  while (Date.now() < deadline) {
    try {
      const v = await check();
      if (v) return v;
      // A falsy answer after a throw: the earlier error no longer says why the wait goes on.
      last = undefined;
    } catch (e) {
      last = e;
    }
    await sleep(intervalMs);
  }
  throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}${last ? `: ${String(last)}` : ""}`);
}

/** `waitFor` with the condition first (the controller tests' spelling). */
export function eventually<T>(
  fn: () => Promise<T | null | undefined | false>,
  timeoutMs = 10_000,
  what = "condition",
): Promise<T> {
  return waitFor(what, fn, timeoutMs);
}
