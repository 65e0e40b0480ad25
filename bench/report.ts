/**
 * BENCHMARKS.md from a run's results: the machine, one table per figure, and every target with whether it was
 * met and, where missed, by how much. Only numbers measured in this run are compared with each other; the original
 * design's figures are quoted for scale, from its own measurement.
 */
import type { BurstRow } from "./figures/bursts.js";
import type { ChurnRow } from "./figures/churn.js";
import type { ConvergenceRow } from "./figures/convergence.js";
import type { CrashRow } from "./figures/crash.js";
import type { DataPlaneResult } from "./figures/dataplane.js";
import { PROBE_INTERVAL_S, type HangTrial, type HealthResult } from "./figures/health.js";
import { IDLE_MS, QUIET_MS, type RoutesResult, type RoutesRow } from "./figures/routes.js";
import type { ScaleRow } from "./figures/scale.js";
import type { ServicesRow } from "./figures/services.js";
import type { InstructionsResult } from "./lib/instructions.js";
import type { Mode } from "./lib/lb.js";
import type { Machine } from "./lib/machine.js";
import type { RegistryKind } from "./lib/registry.js";
import { fmt, median } from "./lib/stats.js";
import type { TrafficCostResult } from "./figures/traffic.js";
import type { TrafficInstructionsResult } from "./figures/traffic-instructions.js";
import { DEFAULT_DEBOUNCE_MS, DEFAULT_MIN_GAP_MS } from "../src/reconciler/reconciler.js";

export interface Results {
  readonly quick: boolean;
  readonly command: string;
  readonly machine: Machine;
  readonly registry: RegistryKind;
  readonly modes: readonly Mode[];
  readonly notes: string[];
  readonly durationS: number;
  readonly figures: {
    convergence?: ConvergenceRow[];
    bursts?: BurstRow[];
    scale?: ScaleRow[];
    dataPlane?: DataPlaneResult;
    churn?: ChurnRow[];
    crash?: CrashRow[];
    trafficCost?: TrafficCostResult;
    trafficInstructions?: TrafficInstructionsResult;
    routerInstructions?: InstructionsResult;
    services?: ServicesRow[];
    health?: HealthResult;
    routes?: RoutesResult;
  };
}

export interface Target {
  readonly what: string;
  readonly value: number;
  readonly limit: number;
  /** "max": the value must be at most the limit (strictly below for "lt"); "min": at least. */
  readonly kind: "lt" | "max" | "min";
  readonly unit: string;
  readonly met: boolean;
}

function target(what: string, value: number, kind: Target["kind"], limit: number, unit: string): Target {
  const met =
    !Number.isNaN(value) && (kind === "lt" ? value < limit : kind === "max" ? value <= limit : value >= limit);
  return { what, value, limit, kind, unit, met };
}

function verdict(t: Target): string {
  if (Number.isNaN(t.value)) return "**not measured**: the run failed (see its figure)";
  if (t.met) return "met";
  const diff = t.kind === "min" ? t.limit - t.value : t.value - t.limit;
  const ratio = t.kind === "min" ? t.value / t.limit : t.limit === 0 ? NaN : t.value / t.limit;
  const digits = t.unit === "x" ? 2 : t.unit === "ms" || t.unit === "%" ? 1 : 0;
  const unit = t.unit === "x" || t.unit === "" ? "" : ` ${t.unit}`;
  return `**missed** by ${fmt(diff, digits)}${unit}${Number.isNaN(ratio) || t.limit === 0 ? "" : ` (${fmt(ratio, 2)}x the target)`}`;
}

/** Every target of the issue that this run measured. */
export function targets(r: Results): Target[] {
  const out: Target[] = [];
  // The issue sets convergence targets at 10 and 10,000 keys; a smoke run's other sizes have none.
  for (const c of (r.figures.convergence ?? []).filter((x) => x.keys === 10 || x.keys === 10_000)) {
    const limit = c.mode === "dynamic" ? 10 : c.keys === 10_000 ? 400 : 150;
    out.push(target(`convergence put p99, ${c.mode}, ${fmtInt(c.keys)} keys`, c.put.p99, "lt", limit, "ms"));
    out.push(target(`convergence delete p99, ${c.mode}, ${fmtInt(c.keys)} keys`, c.del.p99, "lt", limit, "ms"));
  }
  for (const b of (r.figures.bursts ?? []).filter((x) => x.changes === 200)) {
    out.push(
      target(`reloads per 200-change burst (max), ${b.mode}`, b.reloads.max, "max", b.mode === "dynamic" ? 0 : 3, ""),
    );
    out.push(target(`lost changes over ${b.bursts} bursts of 200, ${b.mode}`, b.lost, "max", 0, ""));
  }
  for (const x of r.figures.dataPlane?.ratios ?? [])
    out.push(target(`b/c requests/s, ${x.mode}`, median(x.bc), "min", 2.5, "x"));
  const dyn = dynamicOverStatic(r);
  if (dyn.length > 0) out.push(target(`requests/s, dynamic route / static upstream`, median(dyn), "min", 0.9, "x"));
  for (const c of (r.figures.churn ?? []).filter((x) => x.mode === "dynamic"))
    out.push(target(`failed requests under churn, dynamic`, c.wrk.failed, "max", 0, ""));
  for (const c of r.figures.crash ?? [])
    out.push(
      c.fault === "nginx master"
        ? target(
            `5xx answers across an nginx master SIGKILL, ${c.mode}`,
            c.probes5xx + c.wrk.errors.non2xx,
            "max",
            0,
            "",
          )
        : target(`failed requests across a controller SIGKILL, ${c.mode}`, c.wrk.failed + c.probesFailed, "max", 0, ""),
    );
  for (const m of r.figures.trafficCost?.modes ?? [])
    out.push(target(`requests/s, default / --no-traffic-log, ${m.mode}`, median(m.ratios), "min", 0.95, "x"));
  const big = (r.figures.scale ?? []).filter((s) => s.routes >= 10_000);
  for (const s of big.slice(0, 1))
    out.push(target(`render of 10,000 routes (in-process)`, s.renderMs, "lt", 1000, "ms"));
  for (const s of big)
    out.push(target(`controller RSS at 10,000 routes, ${s.mode}`, s.controllerRssMiB, "lt", 300, "MiB"));
  out.push(...routesTargets(r));
  return out;
}

/** The tolerance on "no growth" of nginx's memory over routing changes: allocator and page-touch noise, not a leak. */
export const RSS_GROWTH_TOLERANCE_PCT = 5;

const growthPct = (before: number, after: number) => ((after - before) / before) * 100;

/** The routes row's memory growth the target judges: over the measured changes, from after the warm-up when one ran. */
const routesGrowthPct = (x: RoutesRow) =>
  growthPct((x.warmupChanges > 0 ? x.memoryWarm : x.memoryBefore).rssMiB, x.memoryAfter.rssMiB);

/** "after W warm-up changes " when the row had a warm-up. */
const afterWarmup = (x: RoutesRow) => (x.warmupChanges > 0 ? `after ${x.warmupChanges} warm-up changes ` : "");

/** Issue 15's targets for routes pushed to nginx (the routes figure): at 10,000 sites, and at both sizes for reloads and memory. */
function routesTargets(r: Results): Target[] {
  const out: Target[] = [];
  const rows = (r.figures.routes?.rows ?? []).filter((x) => x.routesMode === "dynamic" && !x.error);
  for (const x of rows.filter((y) => y.sites === 10_000)) {
    out.push(target(`routing change -> served p99, dynamic routes, 10,000 sites`, x.changeMs.p99, "lt", 50, "ms"));
    out.push(
      target(
        `cold start (controller's first log line -> last site served), dynamic routes, 10,000 sites`,
        x.coldStartMs - x.cliLoadMs,
        "lt",
        2000,
        "ms",
      ),
    );
  }
  for (const x of rows.filter((y) => y.sites === 10 || y.sites === 10_000)) {
    out.push(
      target(
        `reloads over ${x.changes} routing changes, dynamic routes, ${fmtInt(x.sites)} sites`,
        x.reloads,
        "max",
        0,
        "",
      ),
    );
    out.push(
      target(
        `nginx RSS growth over ${x.changes} routing changes ${afterWarmup(x)}(tolerance ${RSS_GROWTH_TOLERANCE_PCT}%), dynamic routes, ${fmtInt(x.sites)} sites`,
        routesGrowthPct(x),
        "max",
        RSS_GROWTH_TOLERANCE_PCT,
        "%",
      ),
    );
  }
  const tp = r.figures.routes?.throughput;
  if (tp) out.push(target(`requests/s, dynamic routes / rendered routes`, median(tp.ratios), "min", 0.9, "x"));
  return out;
}

/** The routes figure's row a target names (its routes mode is always dynamic). */
function routesRowOf(t: Target, r: Results): RoutesRow | undefined {
  const sites = /, ([\d,]+) sites$/.exec(t.what)?.[1]?.replace(/,/g, "");
  return r.figures.routes?.rows.find((x) => x.routesMode === "dynamic" && String(x.sites) === sites);
}

/** What a missed routes target's time or memory went to, from the figure's own numbers. */
function whyRoutes(t: Target, r: Results, load: string): string | null {
  const x = routesRowOf(t, r);
  if (t.what.startsWith("requests/s, dynamic routes")) {
    const tp = r.figures.routes?.throughput;
    if (!tp) return null;
    return (
      `with routes pushed, our Lua router does per request what the rendered server_name and location blocks do in` +
      ` nginx's own tables (Host and longest prefix from shared-dict reads and table lookups, the backend URI built in` +
      ` Lua); medians ${fmtInt(tp.dynamic.rps)}` +
      ` vs ${fmtInt(tp.rendered.rps)} requests/s, p99 ${fmt(tp.dynamic.p99ms, 2)} vs ${fmt(tp.rendered.p99ms, 2)} ms,` +
      ` per round ${tp.ratios.map((v) => fmt(v, 3)).join(", ")}; wrk, both nginx instances and the backend share the` +
      ` cores: ${load}`
    );
  }
  if (!x) return null;
  const apply =
    `the controller's own account per change (median over ${x.apply.n} applies): compile ${fmt(x.apply.render)} ms +` +
    ` nginx -t ${fmt(x.apply.test)} ms + push or reload ${fmt(x.apply.reload)} ms = ${fmt(x.apply.totalP50)} ms` +
    ` (p99 ${fmt(x.apply.totalP99)} ms)`;
  if (t.what.startsWith("routing change")) {
    const outside = x.changeMs.p50 - x.apply.totalP50;
    return (
      `changes served in ${fmt(x.changeMs.p50)} ms p50, ${fmt(x.changeMs.p99)} ms p99 (max ${fmt(x.changeMs.max)});` +
      ` ${apply}; the rest of the median change, ${fmt(outside)} ms, is before and after the apply: the services file` +
      ` watcher's 50 ms wait for the writer, reading and validating the whole services.json (${fmtInt(x.sites + 1)} sites)` +
      ` into a new model, and the probe's new connection; ${x.reloads} of the changes reloaded; ${load}`
    );
  }
  if (t.what.startsWith("reloads over"))
    return `${x.reloads} "config applied" lines with action reload over ${x.changes} changes that add no listening port: those changes were rendered and reloaded, not pushed; ${apply}`;
  if (t.what.startsWith("cold start"))
    return (
      `from its spawn, the controller served the last site after ${fmtInt(x.coldStartMs)} ms, of which` +
      ` ${fmtInt(x.cliLoadMs)} ms before its first log line (node loading the compiled CLI, not in the target),` +
      ` ${fmtInt(x.startedAtMs - x.cliLoadMs)} ms from there to the first apply's log line (reading` +
      ` the registry and services.json; the first apply's own account: compile ${fmt(x.startApply.render)} + nginx -t` +
      ` ${fmt(x.startApply.test)} + start ${fmt(x.startApply.reload)} = ${fmt(x.startApply.total)} ms), and` +
      ` ${fmtInt(x.coldStartMs - x.startedAtMs)} ms from there until the last site answered; ${load}`
    );
  if (t.what.startsWith("nginx RSS growth"))
    return (
      `nginx (master + ${x.memoryAfter.processes - 1} workers) RSS ${fmt(x.memoryBefore.rssMiB)} (served) ->` +
      ` ${fmt(x.memoryWarm.rssMiB)} (after ${x.warmupChanges} warm-up changes) -> ${fmt(x.memoryAfter.rssMiB)} MiB,` +
      ` PSS ${fmt(x.memoryBefore.pssMiB)} -> ${fmt(x.memoryWarm.pssMiB)} -> ${fmt(x.memoryAfter.pssMiB)} MiB over ${x.changes} changes; RSS counts` +
      ` each shared-dict page (the pushed table lives there) in every process that touched it, PSS splits them, so growth` +
      ` in RSS alone is pages newly touched by more workers, growth in PSS too is memory newly used`
    );
  return null;
}

/** Per round: requests/s through a dynamic route over the same route as a static upstream (reload mode). */
function dynamicOverStatic(r: Results): number[] {
  const of = (mode: Mode) => r.figures.dataPlane?.targets.find((t) => t.label.endsWith(`(${mode})`))?.runs ?? [];
  const stat = of("reload");
  return of("dynamic").map((x, i) => x.rps / (stat[i]?.rps ?? NaN));
}

/** What is known to cost the time or throughput behind a missed target, from this run's own figures. */
function why(t: Target, r: Results): string | null {
  const load = `the machine's 1-minute load average was ${fmt(r.machine.loadStart, 1)} at the start and ${fmt(r.machine.loadEnd, 1)} at the end on ${r.machine.cores} cores`;
  if (t.what.startsWith("convergence")) {
    const c = (r.figures.convergence ?? []).find((x) => t.what.endsWith(`${x.mode}, ${fmtInt(x.keys)} keys`));
    const parts = [
      c?.applyMs
        ? c.mode === "dynamic"
          ? `the controller's own median change: render ${fmt(c.applyMs.render)} + push ${fmt(c.applyMs.reload)} ms`
          : `the controller's own median apply: render ${fmt(c.applyMs.render)} + nginx -t ${fmt(c.applyMs.test)} + reload ${fmt(c.applyMs.reload)} ms (reload counted until every old worker retired)`
        : null,
      c?.mode === "dynamic"
        ? "the reconciler's debounce for a lone change (a few ms in dynamic mode)"
        : `the reconciler's ${DEFAULT_DEBOUNCE_MS} ms debounce for a lone change`,
      r.registry === "etcd" ? "etcd's commit and watch delivery to the controller" : null,
      r.registry === "file" ? "the backends-file watcher's 50 ms wait for the writer to finish" : null,
      t.what.includes("delete") && c?.mode !== "dynamic"
        ? "and for a delete, nginx itself: after a reload the master sleeps 100 ms (ngx_msleep(100) in ngx_master_process_cycle) before telling the old workers to stop accepting, so the removed backend keeps getting new connections for at least 100 ms after the new config is live; a reload-based delete cannot beat put + 100 ms"
        : null,
      load,
    ];
    return parts.filter(Boolean).join("; ");
  }
  if (t.what.startsWith("b/c")) {
    const b = r.figures.dataPlane?.targets.find((x) => x.label.endsWith(`(${t.what.split(", ")[1] ?? ""})`));
    return (
      `(c) opens a TCP connection to the backend per request and (b) is meant to reuse them` +
      (b && b.backendConnsPer1k > 10
        ? `, yet (b) opened ${fmt(b.backendConnsPer1k, 0)} backend connections per 1,000 requests: with ${r.figures.dataPlane?.wrk.connections ?? "?"} concurrent client connections on one worker, more requests are in flight than the upstream keeps idle connections for (nginx-lb renders \`keepalive 32\`), so every request above that closes its connection and the next one reconnects`
        : ``) +
      `; on this machine wrk, the proxy and the backend also share the cores, so the ratio moves with the contention: ${load}`
    );
  }
  const routes = whyRoutes(t, r, load);
  if (routes !== null) return routes;
  if (t.what.startsWith("reloads per"))
    return `the reconciler applies at most once per ${DEFAULT_MIN_GAP_MS} ms, so a burst that takes longer than that to write costs one reload per ${DEFAULT_MIN_GAP_MS} ms`;
  return null;
}

const fmtInt = (x: number) => fmt(x, 0);
const table = (head: string[], rows: string[][]) =>
  [`| ${head.join(" | ")} |`, `|${head.map(() => "---").join("|")}|`, ...rows.map((r) => `| ${r.join(" | ")} |`)].join(
    "\n",
  );

export function renderReport(r: Results): string {
  const m = r.machine;
  const out: string[] = [
    `# nginx-lb benchmarks`,
    ``,
    `Produced by \`${r.command}\` on ${m.date.slice(0, 10)} (${m.date}), in ${fmt(r.durationS, 0)} s.` +
      (r.quick
        ? ` **This is a \`--quick\` smoke run: few trials, short loads and smaller sizes where marked; treat its` +
          ` figures as indicative only.** Run \`npm run bench\` on a quiet machine for the real figures.`
        : ``),
    ``,
    table(
      ["machine", ""],
      [
        ["CPU", `${m.cpu}, ${m.cores} cores`],
        ["memory", `${fmt(m.memoryGiB, 1)} GiB`],
        ["kernel", m.kernel],
        ["load average (1 min) at start / end", `${fmt(m.loadStart, 2)} / ${fmt(m.loadEnd, 2)}`],
        ["nginx", m.nginx],
        ["etcd", m.etcd],
        ["node", m.node],
        ["wrk", m.wrk],
        ["registry", r.registry === "etcd" ? "etcd v3 (real etcd, one member on loopback)" : "backends file (watched)"],
        ["endpoint modes", r.modes.join(", ")],
      ],
    ),
    ``,
    `Everything is real: nginx-lb's daemon (\`nginx-lb run\`) drives a real nginx; backends are a separate static nginx` +
      ` answering on 127.0.0.x; load comes from wrk in its own process. Times are wall-clock from the benchmark's` +
      ` write to the registry to what a client observes through nginx. The load average above says how shared the` +
      ` machine was: on a loaded machine every figure is slower and noisier.`,
    ...r.notes.map((n) => `\n> ${n}`),
    ``,
  ];

  const ts = targets(r);
  if (ts.length > 0)
    out.push(
      `## Targets`,
      ``,
      table(
        ["target", "measured", "limit", "verdict"],
        ts.map((t) => [
          t.what,
          Number.isNaN(t.value)
            ? "n/a"
            : `${fmt(t.value, t.unit === "x" ? 2 : t.unit === "" ? 0 : 1)} ${t.unit}`.trim(),
          `${t.kind === "min" ? "≥" : t.kind === "lt" ? "<" : "≤"} ${fmt(t.limit, t.unit === "x" ? (Number.isInteger(t.limit * 10) ? 1 : 2) : 0)} ${t.unit}`.trim(),
          verdict(t),
        ]),
      ),
      ``,
      ...ts.flatMap((t) => {
        const w = t.met ? null : why(t, r);
        return w ? [`- Why ${t.what} missed: ${w}.`] : [];
      }),
      ``,
    );

  const conv = r.figures.convergence;
  if (conv) {
    out.push(
      `## 1. Convergence`,
      ``,
      `A registry put -> the first request (a new connection) answered by the new backend; a delete -> the last request` +
        ` answered by the removed one. Each trial is a lone change after a quiet period, after one untimed warm-up change (the first change after` +
        ` start pays one-off costs; its times are in the raw JSON). ms; spread as IQR and` +
        ` min-max. The controller columns are its own median account of those changes (render, \`nginx -t\`,` +
        ` reload until every old worker retired; in dynamic mode the push). The original design (confd): about 116 ms p50 with a handful of` +
        ` keys, 4.7 s p50 with 10,000.`,
      ``,
      table(
        [
          "mode",
          "keys",
          "change",
          "n",
          "p50",
          "p95",
          "p99",
          "IQR",
          "min-max",
          "ctl render",
          "ctl nginx -t",
          "ctl reload / push",
          "reloads",
        ],
        conv.flatMap((c) =>
          (["put", "del"] as const).map((k) => {
            const s = c[k];
            return [
              c.mode,
              fmtInt(c.keys),
              k === "put" ? "put" : "delete",
              String(s.n),
              fmt(s.p50),
              fmt(s.p95),
              fmt(s.p99),
              fmt(s.iqr),
              `${fmt(s.min)}-${fmt(s.max)}`,
              fmt(c.applyMs?.render),
              fmt(c.applyMs?.test),
              fmt(c.applyMs?.reload),
              k === "put" ? String(c.reloads) : "",
            ];
          }),
        ),
      ),
      ``,
      ...(conv.some((c) => c.timeouts > 0)
        ? [
            `Trials that did not converge within 15 s: ${conv.map((c) => `${c.mode}/${c.keys}: ${c.timeouts}`).join(", ")}.`,
            ``,
          ]
        : []),
    );
  }

  const bursts = r.figures.bursts;
  if (bursts)
    out.push(
      `## 2. Bursts`,
      ``,
      `N back-to-back registry changes, one key each on its own route; bursts alternate put / delete. "Final state" is` +
        ` from the first write until the last change is served (confirmed by requesting every route); a change still` +
        ` not served 5 s later is lost. The original design lost changes for good in 7 of 10 bursts of 200.`,
      ``,
      table(
        [
          "mode",
          "changes",
          "bursts",
          "reloads p50 (min-max)",
          "final state p50 ms",
          "p95 ms",
          "min-max ms",
          "writing the burst p50 ms",
          "lost changes",
          "bursts with a loss",
        ],
        bursts.map((b) => [
          b.mode,
          fmtInt(b.changes),
          String(b.bursts),
          `${fmt(b.reloads.p50, 0)} (${fmt(b.reloads.min, 0)}-${fmt(b.reloads.max, 0)})`,
          fmt(b.finalMs.p50, 0),
          fmt(b.finalMs.p95, 0),
          `${fmt(b.finalMs.min, 0)}-${fmt(b.finalMs.max, 0)}`,
          fmt(b.writeMs.p50, 0),
          String(b.lost),
          String(b.burstsWithLoss),
        ]),
      ),
      ``,
    );

  const sc = r.figures.scale;
  if (sc)
    out.push(
      `## 3. Scale`,
      ``,
      `N routes x 10 endpoints (10 routes per domain). Render: \`renderNginxConf\` in-process, median. The daemon's` +
        ` figures are its own account of a routing change (services.json rewritten), median. Start: the controller` +
        ` launched -> nginx serving the whole registry (a live route whose key is written last answers). RSS after those reloads;` +
        ` nginx's is master + workers (RSS counts shared pages once per process, PSS splits them).`,
      ``,
      table(
        [
          "mode",
          "routes",
          "endpoints",
          "nginx.conf",
          "render ms",
          "start ms",
          "ctl render ms",
          "nginx -t ms",
          "reload ms",
          "apply total ms",
          "controller RSS MiB",
          "nginx RSS MiB",
          "nginx PSS MiB",
        ],
        sc.map((s) => [
          s.mode,
          fmtInt(s.routes),
          fmtInt(s.endpoints),
          `${fmt(s.confBytes / 2 ** 20, 1)} MiB`,
          fmt(s.renderMs),
          fmtInt(s.startMs),
          fmt(s.reload.render),
          fmt(s.reload.test),
          fmt(s.reload.reload),
          fmt(s.reload.total),
          fmt(s.controllerRssMiB),
          `${fmt(s.nginxRssMiB)} (${s.nginxProcesses} processes)`,
          fmt(s.nginxPssMiB),
        ]),
      ),
      ``,
      ...sc.flatMap((s) => (s.error ? [`**${s.mode} mode, ${fmtInt(s.routes)} routes failed**: ${s.error}`, ``] : [])),
    );

  const dp = r.figures.dataPlane;
  if (dp)
    out.push(
      `## 4. Data plane`,
      ``,
      `wrk -t${dp.wrk.threads} -c${dp.wrk.connections}, ${dp.wrk.seconds} s per run, ${dp.wrk.rounds} interleaved round(s); one` +
        ` nginx worker in every proxy; the backend is a static nginx (one worker). Medians over rounds. (c) is the` +
        ` original design's config (bench/original-style.ts: no upstream keepalive, HTTP/1.0 to the backend). The` +
        ` original design measured 18k requests/s through its config, 52k with keepalive, 121k straight.`,
      ``,
      table(
        ["target", "requests/s", "p99 ms", "failed", "backend connections per 1,000 requests", "requests/s per round"],
        dp.targets.map((t) => [
          t.label,
          fmtInt(t.rps),
          fmt(t.p99ms, 2),
          String(t.failed),
          fmt(t.backendConnsPer1k, 1),
          t.runs.map((x) => fmtInt(x.rps)).join(", "),
        ]),
      ),
      ``,
      table(
        ["mode", "b/a median", "b/a range", "b/c median", "b/c range"],
        dp.ratios.map((x) => [
          x.mode,
          fmt(median(x.ba), 2),
          `${fmt(Math.min(...x.ba), 2)}-${fmt(Math.max(...x.ba), 2)}`,
          fmt(median(x.bc), 2),
          `${fmt(Math.min(...x.bc), 2)}-${fmt(Math.max(...x.bc), 2)}`,
        ]),
      ),
      ``,
      ...(dynamicOverStatic(r).length > 0
        ? [
            `Dynamic route / static upstream (b dynamic / b reload, per round): median` +
              ` ${fmt(median(dynamicOverStatic(r)), 2)}, range ${dynamicOverStatic(r)
                .map((x) => fmt(x, 2))
                .join(", ")}.`,
            ``,
          ]
        : []),
    );

  const ch = r.figures.churn;
  if (ch)
    out.push(
      `## 5. Churn under load`,
      ``,
      `wrk -t1 -c20 through one route while its endpoints change every 100 ms (one added, the oldest removed; every` +
        ` endpoint stays up, so each failure is the load balancer's). Failed = socket errors + non-2xx. The original` +
        ` design: 875 failed reads in 20 s with a change every 250 ms (80 reloads).`,
      ``,
      table(
        [
          "mode",
          "seconds",
          "changes",
          "reloads",
          "requests",
          "requests/s",
          "p99 ms",
          "failed",
          "connect / read / write / timeout / non-2xx",
        ],
        ch.map((c) => [
          c.mode,
          String(c.seconds),
          String(c.ticks),
          String(c.reloads),
          fmtInt(c.wrk.requests),
          fmtInt(c.wrk.rps),
          fmt(c.wrk.p99ms, 2),
          String(c.wrk.failed),
          [c.wrk.errors.connect, c.wrk.errors.read, c.wrk.errors.write, c.wrk.errors.timeout, c.wrk.errors.non2xx].join(
            " / ",
          ),
        ]),
      ),
      ``,
    );

  const cr = r.figures.crash;
  if (cr)
    out.push(
      `## 6. Crashes under load`,
      ``,
      `wrk -t1 -c20 through one route (two endpoints, both up) for ${cr[0]?.seconds ?? "?"} s; a third of the way in,` +
        ` the nginx master or the controller is SIGKILLed. A master's workers linger on the listening sockets until the` +
        ` controller retires them and starts a new master; the controller is started again at once and adopts the` +
        ` running nginx. A second client probes the route every 10 ms with a new connection. Failed = socket errors +` +
        ` non-2xx; the backends only answer 200, so a non-2xx is nginx's own 502 or 503. wrk reconnects at once after a` +
        ` refused or reset connection, so while no process listens each of its 20 connections fails over and over:` +
        ` its count grows with the length of that window and the speed of the loop, and the probes (one client, one` +
        ` request per 10 ms) say how long it lasted. Recovered: for the master,` +
        ` from the kill until a new master (a new pid in the pid file) answered a probe; for the controller, until the` +
        ` restarted controller was running. Longest gap: the longest span from the kill on without a probe answered 200.` +
        ` \`nginx-lb run\` with its defaults except \`--endpoints-mode\` (explicit), \`--worker-processes ${r.machine.cores}\`` +
        ` (the cores, as \`auto\` gives), \`--listen-host 127.0.0.1\` and the admin server off.`,
      ``,
      table(
        [
          "mode",
          "SIGKILL",
          "requests",
          "failed",
          "connect / read / write / timeout / non-2xx",
          "probes failed",
          "any 5xx",
          "recovered ms",
          "longest gap ms",
          "orphans retired / adopted",
        ],
        cr.map((c) => [
          c.mode,
          `${c.fault} at ${fmt(c.killAtS, 1)} s`,
          fmtInt(c.wrk.requests),
          fmtInt(c.wrk.failed),
          [c.wrk.errors.connect, c.wrk.errors.read, c.wrk.errors.write, c.wrk.errors.timeout, c.wrk.errors.non2xx]
            .map(fmtInt)
            .join(" / "),
          `${c.probesFailed} of ${c.probes}`,
          c.error ? "n/a" : c.any5xx ? "**yes**" : "no",
          fmtInt(c.recoveredMs),
          fmtInt(c.longestGapMs),
          c.fault === "nginx master" ? String(c.orphansRetired ?? "n/a") : c.adopted ? "adopted" : "**not adopted**",
        ]),
      ),
      ``,
      ...cr.flatMap((c) => (c.error ? [`**${c.mode} mode, ${c.fault} SIGKILL failed**: ${c.error}`, ``] : [])),
    );

  const tc = r.figures.trafficCost;
  if (tc)
    out.push(
      `## 7. The cost of traffic figures`,
      ``,
      `wrk -t${tc.wrk.threads} -c${tc.wrk.connections}, ${tc.wrk.seconds} s per run, ${tc.wrk.rounds} rounds alternating` +
        ` (the order rotated every round) through one route of \`nginx-lb run\` instances running at once: the defaults` +
        ` a user runs (admin server on, traffic figures on, and in dynamic mode outlier ejection on) and the same with` +
        ` \`--no-traffic-log\`; in dynamic mode also \`--no-traffic-log --outlier-ejection off\` ("bare": no Lua in the` +
        ` log phase), so outlier ejection's own cost shows beside; \`--worker-processes ${tc.wrk.workers}\`,` +
        ` \`--endpoints-mode\` explicit. Medians over rounds; ratios are taken within a round.` +
        ` Dynamic mode counts in the log phase into a per-worker table that each worker adds to nginx's shared dict` +
        ` twice a second, read by the controller once a second; reload mode, without our Lua, has nginx append a` +
        ` record per request to a file (buffered: a write per 64 KiB or per second).` +
        ` CPU per request (user + system time of nginx's workers, and of the controller, over a trial and the second` +
        ` after it, divided by the requests) holds better than requests/s on a machine shared with other work.`,
      ``,
      table(
        [
          "mode",
          "traffic figures",
          "requests/s default / --no-traffic-log / bare",
          "p99 ms default / off / bare",
          "nginx CPU µs per request default / off / bare",
          "controller CPU µs per request default / off",
          "default / off per round",
          "off / bare per round (outlier ejection)",
        ],
        tc.modes.map((m) => [
          m.mode,
          m.how,
          [m.default.rps, m.noTrafficLog.rps, ...(m.bare ? [m.bare.rps] : [])].map(fmtInt).join(" / "),
          [m.default.p99ms, m.noTrafficLog.p99ms, ...(m.bare ? [m.bare.p99ms] : [])].map((x) => fmt(x, 2)).join(" / "),
          [m.default, m.noTrafficLog, ...(m.bare ? [m.bare] : [])]
            .map((x) => fmt(x.nginxCpuUsPerRequest, 1))
            .join(" / "),
          `${fmt(m.default.controllerCpuUsPerRequest, 2)} / ${fmt(m.noTrafficLog.controllerCpuUsPerRequest, 2)}`,
          m.ratios.map((x) => fmt(x, 3)).join(", "),
          m.outlierRatios ? m.outlierRatios.map((x) => fmt(x, 3)).join(", ") : "n/a",
        ]),
      ),
      ``,
    );

  const ti = r.figures.trafficInstructions;
  if (ti)
    out.push(
      ...instructionsSection(
        "7b. The same, in instructions",
        "Figure 7b (instructions)",
        "Dynamic mode, one route, `nginx-lb run` with its defaults and with `--no-traffic-log`",
        ti,
      ),
    );

  const sv = r.figures.services;
  if (sv)
    out.push(
      `## 8. Routing table in etcd`,
      ``,
      `Two \`nginx-lb run --services-etcd-prefix\` controllers (one nginx worker each, each nginx on its own loopback` +
        ` address; dynamic endpoints when the run has them, so routes pushed, the default) on the run's etcd (one member); the table written by the real \`nginx-lb services push\` (run under` +
        ` tsx, so its start costs about a second). Push: the whole table into an empty prefix; etcd requests are etcd's` +
        ` own counts over it (\`grpc_server_handled_total\` for Txn and Range, \`etcd_server_proposals_committed_total\`;` +
        ` the controllers only watch). Then one route changed per push (a server's backend toggled): commit (seen by a` +
        ` watch) -> both instances serve it, and CLI start -> both serve it. With few rounds, p99 is the slowest round.` +
        ` The controllers' own account of their applies over those changes (median of both). RSS of each controller` +
        ` afterwards.`,
      ``,
      table(
        [
          "servers",
          "push ms",
          "writes / transactions",
          "etcd Txn / Range / proposals",
          "push -> both serve ms",
          "change: commit -> both serve p50 / p99 ms",
          "change: CLI -> both serve p50 / p99 ms",
          "rounds",
          "ctl apply: render / nginx -t / reload / total ms (n)",
          "controller RSS MiB",
        ],
        sv.map((s) => [
          fmtInt(s.servers),
          fmtInt(s.push.ms),
          `${fmtInt(s.push.writes)} / ${fmtInt(s.push.txns)}`,
          `${fmtInt(s.push.etcd.txn)} / ${fmtInt(s.push.etcd.range)} / ${fmtInt(s.push.etcd.proposals)}`,
          fmtInt(s.push.servedMs),
          `${fmtInt(s.change.commitToServed.p50)} / ${fmtInt(s.change.commitToServed.p99)}`,
          `${fmtInt(s.change.cliToServed.p50)} / ${fmtInt(s.change.cliToServed.p99)}`,
          String(s.change.commitToServed.n),
          `${fmtInt(s.change.apply.render)} / ${fmtInt(s.change.apply.test)} / ${fmtInt(s.change.apply.reload)} / ${fmtInt(s.change.apply.total)} (${s.change.apply.n})`,
          s.controllerRssMiB.map((x) => fmt(x)).join(", "),
        ]),
      ),
      ``,
      ...sv.flatMap((s) => (s.error ? [`**${fmtInt(s.servers)} servers failed**: ${s.error}`, ``] : [])),
    );

  const he = r.figures.health;
  if (he) out.push(...healthSection(he, r.machine.cores));

  const ro = r.figures.routes;
  if (ro) out.push(...routesSection(ro, r));
  const ri = r.figures.routerInstructions;
  if (ri)
    out.push(
      ...instructionsSection(
        "10b. The router, in instructions",
        "Figure 10b (instructions)",
        "One site, dynamic endpoints, `nginx-lb run` with its defaults (admin server on), its routes pushed to the Lua router and rendered (`--routes-mode reload`)",
        ri,
      ),
    );

  out.push(`Raw figures: \`bench/results/latest.json\`.`, ``);
  return out.join("\n");
}

/** A figure counted by bench/lib/instructions.ts: its first variant over its second, per round. */
function instructionsSection(title: string, name: string, what: string, ri: InstructionsResult): string[] {
  if ("skipped" in ri) return [`${name} was skipped: ${ri.skipped}.`, ``];
  const [first, second] = ri.labels;
  const at = (round: number, label: string) => ri.trials.find((t) => t.round === round && t.label === label);
  return [
    `### ${title}`,
    ``,
    `${what} (\`--worker-processes ${ri.workers}\`), nginx run under valgrind's callgrind through \`--nginx\` (a` +
      ` wrapper): the instructions nginx's workers executed over ${fmtInt(ri.requests)} keep-alive requests` +
      ` (${ri.concurrency} connections) after ${fmtInt(ri.warmup)} warm-up requests: each variant runs twice, with those` +
      ` requests and with an idle wait as long instead, and the workers' totals (written by callgrind when they exit)` +
      ` are subtracted. An instruction count does not move with the machine's other work, unlike requests/s; it is not` +
      ` time: it counts the workers' own code only, not the kernel's work for each request (system calls, loopback` +
      ` TCP), so an addition in user space is a larger share here than of the CPU time in figure 7, and memory stalls` +
      ` weigh differently. It judges the code's own cost, not throughput.`,
    ``,
    table(
      ["round", `${first}, instructions per request`, second, `${first} / ${second}`],
      ri.ratios.map((ratio, round) => [
        String(round + 1),
        fmtInt(at(round, first)?.perRequest ?? NaN),
        fmtInt(at(round, second)?.perRequest ?? NaN),
        fmt(ratio, 3),
      ]),
    ),
    ``,
  ];
}

/** Seconds after the hang for a table cell: the median and the spread over rounds. */
function afterHang(xs: number[], still: boolean[]): string {
  // A NaN (did not happen) comes back from latest.json as null.
  const seen = xs.filter((x) => typeof x === "number" && !Number.isNaN(x));
  if (seen.length === 0) return "none";
  const range = seen.length > 1 ? ` (${fmt(Math.min(...seen) / 1000, 1)}-${fmt(Math.max(...seen) / 1000, 1)})` : "";
  return `${fmt(median(seen) / 1000, 1)}${range}${still.some(Boolean) ? ", still at the loop's end" : ""}`;
}

function healthSection(he: HealthResult, cores: number): string[] {
  const hangRow = (mode: string, v: string, ts: HangTrial[]) => {
    const sum = (f: (t: HangTrial) => number) => ts.reduce((s, t) => s + f(t), 0);
    return [
      mode,
      v,
      afterHang(
        ts.map((t) => t.verdictMs),
        [],
      ),
      afterHang(
        ts.map((t) => t.lastSlowMs),
        ts.map((t) => t.stillWaiting),
      ),
      afterHang(
        ts.map((t) => t.lastTimeoutMs),
        [],
      ),
      `${fmtInt(sum((t) => t.loopRequests))} / ${fmtInt(sum((t) => t.loopTimedOut))} / ${fmtInt(sum((t) => t.loopFailed))}`,
      `${fmt(median(ts.map((t) => t.healthyP99Ms)), 1)} (${fmt(median(ts.map((t) => t.slowMs)), 0)})`,
      fmtInt(median(ts.map((t) => t.wrk.rps))),
      fmt(median(ts.map((t) => t.wrk.p99ms)), 2),
      fmtInt(sum((t) => t.wrk.failed)),
    ];
  };
  const p = he.probe;
  return [
    `## 9. Endpoint health checks`,
    ``,
    `Two \`nginx-lb run\` instances per endpoint mode running at once, with the admin server on,` +
      ` \`--worker-processes ${he.wrk.workers}\` and \`--endpoints-mode\` explicit: the defaults, and the same routes with` +
      ` \`"health_check": { "interval": "1s" }\` (the rest the defaults: http GET /healthz, timeout 1 s, 3 failures` +
      ` take an endpoint out, 2 passes bring it back). Endpoints are the static nginx backends on 127.0.0.x.`,
    ``,
    `Four healthy endpoints: wrk -t${he.wrk.threads} -c${he.wrk.connections}, ${he.wrk.seconds} s per run,` +
      ` ${he.wrk.rounds} round(s), the instance order alternating every round; medians over rounds, ratios within a` +
      ` round: what probing costs the data plane.`,
    ``,
    table(
      ["mode", "health_check", "requests/s", "p99 ms", "failed", "requests/s per round", "on / off per round"],
      he.modes.flatMap((m) =>
        (["off", "on"] as const).map((v) => [
          m.mode,
          v,
          fmtInt(m.healthy[v].rps),
          fmt(m.healthy[v].p99ms, 2),
          fmtInt(m.healthy[v].failed),
          m.healthy[v].runs.map((x) => fmtInt(x.rps)).join(", "),
          v === "on" ? m.healthy.ratios.map((x) => fmt(x, 3)).join(", ") : "",
        ]),
      ),
    ),
    ``,
    `One endpoint of four hangs: the fourth endpoint of a second route is an HTTP server on its own address` +
      ` (127.0.0.12, test/helpers/backends.ts) that answers until, at time 0, it starts to accept and never answer` +
      ` (its check path too). From that moment a loop of plain HTTP requests (node http, keep-alive,` +
      ` one started every ${he.hang.everyMs} ms whatever the others do, each given ${fmt(he.hang.timeoutMs / 1000, 0)} s) runs for` +
      ` ${fmt(he.hang.loopMs / 1000, 0)} s, timing every request; before it, the same loop for a moment with all four` +
      ` answering gives the healthy p99. A request slower than ${he.hang.slowFactor}x that waited on the hung endpoint;` +
      ` "last request waiting on it" is when the last such request started, "last timed out" when the last one that` +
      ` waited the whole ${fmt(he.hang.timeoutMs / 1000, 0)} s started (nginx's own read timeout is 60 s). "Verdict" is` +
      ` the controller's log line taking the endpoint out. Then wrk (same flags, ${he.wrk.seconds} s, --timeout 2s)` +
      ` through the route with the endpoint still hung. wrk never gives up on a request: a connection whose request` +
      ` went to the hung endpoint waits for the rest of the run and is counted neither as a request nor as failed, so` +
      ` without checks its requests/s shows how quickly all ${he.wrk.connections} connections got stuck. Seconds after` +
      ` the hang, median (min-max) over ${he.hang.rounds} round(s); the instance order alternates every round, and` +
      ` the checked instance has the endpoint back in before each trial.`,
    ``,
    table(
      [
        "mode",
        "health_check",
        "verdict s",
        "last request waiting on it s",
        "last timed out s",
        "loop requests / timed out / other failed",
        "healthy p99 ms (slow above)",
        "wrk requests/s",
        "wrk p99 ms",
        "wrk failed",
      ],
      he.modes.flatMap((m) => [hangRow(m.mode, "off", m.hung.off), hangRow(m.mode, "on", m.hung.on)]),
    ),
    ``,
    `Probe cost: ${fmtInt(p.routes)} routes x ${p.endpointsPerRoute} endpoints, every endpoint its own ip:port` +
      ` (${p.endpointsPerRoute} addresses 127.0.100.x x ${fmtInt(p.routes)} ports, one per route), all of them real` +
      ` listeners of one static nginx that answers 200 to anything, so every probe is a full HTTP exchange on a new` +
      ` connection. One instance at a time per mode: the routes without checks, then with \`"health_check": {}\`` +
      ` (the defaults: interval ${PROBE_INTERVAL_S} s, timeout 1 s). After ${p.settleS} s for the first probes and what they cause,` +
      ` ${p.seconds} s measured: the controller's CPU time (user + system, /proc/<pid>/stat) per second, the` +
      ` connections the endpoints accepted per second (nothing else connects to them: the probes; due: one per endpoint` +
      ` per interval, fewer when the controller falls behind), and the controller's RSS after. ${cores} cores shared with nginx and the backends.`,
    ``,
    table(
      [
        "mode",
        "endpoints",
        "health_check",
        "controller CPU ms per s",
        "probes/s (due)",
        "controller CPU µs per probe (over off)",
        "controller RSS MiB",
        "endpoints down by check",
      ],
      he.modes.flatMap((m) => {
        const off = m.probeCost.find((c) => c.variant === "off");
        return m.probeCost.map((c) => [
          m.mode,
          fmtInt(c.endpoints),
          c.variant,
          fmt(c.cpuMsPerS, 1),
          c.variant === "on"
            ? `${fmtInt(c.probesPerS)} (${fmtInt(c.endpoints / PROBE_INTERVAL_S)})`
            : fmtInt(c.probesPerS),
          c.variant === "on" && off ? fmt(((c.cpuMsPerS - off.cpuMsPerS) * 1000) / c.probesPerS, 1) : "",
          fmt(c.controllerRssMiB, 0),
          c.variant === "on" ? String(c.downs) : "",
        ]);
      }),
    ),
    ``,
    ...he.modes.flatMap((m) =>
      m.probeCost.flatMap((c) =>
        c.error ? [`**${m.mode} mode, probe cost with checks ${c.variant} failed**: ${c.error}`, ``] : [],
      ),
    ),
  ];
}

function routesSection(ro: RoutesResult, r: Results): string[] {
  const mem = (m: RoutesRow["memoryBefore"]) => `${fmt(m.rssMiB)} / ${fmt(m.pssMiB)} (${m.processes})`;
  const tp = ro.throughput;
  return [
    `## 10. Routes pushed vs rendered`,
    ``,
    `\`nginx-lb run\` with its defaults (admin server on, traffic figures on) except \`--routes-mode\` (dynamic: one` +
      ` server per port, the routing table pushed to the Lua router; reload: a server per site, rendered and reloaded),` +
      ` \`--endpoints-mode dynamic\` in both (explicit), \`--worker-processes ${r.machine.cores}\` (the cores, as \`auto\`` +
      ` gives) and \`--listen-host 127.0.0.1\`; the run's registry. N sites of one route each (\`/\`), 10 endpoints each;` +
      ` the last site's backend is a static nginx and its key is written last. Cold start: the controller spawned ->` +
      ` the last site answers (a new connection per probe), of which "CLI load" is spawn -> its first log line (node` +
      ` loading the compiled CLI, \`bin/nginx-lb.js\` on \`dist/\`, as a user runs it; bench/lib/build.ts); the cold start` +
      ` target is the rest. A routing change: services.json rewritten` +
      ` (renamed into place, as a config centre does) with one new site, the previous change's site gone: its text` +
      ` written -> the new site's first request answered, ${QUIET_MS} ms apart (a lone change each); the services file` +
      ` watcher takes a file renamed into place at once (one written in place waits 50 ms for its writer). Reloads: "config applied" with action reload over the changes. The` +
      ` controller's own account: median compile / nginx -t / push or reload / total per apply. nginx memory: master +` +
      ` current workers, RSS / PSS MiB, once the table is served, after a warm-up (routes pushed: as many changes as` +
      ` measured, before them), and after the changes (old workers of a reload waited out). The growth target is over` +
      ` the measured changes, after the warm-up: in the warm-up each worker first touches the pages of the shared dict` +
      ` holding the table (RSS counts a shared page in every process that touched it; PSS does not grow by it) and` +
      ` writes to the Lua heap pages it shares with the master; a second hundred changes then moves RSS by well under` +
      ` the tolerance; the traffic counters' keys of removed routes stay in their dict until 5 minutes idle. The` +
      ` warm-up's own growth is in the table, not hidden.` +
      (r.quick ? ` **--quick: 1,000 sites instead of 10,000 and fewer changes (see the changes column).**` : ``),
    ``,
    table(
      [
        "routes mode",
        "sites",
        "cold start ms (CLI load)",
        "changes",
        "change -> served p50 / p99 ms",
        "min-max ms",
        "timeouts",
        "reloads",
        "ctl compile / nginx -t / push or reload / total ms",
        "nginx RSS / PSS MiB (processes) before",
        "after the warm-up (changes)",
        "after the changes",
        `nginx RSS growth % (target, dynamic: ≤ ${RSS_GROWTH_TOLERANCE_PCT}%)`,
        `controller RSS MiB after the changes / after ${IDLE_MS / 1000} s idle`,
      ],
      ro.rows.map((x) => [
        x.routesMode,
        fmtInt(x.sites),
        `${fmtInt(x.coldStartMs)} (${fmtInt(x.cliLoadMs)})`,
        String(x.changes),
        `${fmt(x.changeMs.p50)} / ${fmt(x.changeMs.p99)}`,
        `${fmt(x.changeMs.min)}-${fmt(x.changeMs.max)}`,
        String(x.timeouts),
        String(x.reloads),
        [x.apply.render, x.apply.test, x.apply.reload, x.apply.totalP50].map((v) => fmt(v)).join(" / "),
        mem(x.memoryBefore),
        x.warmupChanges > 0 ? `${mem(x.memoryWarm)} (${x.warmupChanges})` : "-",
        mem(x.memoryAfter),
        fmt(routesGrowthPct(x)),
        `${fmt(x.controllerRssMiB)} / ${fmt(x.controllerRssIdleMiB)}`,
      ]),
    ),
    ``,
    ...ro.rows.flatMap((x) =>
      x.error ? [`**${x.routesMode} routes, ${fmtInt(x.sites)} sites failed**: ${x.error}`, ``] : [],
    ),
    ...(tp
      ? [
          `Requests/s: wrk -t${tp.wrk.threads} -c${tp.wrk.connections}, ${tp.wrk.seconds} s per run, ${tp.wrk.rounds} round(s)` +
            ` alternating (the order rotated every round) through the last site of the two ${fmtInt(tp.sites)}-site instances above` +
            ` (running at once, after their changes); one warm-up second each first. Medians over rounds; the ratio within a round.`,
          ``,
          table(
            ["routes mode", "requests/s", "p99 ms", "failed", "requests/s per round", "dynamic / rendered per round"],
            (
              [
                ["dynamic (pushed)", tp.dynamic],
                ["reload (rendered)", tp.rendered],
              ] as const
            ).map(([label, s], i) => [
              label,
              fmtInt(s.rps),
              fmt(s.p99ms, 2),
              fmtInt(s.failed),
              s.runs.map((v) => fmtInt(v.rps)).join(", "),
              i === 0 ? tp.ratios.map((v) => fmt(v, 3)).join(", ") : "",
            ]),
          ),
          ``,
        ]
      : []),
    ...ro.notes.map((n) => `> ${n}\n`),
  ];
}
