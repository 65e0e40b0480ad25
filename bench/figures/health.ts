/**
 * Figure 9, endpoint health: what active health checks cost and what they save, per endpoint mode, in one run.
 *
 * 1. Checks' cost on the data plane: wrk through one route of four healthy endpoints, `nginx-lb run` with its
 *    defaults against the same route with `health_check` on, trials alternating within rounds (as figure 7).
 * 2. One endpoint of four hangs (accepts, never answers): a bounded loop of timed requests from the moment it starts
 *    to hang says how long clients still wait on it (with checks, until the verdict is applied; without, for good),
 *    then wrk through the route with the endpoint still hung.
 * 3. Probe cost: the controller's CPU per second with checks on for many distinct endpoints (routes x 10, each
 *    endpoint its own ip:port on a static nginx that answers 200) against the same routes without checks.
 */
import { Agent } from "node:http";
import { loopbackIps, startBackends, type BackendPool } from "../../test/helpers/backends.js";
import { load, type Sample } from "../../test/helpers/load.js";
import type { BackendSet } from "../../src/model/backends.js";
import type { Context } from "../lib/context.js";
import { startLb, type Lb, type Mode, type RouteSpec } from "../lib/lb.js";
import { cpuUs, memoryOf, sleep } from "../lib/procs.js";
import { createRegistry, type Registry } from "../lib/registry.js";
import { startListeners, type Listeners } from "../lib/static-nginx.js";
import { median, percentile } from "../lib/stats.js";
import { runWrk, type WrkResult } from "../lib/wrk.js";

const HOST = "health.bench.test";
/** The check of figures 1 and 2: probes a second apart, the rest the defaults (timeout 1s, 3 failures, 2 passes). */
export const CHECK = { interval: "1s" } as const;
const CHECK_INTERVAL_MS = 1000;
/** Figure 3 checks with `"health_check": {}`: the schema's default interval, 2 s. */
export const PROBE_INTERVAL_S = 2;
const HEALTHY = "hb-web";
const HANGING = "hb-hang";
/** The hung endpoint's own loopback address, past the ten static backends' (127.0.0.2 .. 127.0.0.11). */
const HUNG_IP = "127.0.0.12";
/** Per-request deadline of the loop, the same as wrk's `--timeout` (bench/lib/wrk.ts). */
const REQUEST_TIMEOUT_MS = 2000;
/** A request slower than this many times the healthy p99 waited on the hung endpoint. */
const SLOW_FACTOR = 10;
/** The loop starts a request this often whatever the ones in flight do, so a hung one delays no later start. */
const LOOP_EVERY_MS = 10;
/** At most this many requests of the loop in flight (far above what 2 s of hung requests at that pace hold). */
const LOOP_IN_FLIGHT = 512;

export type Variant = "off" | "on";

interface WrkSummary {
  readonly rps: number;
  readonly p99ms: number;
  readonly failed: number;
  readonly runs: WrkResult[];
}

/** One endpoint hanging, from the moment it started to. Times in ms after that moment; NaN when it did not happen. */
export interface HangTrial {
  /** p99 of the loop's requests just before the hang (all four endpoints answering). */
  readonly healthyP99Ms: number;
  /** `SLOW_FACTOR` x healthyP99Ms: a request slower than this waited on the hung endpoint. */
  readonly slowMs: number;
  /** The controller's "endpoint down by health check" log line for the hung endpoint. */
  readonly verdictMs: number;
  /** Start of the last request that took longer than `slowMs`. */
  readonly lastSlowMs: number;
  /** Start of the last request that timed out (it waited the whole deadline). */
  readonly lastTimeoutMs: number;
  readonly loopMs: number;
  readonly loopRequests: number;
  readonly loopTimedOut: number;
  readonly loopFailed: number;
  /** The last slow request started within a deadline of the loop's end: clients were still waiting when it ended. */
  readonly stillWaiting: boolean;
  /** wrk right after the loop, the endpoint still hung. */
  readonly wrk: WrkResult;
}

export interface ProbeCost {
  readonly variant: Variant;
  readonly routes: number;
  readonly endpoints: number;
  readonly seconds: number;
  /** Controller CPU time (user + system) per second of wall time, in ms. */
  readonly cpuMsPerS: number;
  /** Connections the endpoints accepted per second: the probes (nothing else connects to them). */
  readonly probesPerS: number;
  readonly controllerRssMiB: number;
  /** Endpoints the controller logged as down by check over the whole run (all of them answer 200). */
  readonly downs: number;
  readonly error?: string;
}

export interface HealthRow {
  readonly mode: Mode;
  readonly healthy: { readonly off: WrkSummary; readonly on: WrkSummary; readonly ratios: number[] };
  readonly hung: { readonly off: HangTrial[]; readonly on: HangTrial[] };
  readonly probeCost: ProbeCost[];
}

export interface HealthResult {
  readonly wrk: { threads: number; connections: number; seconds: number; rounds: number; workers: number };
  readonly hang: { rounds: number; loopMs: number; everyMs: number; timeoutMs: number; slowFactor: number };
  readonly probe: { routes: number; endpointsPerRoute: number; seconds: number; settleS: number };
  readonly modes: HealthRow[];
}

const summary = (runs: WrkResult[]): WrkSummary => ({
  rps: Math.round(median(runs.map((r) => r.rps))),
  p99ms: median(runs.map((r) => r.p99ms)),
  failed: runs.reduce((s, r) => s + r.failed, 0),
  runs,
});

/** Every line the controller logged about this endpoint matching `re`. */
const logged = (lb: Lb, re: RegExp, endpoint: string) =>
  lb.controller.find(re).filter((l) => l["endpoint"] === endpoint);

/** Waits (bounded) until the checked controller has seen the endpoint come back as often as it saw it go. */
async function untilBackIn(lb: Lb, endpoint: string, ms: number): Promise<void> {
  const deadline = Date.now() + ms;
  while (
    logged(lb, /endpoint down by health check/, endpoint).length >
      logged(lb, /endpoint up again by health check/, endpoint).length &&
    Date.now() < deadline
  )
    await sleep(100);
}

/** The bounded request loop of `ms` through the route, every request timed. */
async function timedLoop(url: string, ms: number, agent: Agent): Promise<Sample[]> {
  const l = load(url, {
    host: HOST,
    count: 100_000,
    concurrency: LOOP_IN_FLIGHT,
    everyMs: LOOP_EVERY_MS,
    maxMs: ms,
    timeoutMs: REQUEST_TIMEOUT_MS,
    agent,
  });
  await l.finished;
  return l.samples;
}

/** One hang trial on one instance: healthy baseline, hang, timed loop, wrk, and the endpoint answering again. */
async function hangTrial(
  ctx: Context,
  lb: Lb,
  hung: BackendPool,
  wrk: { threads: number; connections: number; seconds: number },
  loopMs: number,
): Promise<HangTrial> {
  const url = `http://127.0.0.1:${lb.port}/hang`;
  const endpoint = `${HUNG_IP}:${ctx.backends.port}`;
  const agent = new Agent({ keepAlive: true });
  try {
    const baseline = await timedLoop(url, ctx.quick ? 1000 : 2000, agent);
    const healthyP99Ms = percentile(
      baseline.map((s) => s.ms),
      99,
    );
    const slowMs = SLOW_FACTOR * healthyP99Ms;
    const downsBefore = logged(lb, /endpoint down by health check/, endpoint).length;
    const hungAt = performance.now();
    const hungAtWall = Date.now();
    hung.get(HUNG_IP).setCheck("hang-all");
    const samples = await timedLoop(url, loopMs, agent);
    const res = await runWrk({ ...wrk, url, host: HOST });
    const verdict = logged(lb, /endpoint down by health check/, endpoint)[downsBefore];
    const after = (xs: Sample[]) => (xs.length > 0 ? Math.max(...xs.map((s) => s.start)) - hungAt : NaN);
    const lastSlowMs = after(samples.filter((s) => s.ms > slowMs));
    return {
      healthyP99Ms,
      slowMs,
      verdictMs: verdict ? Date.parse(String(verdict["time"])) - hungAtWall : NaN,
      lastSlowMs,
      lastTimeoutMs: after(samples.filter((s) => s.outcome === "timeout")),
      loopMs,
      loopRequests: samples.length,
      loopTimedOut: samples.filter((s) => s.outcome === "timeout").length,
      loopFailed: samples.filter((s) => s.outcome === "failed").length,
      stillWaiting: lastSlowMs > loopMs - REQUEST_TIMEOUT_MS,
      wrk: res,
    };
  } finally {
    hung.get(HUNG_IP).setCheck("ok");
    agent.destroy();
  }
}

/** Figures 1 and 2 in one mode: two instances (checks off and on) running at once, each with both routes. */
async function dataPlane(
  ctx: Context,
  mode: Mode,
  hung: BackendPool,
  wrk: HealthResult["wrk"],
  hang: HealthResult["hang"],
): Promise<Pick<HealthRow, "healthy" | "hung">> {
  const ips = ctx.backends.ips;
  const set: BackendSet = {
    [HEALTHY]: Object.fromEntries(ips.slice(0, 4).map((ip) => [ip, { weight: 1 }])),
    [HANGING]: Object.fromEntries([...ips.slice(4, 7), HUNG_IP].map((ip) => [ip, { weight: 1 }])),
  };
  const routes = (checked: boolean): RouteSpec[] =>
    [
      { prefix: "/", name: HEALTHY },
      { prefix: "/hang", name: HANGING },
    ].map((r) => ({ ...r, domain: HOST, port: ctx.backends.port, ...(checked ? { healthCheck: CHECK } : {}) }));
  const started: { lb: Lb; reg: Registry }[] = [];
  try {
    const lbs = {} as Record<Variant, Lb>;
    for (const v of ["off", "on"] as const) {
      const reg = await createRegistry(ctx.registry);
      await reg.replace(set);
      const lb = await startLb({ routes: routes(v === "on"), registry: reg, mode, workers: ctx.workers, admin: true });
      started.push({ lb, reg });
      lbs[v] = lb;
    }
    // Warm both (connections to the backends, Lua code); the checked one has probed every endpoint by the end.
    for (const lb of Object.values(lbs))
      await runWrk({ ...wrk, seconds: 1, url: `http://127.0.0.1:${lb.port}/`, host: HOST });
    await sleep(2 * CHECK_INTERVAL_MS);
    const order = (r: number): Variant[] => (r % 2 === 0 ? ["off", "on"] : ["on", "off"]);

    const healthy: Record<Variant, WrkResult[]> = { off: [], on: [] };
    for (let r = 0; r < wrk.rounds; r++)
      for (const v of order(r)) {
        ctx.log(`health (${mode}): four healthy endpoints, round ${r + 1}/${wrk.rounds}, checks ${v}`);
        healthy[v].push(await runWrk({ ...wrk, url: `http://127.0.0.1:${lbs[v].port}/`, host: HOST }));
      }

    const hungRuns: Record<Variant, HangTrial[]> = { off: [], on: [] };
    const endpoint = `${HUNG_IP}:${ctx.backends.port}`;
    for (let r = 0; r < hang.rounds; r++)
      for (const v of order(r)) {
        // The checked instance must have the endpoint back in before a trial starts (it saw every earlier hang).
        await untilBackIn(lbs.on, endpoint, 15_000);
        await sleep(1000);
        ctx.log(`health (${mode}): one endpoint of four hangs, round ${r + 1}/${hang.rounds}, checks ${v}`);
        hungRuns[v].push(await hangTrial(ctx, lbs[v], hung, wrk, hang.loopMs));
      }
    const ratios = healthy.on.map((x, i) => x.rps / (healthy.off[i]?.rps ?? NaN));
    return { healthy: { off: summary(healthy.off), on: summary(healthy.on), ratios }, hung: hungRuns };
  } finally {
    for (const { lb, reg } of started) {
      await lb.stop();
      await reg.close();
    }
  }
}

/** Figure 3 in one mode: one instance at a time over the same routes, without checks and then with them. */
async function probeCost(
  ctx: Context,
  mode: Mode,
  listeners: Listeners,
  probe: HealthResult["probe"],
): Promise<ProbeCost[]> {
  const routes: RouteSpec[] = listeners.ports.map((port, i) => ({
    domain: `p${Math.floor(i / 10)}.health.bench.test`,
    prefix: i % 10 ? `/r${i % 10}` : "/",
    name: `hp${i}-web`,
    port,
  }));
  const set: BackendSet = Object.fromEntries(
    routes.map((r) => [r.name, Object.fromEntries(listeners.ips.map((ip) => [ip, { weight: 1 }]))]),
  );
  const out: ProbeCost[] = [];
  for (const variant of ["off", "on"] as const) {
    const base = { variant, routes: routes.length, endpoints: routes.length * listeners.ips.length, seconds: 0 };
    let reg: Registry | null = null;
    let lb: Lb | null = null;
    try {
      ctx.log(`health (${mode}): probe cost, ${base.endpoints} endpoints, checks ${variant}`);
      reg = await createRegistry(ctx.registry);
      await reg.replace(set);
      // The defaults: `"health_check": {}` (interval 2s, timeout 1s).
      const checked = routes.map((r) => (variant === "on" ? { ...r, healthCheck: {} } : r));
      lb = await startLb({ routes: checked, registry: reg, mode, workers: ctx.workers, admin: true });
      // Let the first probes (spread over an interval) and the applies they cause pass.
      await sleep(probe.settleS * 1000);
      const pid = lb.controller.child.pid ?? 0;
      const [cpu0, acc0, t0] = [await cpuUs([pid]), await listeners.accepted(), performance.now()];
      await sleep(probe.seconds * 1000);
      const [cpu1, acc1, t1] = [await cpuUs([pid]), await listeners.accepted(), performance.now()];
      const s = (t1 - t0) / 1000;
      out.push({
        ...base,
        seconds: s,
        cpuMsPerS: (cpu1 - cpu0) / 1000 / s,
        probesPerS: (acc1 - acc0) / s,
        controllerRssMiB: (await memoryOf(pid)).rss,
        downs: lb.controller.find(/endpoint down by health check/).length,
      });
    } catch (e) {
      out.push({ ...failedCost(variant, probe, String(e)), ...base });
    } finally {
      await lb?.stop();
      await reg?.close();
    }
  }
  return out;
}

function failedCost(variant: Variant, probe: HealthResult["probe"], error: string): ProbeCost {
  const [routes, endpoints] = [probe.routes, probe.routes * probe.endpointsPerRoute];
  return {
    variant,
    routes,
    endpoints,
    seconds: 0,
    cpuMsPerS: NaN,
    probesPerS: NaN,
    controllerRssMiB: NaN,
    downs: 0,
    error,
  };
}

export async function health(ctx: Context): Promise<HealthResult> {
  const wrk = {
    threads: 2,
    connections: 64,
    seconds: ctx.quick ? 2 : 5,
    rounds: ctx.quick ? 1 : 4,
    workers: ctx.workers,
  };
  const hang = {
    rounds: ctx.quick ? 1 : 2,
    loopMs: ctx.quick ? 6000 : 15_000,
    everyMs: LOOP_EVERY_MS,
    timeoutMs: REQUEST_TIMEOUT_MS,
    slowFactor: SLOW_FACTOR,
  };
  // routes x 10 endpoints, each its own ip:port: 10,000 in a full run.
  const probe = {
    routes: ctx.quick ? 10 : 1000,
    endpointsPerRoute: 10,
    seconds: ctx.quick ? 3 : 20,
    settleS: ctx.quick ? 2 : 8,
  };
  // The hung endpoint: an echo backend on its own address and the static backends' port, answering until told to hang.
  const hung = await startBackends([HUNG_IP], { port: ctx.backends.port });
  // A failure here fails figure 3 only (its rows say why); figures 1 and 2 go on.
  const listeners: Listeners | string = await startListeners(
    loopbackIps(probe.endpointsPerRoute, 1).map(toProbeIp),
    probe.routes,
  ).catch((e: unknown) => String(e));
  try {
    const modes: HealthRow[] = [];
    for (const mode of ctx.modes) {
      const dp = await dataPlane(ctx, mode, hung, wrk, hang);
      const cost =
        typeof listeners === "string"
          ? (["off", "on"] as const).map((variant) => failedCost(variant, probe, listeners))
          : await probeCost(ctx, mode, listeners, probe);
      modes.push({ mode, ...dp, probeCost: cost });
    }
    return { wrk, hang, probe, modes };
  } finally {
    await hung.close();
    if (typeof listeners !== "string") await listeners.nginx.stop();
  }
}

/** 127.0.0.n -> 127.0.100.n: the probe-cost endpoints' own addresses, apart from every other backend's. */
const toProbeIp = (ip: string) => ip.replace(/^127\.0\.0\./, "127.0.100.");
