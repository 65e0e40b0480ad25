import { describe, expect, it } from "vitest";
import { fullCollection, IdleCollector } from "./idle-gc.js";

/** A clock whose time moves only when the test says. */
function fakeClock() {
  let now = 0;
  const timers = new Map<number, { at: number; fn: () => void }>();
  let next = 1;
  return {
    setTimeout: (fn: () => void, ms: number) => {
      const id = next++;
      timers.set(id, { at: now + ms, fn });
      return id;
    },
    clearTimeout: (id: unknown) => void timers.delete(id as number),
    advance(ms: number) {
      now += ms;
      for (const [id, t] of [...timers].sort((a, b) => a[1].at - b[1].at))
        if (t.at <= now) {
          timers.delete(id);
          t.fn();
        }
    },
  };
}

function setup(idleMs = 100) {
  const clock = fakeClock();
  let collections = 0;
  const c = new IdleCollector({ idleMs, clock, collect: () => collections++ });
  return { clock, c, collections: () => collections };
}

describe("IdleCollector", () => {
  it("collects once idleMs after a touch", () => {
    const { clock, c, collections } = setup();
    c.touch();
    clock.advance(99);
    expect(collections()).toBe(0);
    clock.advance(1);
    expect(collections()).toBe(1);
    clock.advance(1000);
    expect(collections()).toBe(1);
  });

  it("a touch inside the wait starts it over", () => {
    const { clock, c, collections } = setup();
    c.touch();
    clock.advance(80);
    c.touch();
    clock.advance(80);
    expect(collections()).toBe(0);
    clock.advance(20);
    expect(collections()).toBe(1);
  });

  it("collects again only after another touch", () => {
    const { clock, c, collections } = setup();
    c.touch();
    clock.advance(100);
    c.touch();
    clock.advance(100);
    expect(collections()).toBe(2);
  });

  it("never collects once stopped, whatever touches it", () => {
    const { clock, c, collections } = setup();
    c.touch();
    c.stop();
    c.touch();
    clock.advance(1000);
    expect(collections()).toBe(0);
  });
});

describe("fullCollection", () => {
  it("collects what nothing references any more", async () => {
    const gc = fullCollection();
    expect(gc).not.toBeNull();
    const ref = (() => new WeakRef({ big: new Array<number>(100_000).fill(1) }))();
    // A WeakRef keeps its target for the rest of the job that made or read it.
    await new Promise((r) => setImmediate(r));
    gc?.();
    await new Promise((r) => setImmediate(r));
    expect(ref.deref()).toBeUndefined();
  });
});
