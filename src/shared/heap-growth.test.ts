import { spawnSync } from "node:child_process";
import { fileURLToPath } from "node:url";
import { describe, expect, it } from "vitest";
import { boundHeapGrowth } from "./heap-growth.js";

const MODULE = fileURLToPath(new URL("./heap-growth.ts", import.meta.url));

/**
 * A child process that holds a live set and churns garbage that lives long enough to reach the old generation (the
 * controller's pattern: a table kept, the previous change's text and compiled table dropped), printing its heap's
 * largest committed size in MiB. With `bound`, it calls the production boundHeapGrowth first.
 */
function peakHeapMiB(bound: boolean): number {
  const script = `
    ${bound ? `const { boundHeapGrowth } = await import(${JSON.stringify(MODULE)}); boundHeapGrowth();` : ""}
    const live = [];
    for (let i = 0; i < 400000; i++) live.push({ a: "live-" + i, b: i, c: [i] });
    let max = 0;
    const window = [];
    for (let round = 0; round < 300; round++) {
      const chunk = [];
      for (let i = 0; i < 20000; i++) chunk.push({ x: "g-" + round + "-" + i, y: i });
      window.push(chunk);
      if (window.length > 4) window.shift();
      max = Math.max(max, process.memoryUsage().heapTotal);
      if (round % 10 === 0) await new Promise((r) => setImmediate(r));
    }
    process.stdout.write(String(Math.round(max / 2 ** 20)) + " " + live.length);
  `;
  const out = spawnSync(process.execPath, ["--import", "tsx", "--input-type=module", "-e", script], {
    encoding: "utf8",
    timeout: 60_000,
  });
  expect(out.status, out.stderr).toBe(0);
  const [peak, live] = out.stdout.trim().split(" ").map(Number);
  expect(live).toBe(400_000);
  return peak ?? NaN;
}

describe("boundHeapGrowth", () => {
  it("keeps the heap's peak well below V8's default growth under the same churn", () => {
    const free = peakHeapMiB(false);
    const bounded = peakHeapMiB(true);
    // Under V8's default the heap here grows to several times its live set before a full collection.
    expect(bounded).toBeLessThan(free * 0.75);
  }, 120_000);

  it("refuses a percent V8 would misread", () => {
    expect(() => boundHeapGrowth(0)).toThrow(/1 to 300/);
    expect(() => boundHeapGrowth(1.5)).toThrow(/integer/);
  });
});
