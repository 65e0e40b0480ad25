/**
 * Figure 10, routes pushed vs rendered: the real `nginx-lb run` in both routes modes (`--routes-mode dynamic` and
 * `reload`, dynamic endpoints in both), in one run, on the suite's registry:
 *  - at a small and a large table (N sites of one route each, x 10 endpoints): cold start (controller start -> the
 *    last site of the table answers), then routing changes (a new site written to services.json, as a config centre
 *    does) -> that site's first request served, and the reloads they cost;
 *  - nginx's memory (master + workers, RSS and PSS) once the table is served, after a warm-up of as many changes (routes
 *    pushed), and after the changes;
 *  - requests/s through one live site routed by the Lua router against the same site rendered, trials alternating.
 * bench/routes.ts runs the same functions from the command line.
 */
import { rename, writeFile } from "node:fs/promises";
import type { LogLine } from "../../test/helpers/controller.js";
import type { BackendSet } from "../../src/model/backends.js";
import { type Context, fillerEndpoints, round1 } from "../lib/context.js";
import { collectGarbage } from "../lib/collect.js";
import { probe } from "../lib/http.js";
import { servicesJson, startLb, type Lb, type Mode, type RouteSpec } from "../lib/lb.js";
import { childPids, memoryOf, sleep } from "../lib/procs.js";
import { createRegistry, type Registry } from "../lib/registry.js";
import { median, percentile, summarize, type Summary } from "../lib/stats.js";
import { runWrk, type WrkResult } from "../lib/wrk.js";

export const LAST_HOST = "last.bench.test";
const LIVE = "live-web";
/** A lone change waits neither for the reconciler's minimum gap between reload applies (250 ms) nor its debounce. */
export const QUIET_MS = 300;
/** How long the controller is left without a change before its idle RSS is read. */
export const IDLE_MS = 15_000;

/** A process's RSS (MiB) after IDLE_MS. */
async function rssIdle(pid: number): Promise<number> {
  await sleep(IDLE_MS);
  return round1((await memoryOf(pid)).rss);
}
const CHANGE_TIMEOUT_MS = 60_000;
const SERVE_TIMEOUT_MS = 120_000;

export interface NginxMemory {
  readonly rssMiB: number;
  readonly pssMiB: number;
  readonly processes: number;
}

export interface RoutesRow {
  readonly routesMode: Mode;
  readonly sites: number;
  readonly endpoints: number;
  /** The controller spawned -> the table's last site (its key written last too) answers, ms. */
  readonly coldStartMs: number;
  /**
   * Of the cold start: spawn -> the controller's first log line (node loading the compiled CLI as a user runs it, or
   * the sources through tsx with NGINX_LB_BENCH_TSX=1: bench/lib/build.ts).
   */
  readonly cliLoadMs: number;
  /** Of the cold start: spawn -> the controller's first successful apply ("nginx started"), and its own account. */
  readonly startedAtMs: number;
  readonly startApply: {
    readonly render: number;
    readonly test: number;
    readonly reload: number;
    readonly total: number;
  };
  /** Routing changes made (each one new site, the previous change's site gone). */
  readonly changes: number;
  /** Per served change: services.json written -> the new site's first request answered, ms. */
  readonly changeMs: Summary;
  /** Changes not served within a minute. */
  readonly timeouts: number;
  /** "config applied" with action reload over the changes. */
  readonly reloads: number;
  /** The controller's own account of its applies over the changes (compile, nginx -t, reload or push, total). */
  readonly apply: {
    readonly n: number;
    readonly render: number;
    readonly test: number;
    readonly reload: number;
    readonly totalP50: number;
    readonly totalP99: number;
  };
  /**
   * Changes made before the measured ones (routes pushed): each worker first touches the pages of the shared dict
   * holding the table (RSS counts a shared page in every process that touched it) and writes to the Lua heap pages it
   * shares with the master, then stays put. The growth target is over the measured changes, after these.
   */
  readonly warmupChanges: number;
  /** nginx (master + current workers) once the table is served, after the warm-up, and after the changes. */
  readonly memoryBefore: NginxMemory;
  readonly memoryWarm: NginxMemory;
  readonly memoryAfter: NginxMemory;
  /** Right after the last change (and QUIET_MS). */
  readonly controllerRssMiB: number;
  /** After IDLE_MS more with no change: what an operator reads between changes (V8 collects an idle heap). */
  readonly controllerRssIdleMiB: number;
  readonly error?: string;
}

export interface RoutesThroughput {
  readonly wrk: { threads: number; connections: number; seconds: number; rounds: number; workers: number };
  readonly sites: number;
  readonly dynamic: ThroughputSummary;
  readonly rendered: ThroughputSummary;
  /** dynamic / rendered requests/s, per round. */
  readonly ratios: number[];
}

export interface ThroughputSummary {
  readonly rps: number;
  readonly p99ms: number;
  readonly failed: number;
  readonly runs: WrkResult[];
}

export interface RoutesResult {
  readonly rows: RoutesRow[];
  readonly throughput?: RoutesThroughput;
  /** Why a part was not measured (e.g. this build has no dynamic endpoints, which dynamic routes need). */
  readonly notes: string[];
}

/** services.json's text as test/helpers/controller.ts `writeServices` writes it. */
function servicesText(routes: readonly RouteSpec[], port: number): string {
  return JSON.stringify({ version: "0.1", servers: servicesJson(routes, port) }, null, 2);
}

/** How many changes each run makes: dynamic routes 100 (the memory figure's count), reloads fewer where slow. */
export function changesFor(routesMode: Mode, sites: number, quick: boolean): number {
  if (routesMode === "dynamic") return quick ? 10 : 100;
  // Each reload at 10,000 sites costs seconds: a few are enough for the point.
  if (sites >= 1000) return quick ? 1 : 3;
  return quick ? 3 : 20;
}

/** Warm-up changes before the measured ones: routes pushed as many as measured, none for reloads (new workers each). */
export function warmupFor(routesMode: Mode, sites: number, quick: boolean): number {
  return routesMode === "dynamic" ? changesFor(routesMode, sites, quick) : 0;
}

/** N sites of one route each, 10 filler endpoints per site; the last site (its key last in the registry) answers. */
export function routesTable(n: number, live: { ip: string; port: number }): { routes: RouteSpec[]; set: BackendSet } {
  const routes: RouteSpec[] = [];
  const set: Record<string, Record<string, { weight: number }>> = {};
  for (let i = 0; i < n - 1; i++) {
    routes.push({ domain: `s${i}.bench.test`, prefix: "/", name: `s${i}-web`, port: 8080 });
    set[`s${i}-web`] = fillerEndpoints(i, 10);
  }
  routes.push({ domain: LAST_HOST, prefix: "/", name: LIVE, port: live.port });
  set[LIVE] = { [live.ip]: { weight: 1 } };
  return { routes, set };
}

async function until(fn: () => Promise<boolean>, timeoutMs: number): Promise<boolean> {
  const deadline = performance.now() + timeoutMs;
  while (performance.now() < deadline) {
    if (await fn()) return true;
    await sleep(2);
  }
  return false;
}

/** nginx's master and its current workers; old workers of a reload are waited out (up to 30 s) first. */
async function nginxMemory(lb: Lb, workers: number): Promise<NginxMemory> {
  const master = await lb.nginxPid();
  let children = await childPids(master);
  for (let i = 0; i < 300 && children.length > workers; i++) {
    await sleep(100);
    children = await childPids(master);
  }
  const mem = (await Promise.all([master, ...children].map(memoryOf))).filter((m) => Number.isFinite(m.rss));
  return {
    rssMiB: round1(mem.reduce((s, m) => s + m.rss, 0)),
    pssMiB: round1(mem.reduce((s, m) => s + m.pss, 0)),
    processes: mem.length,
  };
}

const NO_MEMORY: NginxMemory = { rssMiB: NaN, pssMiB: NaN, processes: 0 };

export interface RoutesRunOptions {
  readonly registry: Registry;
  readonly routesMode: Mode;
  readonly sites: number;
  readonly changes: number;
  /** Changes made (not measured) between the first memory reading and the second; default none. */
  readonly warmup?: number;
  readonly workers: number;
  readonly live: { ip: string; port: number };
  /** Leave the instance running (when it served) for the caller to measure more and stop. */
  readonly keep?: boolean;
  log(msg: string): void;
}

/**
 * One routes mode at one size: start, serve the table, make the changes one at a time, measure. The instance is
 * stopped, unless `keep` asks for it and it served: then it is returned, for the caller to stop.
 */
export async function routesRun(o: RoutesRunOptions): Promise<{ row: RoutesRow; lb: Lb | null }> {
  const held: { lb: Lb | null } = { lb: null };
  const row = await measure(o, held);
  if (o.keep && !row.error) return { row, lb: held.lb };
  await held.lb?.stop();
  return { row, lb: null };
}

async function measure(o: RoutesRunOptions, held: { lb: Lb | null }): Promise<RoutesRow> {
  const { routes } = routesTable(o.sites, o.live);
  const failed = (error: string, coldStartMs = NaN): RoutesRow => ({
    routesMode: o.routesMode,
    sites: o.sites,
    endpoints: o.sites * 10,
    coldStartMs,
    cliLoadMs: NaN,
    startedAtMs: NaN,
    startApply: { render: NaN, test: NaN, reload: NaN, total: NaN },
    changes: 0,
    changeMs: summarize([]),
    timeouts: 0,
    reloads: 0,
    apply: { n: 0, render: NaN, test: NaN, reload: NaN, totalP50: NaN, totalP99: NaN },
    warmupChanges: 0,
    memoryBefore: NO_MEMORY,
    memoryWarm: NO_MEMORY,
    memoryAfter: NO_MEMORY,
    controllerRssMiB: NaN,
    controllerRssIdleMiB: NaN,
    error,
  });
  try {
    const wall0 = Date.now();
    const t0 = performance.now();
    // The defaults a user runs (admin server on, traffic figures on), dynamic endpoints, the routes mode explicit.
    const lb = await startLb({
      routes,
      registry: o.registry,
      mode: "dynamic",
      routesMode: o.routesMode,
      workers: o.workers,
      admin: true,
    });
    held.lb = lb;
    const port = lb.port;
    const served = await until(async () => (await probe(port, LAST_HOST)).status === 200, SERVE_TIMEOUT_MS);
    const coldStartMs = performance.now() - t0;
    if (!served) {
      const err = lb.controller.lines.find((l) => l.level >= 50)?.msg ?? "no error logged";
      return failed(`the last site was not served within ${SERVE_TIMEOUT_MS / 1000} s: ${err}`, coldStartMs);
    }
    const firstLine = lb.controller.lines.find((l) => typeof l["time"] === "string");
    const cliLoadMs = firstLine ? Date.parse(String(firstLine["time"])) - wall0 : NaN;
    // A first start that failed (nginx slower than the controller's confirmation on a loaded machine) ends in a reload.
    const started = lb.controller.lines.find((l) => l.msg === "nginx started" || l.msg === "config applied");
    const startMs = (key: string) => Number((started?.["ms"] as Record<string, number> | undefined)?.[key]);
    await sleep(QUIET_MS);
    const memoryBefore = await nginxMemory(lb, o.workers);
    // A new site each time; the previous change's site goes, so the table's size stays put over the changes. The
    // time to served, or null when it was not served within CHANGE_TIMEOUT_MS.
    const change = async (host: string): Promise<number | null> => {
      // A new site each time; the previous change's site goes, so the table's size stays put over the changes.
      const extra: RouteSpec = { domain: host, prefix: "/", name: LIVE, port: o.live.port };
      // The file's bytes are ready before the clock starts, as a config centre's are: the figure is the write ->
      // served. Encoded here, not by writeFile inside the clock: UTF-8 encoding 2 MB of text is the benchmark's
      // own work, and it doubled the write's few milliseconds.
      const text = Buffer.from(servicesText([...routes, extra], port));
      // The benchmark's own garbage (the last change's text and model) collected now, not inside the clock.
      collectGarbage();
      const c0 = performance.now();
      await writeFile(`${lb.servicesFile}.tmp`, text);
      await rename(`${lb.servicesFile}.tmp`, lb.servicesFile);
      const ok = await until(async () => (await probe(port, host)).status === 200, CHANGE_TIMEOUT_MS);
      const ms = performance.now() - c0;
      await sleep(QUIET_MS);
      return ok ? ms : null;
    };
    const warmup = o.warmup ?? 0;
    for (let k = 0; k < warmup; k++) {
      if (k % 20 === 0) o.log(`routes: ${o.routesMode} routes, ${o.sites} sites, warm-up change ${k + 1}/${warmup}`);
      await change(`warm${k}.bench.test`);
    }
    const memoryWarm = warmup > 0 ? await nginxMemory(lb, o.workers) : memoryBefore;
    const from = lb.controller.lines.length;
    const latencies: number[] = [];
    let timeouts = 0;
    for (let k = 0; k < o.changes; k++) {
      if (k % 20 === 0) o.log(`routes: ${o.routesMode} routes, ${o.sites} sites, change ${k + 1}/${o.changes}`);
      const ms = await change(`new${k}.bench.test`);
      if (ms === null) timeouts++;
      else latencies.push(ms);
    }
    const lines = lb.controller.lines.slice(from);
    const memoryAfter = await nginxMemory(lb, o.workers);
    const applies = lines.filter((l) => l.msg === "config applied" || l.msg === "endpoints pushed");
    const ms = (key: string) => applies.map((l) => Number((l["ms"] as Record<string, number> | undefined)?.[key]));
    return {
      routesMode: o.routesMode,
      sites: o.sites,
      endpoints: o.sites * 10,
      coldStartMs: Math.round(coldStartMs),
      cliLoadMs: Math.round(cliLoadMs),
      startedAtMs: started ? Date.parse(String(started["time"])) - wall0 : NaN,
      startApply: {
        render: startMs("render"),
        test: startMs("test"),
        reload: startMs("reload"),
        total: startMs("total"),
      },
      changes: o.changes,
      changeMs: summarize(latencies.map(round1)),
      timeouts,
      reloads: reloadsIn(lines),
      apply: {
        n: applies.length,
        render: median(ms("render")),
        test: median(ms("test")),
        reload: median(ms("reload")),
        totalP50: median(ms("total")),
        totalP99: percentile(ms("total"), 99),
      },
      warmupChanges: warmup,
      memoryBefore,
      memoryWarm,
      memoryAfter,
      controllerRssMiB: round1((await memoryOf(lb.controller.child.pid ?? 0)).rss),
      controllerRssIdleMiB: await rssIdle(lb.controller.child.pid ?? 0),
    };
  } catch (e) {
    // The helper's timeout quotes the controller's whole log: its first lines are enough for the report.
    return failed((e as Error).message.slice(0, 600));
  }
}

/** Reloads in the controller's log: "config applied" with action reload (a push logs "endpoints pushed"). */
export function reloadsIn(lines: readonly LogLine[]): number {
  return lines.filter((l) => l.msg === "config applied" && l["action"] === "reload").length;
}

export interface ThroughputOptions {
  /** The two instances, running at once, each serving the routes table's last site. */
  readonly lbs: ReadonlyMap<Mode, Lb>;
  readonly sites: number;
  readonly workers: number;
  readonly rounds: number;
  readonly seconds: number;
  log(msg: string): void;
}

const summary = (runs: WrkResult[]): ThroughputSummary => ({
  rps: Math.round(median(runs.map((r) => r.rps))),
  p99ms: median(runs.map((r) => r.p99ms)),
  failed: runs.reduce((s, r) => s + r.failed, 0),
  runs,
});

/** wrk through the last site of two instances running at once, routes pushed and routes rendered, alternating. */
export async function routesThroughput(o: ThroughputOptions): Promise<RoutesThroughput> {
  const wrk = { threads: 2, connections: 64, seconds: o.seconds, rounds: o.rounds, workers: o.workers };
  const of = (mode: Mode) => {
    const lb = o.lbs.get(mode);
    if (!lb) throw new Error(`no instance with ${mode} routes`);
    return lb;
  };
  const run = (lb: Lb, seconds: number) =>
    runWrk({ ...wrk, seconds, url: `http://127.0.0.1:${lb.port}/`, host: LAST_HOST });
  const order: Mode[] = ["dynamic", "reload"];
  // Warm both (backend connections, Lua code, the router's per-worker copy of the table) before measuring.
  for (const mode of order) await run(of(mode), 1);
  const runs: Record<Mode, WrkResult[]> = { dynamic: [], reload: [] };
  for (let r = 0; r < o.rounds; r++)
    for (let i = 0; i < order.length; i++) {
      const mode = order[(i + r) % order.length] ?? "dynamic";
      o.log(`routes: requests/s round ${r + 1}/${o.rounds}, ${mode} routes`);
      runs[mode].push(await run(of(mode), o.seconds));
    }
  return {
    wrk,
    sites: o.sites,
    dynamic: summary(runs.dynamic),
    rendered: summary(runs.reload),
    ratios: runs.dynamic.map((x, i) => x.rps / (runs.reload[i]?.rps ?? NaN)),
  };
}

export async function routesFigure(ctx: Context): Promise<RoutesResult> {
  const notes: string[] = [];
  if (!ctx.modes.includes("dynamic")) {
    notes.push("dynamic routes need the dynamic endpoints mode, which this run does not have: not measured");
    return { rows: [], notes };
  }
  const live = { ip: ctx.backends.ips[0] ?? "", port: ctx.backends.port };
  const rows: RoutesRow[] = [];
  let throughput: RoutesThroughput | undefined;
  // NGINX_LB_BENCH_ROUTES_SMALL_ONLY=1: only the small table (and the requests/s through it), for a quick look at the
  // data path without the minutes the large table takes.
  const sizes = ctx.quick ? [10, 1000] : [10, 10_000];
  for (const sites of process.env["NGINX_LB_BENCH_ROUTES_SMALL_ONLY"] === "1" ? sizes.slice(0, 1) : sizes) {
    // One registry per size, shared by both modes: writing 100,000 keys to etcd takes a while.
    const registry = await createRegistry(ctx.registry);
    // At the small size both instances stay up after their changes, for requests/s through each (no more starts).
    const kept = new Map<Mode, Lb>();
    try {
      await registry.replace(routesTable(sites, live).set);
      for (const routesMode of ["dynamic", "reload"] as const) {
        ctx.log(`routes: ${routesMode} routes, ${sites} sites x 10 endpoints`);
        const changes = changesFor(routesMode, sites, ctx.quick);
        const warmup = warmupFor(routesMode, sites, ctx.quick);
        const keep = sites === 10;
        const { row, lb } = await routesRun({
          registry,
          routesMode,
          sites,
          changes,
          warmup,
          workers: ctx.workers,
          live,
          keep,
          log: ctx.log,
        });
        rows.push(row);
        if (lb) kept.set(routesMode, lb);
      }
      if (sites === 10) {
        if (kept.size === 2) {
          const seconds = ctx.quick ? 2 : 5;
          throughput = await routesThroughput({
            lbs: kept,
            sites,
            workers: ctx.workers,
            rounds: ctx.quick ? 1 : 4,
            seconds,
            log: ctx.log,
          });
        } else notes.push("requests/s not measured: an instance at 10 sites did not serve (see its row)");
      }
    } finally {
      for (const lb of kept.values()) await lb.stop();
      await registry.close();
    }
  }
  return { rows, ...(throughput ? { throughput } : {}), notes };
}
