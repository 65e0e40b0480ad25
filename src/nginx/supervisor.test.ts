import { describe, expect, it } from "vitest";
import { memoryLogger } from "../../test/helpers/sources.js";
import { nextRestartDelay, NginxSupervisor, type Restartable } from "./supervisor.js";

describe("nextRestartDelay", () => {
  it.each([
    [0, 100],
    [100, 200],
    [6400, 10_000],
    [10_000, 10_000],
  ])("after %i ms: %i ms", (previous, next) => expect(nextRestartDelay(previous)).toBe(next));
});

/** An nginx whose starts fail `failures` times, then succeed; the scheduled restarts run when the test says. */
function harness(failures: number) {
  const delays: number[] = [];
  const pending: (() => void)[] = [];
  const events: string[] = [];
  let starts = 0;
  const nginx: Restartable = {
    start: async () => {
      starts++;
      if (starts <= failures) throw new Error(`start ${starts} failed`);
    },
    probe: async () => "generation",
    masterPid: 42,
  };
  const supervisor = new NginxSupervisor(
    nginx,
    memoryLogger().logger,
    { exited: (why) => events.push(`exited: ${why}`), restarted: () => events.push("restarted") },
    (fn, ms) => {
      delays.push(ms);
      pending.push(fn);
    },
  );
  const runNext = async () => {
    pending.shift()?.();
    await new Promise((r) => setTimeout(r, 0));
  };
  return { supervisor, delays, events, runNext, starts: () => starts };
}

describe("NginxSupervisor", () => {
  it("restarts with growing delays while starts fail, then resets the backoff once one succeeds", async () => {
    const h = harness(2);
    h.supervisor.exited("killed");
    await h.runNext();
    await h.runNext();
    await h.runNext();
    expect(h.delays).toEqual([100, 200, 400]);
    expect(h.events).toEqual(["exited: killed", "exited: start 1 failed", "exited: start 2 failed", "restarted"]);
    h.supervisor.exited("killed again");
    expect(h.delays.at(-1)).toBe(100);
  });

  it("never restarts after stop, even a restart already scheduled", async () => {
    const h = harness(0);
    h.supervisor.exited("killed");
    h.supervisor.stop();
    await h.runNext();
    h.supervisor.exited("after stop");
    expect(h.starts()).toBe(0);
    expect(h.events).toEqual(["exited: killed"]);
  });
});
