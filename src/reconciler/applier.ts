import type { Target } from "./target.js";

/** What one apply did and how long each step took. */
export interface ApplyOutcome {
  readonly result: "unchanged" | "applied" | "failed";
  /** `push`: endpoint sets sent to nginx without a reload (dynamic mode). */
  readonly action: "none" | "reload" | "start" | "push";
  readonly generation: string;
  readonly error?: string;
  /**
   * A failure that may heal by itself (nginx not reachable, the state dir full): the reconciler retries with backoff.
   * A config nginx rejects is not retried: it waits for the next change.
   */
  readonly retry?: boolean;
  /**
   * The controller's stop ended the wait for nginx to confirm a config it had been given (a master started on it):
   * nginx may be serving it, so the reconciler keeps it as the last applied state.
   */
  readonly cutShort?: boolean;
  readonly ms: { readonly test: number; readonly reload: number; readonly total: number };
}

/** What nginx runs, as the status reports it. */
export interface NginxState {
  readonly running: boolean;
  readonly pid: number | null;
  /** The generation nginx was last confirmed to serve. */
  readonly generation: string | null;
  /** Dynamic mode: the version of the endpoint sets nginx was last confirmed to hold. */
  readonly pushedVersion: number | null;
}

/**
 * The part that makes nginx serve a target (the reconciler's only way to nginx). `apply` returns every failure as
 * an outcome; the reconciler still treats a throw as a failed apply.
 */
export interface Applier {
  apply(target: Target, force: boolean): Promise<ApplyOutcome>;
  state(): NginxState;
}
