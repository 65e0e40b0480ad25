/**
 * One full garbage collection once the controller has been quiet for a while. Each change at scale (a services.json
 * of thousands of sites read, checked and compiled again) leaves its garbage in V8's old generation, which V8 lets
 * grow by a multiple of the live heap before it collects, and collects when it must allocate rather than when the
 * process goes quiet: after a burst of changes the daemon would sit at its high-water mark until the next burst. An
 * operator reads RSS between changes, so after `idleMs` without activity the heap is collected once and its freed
 * pages go back to the system (bench figure 10's "after 15 s idle" column reads it). The collection stops the
 * controller for as long as it marks the live heap; it runs only when nothing has happened for `idleMs`.
 */
import { setFlagsFromString } from "node:v8";
import { runInNewContext } from "node:vm";
import type { Clock } from "../reconciler/clock.js";
import type { Logger } from "./log.js";

export interface IdleCollectorOptions {
  readonly idleMs: number;
  readonly clock: Pick<Clock, "setTimeout" | "clearTimeout">;
  /** The collection (and whatever the caller reports of it). */
  readonly collect: () => void;
}

/** Calls `collect` once `idleMs` after the last `touch()`; again only after another touch. */
export class IdleCollector {
  private timer: unknown = null;
  private stopped = false;

  constructor(private readonly o: IdleCollectorOptions) {}

  /** Something happened: the idle wait starts over. */
  touch(): void {
    if (this.stopped) return;
    if (this.timer !== null) this.o.clock.clearTimeout(this.timer);
    const timer = this.o.clock.setTimeout(() => {
      this.timer = null;
      this.o.collect();
    }, this.o.idleMs);
    // The wait must not keep a stopping process alive.
    if (typeof timer === "object" && timer !== null && "unref" in timer) (timer as NodeJS.Timeout).unref();
    this.timer = timer;
  }

  stop(): void {
    this.stopped = true;
    if (this.timer !== null) this.o.clock.clearTimeout(this.timer);
    this.timer = null;
  }
}

/**
 * V8's full collection as a function, or null where it cannot be had. `--expose-gc` set at run time gives `gc` to
 * contexts made afterwards, not to the main one: the function is taken from a new context (it collects the whole
 * isolate's heap all the same).
 */
export function fullCollection(): (() => void) | null {
  try {
    setFlagsFromString("--expose-gc");
    const gc: unknown = runInNewContext("typeof gc === 'function' ? gc : null");
    return typeof gc === "function" ? () => void (gc as () => unknown)() : null;
  } catch {
    return null;
  }
}

/** How long the controller must be quiet before its heap is collected. */
export const IDLE_COLLECT_MS = 5000;

/**
 * Collects once after every quiet spell of `idleMs` following activity (`subscribe` calls its listener on each),
 * logging the pause, RSS before and the heap after (one line per quiet spell). Nothing when the collection cannot
 * be had.
 */
export function collectWhenIdle(
  subscribe: (listener: () => void) => () => void,
  log: Logger,
  clock: Pick<Clock, "setTimeout" | "clearTimeout">,
  idleMs = IDLE_COLLECT_MS,
): { stop(): void } {
  const gc = fullCollection();
  if (gc === null) return { stop: () => undefined };
  const mib = (bytes: number) => Math.round(bytes / 2 ** 20);
  const collector = new IdleCollector({
    idleMs,
    clock,
    collect: () => {
      const rss = process.memoryUsage.rss();
      const started = performance.now();
      gc();
      const ms = Math.round(performance.now() - started);
      // RSS falls over the next moments, as V8's helper threads give the freed pages back: the heap says it now.
      const heap = process.memoryUsage();
      log.info(
        {
          ms,
          rssMiBBefore: mib(rss),
          heapMiB: { used: mib(heap.heapUsed), committed: mib(heap.heapTotal), external: mib(heap.external) },
        },
        "heap collected while idle",
      );
    },
  });
  const unsubscribe = subscribe(() => collector.touch());
  collector.touch();
  return {
    stop: () => {
      unsubscribe();
      collector.stop();
    },
  };
}
