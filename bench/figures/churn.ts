/**
 * Figure 5, churn under load: wrk through one route for a fixed time while the route's endpoints change every
 * 100 ms (a sliding window over live static backends: each tick adds one and removes the oldest, so every
 * endpoint ever listed is up and any failure is the load balancer's). Failed requests, p99, and the reloads done.
 */
import type { Context } from "../lib/context.js";
import { probe } from "../lib/http.js";
import { startLb, type Lb, type Mode } from "../lib/lb.js";
import { sleep } from "../lib/procs.js";
import { createRegistry, type Registry } from "../lib/registry.js";
import { runWrk, type WrkResult } from "../lib/wrk.js";

const HOST = "churn.bench.test";
const NAME = "churn-web";
const TICK_MS = 100;
const WINDOW = 3;

export interface ChurnRow {
  readonly mode: Mode;
  readonly seconds: number;
  readonly ticks: number;
  readonly reloads: number;
  readonly wrk: WrkResult;
}

export async function churn(ctx: Context): Promise<ChurnRow[]> {
  const seconds = ctx.quick ? 2 : 20;
  const ips = ctx.backends.ips;
  const rows: ChurnRow[] = [];
  for (const mode of ctx.modes) {
    ctx.log(`churn: ${mode} mode, ${seconds} s, endpoints change every ${TICK_MS} ms`);
    let reg: Registry | null = null;
    let lb: Lb | null = null;
    try {
      reg = await createRegistry(ctx.registry);
      await reg.replace({ [NAME]: Object.fromEntries(ips.slice(0, WINDOW).map((ip) => [ip, { weight: 1 }])) });
      lb = await startLb({
        routes: [{ domain: HOST, prefix: "/", name: NAME, port: ctx.backends.port }],
        registry: reg,
        mode,
        workers: ctx.workers,
      });
      const port = lb.port;
      for (let i = 0; i < 100 && (await probe(port, HOST)).status !== 200; i++) await sleep(50);
      const from = lb.controller.lines.length;
      const load = runWrk({ url: `http://127.0.0.1:${port}/`, host: HOST, seconds, threads: 1, connections: 20 });
      let ticks = 0;
      const t0 = performance.now();
      // Bounded by count and by time; stops a little before wrk does so every change lands under load.
      for (let k = 0; k < seconds * (1000 / TICK_MS) - 5 && performance.now() - t0 < (seconds - 0.5) * 1000; k++) {
        const tickStart = performance.now();
        await reg.put(NAME, ips[(k + WINDOW) % ips.length] ?? "");
        await reg.del(NAME, ips[k % ips.length] ?? "");
        ticks++;
        await sleep(Math.max(0, TICK_MS - (performance.now() - tickStart)));
      }
      const wrk = await load;
      const reloads = lb.appliesSince(from).filter((l) => l["action"] === "reload").length;
      rows.push({ mode, seconds, ticks, reloads, wrk });
    } finally {
      await lb?.stop();
      await reg?.close();
    }
  }
  return rows;
}
