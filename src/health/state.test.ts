import { describe, expect, it } from "vitest";
import { initialHealth, nextHealth, type HealthState, type TargetHealth } from "./state.js";

const CHECK = { healthy: 2, unhealthy: 3 };
/** Runs probes (`+` pass, `-` fail) one per second from t=0 and returns the states after each. */
function run(probes: string, from: TargetHealth = initialHealth(0)): { states: HealthState[]; last: TargetHealth } {
  let h = from;
  const states: HealthState[] = [];
  [...probes].forEach((p, i) => {
    h = nextHealth(
      h,
      { ok: p === "+", reason: p === "+" ? "status 200" : "connection refused" },
      CHECK,
      (i + 1) * 1000,
    );
    states.push(h.state);
  });
  return { states, last: h };
}

describe("nextHealth", () => {
  it.each([
    ["+", "up"],
    ["-", "unknown"],
    ["--", "unknown"],
    ["---", "down"],
    ["+--", "up"],
    ["+---", "down"],
    ["---+", "down"],
    ["---++", "up"],
    ["---+-++", "up"],
    ["---+-+", "down"],
    ["+--+--", "up"],
  ])("%s -> %s", (probes, state) => expect(run(probes).last.state).toBe(state));

  it("keeps since and the deciding reason while the state holds", () => {
    const { last } = run("+---+");
    expect(last).toEqual({ state: "down", since: 4000, reason: "connection refused", passes: 1, failures: 0 });
  });
  it("an unknown endpoint carries the latest reason", () =>
    expect(run("--").last).toMatchObject({ state: "unknown", since: 0, reason: "connection refused", failures: 2 }));
  it("thresholds of 1 flip at every change", () =>
    expect(
      [..."+-+-"].reduce<HealthState[]>((acc, p, i) => {
        const h = nextHealth(
          { state: acc.at(-1) ?? "unknown", since: 0, reason: "", passes: 0, failures: 0 },
          { ok: p === "+", reason: p },
          { healthy: 1, unhealthy: 1 },
          i,
        );
        return [...acc, h.state];
      }, []),
    ).toEqual(["up", "down", "up", "down"]));
});
