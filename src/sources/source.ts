import type { BackendSet } from "../model/backends.js";
import type { Problem } from "../model/problem.js";
import type { Services } from "../model/services.js";

/**
 * A source of whole snapshots. Sources never send deltas: each emit carries the complete current value, and the
 * reconciler compares whole values (level-triggered). `start` resolves when the signal aborts and the source stopped.
 */
export interface Source<T> {
  readonly name: string;
  /** `reject` hears of content refused as a whole (the last emitted value stays in force); not every source has such. */
  start(
    signal: AbortSignal,
    emit: (snapshot: Snapshot<T>) => void,
    reject?: (errors: readonly Problem[], warnings: readonly Problem[]) => void,
  ): Promise<void>;
}

/** One emission: the value, its warnings, and the source's health at that moment. */
export interface Snapshot<T> {
  readonly value: T;
  readonly warnings: readonly Problem[];
  /** Registry sources: false while disconnected (the value is then the last known one). */
  readonly connected: boolean;
  /** A human-readable note on where the value came from (e.g. "etcd revision 42", "state dir (etcd unreachable)"). */
  readonly origin: string;
}

export type EndpointSource = Source<BackendSet>;
/** The services source also reports files that failed validation, so the last valid model stays in force. */
export interface ServicesSource {
  readonly name: string;
  start(
    signal: AbortSignal,
    emit: (snapshot: Snapshot<Services>) => void,
    reject: (errors: readonly Problem[], warnings: readonly Problem[]) => void,
  ): Promise<void>;
}
