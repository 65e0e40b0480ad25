/**
 * Figure 7, the cost of traffic figures: requests/s and p99 with wrk through one route of the configuration a user
 * runs (`nginx-lb run` with its defaults: admin server on, traffic figures on) against the same with
 * `--no-traffic-log`, per endpoint mode, in one run; in dynamic mode also with outlier ejection off, the other user of
 * nginx's log phase, so its cost shows beside. Trials alternate (the order rotates every round) so drift on a shared
 * machine hits every variant alike; ratios are taken within a round.
 */
import { readFile } from "node:fs/promises";
import { join } from "node:path";
import { trafficLogPath } from "../../src/admin/traffic.js";
import type { Context } from "../lib/context.js";
import { startLb, type Lb, type Mode, type RouteSpec } from "../lib/lb.js";
import { cpuUs } from "../lib/procs.js";
import { createRegistry, type Registry } from "../lib/registry.js";
import { median } from "../lib/stats.js";
import { runWrk, type WrkResult } from "../lib/wrk.js";

const HOST = "traffic.bench.test";
type Variant = "on" | "off" | "bare";
const BARE = ["--no-traffic-log", "--outlier-ejection", "off"];
const NAME = "tc-web";

export interface TrafficCostResult {
  readonly wrk: { threads: number; connections: number; seconds: number; rounds: number; workers: number };
  readonly modes: {
    readonly mode: Mode;
    /** How nginx reports traffic in this mode: counters in a shared dict (dynamic) or a record file (reload). */
    readonly how: string;
    readonly default: ReturnType<typeof summary>;
    readonly noTrafficLog: ReturnType<typeof summary>;
    /** default / no-traffic-log requests/s, per round. */
    readonly ratios: number[];
    /** Dynamic mode: `--no-traffic-log --outlier-ejection off` (no Lua in the log phase at all). */
    readonly bare?: ReturnType<typeof summary>;
    /** no-traffic-log / bare requests/s, per round: the cost of outlier ejection's log phase. */
    readonly outlierRatios?: number[];
  }[];
}

/** A trial: wrk's result and the CPU time nginx's workers and the controller spent on it, per request. */
export interface Trial extends WrkResult {
  readonly nginxCpuUsPerRequest: number;
  readonly controllerCpuUsPerRequest: number;
}

const summary = (runs: Trial[]) => ({
  rps: Math.round(median(runs.map((r) => r.rps))),
  p99ms: median(runs.map((r) => r.p99ms)),
  failed: runs.reduce((s, r) => s + r.failed, 0),
  nginxCpuUsPerRequest: median(runs.map((r) => r.nginxCpuUsPerRequest)),
  controllerCpuUsPerRequest: median(runs.map((r) => r.controllerCpuUsPerRequest)),
  runs,
});

async function nginxWorkers(lb: Lb): Promise<number[]> {
  const master = await lb.nginxPid();
  const children = await readFile(`/proc/${master}/task/${master}/children`, "utf8").catch(() => "");
  return children.trim().split(/\s+/).filter(Boolean).map(Number);
}

export async function trafficCost(ctx: Context): Promise<TrafficCostResult> {
  // Per round, requests/s on a shared two-core machine swing by more than the 5 % the ratio is judged by: many short
  // rounds give the median a chance that four long ones did not.
  const rounds = ctx.quick ? 1 : 10;
  const seconds = ctx.quick ? 2 : 3;
  const wrk = { threads: 2, connections: 64, seconds, rounds, workers: ctx.workers };
  const backend = ctx.backends.ips[0] ?? "";
  const route: RouteSpec = { domain: HOST, prefix: "/", name: NAME, port: ctx.backends.port };
  const out: TrafficCostResult["modes"][number][] = [];
  for (const mode of ctx.modes) {
    const started: { lb: Lb; reg: Registry }[] = [];
    try {
      const start = async (args: string[]) => {
        const reg = await createRegistry(ctx.registry);
        await reg.put(NAME, backend);
        const lb = await startLb({ routes: [route], registry: reg, mode, workers: ctx.workers, admin: true, args });
        started.push({ lb, reg });
        return lb;
      };
      const variants: { name: Variant; label: string; args: string[] }[] = [
        { name: "on", label: "default", args: [] },
        { name: "off", label: "--no-traffic-log", args: ["--no-traffic-log"] },
        ...(mode === "dynamic"
          ? [{ name: "bare" as const, label: "--no-traffic-log --outlier-ejection off", args: BARE }]
          : []),
      ];
      const lbs = new Map<Variant, Lb>();
      for (const v of variants) lbs.set(v.name, await start(v.args));
      const on = lbs.get("on") as Lb;
      const conf = await readFile(join(on.stateDir, "nginx.conf"), "utf8");
      const how = conf.includes("nginx_lb_stats")
        ? "counters in nginx's shared dict"
        : conf.includes(trafficLogPath(on.stateDir))
          ? "a record file nginx appends to"
          : "none";
      const runs: Record<Variant, Trial[]> = { on: [], off: [], bare: [] };
      const trial = async (v: (typeof variants)[number], r: number) => {
        const lb = lbs.get(v.name) as Lb;
        ctx.log(`traffic cost (${mode}): round ${r + 1}/${rounds}, ${v.label}`);
        const workers = await nginxWorkers(lb);
        const controller = lb.controller.child.pid ?? 0;
        const before = { nginx: await cpuUs(workers), controller: await cpuUs([controller]) };
        const res = await runWrk({ ...wrk, url: `http://127.0.0.1:${lb.port}/`, host: HOST });
        // The controller reads the counters once a second: let it read the last of them.
        await new Promise((r) => setTimeout(r, 1500));
        const n = Math.max(res.requests, 1);
        runs[v.name].push({
          ...res,
          nginxCpuUsPerRequest: ((await cpuUs(workers)) - before.nginx) / n,
          controllerCpuUsPerRequest: ((await cpuUs([controller])) - before.controller) / n,
        });
      };
      // Warm every variant (connections to the backend, Lua code) before anything is measured.
      for (const lb of lbs.values())
        await runWrk({ ...wrk, seconds: 1, url: `http://127.0.0.1:${lb.port}/`, host: HOST });
      for (let r = 0; r < rounds; r++)
        for (let i = 0; i < variants.length; i++) await trial(variants[(i + r) % variants.length] ?? variants[0]!, r);
      const ratio = (a: Trial[], b: Trial[]) => a.map((x, i) => x.rps / (b[i]?.rps ?? NaN));
      out.push({
        mode,
        how,
        default: summary(runs.on),
        noTrafficLog: summary(runs.off),
        ratios: ratio(runs.on, runs.off),
        ...(runs.bare.length > 0 ? { bare: summary(runs.bare), outlierRatios: ratio(runs.off, runs.bare) } : {}),
      });
    } finally {
      for (const { lb, reg } of started) {
        await lb.stop();
        await reg.close();
      }
    }
  }
  return { wrk, modes: out };
}
