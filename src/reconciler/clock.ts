/** Time as the reconciler sees it: injected, so tests drive coalescing and backoff without waiting. */
export interface Clock {
  /** Monotonic milliseconds (durations, gaps). */
  now(): number;
  /** Wall-clock time for records. */
  date(): Date;
  setTimeout(fn: () => void, ms: number): unknown;
  clearTimeout(handle: unknown): void;
}

export const systemClock: Clock = {
  now: () => performance.now(),
  date: () => new Date(),
  setTimeout: (fn, ms) => setTimeout(fn, ms),
  clearTimeout: (handle) => clearTimeout(handle as NodeJS.Timeout),
};
