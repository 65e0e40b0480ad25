/**
 * `npm run bench`: every figure of the benchmark suite against real components, then BENCHMARKS.md and
 * bench/results/latest.json.
 *
 *   npm run bench                                  # everything (under 10 minutes on 2 cores)
 *   npm run bench -- --quick                       # a short smoke run of every figure but health
 *   npm run bench -- --only convergence,scale      # a subset (convergence, bursts, scale, dataplane, churn, crash, traffic, services, health, routes, router)
 *   npm run bench -- --registry file --modes reload --out /tmp/b
 *
 * The registry is real etcd when this build has the etcd source (else the watched backends file); the endpoint
 * modes are every mode `nginx-lb run --help` offers. Everything started is stopped, also on failure and Ctrl-C.
 */
import { mkdir, writeFile } from "node:fs/promises";
import { loadavg } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { parseArgs } from "node:util";
import { format, resolveConfig } from "prettier";
import { bursts } from "./figures/bursts.js";
import { churn } from "./figures/churn.js";
import { convergence } from "./figures/convergence.js";
import { crash } from "./figures/crash.js";
import { dataPlane } from "./figures/dataplane.js";
import { scale } from "./figures/scale.js";
import { trafficCost } from "./figures/traffic.js";
import { trafficInstructions } from "./figures/traffic-instructions.js";
import { routerInstructions } from "./figures/router-instructions.js";
import { services } from "./figures/services.js";
import { health } from "./figures/health.js";
import { routesFigure } from "./figures/routes.js";
import type { Context } from "./lib/context.js";
import { availableModes, type Mode } from "./lib/lb.js";
import { machine } from "./lib/machine.js";
import { killAll } from "./lib/procs.js";
import { etcdSupported, type RegistryKind } from "./lib/registry.js";
import { loopbackIps } from "../test/helpers/backends.js";
import { startStaticBackends } from "./lib/static-nginx.js";
import { renderReport, type Results } from "./report.js";

const ROOT = fileURLToPath(new URL("..", import.meta.url));
const FIGURES = [
  "convergence",
  "bursts",
  "scale",
  "dataplane",
  "churn",
  "crash",
  "traffic",
  "services",
  "health",
  "routes",
  "router",
] as const;
type Figure = (typeof FIGURES)[number];

function fail(msg: string): never {
  process.stderr.write(`bench: ${msg}\n`);
  process.exit(2);
}

async function main(): Promise<void> {
  const { values } = parseArgs({
    options: {
      quick: { type: "boolean", default: false },
      only: { type: "string" },
      registry: { type: "string" },
      modes: { type: "string" },
      out: { type: "string" },
    },
  });
  // --quick is a smoke run of the suite's machinery: the health figure (minutes even when small) runs there only by name.
  const quickDefault = FIGURES.filter((f) => f !== "health");
  const only = (values.only?.split(",").map((s) => s.trim()) ?? [
    ...(values.quick ? quickDefault : FIGURES),
  ]) as Figure[];
  for (const f of only) if (!FIGURES.includes(f)) fail(`unknown figure ${f}; one of ${FIGURES.join(", ")}`);

  const notes: string[] = [];
  const offered = await availableModes();
  const modes = (values.modes?.split(",") ?? offered) as Mode[];
  for (const m of modes) if (!offered.includes(m)) fail(`this build of nginx-lb has no ${m} endpoint mode`);
  if (!offered.includes("dynamic"))
    notes.push("This build has no dynamic endpoint mode (`--endpoints-mode`): every figure is reload mode only.");
  const registry = (values.registry ?? (etcdSupported() ? "etcd" : "file")) as RegistryKind;
  if (registry !== "etcd" && registry !== "file") fail(`--registry must be etcd or file`);
  if (registry === "etcd" && !etcdSupported()) fail("this build has no etcd source (src/sources/etcd-v3.ts)");
  if (registry === "file")
    notes.push(
      `Registry: the watched backends file (${etcdSupported() ? "chosen with --registry file" : "this build has no etcd source"}).` +
        " Its watcher waits 50 ms for a writer to finish, which is in every convergence figure.",
    );

  const m = machine();
  const started = performance.now();
  const log = (msg: string) => process.stderr.write(`[${((performance.now() - started) / 1000).toFixed(1)}s] ${msg}\n`);
  const results: Results = {
    quick: values.quick,
    command: `npm run bench${process.argv.length > 2 ? ` -- ${process.argv.slice(2).join(" ")}` : ""}`,
    machine: m,
    registry,
    modes,
    notes,
    durationS: 0,
    figures: {},
  };
  const stop = () => void killAll().finally(() => process.exit(130));
  process.once("SIGINT", stop);
  process.once("SIGTERM", stop);
  try {
    log(`registry ${registry}, modes ${modes.join(", ")}${values.quick ? ", quick" : ""}`);
    // Ten static backends: two for convergence, a window of them for churn, one for the data plane, two for crashes.
    const backends = await startStaticBackends(loopbackIps(10), 1);
    const ctx: Context = { quick: values.quick, modes, registry, workers: m.cores, backends, log };
    if (only.includes("convergence")) results.figures.convergence = await convergence(ctx);
    if (only.includes("bursts")) results.figures.bursts = await bursts(ctx);
    if (only.includes("scale")) results.figures.scale = await scale(ctx);
    if (only.includes("dataplane")) results.figures.dataPlane = await dataPlane(ctx);
    if (only.includes("churn")) results.figures.churn = await churn(ctx);
    if (only.includes("crash")) results.figures.crash = await crash(ctx);
    if (only.includes("traffic")) {
      results.figures.trafficCost = await trafficCost(ctx);
      results.figures.trafficInstructions = await trafficInstructions(ctx);
    }
    if (only.includes("services")) results.figures.services = await services(ctx);
    if (only.includes("health")) results.figures.health = await health(ctx);
    if (only.includes("routes")) results.figures.routes = await routesFigure(ctx);
    if (only.includes("router")) results.figures.routerInstructions = await routerInstructions(ctx);
  } finally {
    await killAll();
  }
  m.loadEnd = loadavg()[0] ?? NaN;
  const done: Results = { ...results, durationS: (performance.now() - started) / 1000 };
  const outDir = values.out;
  const mdFile = outDir ? join(outDir, "BENCHMARKS.md") : join(ROOT, "BENCHMARKS.md");
  const jsonFile = outDir ? join(outDir, "latest.json") : join(ROOT, "bench/results/latest.json");
  if (outDir) await mkdir(outDir, { recursive: true });
  else await mkdir(join(ROOT, "bench/results"), { recursive: true });
  // Written as the repository's formatter would, so a committed report passes `npm run lint` unchanged.
  const style = (await resolveConfig(join(ROOT, "BENCHMARKS.md"))) ?? {};
  await writeFile(mdFile, await format(renderReport(done), { ...style, parser: "markdown" }));
  await writeFile(jsonFile, await format(JSON.stringify(done), { ...style, parser: "json" }));
  log(`wrote ${mdFile} and ${jsonFile}`);
}

main().catch((e: unknown) => {
  process.stderr.write(`bench: ${(e as Error).stack ?? String(e)}\n`);
  process.exitCode = 1;
});
