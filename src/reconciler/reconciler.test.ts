import { Writable } from "node:stream";
import pino from "pino";
import { describe, expect, it } from "vitest";
import type { BackendSet } from "../model/backends.js";
import { parseServices, type Services } from "../model/services.js";
import type { Desired } from "../render/index.js";
import type { Applier, ApplyOutcome } from "./applier.js";
import type { Clock } from "./clock.js";
import { DEFAULT_SAVE_GAP_MS, MAX_RETRY_MS, Reconciler } from "./reconciler.js";
import { StatusStore } from "./status.js";
import type { Target } from "./target.js";

/** Timers that run only when the test advances time. */
class FakeClock implements Clock {
  t = 0;
  private timers: { at: number; id: number; fn: () => void }[] = [];
  private ids = 0;
  now = () => this.t;
  date = () => new Date(1_700_000_000_000 + this.t);
  setTimeout = (fn: () => void, ms: number) => {
    this.timers.push({ at: this.t + ms, id: ++this.ids, fn });
    return this.ids;
  };
  clearTimeout = (id: unknown) => {
    this.timers = this.timers.filter((t) => t.id !== id);
  };
  /** Moves time forward, firing due timers in order and letting the promises they start settle. */
  async advance(ms: number): Promise<void> {
    const end = this.t + ms;
    await settle();
    for (;;) {
      const next = [...this.timers].sort((a, b) => a.at - b.at || a.id - b.id)[0];
      if (!next || next.at > end) break;
      this.timers = this.timers.filter((t) => t !== next);
      this.t = next.at;
      next.fn();
      await settle();
    }
    this.t = end;
  }
}

const settle = async () => {
  for (let i = 0; i < 5; i++) await new Promise((r) => setImmediate(r));
};

const ok = (action: ApplyOutcome["action"] = "reload"): ApplyOutcome => ({
  result: "applied",
  action,
  generation: "g",
  ms: { test: 0, reload: 0, total: 0 },
});

/** The reconciler's interface to nginx, answering from a script; records what it was asked and when. */
class FakeApplier implements Applier {
  calls: { at: number; target: Target; force: boolean }[] = [];
  constructor(
    private readonly clock: FakeClock,
    public answer: (n: number) => Promise<ApplyOutcome> = async () => ok(),
  ) {}
  async apply(target: Target, force: boolean): Promise<ApplyOutcome> {
    this.calls.push({ at: this.clock.t, target, force });
    return this.answer(this.calls.length);
  }
  state() {
    return { running: true, pid: 1, generation: "g", pushedVersion: null };
  }
}

function model(): Services {
  const r = parseServices({ servers: [{ domain_name: "x.test", routes: { "/": { app: "a", service: "s" } } }] });
  if (!r.ok) throw new Error("invalid");
  return r.value;
}
function model2(): Services {
  const r = parseServices({
    servers: [
      { domain_name: "x.test", routes: { "/": { app: "a", service: "s" } } },
      { domain_name: "y.test", frontend_port: 8081, routes: { "/": { app: "a", service: "s" } } },
    ],
  });
  if (!r.ok) throw new Error("invalid");
  return r.value;
}
const backends = (ip: string): BackendSet => ({ "a-s": { [ip]: { weight: 1 } } });
const snap = (value: Services) => ({ value, warnings: [], connected: true, origin: "test" });

function setup(o: { debounceMs?: number; minGapMs?: number; persist?: (d: Desired) => Promise<void> } = {}) {
  const clock = new FakeClock();
  const applier = new FakeApplier(clock);
  const lines: { level: number; msg: string }[] = [];
  const log = pino(
    { level: "debug", base: undefined },
    new Writable({
      write(chunk: Buffer, _e, cb) {
        lines.push(JSON.parse(chunk.toString()) as { level: number; msg: string });
        cb();
      },
    }),
  );
  const status = new StatusStore("/x/services.json", "test", clock.date());
  const saved: Desired[] = [];
  const reconciler = new Reconciler({
    applier,
    persist: o.persist ?? (async (d) => void saved.push(d)),
    status,
    log,
    mode: "reload",
    renderOptions: { dir: "/tmp/nlb" },
    clock,
    debounceMs: o.debounceMs ?? 20,
    minGapMs: o.minGapMs ?? 250,
  });
  return { clock, applier, status, reconciler, saved, lines };
}

describe("Reconciler", () => {
  it("coalesces a burst into one apply of the latest state, then keeps the gap", async () => {
    const { clock, applier, reconciler, status } = setup();
    reconciler.setServices(snap(model()));
    reconciler.start();
    for (let i = 1; i <= 10; i++) reconciler.setBackends(backends(`10.0.0.${i}`), `put ${i}`);
    await clock.advance(19);
    expect(applier.calls).toHaveLength(0);
    await clock.advance(1);
    expect(applier.calls.map((c) => c.at)).toEqual([20]);
    expect(applier.calls[0]?.target.desired.backends).toEqual(backends("10.0.0.10"));
    expect(status.get().applies[0]?.reason).toContain("put 10");
    for (let i = 11; i <= 20; i++) reconciler.setBackends(backends(`10.0.0.${i}`), `put ${i}`);
    await clock.advance(1000);
    // The second burst waited for the minimum gap after the first apply.
    expect(applier.calls.map((c) => c.at)).toEqual([20, 270]);
    expect(applier.calls[1]?.target.desired.backends).toEqual(backends("10.0.0.20"));
    expect(status.get().services.valid).toBe(true);
  });

  it("retries an apply that may heal with a doubling backoff, capped, and resets it on success", async () => {
    const { clock, applier, reconciler, status } = setup({ debounceMs: 0, minGapMs: 0 });
    const failed: ApplyOutcome = { ...ok(), result: "failed", error: "writing: ENOSPC", retry: true };
    applier.answer = async (n) => (n <= 9 ? failed : ok());
    reconciler.setServices(snap(model()));
    reconciler.start();
    await clock.advance(60_000);
    const gaps = applier.calls.slice(1).map((c, i) => c.at - (applier.calls[i]?.at ?? 0));
    expect(gaps).toEqual([100, 200, 400, 800, 1600, 3200, 6400, MAX_RETRY_MS, MAX_RETRY_MS]);
    expect(status.get().applies[0]?.result).toBe("applied");
    expect(status.get().counters.failed).toBe(9);
    reconciler.setBackends(backends("10.0.0.1"), "put");
    await clock.advance(1);
    expect(applier.calls).toHaveLength(11);
  });

  it("retries routes nginx refused with no routes in force after 1 s, and sooner on the next change", async () => {
    const { clock, applier, reconciler } = setup({ debounceMs: 0, minGapMs: 0 });
    applier.answer = async (n) => (n === 1 ? { ...ok(), result: "failed", error: "nginx -t rejected" } : ok());
    reconciler.setServices(snap(model()));
    reconciler.start();
    await clock.advance(999);
    expect(applier.calls).toHaveLength(1);
    reconciler.setBackends(backends("10.0.0.1"), "put");
    await clock.advance(1);
    expect(applier.calls).toHaveLength(2);
    await clock.advance(60_000);
    expect(applier.calls).toHaveLength(2);
  });

  it("keeps a refused routing change pending: endpoints apply on the routes in force; a freed port heals it", async () => {
    const { clock, applier, reconciler, status, lines } = setup({ debounceMs: 0, minGapMs: 0 });
    const routesA = model();
    const routesB = model2();
    let held = true;
    const refusal = "nginx did not take the new config: bind() to 127.0.0.1:8081 failed (98: Address already in use)";
    applier.answer = async (n) => {
      const services = applier.calls[n - 1]?.target.desired.services;
      return services === routesB && held ? { ...ok(), result: "failed", error: refusal } : ok();
    };
    reconciler.setServices(snap(routesA));
    reconciler.start();
    await clock.advance(1);
    const t0 = clock.t;
    reconciler.setServices(snap(routesB));
    await clock.advance(1);
    // Refused, then the latest endpoints went out at once on the routes in force.
    expect(applier.calls.slice(1).map((c) => c.target.desired.services)).toEqual([routesB, routesA]);
    expect(status.get().services.pending).toMatchObject({ error: refusal });
    expect(status.get().applies[1]).toMatchObject({ result: "failed", error: refusal });
    expect(status.get().applies[0]).toMatchObject({ reason: expect.stringContaining("routes in force") as unknown });
    for (let i = 1; i <= 3; i++) {
      reconciler.setBackends(backends(`10.0.0.${i}`), `put ${i}`);
      await clock.advance(1);
      expect(applier.calls.at(-1)?.target.desired).toEqual({ services: routesA, backends: backends(`10.0.0.${i}`) });
    }
    await clock.advance(120_000);
    const tries = applier.calls.filter((c) => c.target.desired.services === routesB).map((c) => c.at - t0);
    const gaps = tries.slice(1).map((t, i) => t - (tries[i] ?? 0));
    expect(gaps.slice(0, 7)).toEqual([1000, 2000, 4000, 8000, 16_000, 30_000, 30_000]);
    expect(status.get().services.pending?.since).toBe(new Date(1_700_000_000_000 + t0).toISOString());
    expect(lines.filter((l) => l.msg.startsWith("apply failed: nginx refused the new routes"))).toHaveLength(1);
    expect(lines.filter((l) => l.msg.startsWith("apply failed: the previous config keeps serving"))).toEqual([]);
    held = false;
    await clock.advance(30_000);
    expect(applier.calls.at(-1)?.target.desired.services).toBe(routesB);
    expect(status.get().applies[0]).toMatchObject({ result: "applied", reason: "retry the pending routing change" });
    expect(status.get().services.pending).toBeUndefined();
    expect(status.get().topology?.servers.map((s) => s.domain)).toEqual(["x.test", "y.test"]);
    expect(lines.filter((l) => l.msg === "the pending routing change is in force now")).toHaveLength(1);
    const count = applier.calls.length;
    await clock.advance(120_000);
    expect(applier.calls).toHaveLength(count);
  });

  it("tries a new services file at once, whatever the backoff of a pending change", async () => {
    const { clock, applier, reconciler, status } = setup({ debounceMs: 0, minGapMs: 0 });
    const routesB = model2();
    applier.answer = async (n) =>
      applier.calls[n - 1]?.target.desired.services === routesB ? { ...ok(), result: "failed", error: "held" } : ok();
    reconciler.setServices(snap(model()));
    reconciler.start();
    await clock.advance(1);
    reconciler.setServices(snap(routesB));
    await clock.advance(20_000);
    expect(status.get().services.pending?.error).toBe("held");
    const count = applier.calls.length;
    const routesC = model();
    reconciler.setServices(snap(routesC));
    expect(status.get().services.pending).toBeUndefined();
    await clock.advance(1);
    expect(applier.calls.slice(count).map((c) => c.target.desired.services)).toEqual([routesC]);
    expect(status.get().applies[0]?.result).toBe("applied");
  });

  it("an adopted nginx without saved endpoints waits for a source of truth before the first apply", async () => {
    const { clock, applier, reconciler, status } = setup({ debounceMs: 0, minGapMs: 0 });
    reconciler.restore({}, true);
    reconciler.setServices(snap(model()));
    reconciler.request("nginx restarted");
    reconciler.start();
    await clock.advance(60_000);
    expect(applier.calls).toHaveLength(0);
    expect(status.get().waiting).toBe("waiting for the registry; nginx keeps serving what it had");
    reconciler.setRegistry("etcd", { value: backends("10.0.0.9"), warnings: [], connected: false, origin: "down" });
    await clock.advance(1000);
    expect(applier.calls).toHaveLength(0);
    reconciler.setRegistry("etcd", { value: backends("10.0.0.1"), warnings: [], connected: true, origin: "etcd" });
    await clock.advance(1);
    expect(applier.calls.map((c) => c.target.desired.backends)).toEqual([backends("10.0.0.1")]);
    expect(status.get().waiting).toBeUndefined();
  });

  it("an adopted nginx with saved endpoints does not wait", async () => {
    const { clock, applier, reconciler, status } = setup({ debounceMs: 0, minGapMs: 0 });
    reconciler.restore({ services: model(), backends: backends("10.0.0.1") }, true);
    reconciler.start();
    await clock.advance(1);
    expect(applier.calls).toHaveLength(1);
    expect(status.get().waiting).toBeUndefined();
  });

  it("records a throwing applier as a failed apply with the reason, and recovers by itself", async () => {
    const { clock, applier, reconciler, status, lines } = setup({ debounceMs: 0, minGapMs: 0 });
    applier.answer = async (n) => {
      if (n === 1) throw new Error("EROFS: read-only file system");
      return ok();
    };
    reconciler.setServices(snap(model()));
    reconciler.start();
    await clock.advance(1);
    expect(status.get().applies[0]).toMatchObject({
      result: "failed",
      reason: expect.stringContaining("services.json: test") as unknown,
      error: "apply failed: EROFS: read-only file system",
    });
    expect(status.get().nginx.lastError).toBe("apply failed: EROFS: read-only file system");
    expect(status.get().topology).toBeUndefined();
    await clock.advance(100);
    expect(status.get().applies[0]).toMatchObject({ result: "applied", reason: "retry after a failed apply" });
    expect(status.get().topology?.servers[0]?.routes[0]?.label).toBe("x.test:80/");
    expect(lines.filter((l) => l.msg.includes("a bug in nginx-lb"))).toEqual([]);
  });

  it("coalesces saves: one in flight, then only the latest, a save gap after it", async () => {
    const pending: (() => void)[] = [];
    const saved: Desired[] = [];
    const { clock, reconciler } = setup({
      debounceMs: 0,
      minGapMs: 0,
      persist: (d) =>
        new Promise<void>((r) =>
          pending.push(() => {
            saved.push(d);
            r();
          }),
        ),
    });
    reconciler.setServices(snap(model()));
    reconciler.start();
    await clock.advance(1);
    for (let i = 1; i <= 5; i++) {
      reconciler.setBackends(backends(`10.0.0.${i}`), `put ${i}`);
      await clock.advance(1);
    }
    expect(pending).toHaveLength(1);
    pending.shift()?.();
    await settle();
    // The latest waits out the gap after the save that just ended, however many changes came meanwhile.
    await clock.advance(DEFAULT_SAVE_GAP_MS - 1);
    expect(pending).toHaveLength(0);
    await clock.advance(1);
    expect(pending).toHaveLength(1);
    pending.shift()?.();
    await settle();
    await reconciler.idle();
    expect(saved.map((d) => d.backends)).toEqual([{}, backends("10.0.0.5")]);
  });

  it("saves the first change after a quiet spell at once, and on stop what the gap held back", async () => {
    const { clock, reconciler, saved } = setup({ debounceMs: 0, minGapMs: 0 });
    reconciler.setServices(snap(model()));
    reconciler.start();
    await clock.advance(1);
    expect(saved).toHaveLength(1);
    await clock.advance(DEFAULT_SAVE_GAP_MS);
    reconciler.setBackends(backends("10.0.0.1"), "put 1");
    await clock.advance(1);
    expect(saved.map((d) => d.backends)).toEqual([{}, backends("10.0.0.1")]);
    reconciler.setBackends(backends("10.0.0.2"), "put 2");
    await clock.advance(1);
    expect(saved).toHaveLength(2);
    reconciler.stop();
    await reconciler.idle();
    expect(saved.map((d) => d.backends)).toEqual([{}, backends("10.0.0.1"), backends("10.0.0.2")]);
  });

  it("reports a failing save in the status, logs it once, retries it, and keeps applying", async () => {
    let disk: "full" | "ok" = "full";
    const saved: Desired[] = [];
    const { clock, applier, reconciler, status, lines } = setup({
      debounceMs: 0,
      minGapMs: 0,
      persist: async (d) => {
        if (disk === "full") throw new Error("ENOSPC: no space left on device, write");
        saved.push(d);
      },
    });
    reconciler.setServices(snap(model()));
    reconciler.start();
    await clock.advance(1);
    expect(status.get().persist).toMatchObject({ ok: false, error: "ENOSPC: no space left on device, write" });
    const since = status.get().persist?.since;
    for (let i = 1; i <= 3; i++) {
      reconciler.setBackends(backends(`10.0.0.${i}`), `put ${i}`);
      await clock.advance(1000);
    }
    expect(applier.calls).toHaveLength(4);
    expect(status.get().counters.applied).toBe(4);
    expect(status.get().persist).toMatchObject({ ok: false, since });
    expect(lines.filter((l) => l.msg.startsWith("could not save state.json"))).toHaveLength(1);
    disk = "ok";
    await clock.advance(MAX_RETRY_MS);
    expect(saved.map((d) => d.backends)).toEqual([backends("10.0.0.3")]);
    expect(status.get().persist).toMatchObject({ ok: true });
    expect(lines.filter((l) => l.msg === "state.json saved again")).toHaveLength(1);
  });

  it.each([
    ["saves a start the stop cut short (nginx was given it)", true, 1],
    ["saves nothing of another apply a stop interrupted", false, 0],
  ])("%s", async (_, cutShort, expected) => {
    const { clock, applier, reconciler, saved } = setup({ debounceMs: 0, minGapMs: 0 });
    let release = () => {};
    applier.answer = () =>
      new Promise((resolve) => {
        release = () =>
          resolve({
            result: "failed",
            action: "start",
            generation: "g",
            error: "the controller is stopping",
            ...(cutShort ? { cutShort } : {}),
            ms: { test: 0, reload: 0, total: 0 },
          });
      });
    reconciler.setServices(snap(model()));
    reconciler.setBackends(backends("10.0.0.7"), "put");
    reconciler.start();
    await clock.advance(1);
    expect(applier.calls).toHaveLength(1);
    reconciler.stop();
    release();
    await settle();
    await reconciler.idle();
    expect(saved.map((d) => d.backends)).toEqual(expected ? [backends("10.0.0.7")] : []);
  });

  it("stops without waiting for a save that keeps failing", async () => {
    const { clock, reconciler } = setup({
      debounceMs: 0,
      minGapMs: 0,
      persist: () => Promise.reject(new Error("EROFS: read-only file system")),
    });
    reconciler.setServices(snap(model()));
    reconciler.start();
    await clock.advance(1);
    reconciler.stop();
    await reconciler.idle();
  });
});
