/**
 * Figure 7, the cost of traffic figures: requests/s and p99 with wrk through one route of the configuration a user
 * runs (`nginx-lb run` with its defaults: admin server on, traffic figures on) against the same with
 * `--no-traffic-log`, per endpoint mode, in one run. Trials alternate between the two (and swap order every round)
 * so drift on a shared machine hits both alike; the ratio is taken within a round.
 */
import { readFile } from "node:fs/promises";
import { join } from "node:path";
import type { Context } from "../lib/context.js";
import { startLb, type Lb, type Mode, type RouteSpec } from "../lib/lb.js";
import { createRegistry, type Registry } from "../lib/registry.js";
import { median } from "../lib/stats.js";
import { runWrk, type WrkResult } from "../lib/wrk.js";

const HOST = "traffic.bench.test";
const NAME = "tc-web";

export interface TrafficCostResult {
  readonly wrk: { threads: number; connections: number; seconds: number; rounds: number; workers: number };
  readonly modes: {
    readonly mode: Mode;
    /** How nginx reports traffic in this mode: counters in a shared dict (dynamic) or a record file (reload). */
    readonly how: string;
    readonly default: { rps: number; p99ms: number; failed: number; runs: WrkResult[] };
    readonly noTrafficLog: { rps: number; p99ms: number; failed: number; runs: WrkResult[] };
    /** default / no-traffic-log requests/s, per round. */
    readonly ratios: number[];
  }[];
}

const summary = (runs: WrkResult[]) => ({
  rps: Math.round(median(runs.map((r) => r.rps))),
  p99ms: median(runs.map((r) => r.p99ms)),
  failed: runs.reduce((s, r) => s + r.failed, 0),
  runs,
});

export async function trafficCost(ctx: Context): Promise<TrafficCostResult> {
  const rounds = ctx.quick ? 1 : 4;
  const seconds = ctx.quick ? 2 : 5;
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
      const on = await start([]);
      const off = await start(["--no-traffic-log"]);
      const conf = await readFile(join(on.stateDir, "nginx.conf"), "utf8");
      const how = conf.includes("nginx_lb_stats")
        ? "counters in nginx's shared dict"
        : conf.includes("traffic.jsonl")
          ? "a record file nginx appends to"
          : "none";
      const runs = { on: [] as WrkResult[], off: [] as WrkResult[] };
      const trial = async (which: "on" | "off", r: number) => {
        const lb = which === "on" ? on : off;
        ctx.log(`traffic cost (${mode}): round ${r + 1}/${rounds}, ${which === "on" ? "default" : "--no-traffic-log"}`);
        runs[which].push(await runWrk({ ...wrk, url: `http://127.0.0.1:${lb.port}/`, host: HOST }));
      };
      // Warm both (connections to the backend, Lua code) before anything is measured.
      await runWrk({ ...wrk, seconds: 1, url: `http://127.0.0.1:${on.port}/`, host: HOST });
      await runWrk({ ...wrk, seconds: 1, url: `http://127.0.0.1:${off.port}/`, host: HOST });
      for (let r = 0; r < rounds; r++)
        for (const which of r % 2 === 0 ? (["on", "off"] as const) : (["off", "on"] as const)) await trial(which, r);
      out.push({
        mode,
        how,
        default: summary(runs.on),
        noTrafficLog: summary(runs.off),
        ratios: runs.on.map((x, i) => x.rps / (runs.off[i]?.rps ?? NaN)),
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
