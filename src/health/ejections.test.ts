import pino from "pino";
import { describe, expect, it } from "vitest";
import type { Clock } from "../reconciler/clock.js";
import { EjectionWatch } from "./ejection-watch.js";
import {
  currentEjections,
  ejectionChanges,
  ejectionReason,
  parseEjections,
  withEjections,
  type EjectionRecord,
  type Ejections,
} from "./ejections.js";

const UP = "nlb_0123abcd";
const rec = (o: Partial<EjectionRecord> = {}): EjectionRecord => ({
  upstream: UP,
  ip: "10.0.0.1",
  port: 80,
  since: 1_000,
  until: 31_000,
  level: 1,
  failures: 5,
  last: "500",
  returned: false,
  ...o,
});
const SETTINGS = { errors: 5, base: 30_000, max: 300_000, percent: 50 };
const answer = (now: number, ...ejections: EjectionRecord[]) => JSON.stringify({ now, settings: SETTINGS, ejections });

describe("parseEjections", () => {
  it("takes what nginx answers", () => {
    const r = parseEjections(answer(2_000, rec(), rec({ ip: "fd00::1", last: "timeout" })));
    expect(r.ok && r.value.ejections.map((e) => e.ip)).toEqual(["10.0.0.1", "fd00::1"]);
  });
  it.each([
    ["not json", "{", "(answer)"],
    ["bad upstream", answer(0, rec({ upstream: "nlb_x y" })), "ejections[0].upstream"],
    ["a host name", answer(0, rec({ ip: "example.com" })), "ejections[0].ip"],
    ["port 0", answer(0, rec({ port: 0 })), "ejections[0].port"],
    ["a fraction", answer(0, rec({ level: 1.5 })), "ejections[0].level"],
    ["an unknown failure", answer(0, rec({ last: "500 or so" })), "ejections[0].last"],
    ["an extra field", JSON.stringify({ now: 0, settings: SETTINGS, ejections: [], x: 1 }), "(file)"],
    [
      "percent > 100",
      JSON.stringify({ now: 0, settings: { ...SETTINGS, percent: 101 }, ejections: [] }),
      "settings.percent",
    ],
  ])("refuses %s, naming %s", (_what, text, path) => {
    const r = parseEjections(text);
    expect(r.ok ? "ok" : r.errors[0]?.path).toBe(path);
  });
});

describe("ejectionReason", () => {
  it.each([
    [rec(), "5 failed requests in a row (last: answered 500); ejected for 30 s"],
    [rec({ last: "timeout" }), "5 failed requests in a row (last: timed out); ejected for 30 s"],
    [rec({ last: "error", failures: 1 }), "1 failed request in a row (last: connection failed); ejected for 30 s"],
    [
      rec({ level: 2, failures: 1, until: 61_000 }),
      "its first request after an ejection failed (answered 500); ejected for 60 s (ejection 2 in a row: each lasts twice the one before)",
    ],
    [rec({ until: 1_500 }), "5 failed requests in a row (last: answered 500); ejected for 500 ms"],
    [
      rec({ level: 3, until: 121_000 }),
      "5 failed requests in a row (last: answered 500); ejected for 120 s (ejection 3 in a row: each lasts twice the one before)",
    ],
  ])("%#", (r, text) => expect(ejectionReason(r)).toBe(text));
});

const current = (now: number, ...rs: EjectionRecord[]) => currentEjections({ now, settings: SETTINGS, ejections: rs });

describe("currentEjections", () => {
  it("keeps the records whose back-off has not ended, by upstream and address", () => {
    const e = current(31_000, rec(), rec({ ip: "fd00::2", until: 31_001 }), rec({ upstream: "nlb_ff", until: 40_000 }));
    expect(Object.keys(e[UP] ?? {})).toEqual(["[fd00::2]:80"]);
    expect(e["nlb_ff"]?.["10.0.0.1:80"]).toMatchObject({
      state: "ejected",
      since: "1970-01-01T00:00:01.000Z",
      until: "1970-01-01T00:00:40.000Z",
    });
  });
});

describe("ejectionChanges", () => {
  const a = current(2_000, rec());
  const again = current(40_000, rec({ since: 35_000, until: 95_000, level: 2 }));
  it.each([
    ["nothing to nothing", {}, {}, []],
    ["the same", a, current(3_000, rec()), []],
    ["ejected", {}, a, ["ejected 10.0.0.1:80"]],
    ["returned", a, {}, ["returned 10.0.0.1:80"]],
    ["ejected again between two reads", a, again, ["ejected 10.0.0.1:80"]],
  ] as [string, Ejections, Ejections, string[]][])("%s", (_w, before, after, want) =>
    expect(ejectionChanges(before, after).map((c) => `${c.kind} ${c.endpoint}`)).toEqual(want),
  );
});

describe("withEjections", () => {
  it("attaches an ejection to its endpoint only", () => {
    const eps = [{ address: "10.0.0.1:80" }, { address: "10.0.0.2:80" }];
    const out = withEjections(eps, current(2_000, rec())[UP]);
    expect(out.map((e) => e.ejected?.state ?? "-")).toEqual(["ejected", "-"]);
    expect(withEjections(eps, undefined)).toBe(eps);
  });
});

class FakeClock implements Clock {
  t = 0;
  timers: { at: number; fn: () => void }[] = [];
  now = () => this.t;
  date = () => new Date(this.t);
  setTimeout = (fn: () => void, ms: number) => {
    const t = { at: this.t + ms, fn };
    this.timers.push(t);
    return t;
  };
  clearTimeout = (h: unknown) => {
    this.timers = this.timers.filter((t) => t !== h);
  };
  /** Runs the next timer and lets its promise chain finish. */
  async tick(): Promise<void> {
    const next = this.timers.sort((x, y) => x.at - y.at).shift();
    if (!next) return;
    this.t = next.at;
    next.fn();
    for (let i = 0; i < 10; i++) await new Promise((r) => setImmediate(r));
  }
}

describe("EjectionWatch", () => {
  function setup(answers: ({ ok: true; text: string } | { ok: false; why: string } | Error)[]) {
    const clock = new FakeClock();
    const lines: { msg: string; level: number }[] = [];
    const log = pino({ level: "info" }, { write: (l: string) => void lines.push(JSON.parse(l) as never) });
    const changes: Ejections[] = [];
    let i = 0;
    const watch = new EjectionWatch({
      log,
      clock,
      read: () => {
        const a = answers[Math.min(i++, answers.length - 1)];
        return a instanceof Error ? Promise.reject(a) : Promise.resolve(a ?? { ok: false, why: "none" });
      },
      routeOf: (u) => (u === UP ? "a.test:80/" : undefined),
      onChange: (e) => changes.push(e),
    });
    watch.start();
    return { clock, lines, changes, watch };
  }
  const ok = (text: string) => ({ ok: true as const, text });

  it("reads once a second, hands on and logs each change once", async () => {
    const { clock, lines, changes, watch } = setup([
      ok(answer(0)),
      ok(answer(2_000, rec())),
      ok(answer(3_000, rec())),
      ok(answer(32_000, rec())),
    ]);
    for (let n = 0; n < 4; n++) await clock.tick();
    expect(clock.t).toBe(4_000);
    expect(changes.map((c) => Object.keys(c[UP] ?? {}).length)).toEqual([1, 0]);
    expect(lines.map((l) => l.msg)).toEqual([
      "endpoint ejected by traffic: every nginx worker skips it until the back-off ends; check the endpoint",
      "endpoint back from ejection: in rotation again, its next request decides",
    ]);
    expect(lines[0]).toMatchObject({ route: "a.test:80/", endpoint: "10.0.0.1:80" });
    watch.stop();
    expect(clock.timers).toEqual([]);
  });

  it("keeps the last states through failed reads, saying so once; a throwing read does not stop it", async () => {
    const { clock, lines, changes, watch } = setup([
      ok(answer(2_000, rec())),
      { ok: false, why: "connection refused" },
      ok("{"),
      new Error("boom"),
      ok(answer(3_000, rec())),
    ]);
    for (let n = 0; n < 5; n++) await clock.tick();
    expect(changes.length).toBe(1);
    expect(watch.ejections[UP]?.["10.0.0.1:80"]?.state).toBe("ejected");
    expect(lines.map((l) => l.msg)).toEqual([
      "endpoint ejected by traffic: every nginx worker skips it until the back-off ends; check the endpoint",
      "cannot read outlier ejections from nginx: the status keeps the last known ones (retried every second)",
      "reading outlier ejections failed (a bug in nginx-lb)",
      "outlier ejections readable again",
    ]);
    watch.stop();
  });
});
