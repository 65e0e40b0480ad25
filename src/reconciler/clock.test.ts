import { describe, expect, test } from "vitest";
import { systemClock } from "./clock.js";

const tick = (ms: number) => new Promise((r) => setTimeout(r, ms));

describe("systemClock", () => {
  test("a wait of no time runs, before a timed one set first", async () => {
    const order: string[] = [];
    setTimeout(() => order.push("timer"), 20);
    systemClock.setTimeout(() => order.push("soon"), 0);
    await tick(60);
    expect(order).toEqual(["soon", "timer"]);
  });

  test("clearTimeout cancels a wait of no time and a timed one", async () => {
    const ran: number[] = [];
    const a = systemClock.setTimeout(() => ran.push(0), 0);
    const b = systemClock.setTimeout(() => ran.push(5), 5);
    systemClock.clearTimeout(a);
    systemClock.clearTimeout(b);
    systemClock.setTimeout(() => ran.push(1), 1);
    await tick(30);
    expect(ran).toEqual([1]);
  });
});
