/**
 * Figure 1, convergence: a registry write -> the first request answered by the new backend (put), and a delete ->
 * the last request answered by the removed one. The probe opens a new connection per request, back to back, so
 * the figure is what a new client sees, to within one probe (well under a millisecond on loopback).
 *
 * Each trial is a lone change: the previous one is fully applied and the controller has been quiet for a moment,
 * so the coalescing delay a lone change pays is in the figure and the burst protection (minimum gap between
 * applies) is not.
 */
import type { BackendSet } from "../../src/model/backends.js";
import { type Context, fillerEndpoints, round1 } from "../lib/context.js";
import { probe } from "../lib/http.js";
import { startLb, type Lb, type Mode, type RouteSpec } from "../lib/lb.js";
import { sleep } from "../lib/procs.js";
import { createRegistry, type Registry } from "../lib/registry.js";
import { median, summarize, type Summary } from "../lib/stats.js";

const HOST = "conv.bench.test";
const NAME = "conv-web";
/** A trial that has not converged by then counts as this long (and is reported as a timeout). */
const TRIAL_TIMEOUT_MS = 15_000;
/** And at most this many probes (a loopback probe takes well over 0.1 ms, so time bounds first). */
const MAX_PROBES = 150_000;
/**
 * Delete: the removed backend is gone once the controller logged the change (reload: old workers retired; dynamic:
 * nginx stored the set) and a probe after that was clean; or once MIN_CLEAN probes in a row and GONE_QUIET_MS passed
 * without it.
 * The probe alternates over both endpoints, so a gap that long does not happen while the old set still serves.
 */
const GONE_QUIET_MS = 250;
const MIN_CLEAN = 20;

export interface ConvergenceRow {
  readonly mode: Mode;
  readonly keys: number;
  readonly put: Summary;
  readonly del: Summary;
  readonly timeouts: number;
  /** The controller's own account of the applies in these trials (median ms), to explain the figure. */
  readonly applyMs: { render: number; test: number; reload: number; total: number } | null;
  readonly reloads: number;
  readonly raw: { put: number[]; del: number[]; warmup: { put: number; del: number } };
}

/** Registry content with `keys` keys in all: the probed route's one endpoint, and fillers 10 per route. */
function registryOf(keys: number, a: string): { set: BackendSet; routes: RouteSpec[] } {
  const routes: RouteSpec[] = [];
  const set: Record<string, Record<string, { weight: number }>> = { [NAME]: { [a]: { weight: 1 } } };
  const fillers = keys - 1;
  for (let i = 0; i * 10 < fillers; i++) {
    const name = `convfill${i}-web`;
    set[name] = fillerEndpoints(i, Math.min(10, fillers - i * 10));
    routes.push({ domain: `f${i}.conv.bench.test`, prefix: "/", name, port: 8080 });
  }
  return { set, routes };
}

/** The change is complete when the controller logs it: a reload once old workers retired, or a push nginx stored. */
async function waitApplied(lb: Lb, from: number): Promise<void> {
  const deadline = Date.now() + TRIAL_TIMEOUT_MS;
  while (lb.appliesSince(from).length === 0 && Date.now() < deadline) await sleep(10);
}

async function putTrial(lb: Lb, reg: Registry, b: string): Promise<number> {
  const t0 = performance.now();
  await reg.put(NAME, b);
  for (let i = 0; i < MAX_PROBES && performance.now() - t0 < TRIAL_TIMEOUT_MS; i++) {
    const r = await probe(lb.port, HOST);
    if (r.backend === b) return r.at - t0;
  }
  return NaN;
}

async function delTrial(lb: Lb, reg: Registry, b: string): Promise<number> {
  const from = lb.controller.lines.length;
  const t0 = performance.now();
  await reg.del(NAME, b);
  let last = t0;
  let clean = 0;
  for (let i = 0; i < MAX_PROBES && performance.now() - t0 < TRIAL_TIMEOUT_MS; i++) {
    const applied = lb.appliesSince(from).length > 0;
    const r = await probe(lb.port, HOST);
    if (r.backend === b) {
      last = r.at;
      clean = 0;
    } else if (r.status === 200) clean++;
    if ((applied && clean > 0) || (clean >= MIN_CLEAN && r.at - last >= GONE_QUIET_MS)) return last - t0;
  }
  return NaN;
}

export async function convergence(ctx: Context): Promise<ConvergenceRow[]> {
  const trials = ctx.quick ? 2 : 50;
  // The smoke run keeps the small size and shrinks the large one, so it stays well under a minute.
  const sizes = ctx.quick ? [10, 100] : [10, 10_000];
  const [a = "", b = ""] = ctx.backends.ips;
  const rows: ConvergenceRow[] = [];
  for (const mode of ctx.modes)
    for (const keys of sizes) {
      ctx.log(`convergence: ${mode} mode, ${keys} keys, ${trials} trials`);
      const { set, routes } = registryOf(keys, a);
      const reg = await createRegistry(ctx.registry);
      let lb: Lb | null = null;
      try {
        await reg.replace(set);
        lb = await startLb({
          routes: [{ domain: HOST, prefix: "/", name: NAME, port: ctx.backends.port }, ...routes],
          registry: reg,
          mode,
          workers: ctx.workers,
        });
        // One untimed change first: the first change after start pays one-off costs (JIT, the first connection
        // to the new backend, the first push), which a running load balancer has long paid. Kept in the raw data.
        await sleep(300);
        let from = lb.controller.lines.length;
        const warmPut = await putTrial(lb, reg, b);
        await waitApplied(lb, from);
        await sleep(300 + Math.random() * 100);
        from = lb.controller.lines.length;
        const warmDel = await delTrial(lb, reg, b);
        await waitApplied(lb, from);
        const first = lb.controller.lines.length;
        const put: number[] = [];
        const del: number[] = [];
        for (let t = 0; t < trials; t++) {
          // A lone change: the controller idle, and no phase lock with its timers.
          await sleep(300 + Math.random() * 100);
          from = lb.controller.lines.length;
          put.push(await putTrial(lb, reg, b));
          await waitApplied(lb, from);
          await sleep(300 + Math.random() * 100);
          from = lb.controller.lines.length;
          del.push(await delTrial(lb, reg, b));
          await waitApplied(lb, from);
        }
        const applies = lb.appliesSince(first);
        const ms = (k: string) => median(applies.map((l) => Number((l["ms"] as Record<string, number>)[k])));
        const ok = (xs: number[]) => xs.filter((x) => !Number.isNaN(x)).map(round1);
        rows.push({
          mode,
          keys,
          put: summarize(ok(put)),
          del: summarize(ok(del)),
          timeouts: [...put, ...del].filter((x) => Number.isNaN(x)).length,
          applyMs: applies.length
            ? { render: ms("render"), test: ms("test"), reload: ms("reload"), total: ms("total") }
            : null,
          reloads: applies.filter((l) => l["action"] === "reload").length,
          raw: { put: ok(put), del: ok(del), warmup: { put: round1(warmPut), del: round1(warmDel) } },
        });
      } finally {
        await lb?.stop();
        await reg.close();
      }
    }
  return rows;
}
