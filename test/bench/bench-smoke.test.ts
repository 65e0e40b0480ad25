/**
 * The benchmark suite itself, run in `--quick` mode against the real components (nginx-lb's daemon, nginx, the
 * static backends, wrk): it must finish, clean up after itself, and write a report and raw figures that hold every
 * table with numbers in a sane range. Fixed values would only measure the machine, so none are checked.
 */
import { execFile } from "node:child_process";
import { existsSync } from "node:fs";
import { mkdtemp, readFile, readdir, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import type { Results } from "../../bench/report.js";

const ROOT = fileURLToPath(new URL("../..", import.meta.url));
let out = "";
let md = "";
let results: Results;
let stderr = "";

/** nginx and etcd processes whose prefix or data dir is a benchmark temp dir that no longer exists: leaked. */
async function leakedProcesses(): Promise<string[]> {
  const leaked: string[] = [];
  for (const pid of await readdir("/proc")) {
    if (!/^\d+$/.test(pid)) continue;
    const cmd = (await readFile(`/proc/${pid}/cmdline`, "utf8").catch(() => "")).split("\0").join(" ");
    const dir = /(\/tmp\/nginx-lb-bench-[^/ ]+)/.exec(cmd)?.[1];
    if (dir && /nginx|etcd|wrk/.test(cmd) && !existsSync(dir)) leaked.push(`${pid}: ${cmd}`);
  }
  return leaked;
}

beforeAll(async () => {
  out = await mkdtemp(join(tmpdir(), "nginx-lb-bench-smoke-"));
  await new Promise<void>((resolve, reject) => {
    execFile(
      process.execPath,
      ["--import", "tsx", join(ROOT, "bench/run.ts"), "--quick", "--out", out],
      { cwd: ROOT, timeout: 720_000, killSignal: "SIGINT", maxBuffer: 16 << 20 },
      (err, _stdout, err2) => {
        stderr = err2;
        if (err) reject(new Error(`bench --quick failed: ${err.message}\n${err2}`));
        else resolve();
      },
    );
  });
  md = await readFile(join(out, "BENCHMARKS.md"), "utf8");
  results = JSON.parse(await readFile(join(out, "latest.json"), "utf8")) as Results;
}, 730_000);

afterAll(async () => {
  if (out) await rm(out, { recursive: true, force: true });
});

const finitePositive = (x: number) => Number.isFinite(x) && x > 0;

describe("npm run bench -- --quick", () => {
  it("writes a report with the machine and a table per figure", () => {
    for (const heading of [
      "## Targets",
      "## 1. Convergence",
      "## 2. Bursts",
      "## 3. Scale",
      "## 4. Data plane",
      "## 5. Churn under load",
      "## 6. Crashes under load",
      "## 7. The cost of traffic figures",
      "## 8. Routing table in etcd",
      "## 10. Routes pushed vs rendered",
    ])
      expect(md).toContain(heading);
    // Cells are padded: the report is written as the repository's formatter would write it.
    expect(md).toMatch(/\| CPU +\| .+, \d+ cores +\|/);
    expect(md).toMatch(/\| nginx +\| \d+\.\d+\.\d+ +\|/);
    expect(md).toMatch(/\| node +\| v\d+/);
    expect(md).toContain("--quick");
    expect(stderr).toContain("wrote");
  });

  it("measures convergence for every mode, with sane times", () => {
    const conv = results.figures.convergence ?? [];
    expect(conv.length).toBe(results.modes.length * 2);
    for (const c of conv) {
      expect(c.timeouts).toBe(0);
      for (const s of [c.put, c.del]) {
        expect(s.n).toBeGreaterThan(0);
        expect(s.p50).toBeGreaterThanOrEqual(0);
        expect(s.p50).toBeLessThanOrEqual(s.p99);
        expect(s.p99).toBeLessThan(15_000);
      }
    }
  });

  it("counts reloads and lost changes of bursts", () => {
    const bursts = results.figures.bursts ?? [];
    expect(bursts.length).toBeGreaterThan(0);
    for (const b of bursts) {
      expect(b.lost).toBeGreaterThanOrEqual(0);
      expect(b.finalMs.n).toBe(b.bursts);
      if (b.mode === "reload") expect(b.reloads.min).toBeGreaterThanOrEqual(1);
      // Coalescing: far fewer reloads than changes.
      expect(b.reloads.max).toBeLessThan(b.changes / 2);
    }
  });

  it("records scale figures: render, nginx -t, reload, memory", () => {
    for (const s of results.figures.scale ?? []) {
      expect(s.error).toBeUndefined();
      expect(finitePositive(s.renderMs)).toBe(true);
      // Dynamic endpoints push routes by default: a routing change is a push (its time in "reload"), no nginx -t.
      if (s.mode === "reload") expect(finitePositive(s.reload.test)).toBe(true);
      else expect(s.reload.test).toBe(0);
      expect(finitePositive(s.reload.reload)).toBe(true);
      expect(s.controllerRssMiB).toBeGreaterThan(10);
      expect(s.controllerRssMiB).toBeLessThan(4096);
      expect(s.nginxRssMiB).toBeGreaterThan(1);
      expect(s.nginxProcesses).toBeGreaterThanOrEqual(2);
    }
    expect((results.figures.scale ?? []).length).toBe(results.modes.length * 2);
  });

  it("compares the data plane in one run: straight, nginx-lb, original style", () => {
    const dp = results.figures.dataPlane;
    expect(dp?.targets.length).toBe(results.modes.length + 2);
    for (const t of dp?.targets ?? []) {
      expect(finitePositive(t.rps)).toBe(true);
      expect(finitePositive(t.p99ms)).toBe(true);
      expect(t.backendConnsPer1k).toBeGreaterThanOrEqual(0);
    }
    // The original design's config reconnects to the backend for every request; that is what (c) stands for.
    const c = dp?.targets[dp.targets.length - 1];
    expect(c?.backendConnsPer1k).toBeGreaterThan(900);
    for (const r of dp?.ratios ?? []) for (const x of [...r.ba, ...r.bc]) expect(finitePositive(x)).toBe(true);
  });

  it("counts instructions per request for 7b and 10b, or says why not (valgrind missing)", () => {
    for (const [key, heading] of [
      ["trafficInstructions", "### 7b."],
      ["routerInstructions", "### 10b."],
    ] as const) {
      const f = results.figures[key];
      if (f === undefined) throw new Error(`no ${key} in latest.json`);
      if ("skipped" in f) {
        expect(md).toContain(f.skipped);
        continue;
      }
      expect(md).toContain(heading);
      expect(f.trials.map((t) => t.label).sort()).toEqual([...f.labels].sort());
      for (const t of f.trials) expect(finitePositive(t.perRequest)).toBe(true);
      for (const x of f.ratios) expect(finitePositive(x)).toBe(true);
    }
  });

  it("runs load through endpoint churn", () => {
    for (const c of results.figures.churn ?? []) {
      expect(c.ticks).toBeGreaterThan(5);
      expect(c.wrk.requests).toBeGreaterThan(100);
      expect(c.wrk.failed).toBeGreaterThanOrEqual(0);
    }
  });

  it("crashes the nginx master and the controller under load: no 5xx, and a dead controller costs nothing", () => {
    const crash = results.figures.crash ?? [];
    expect(crash.map((c) => `${c.mode} ${c.fault}`)).toEqual(
      results.modes.flatMap((m) => [`${m} nginx master`, `${m} controller`]),
    );
    for (const c of crash) {
      expect(c.error).toBeUndefined();
      expect(c.wrk.requests).toBeGreaterThan(100);
      expect(c.probes).toBeGreaterThan(10);
      // The new master starts with the last known sets: refused connections while none listens, never a 5xx.
      expect(c.any5xx).toBe(false);
      if (c.fault === "nginx master") {
        expect(c.orphansRetired).toBeGreaterThanOrEqual(1);
        expect(c.recoveredMs).toBeGreaterThan(0);
        expect(c.recoveredMs).toBeLessThan(15_000);
      } else {
        expect(c.adopted).toBe(true);
        expect(c.wrk.failed).toBe(0);
        expect(c.probesFailed).toBe(0);
      }
    }
  });

  it("measures routes pushed vs rendered: cold start, changes served, reloads, memory, requests/s", () => {
    const ro = results.figures.routes;
    const rows = ro?.rows ?? [];
    // Both routes modes at both sizes, whenever this build has dynamic endpoints (dynamic routes need them).
    expect(rows.length).toBe(results.modes.includes("dynamic") ? 4 : 0);
    for (const x of rows) {
      expect(x.error).toBeUndefined();
      expect(x.timeouts).toBe(0);
      expect(x.changeMs.n).toBe(x.changes);
      expect(x.changeMs.p50).toBeGreaterThan(0);
      expect(x.changeMs.p50).toBeLessThanOrEqual(x.changeMs.p99);
      expect(x.coldStartMs).toBeGreaterThan(x.cliLoadMs);
      expect(x.memoryBefore.rssMiB).toBeGreaterThan(1);
      expect(x.memoryAfter.processes).toBeGreaterThanOrEqual(2);
      // Every routing change reloads when routes are rendered; none does when they are pushed.
      if (x.routesMode === "reload") expect(x.reloads).toBeGreaterThanOrEqual(1);
      else expect(x.reloads).toBe(0);
    }
    if (rows.length > 0) {
      expect(ro?.throughput?.dynamic.rps).toBeGreaterThan(0);
      expect(ro?.throughput?.rendered.rps).toBeGreaterThan(0);
    }
  });

  it("leaves no nginx, etcd or wrk behind", async () => {
    expect(await leakedProcesses()).toEqual([]);
  });
});
