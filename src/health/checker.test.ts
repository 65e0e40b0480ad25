import pino from "pino";
import { describe, expect, it } from "vitest";
import type { BackendSet } from "../model/backends.js";
import { parseServices, type Services } from "../model/services.js";
import type { Clock } from "../reconciler/clock.js";
import { HealthChecker, MAX_CONCURRENCY, MIN_CONCURRENCY, probeCap } from "./checker.js";
import type { ProbeResult } from "./state.js";
import type { CheckTarget, Health } from "./targets.js";

class FakeClock implements Clock {
  t = 0;
  private timers: { at: number; id: number; fn: () => void }[] = [];
  private ids = 0;
  now = () => this.t;
  date = () => new Date(this.t);
  setTimeout = (fn: () => void, ms: number) => {
    this.timers.push({ at: this.t + ms, id: ++this.ids, fn });
    return this.ids;
  };
  clearTimeout = (id: unknown) => {
    this.timers = this.timers.filter((t) => t.id !== id);
  };
  get pending(): number {
    return this.timers.length;
  }
  async advance(ms: number): Promise<void> {
    const end = this.t + ms;
    for (;;) {
      await settle();
      const next = [...this.timers].sort((a, b) => a.at - b.at || a.id - b.id)[0];
      if (!next || next.at > end) break;
      this.timers = this.timers.filter((t) => t !== next);
      this.t = next.at;
      next.fn();
    }
    await settle();
    this.t = end;
  }
}
const settle = async () => {
  for (let i = 0; i < 5; i++) await new Promise((r) => setImmediate(r));
};

/** `routes` routes over `apps` services, each route checked every second with the same definition. */
function model(routes: number, apps: number): Services {
  const r = parseServices({
    servers: [
      {
        domain_name: "x.test",
        routes: Object.fromEntries(
          Array.from({ length: routes }, (_, i) => [
            `/r${i}`,
            { app: `a${i % apps}`, service: "s", health_check: { interval: "1s", timeout: "500ms" } },
          ]),
        ),
      },
    ],
  });
  if (!r.ok) throw new Error(JSON.stringify(r.errors));
  return r.value;
}
/** `apps` services with the given endpoints; `own` gives each service its own addresses (10.<i>.x.y). */
const backends = (apps: number, ips: readonly string[], own = false): BackendSet =>
  Object.fromEntries(
    Array.from({ length: apps }, (_, i) => [
      `a${i}-s`,
      Object.fromEntries(ips.map((ip) => [own ? ip.replace(/^10\./, `10.${i}.`) : ip, { weight: 1 }])),
    ]),
  );

function setup(answer: (ip: string) => ProbeResult | Promise<ProbeResult>, concurrency?: number) {
  const clock = new FakeClock();
  const probes: string[] = [];
  const changes: Health[] = [];
  const warnings: string[] = [];
  const log = pino({ level: "info" }, { write: (line: string) => void warnings.push(line) });
  const checker = new HealthChecker({
    log,
    clock,
    random: () => 0.5,
    probe: (ip, port) => {
      probes.push(`${ip}:${port}`);
      return Promise.resolve(answer(ip));
    },
    onChange: (h) => changes.push(h),
    ...(concurrency !== undefined ? { concurrency } : {}),
  });
  return { clock, probes, changes, warnings, checker };
}
const pass = { ok: true, reason: "status 200" };
const refused = { ok: false, reason: "connection refused" };

describe("HealthChecker", () => {
  it("probes each distinct endpoint once per interval, however many routes share it", async () => {
    const { clock, probes, checker } = setup(() => pass);
    checker.follow(model(1000, 10), backends(10, ["10.0.1", "10.0.2"], true));
    expect(checker.targets).toBe(20);
    // Services that share addresses share probes too.
    const shared = setup(() => pass);
    shared.checker.follow(model(1000, 10), backends(10, ["10.0.0.1", "10.0.0.2"]));
    expect(shared.checker.targets).toBe(2);
    shared.checker.stop();
    await clock.advance(5000);
    expect(probes.length).toBe(20 * 5);
    checker.stop();
    expect(clock.pending).toBe(0);
  });

  it("takes a failing endpoint out after `unhealthy` probes, publishes and logs the change once", async () => {
    const { clock, changes, warnings, checker } = setup((ip) => (ip === "10.0.0.2" ? refused : pass));
    checker.follow(model(3, 1), backends(1, ["10.0.0.1", "10.0.0.2"]));
    await clock.advance(10_000);
    const down = [...checker.health].filter(([, h]) => h.state === "down");
    expect(down).toEqual([
      [
        "http /healthz 200-399 1000ms 500ms 2/3|10.0.0.2|80",
        { state: "down", since: new Date(2500).toISOString(), reason: "connection refused" },
      ],
    ]);
    expect(changes.filter((h) => [...h.values()].some((v) => v.state === "down")).length).toBeGreaterThan(0);
    expect(new Set(changes).size).toBe(changes.length);
    expect(warnings.filter((l) => l.includes("endpoint down by health check")).length).toBe(1);
    checker.stop();
  });

  it("a listener that throws is logged, and checking and publishing go on", async () => {
    const clock = new FakeClock();
    const lines: string[] = [];
    let calls = 0;
    let down = false;
    const checker = new HealthChecker({
      log: pino({ level: "info" }, { write: (line: string) => void lines.push(line) }),
      clock,
      random: () => 0.5,
      probe: () => Promise.resolve(down ? refused : pass),
      onChange: () => {
        calls++;
        throw new Error("listener broke");
      },
    });
    checker.follow(model(1, 1), backends(1, ["10.0.0.1"]));
    await clock.advance(4000);
    down = true;
    await clock.advance(6000);
    expect(calls).toBeGreaterThanOrEqual(2);
    expect(lines.filter((l) => l.includes("listener broke")).length).toBe(calls);
    expect([...checker.health.values()].map((h) => h.state)).toEqual(["down"]);
    checker.stop();
  });

  it("stops probing a removed endpoint and drops its verdict", async () => {
    const { clock, probes, checker } = setup(() => refused);
    checker.follow(model(1, 1), backends(1, ["10.0.0.1", "10.0.0.2"]));
    await clock.advance(4000);
    expect(checker.health.size).toBe(2);
    checker.follow(model(1, 1), backends(1, ["10.0.0.1"]));
    await clock.advance(1);
    expect([...checker.health.keys()].map((k) => k.split("|")[1])).toEqual(["10.0.0.1"]);
    const before = probes.filter((p) => p.startsWith("10.0.0.2")).length;
    await clock.advance(5000);
    expect(probes.filter((p) => p.startsWith("10.0.0.2")).length).toBe(before);
    checker.stop();
  });

  it("keeps at most `concurrency` probes in flight", async () => {
    let inFlight = 0;
    let most = 0;
    let open: () => void = () => undefined;
    let gate = new Promise<void>((r) => (open = r));
    const { clock, probes, checker } = setup(async () => {
      most = Math.max(most, ++inFlight);
      await gate;
      inFlight--;
      return pass;
    }, 3);
    checker.follow(model(10, 10), backends(10, ["10.0.1"], true));
    await clock.advance(600);
    expect([inFlight, probes.length]).toEqual([3, 3]);
    for (let i = 0; i < 10; i++) {
      open();
      gate = new Promise<void>((r) => (open = r));
      await settle();
    }
    expect([most, probes.length]).toEqual([3, 10]);
    checker.stop();
  });

  it("without a fixed cap lets in flight what the checks could hold at their timeouts, within bounds", async () => {
    let inFlight = 0;
    const { clock, checker } = setup(async () => {
      inFlight++;
      return new Promise<ProbeResult>(() => undefined);
    });
    // 200 endpoints probed every 1s with a 500ms timeout: 100 in flight if each probe took its timeout.
    checker.follow(model(200, 200), backends(200, ["10.0.1"], true));
    await clock.advance(600);
    expect([checker.targets, inFlight]).toEqual([200, 100]);
    checker.stop();
    const targets = (n: number, timeoutMs: number, intervalMs: number) =>
      Array.from({ length: n }, () => ({ check: { timeoutMs, intervalMs } }) as CheckTarget);
    expect(probeCap(targets(10, 1000, 2000))).toBe(MIN_CONCURRENCY);
    expect(probeCap(targets(300, 1000, 2000))).toBe(150);
    expect(probeCap(targets(10_000, 1000, 2000))).toBe(MAX_CONCURRENCY);
  });

  it("without a health_check block probes nothing", () => {
    const { checker, clock } = setup(() => pass);
    const r = parseServices({ servers: [{ domain_name: "x.test", routes: { "/": { app: "a0", service: "s" } } }] });
    if (r.ok) checker.follow(r.value, backends(1, ["10.0.0.1"]));
    expect([checker.targets, clock.pending]).toEqual([0, 0]);
  });
});
