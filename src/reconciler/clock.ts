/** Time as the reconciler sees it: injected, so tests drive coalescing and backoff without waiting. */
export interface Clock {
  /** Monotonic milliseconds (durations, gaps). */
  now(): number;
  /** Wall-clock time for records. */
  date(): Date;
  setTimeout(fn: () => void, ms: number): unknown;
  clearTimeout(handle: unknown): void;
}

/** A wait of no time: the end of this turn of the event loop (node's setTimeout waits at least 1 ms, then a turn). */
interface Soon {
  readonly immediate: NodeJS.Immediate;
}

const isSoon = (h: unknown): h is Soon => typeof h === "object" && h !== null && "immediate" in h;

export const systemClock: Clock = {
  now: () => performance.now(),
  date: () => new Date(),
  // A lone change with no debounce (dynamic mode) is applied at once, after the I/O callbacks of this turn.
  setTimeout: (fn, ms) => (ms > 0 ? setTimeout(fn, ms) : ({ immediate: setImmediate(fn) } satisfies Soon)),
  clearTimeout: (handle) =>
    isSoon(handle) ? clearImmediate(handle.immediate) : clearTimeout(handle as NodeJS.Timeout),
};
