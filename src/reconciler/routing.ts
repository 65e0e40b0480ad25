/**
 * Routes wanted and routes in force are two things. `wanted` is the latest valid routing model from the source;
 * `inForce` the last one nginx accepted. A routing change nginx cannot take (a port another process holds) stays
 * pending and is retried with a capped backoff, while every other apply uses the routes in force, so endpoint changes
 * keep reaching nginx. Pure: time is a monotonic millisecond count passed in, the model type is opaque.
 */

/** A routing change nginx refused, and when it is tried again. */
export interface Pending {
  /** When it was first refused (monotonic ms); kept while the same change keeps being refused. */
  readonly since: number;
  readonly error: string;
  /** The wait before the next try; doubles on each refusal up to `MAX_PENDING_RETRY_MS`. */
  readonly retryMs: number;
  readonly nextRetryAt: number;
}

export interface Routing<S> {
  readonly wanted: S | null;
  readonly inForce: S | null;
  readonly pending: Pending | null;
}

/** What happened, as far as routing is concerned. */
export type RoutingEvent<S> =
  /** A new valid routing model from the source: it is tried at once (a new file resets the backoff). */
  | { readonly kind: "wanted"; readonly services: S }
  /** nginx serves these routes (an apply took, or found them unchanged). */
  | { readonly kind: "accepted"; readonly services: S }
  /** nginx refused these routes: `nginx -t` rejected them, or a running nginx could not take the reload. */
  | { readonly kind: "refused"; readonly services: S; readonly error: string };

export const FIRST_PENDING_RETRY_MS = 1_000;
export const MAX_PENDING_RETRY_MS = 30_000;

export const initialRouting: Routing<never> = { wanted: null, inForce: null, pending: null };

/** The routing state after an event (pure). */
export function nextRouting<S>(state: Routing<S>, event: RoutingEvent<S>, now: number): Routing<S> {
  switch (event.kind) {
    case "wanted":
      return { ...state, wanted: event.services, pending: null };
    case "accepted":
      // The routes in force heal a pending change only when they are the wanted ones.
      return {
        wanted: state.wanted,
        inForce: event.services,
        pending: event.services === state.wanted ? null : state.pending,
      };
    case "refused": {
      // A refusal of anything but the wanted routes (the routes in force, an older model) is no pending change.
      if (event.services !== state.wanted || event.services === state.inForce) return state;
      const retryMs = state.pending
        ? Math.min(state.pending.retryMs * 2, MAX_PENDING_RETRY_MS)
        : FIRST_PENDING_RETRY_MS;
      return {
        ...state,
        pending: { since: state.pending?.since ?? now, error: event.error, retryMs, nextRetryAt: now + retryMs },
      };
    }
  }
}

/**
 * The routes the next apply uses: the wanted ones, unless a refused change waits for its retry and there are routes
 * in force to fall back on.
 */
export function routesToApply<S>(state: Routing<S>, now: number): S | null {
  if (state.pending !== null && now < state.pending.nextRetryAt && state.inForce !== null) return state.inForce;
  return state.wanted;
}
