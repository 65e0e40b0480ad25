import { describe, expect, it } from "vitest";
import { nextRouting, routesToApply, type Pending, type Routing, type RoutingEvent } from "./routing.js";

// Routing models are opaque to the logic: strings stand in for them (compared by identity, as objects are).
const A = "routes A";
const B = "routes B";
const C = "routes C";
const st = (wanted: string | null, inForce: string | null, pending: Pending | null = null): Routing<string> => ({
  wanted,
  inForce,
  pending,
});
const pend = (since: number, retryMs: number, at: number, error = "bind() failed"): Pending => ({
  since,
  error,
  retryMs,
  nextRetryAt: at + retryMs,
});
const wanted = (services: string): RoutingEvent<string> => ({ kind: "wanted", services });
const accepted = (services: string): RoutingEvent<string> => ({ kind: "accepted", services });
const refused = (services: string, error = "bind() failed"): RoutingEvent<string> => ({
  kind: "refused",
  services,
  error,
});

describe("nextRouting", () => {
  it.each([
    ["a first model is wanted", st(null, null), wanted(A), 0, st(A, null)],
    ["the wanted model taken: in force", st(A, null), accepted(A), 5, st(A, A)],
    ["a refused change: pending, retried in 1 s", st(B, A), refused(B), 10, st(B, A, pend(10, 1000, 10))],
    [
      "refused again: the wait doubles, since stays",
      st(B, A, pend(10, 1000, 10)),
      refused(B),
      1010,
      st(B, A, pend(10, 2000, 1010)),
    ],
    [
      "refused with another error: the error is the latest",
      st(B, A, pend(10, 1000, 10)),
      refused(B, "x"),
      1010,
      st(B, A, pend(10, 2000, 1010, "x")),
    ],
    ["the wait is capped at 30 s", st(B, A, pend(0, 16_000, 0)), refused(B), 16_000, st(B, A, pend(0, 30_000, 16_000))],
    ["capped stays capped", st(B, A, pend(0, 30_000, 0)), refused(B), 30_000, st(B, A, pend(0, 30_000, 30_000))],
    [
      "the routes in force taken while pending: still pending",
      st(B, A, pend(0, 1000, 0)),
      accepted(A),
      50,
      st(B, A, pend(0, 1000, 0)),
    ],
    ["the pending change taken (port freed): healed", st(B, A, pend(0, 1000, 0)), accepted(B), 1000, st(B, B)],
    ["a new file resets the backoff", st(B, A, pend(0, 8000, 0)), wanted(C), 20, st(C, A)],
    ["a refusal of the routes in force is no pending change", st(A, A), refused(A), 10, st(A, A)],
    ["a refusal of an older model is no pending change", st(C, A, null), refused(B), 10, st(C, A)],
    [
      "refused without routes in force: pending all the same",
      st(B, null),
      refused(B),
      0,
      st(B, null, pend(0, 1000, 0)),
    ],
  ] as const)("%s", (_, state, event, now, expected) => {
    expect(nextRouting(state, event, now)).toEqual(expected);
  });
});

describe("routesToApply", () => {
  it.each([
    ["nothing wanted yet", st(null, null), 0, null],
    ["no pending change: the wanted routes", st(B, A), 0, B],
    ["pending, not yet due: the routes in force", st(B, A, pend(0, 1000, 0)), 999, A],
    ["pending and due: the wanted routes again", st(B, A, pend(0, 1000, 0)), 1000, B],
    ["pending without routes in force: the wanted routes", st(B, null, pend(0, 1000, 0)), 10, B],
  ] as const)("%s", (_, state, now, expected) => {
    expect(routesToApply(state, now)).toBe(expected);
  });
});
