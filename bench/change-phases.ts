/**
 * Where a routing change's time goes (figure 10's change, `--routes-mode dynamic`): the real `nginx-lb run` at debug
 * level on the routes figure's table, then changes made as the figure makes them (the new site's services.json
 * renamed into place, the site probed until it answers), each split by the controller's own log lines:
 *
 *   write    the bench writes the new text (2 MB at 10,000 sites, encoded before) to a temporary file and renames it into place
 *   watch    services.json renamed into place -> the controller starts reading it (fs.watch, the event loop)
 *   read     reading + checking the file + sharing unchanged servers ("services.json read")
 *   queue    read -> the apply starts (the reconciler's debounce and minimum gap)
 *   compile  the apply's compile ("endpoints pushed" ms.render)
 *   push     the pushes to nginx's control server (ms.reload)
 *   applyOther  the apply's start ("apply started") -> its log line, less compile and push
 *   serve    the push answered (apply start + compile + push) -> the new site's first 200 (a worker's first request
 *            on the new table, and the probe loop's granularity: `lag` is the push answered -> the start of the probe
 *            that got the 200)
 *
 * the benchmark's own GC pauses within the change (benchGc: its stalls are in the measure too), and, with --trace-gc,
 * the controller's GC pauses between the write and the push (V8's --trace-gc lines on its stdout). Not a figure of
 * the suite: a tool to find the slow phase. Times across the two processes are wall clock (the controller logs
 * milliseconds).
 *
 *   node --import tsx bench/change-phases.ts [--sites 10000] [--changes 40] [--warmup 10] [--trace-gc]
 *                                            [--registry file|etcd] [--probe-gap-ms 2] [--node-flag=--cpu-prof ...]
 *                                            [--compare <another checkout, its dist/ built>]
 *
 * --compare runs this tree's controller and the other build's side by side (both at info, as figure 10 runs them),
 * changes alternating between them, and reports each one's change -> served and apply account, and the ratio of p50s.
 */
import { rename, writeFile } from "node:fs/promises";
import { cpus } from "node:os";
import { PerformanceObserver } from "node:perf_hooks";
import { parseArgs } from "node:util";
import { loopbackIps } from "../test/helpers/backends.js";
import type { LogLine } from "../test/helpers/controller.js";
import { LAST_HOST, QUIET_MS, routesTable } from "./figures/routes.js";
import { collectGarbage } from "./lib/collect.js";
import { probe } from "./lib/http.js";
import { servicesJson, startLb, type Lb, type RouteSpec } from "./lib/lb.js";
import { killAll, sleep } from "./lib/procs.js";
import { createRegistry, etcdSupported, type RegistryKind } from "./lib/registry.js";
import { median, percentile } from "./lib/stats.js";
import { startStaticBackends } from "./lib/static-nginx.js";

const PHASES = [
  "write",
  "watch",
  "read",
  "queue",
  "compile",
  "push",
  "applyOther",
  "serve",
  "lag",
  "gc",
  "benchGc",
  "total",
] as const;
type Phase = (typeof PHASES)[number];

// The controller's log times are Date.now(): the same clock here (performance.timeOrigin + now() drifts from it).
const wall = () => Date.now();
const timeOf = (l: LogLine) => Date.parse(String(l["time"]));
const msOf = (l: LogLine, k: string) => Number((l["ms"] as Record<string, number> | undefined)?.[k] ?? NaN);

/** V8's --trace-gc line: "[pid:0x..]   1234 ms: Scavenge 80.1 (90.2) -> 79.0 (91.2) MB, 1.23 / 0.00 ms ..." */
function gcPause(line: LogLine): number {
  const m = /: (Scavenge|Mark-Compact|Mark-sweep|Minor Mark-Compact)[^,]*, ([\d.]+) \//.exec(line.msg);
  return m && line.level === 0 ? Number(m[2]) : 0;
}

/** The benchmark's own GC pauses (wall-clock start, ms), to tell its stalls from the controller's. */
const benchGcs: { at: number; ms: number }[] = [];
new PerformanceObserver((list) => {
  for (const e of list.getEntries()) benchGcs.push({ at: performance.timeOrigin + e.startTime, ms: e.duration });
}).observe({ entryTypes: ["gc"] });

interface Change {
  readonly c0: number;
  readonly renamed: number;
  /** When the probe that got the 200 was sent, and its answer; NaN when not served within the loop's bound. */
  readonly okStart: number;
  readonly served: number;
  readonly lines: LogLine[];
}

/** One change as figure 10 makes it: a new site (the previous change's gone) written, renamed, probed until served. */
async function change(lb: Lb, routes: readonly RouteSpec[], host: string, livePort: number, gap: number) {
  const extra: RouteSpec = { domain: host, prefix: "/", name: "live-web", port: livePort };
  // As figure 10: the bytes ready before the clock starts.
  const text = Buffer.from(
    JSON.stringify({ version: "0.1", servers: servicesJson([...routes, extra], lb.port) }, null, 2),
  );
  const from = lb.controller.lines.length;
  // As figure 10: the benchmark's own garbage collected before the clock starts.
  collectGarbage();
  const c0 = wall();
  await writeFile(`${lb.servicesFile}.tmp`, text);
  await rename(`${lb.servicesFile}.tmp`, lb.servicesFile);
  const renamed = wall();
  let okStart = NaN;
  let served = NaN;
  for (let i = 0; i < 30_000; i++) {
    const s = wall();
    if ((await probe(lb.port, host)).status === 200) {
      okStart = s;
      served = wall();
      break;
    }
    await sleep(gap);
  }
  await sleep(QUIET_MS);
  return { c0, renamed, okStart, served, lines: lb.controller.lines.slice(from) } satisfies Change;
}

/** A change split by the controller's debug lines, or null when they are missing. */
function phasesOf(c: Change): Record<Phase, number> | null {
  const { lines } = c;
  const read = lines.find((l) => l.msg === "services.json read");
  const started = lines.find((l) => l.msg === "apply started");
  const applied = lines.find((l) => l.msg === "endpoints pushed" || l.msg === "config applied");
  if (!read || !started || !applied) return null;
  const readMs = msOf(read, "read") + msOf(read, "check") + msOf(read, "share");
  const readEnd = timeOf(read);
  const applyStart = timeOf(started);
  const pushEnd = applyStart + msOf(applied, "render") + msOf(applied, "reload");
  return {
    write: c.renamed - c.c0,
    watch: readEnd - readMs - c.renamed,
    read: readMs,
    queue: applyStart - readEnd,
    compile: msOf(applied, "render"),
    push: msOf(applied, "reload"),
    // The apply's own account ends at the push's answer; the rest until its log line (status, routing state).
    applyOther: timeOf(applied) - applyStart - msOf(applied, "render") - msOf(applied, "reload"),
    serve: c.served - pushEnd,
    lag: c.okStart - pushEnd,
    gc: lines.slice(0, lines.indexOf(applied)).reduce((s, l) => s + gcPause(l), 0),
    benchGc: benchGcs.filter((g) => g.at >= c.c0 - 1 && g.at <= c.served).reduce((s, g) => s + g.ms, 0),
    total: c.served - c.c0,
  };
}

const r1 = (x: number) => Math.round(x * 10) / 10;
const summary = (xs: number[]) => {
  const ok = xs.filter(Number.isFinite);
  return { p50: r1(median(ok)), p95: r1(percentile(ok, 95)), p99: r1(percentile(ok, 99)), max: r1(Math.max(...ok)) };
};

async function main(): Promise<void> {
  const { values } = parseArgs({
    options: {
      sites: { type: "string", default: "10000" },
      changes: { type: "string", default: "40" },
      warmup: { type: "string", default: "10" },
      registry: { type: "string" },
      "trace-gc": { type: "boolean", default: false },
      "probe-gap-ms": { type: "string", default: "2" },
      "node-flag": { type: "string", multiple: true, default: [] },
      compare: { type: "string" },
    },
  });
  const sites = Number(values.sites);
  // Flags for the controller's node (e.g. --cpu-prof --cpu-prof-dir=/tmp/prof: written when it stops).
  const nodeFlags = [...(values["trace-gc"] ? ["--trace-gc"] : []), ...values["node-flag"]];
  if (nodeFlags.some((f) => !/^--[a-z-]+(=[\w./-]+)?$/.test(f))) throw new Error("--node-flag: --name[=value] only");
  const gap = Number(values["probe-gap-ms"]);
  const kind = (values.registry ?? (etcdSupported() ? "etcd" : "file")) as RegistryKind;
  const backends = await startStaticBackends(loopbackIps(1), 1);
  const live = { ip: backends.ips[0] ?? "", port: backends.port };
  const registry = await createRegistry(kind);
  const log = (msg: string) => process.stderr.write(`${msg}\n`);
  const lbs: Lb[] = [];
  try {
    const { routes, set } = routesTable(sites, live);
    await registry.replace(set);
    // --compare: this tree's controller and another build's, both at info as figure 10 runs them, changes alternating.
    const roots = values.compare ? [undefined, values.compare] : [undefined];
    for (const root of roots) {
      const lb = await startLb({
        routes,
        registry,
        mode: "dynamic",
        routesMode: "dynamic",
        workers: cpus().length,
        admin: true,
        env: { NGINX_LB_LOG_LEVEL: values.compare ? "info" : "debug" },
        // V8's GC trace goes to stdout, which the harness ignores: onto stderr, among the log lines, in order.
        ...(nodeFlags.length > 0 ? { wrap: ["sh", "-c", `exec "$0" ${nodeFlags.join(" ")} "$@" 1>&2`] } : {}),
        ...(root ? { root } : {}),
      });
      lbs.push(lb);
      for (let i = 0; i < 60_000 && (await probe(lb.port, LAST_HOST)).status !== 200; i++) await sleep(5);
    }
    await sleep(QUIET_MS);
    const warmup = Number(values.warmup);
    const changes = Number(values.changes);
    const made: Change[][] = lbs.map(() => []);
    for (let k = 0; k < warmup + changes; k++) {
      if (k % 20 === 0) log(`change-phases: change ${k + 1}/${warmup + changes} (${warmup} warm-up)`);
      // Alternating which variant goes first, so neither always follows the other's change.
      const order = lbs.map((_, i) => (i + k) % lbs.length);
      for (const i of order) {
        const lb = lbs[i];
        if (!lb) continue;
        const c = await change(lb, routes, `${k < warmup ? "warm" : "new"}${k}.bench.test`, live.port, gap);
        if (k >= warmup) made[i]?.push(c);
      }
    }
    if (values.compare) {
      const variant = (cs: Change[]) => {
        const applies = cs.flatMap((c) => c.lines.filter((l) => l.msg === "endpoints pushed"));
        return {
          changeMs: summary(cs.map((c) => c.served - c.c0)),
          applyTotalMs: summary(applies.map((l) => msOf(l, "total"))),
          compileMs: summary(applies.map((l) => msOf(l, "render"))),
          pushMs: summary(applies.map((l) => msOf(l, "reload"))),
          timeouts: cs.filter((c) => !Number.isFinite(c.served)).length,
          slowest: cs
            .map((c) => c.served - c.c0)
            .sort((a, b) => b - a)
            .slice(0, 5),
        };
      };
      const [mine = [], base = []] = made;
      const ratio = (a: number[], b: number[]) => r1((median(a) / median(b)) * 100) / 100;
      const totals = (cs: Change[]) => cs.map((c) => c.served - c.c0).filter(Number.isFinite);
      console.log(
        JSON.stringify({
          sites,
          changes,
          this: variant(mine),
          compared: { root: values.compare, ...variant(base) },
          p50Ratio: ratio(totals(mine), totals(base)),
        }),
      );
      return;
    }
    const rows = (made[0] ?? []).map(phasesOf).filter((r): r is Record<Phase, number> => r !== null);
    const out: Record<string, ReturnType<typeof summary>> = {};
    for (const p of PHASES) out[p] = summary(rows.map((r) => r[p]));
    console.log(JSON.stringify({ sites, changes: rows.length, probeGapMs: gap, phases: out }));
    if (process.env["PHASES_ROWS"] === "1") for (const r of rows) console.log(JSON.stringify(r));
  } finally {
    for (const lb of lbs) await lb.stop();
    await registry.close();
  }
}

main()
  .catch((e: unknown) => {
    console.error(e);
    process.exitCode = 1;
  })
  .finally(() => killAll());
