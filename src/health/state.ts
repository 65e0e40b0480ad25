import type { HealthCheck } from "../model/services.js";

/**
 * The health of one checked endpoint as a pure state machine: `unknown` until the first verdict (and served meanwhile:
 * a controller restart must not take every endpoint out while the first probes run), then `up` or `down` by the
 * check's consecutive thresholds. Time is passed in, never read.
 */
export type HealthState = "unknown" | "up" | "down";

/** What one probe found: a pass or a failure, and in words why. */
export interface ProbeResult {
  readonly ok: boolean;
  readonly reason: string;
}

export interface TargetHealth {
  readonly state: HealthState;
  /** When the state began (wall-clock milliseconds). */
  readonly since: number;
  /** The probe result that decided the state (the last one while unknown). */
  readonly reason: string;
  /** Consecutive passes, or failures, of the latest run; the other is 0. */
  readonly passes: number;
  readonly failures: number;
}

export function initialHealth(now: number): TargetHealth {
  return { state: "unknown", since: now, reason: "not probed yet", passes: 0, failures: 0 };
}

/**
 * The health after one more probe. An unknown endpoint is up at its first pass (it was served as up already) and down
 * after `unhealthy` failures; an up one goes down after `unhealthy` consecutive failures, a down one up after
 * `healthy` consecutive passes. A result that does not change the state keeps `since` and the deciding reason.
 */
export function nextHealth(
  h: TargetHealth,
  r: ProbeResult,
  check: Pick<HealthCheck, "healthy" | "unhealthy">,
  now: number,
): TargetHealth {
  const passes = r.ok ? h.passes + 1 : 0;
  const failures = r.ok ? 0 : h.failures + 1;
  const next: HealthState =
    h.state !== "down" && failures >= check.unhealthy
      ? "down"
      : h.state === "down" && passes >= check.healthy
        ? "up"
        : h.state === "unknown" && r.ok
          ? "up"
          : h.state;
  if (next !== h.state) return { state: next, since: now, reason: r.reason, passes, failures };
  return { ...h, passes, failures, ...(h.state === "unknown" ? { reason: r.reason } : {}) };
}
