/**
 * How far V8 lets the old generation grow past what the last full collection left live before it collects again.
 * By default V8 picks a factor of up to 4 from how fast it collects, which suits a short-lived script. The controller
 * keeps a live heap of the whole routing table and registry, and each routing change at scale leaves the previous
 * services.json text (megabytes, in the large-object space, freed only by a full collection) and the previous compiled
 * table behind; in a burst of changes RSS then climbed to several times the live heap before V8 collected, and an
 * operator sizing a memory limit has to allow for that peak, not the idle figure. A factor of 1.5 makes the full
 * collections come sooner (they mark concurrently; the pause on the main thread is short) and bounds the peak near the
 * live heap. Set once at start, before the first services read.
 *
 * Pinned by src/shared/heap-growth.test.ts (a child process's heap peak with and without the bound, same run) and by
 * bench figure 10's controller RSS right after 200 routing changes at 10,000 sites.
 */
import { setFlagsFromString } from "node:v8";

/** The growing factor, as V8's flag takes it: 1 + percent / 100. */
export const HEAP_GROWING_PERCENT = 50;

/** Sets V8's heap growing factor for this process (an unknown flag is ignored by V8, never thrown). */
export function boundHeapGrowth(percent: number = HEAP_GROWING_PERCENT): void {
  if (!Number.isInteger(percent) || percent < 1 || percent > 300)
    throw new RangeError(`heap growing percent ${percent}: an integer from 1 to 300`);
  setFlagsFromString(`--heap-growing-percent=${percent}`);
}
